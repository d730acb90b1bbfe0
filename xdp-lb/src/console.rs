//! The web console on the management listener (`metrics.listen`, served by `metrics.rs`):
//! `GET /` the page, its script and style and the vendored chart library (all inside the
//! binary, from `xdp-lb/web/`), `GET /status.json` the report `xdp-lb status --json`
//! prints, which the page fetches every second or two. Read-only: GET and HEAD are the only
//! methods, on exact paths; anything else is 404 or 405, and no route reaches anything but
//! the status report. With `metrics.token_file`, the data (`/status.json`, `/metrics`)
//! needs `Authorization: Bearer TOKEN`; the page itself holds none and asks for the token.

use crate::{
    http1::{Request, Response},
    register::authorized,
};

/// A file of the page, embedded at build time.
#[derive(Debug, PartialEq, Eq)]
pub struct Asset {
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
}

const HTML: &str = "text/html; charset=utf-8";
const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";
pub const JSON: &str = "application/json";

/// The page and what it loads (`xdp-lb/web/vendor/README.md` says where the chart library
/// comes from).
pub const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: HTML,
        body: include_bytes!("../web/index.html"),
    },
    Asset {
        path: "/console.js",
        content_type: JAVASCRIPT,
        body: include_bytes!("../web/console.js"),
    },
    Asset {
        path: "/console.css",
        content_type: CSS,
        body: include_bytes!("../web/console.css"),
    },
    Asset {
        path: "/vendor/chart.umd.min.js",
        content_type: JAVASCRIPT,
        body: include_bytes!("../web/vendor/chart.umd.min.js"),
    },
    Asset {
        path: "/vendor/chart.js-LICENSE.md",
        content_type: TEXT,
        body: include_bytes!("../web/vendor/chart.js-LICENSE.md"),
    },
];

/// The page may load its own files and fetch the report, nothing else: no inline script,
/// no other origin, no form, no frame around it.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// What a request is for, once it is allowed.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    Asset(&'static Asset),
    /// `/metrics`: the OpenMetrics text.
    Metrics,
    /// `/status.json`: the status report.
    Status,
}

/// Where `request` goes (and whether it is a HEAD), or the answer refusing it.
pub fn route(request: &Request, token: Option<&str>) -> Result<(Route, bool), Response> {
    let route = match request.path.as_str() {
        "/metrics" => Route::Metrics,
        "/status.json" => Route::Status,
        path => match ASSETS.iter().find(|a| a.path == path) {
            Some(asset) => Route::Asset(asset),
            None => {
                return Err(text(
                    404,
                    "not found: the console is at /, its report at /status.json, the metrics at /metrics\n",
                ));
            }
        },
    };
    let head = match request.method.as_str() {
        "GET" => false,
        "HEAD" => true,
        _ => {
            return Err(text(405, "read-only: GET or HEAD\n").with_header("Allow", "GET, HEAD"));
        }
    };
    if let (Some(token), Route::Metrics | Route::Status) = (token, &route)
        && !authorized(request.header("authorization"), token)
    {
        let mut refused = text(401, "this needs Authorization: Bearer TOKEN\n")
            .with_header("WWW-Authenticate", "Bearer realm=\"xdp-lb\"");
        refused.head_only = head;
        return Err(refused);
    }
    Ok((route, head))
}

pub fn text(status: u16, body: impl Into<Vec<u8>>) -> Response {
    Response::new(status, TEXT, body)
}

/// Adds the headers every answer of the listener carries: the content security policy,
/// no sniffing, no caching, no referrer.
pub fn secured(response: Response) -> Response {
    response
        .with_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        .with_header("X-Content-Type-Options", "nosniff")
        .with_header("Cache-Control", "no-store")
        .with_header("Referrer-Policy", "no-referrer")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, path: &str, auth: Option<&str>) -> Request {
        Request {
            method: method.into(),
            path: path.into(),
            headers: auth
                .map(|a| vec![("authorization".to_owned(), a.to_owned())])
                .unwrap_or_default(),
            body: Vec::new(),
        }
    }

    fn status(r: Result<(Route, bool), Response>) -> u16 {
        r.map_or_else(|refused| refused.status, |_| 200)
    }

    #[test]
    fn exact_paths_only_and_only_get_and_head() {
        for asset in ASSETS {
            assert_eq!(
                route(&request("GET", asset.path, None), None),
                Ok((Route::Asset(asset), false))
            );
        }
        assert_eq!(
            route(&request("HEAD", "/status.json", None), None),
            Ok((Route::Status, true))
        );
        assert_eq!(
            route(&request("GET", "/metrics", None), None),
            Ok((Route::Metrics, false))
        );
        for path in [
            "/index.html",
            "//",
            "/status.json/",
            "/STATUS.JSON",
            "/../status.json",
            "/vendor/",
            "/vendor/../console.js",
            "/%2e%2e/etc/passwd",
            "/console.js%00",
            "/favicon.ico",
        ] {
            assert_eq!(
                status(route(&request("GET", path, None), None)),
                404,
                "{path}"
            );
        }
        for method in [
            "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
        ] {
            let refused = route(&request(method, "/status.json", None), None).unwrap_err();
            assert_eq!(refused.status, 405, "{method}");
            assert!(
                refused.headers.contains(&("Allow", "GET, HEAD".to_owned())),
                "{refused:?}"
            );
        }
    }

    #[test]
    fn with_a_token_the_data_needs_it_and_the_page_does_not() {
        let token = Some("s3cret-token");
        for path in ["/status.json", "/metrics"] {
            for auth in [
                None,
                Some("Bearer wrong"),
                Some("Basic s3cret-token"),
                Some("Bearer s3cret-token-and-more"),
                Some("s3cret-token"),
            ] {
                let refused = route(&request("GET", path, auth), token).unwrap_err();
                assert_eq!(refused.status, 401, "{path} {auth:?}");
                assert!(
                    refused
                        .headers
                        .contains(&("WWW-Authenticate", "Bearer realm=\"xdp-lb\"".to_owned())),
                    "{refused:?}"
                );
            }
            assert_eq!(
                status(route(
                    &request("GET", path, Some("Bearer s3cret-token")),
                    token
                )),
                200
            );
            assert_eq!(
                status(route(
                    &request("GET", path, Some("bearer s3cret-token")),
                    token
                )),
                200,
                "the scheme in any case"
            );
            assert_eq!(status(route(&request("GET", path, None), None)), 200);
        }
        assert_eq!(status(route(&request("GET", "/", None), token)), 200);
        assert_eq!(
            status(route(&request("POST", "/status.json", None), token)),
            405,
            "a method is refused before the token is looked at"
        );
    }

    #[test]
    fn the_page_loads_only_files_the_binary_serves() {
        let page = std::str::from_utf8(ASSETS[0].body).unwrap();
        assert!(page.contains("<script src=\"/vendor/chart.umd.min.js\">"));
        assert!(
            !page.contains("<script>"),
            "no inline script: the CSP forbids it"
        );
        assert!(
            !page.contains("style=\""),
            "no inline style: the CSP forbids it"
        );
        for reference in page
            .split(['"', '\''])
            .filter(|s| s.starts_with('/') && (s.ends_with(".js") || s.ends_with(".css")))
        {
            assert!(
                ASSETS.iter().any(|a| a.path == reference),
                "the page loads {reference}, which is not served"
            );
        }
        assert!(!page.contains("http://") && !page.contains("https://"));
        let script = std::str::from_utf8(ASSETS[1].body).unwrap();
        assert!(script.contains("fetch('/status.json'"));
    }
}
