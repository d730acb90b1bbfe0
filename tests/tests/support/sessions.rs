//! New sessions in the lab and where they land: the agent's `lookup` prediction, an
//! independent Maglev prediction, RTMP connects and HTTP requests from chosen client ports,
//! and the agent's `status`.

#![allow(dead_code)]

use std::{path::Path, time::Duration};

use xdp_lb::control::protocol::StatusReport;
use xdp_lb_tests::{Lab, LabProcess};

use super::{predict, stream::wait_for};

/// Fresh client source ports, so that every session is a new flow.
pub struct Ports(pub u16);

impl Ports {
    pub fn next(&mut self) -> u16 {
        self.0 += 1;
        self.0
    }
}

/// Runs `xdp-lb ARGS` against the lab's agent; its stdout. Panics, with its stderr, when
/// the agent refuses.
#[track_caller]
pub fn ctl_ok(lab: &Lab, binary: &Path, args: &[&str]) -> String {
    let out = lab
        .agent_command(binary, args)
        .unwrap_or_else(|e| panic!("xdp-lb {args:?}: {e:#}"));
    assert!(
        out.status.success(),
        "xdp-lb {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `xdp-lb status --json`.
pub fn status(lab: &Lab, binary: &Path) -> StatusReport {
    serde_json::from_str(&ctl_ok(lab, binary, &["status", "--json"])).expect("status JSON")
}

/// The state word `status` shows for backend `i` of `service` (`up`, `down`, `drain`...).
pub fn backend_state(report: &StatusReport, service: &str, i: usize) -> Option<String> {
    let address = super::stream::addr(i);
    report
        .services
        .iter()
        .find(|s| s.name == service)?
        .backends
        .iter()
        .find(|b| b.address == address)
        .map(|b| b.state.clone())
}

/// Backend `i` for its address, if it is one of the lab's.
pub fn backend_index(address: &str) -> Option<usize> {
    let last: usize = address.trim().strip_prefix("10.77.0.")?.parse().ok()?;
    (11..11 + xdp_lb_tests::MAX_BACKENDS)
        .contains(&last)
        .then(|| last - 11)
}

/// The backend `xdp-lb lookup CLIENT:PORT VIP:VIP_PORT` names for a new flow, and its
/// whole answer (None: no backend, or the lookup failed).
pub fn lookup(lab: &Lab, binary: &Path, port: u16, vip_port: u16) -> (Option<usize>, String) {
    let client = format!("{}:{port}", Lab::CLIENT_ADDR);
    let vip = format!("{}:{vip_port}", Lab::VIP);
    let Ok(out) = lab.agent_command(binary, &["lookup", &client, &vip]) else {
        return (None, "lookup did not run".into());
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let backend = text
        .split_once("/tcp: ")
        .and_then(|(_, rest)| rest.split_once(" ("))
        .and_then(|(address, _)| backend_index(address));
    (backend, text.trim().to_owned())
}

/// The backend the data plane gives a new flow from the lab's client port `port` to the
/// VIP's `vip_port`, computed apart from the agent: the flow hash over a Maglev table of
/// `size` slots of these (backend, weight) pairs (weight 0: drained, not in the table).
pub fn maglev_choice(backends: &[(usize, u32)], size: u32, port: u16, vip_port: u16) -> usize {
    let members: Vec<_> = backends
        .iter()
        .filter(|(_, w)| *w > 0)
        .map(|(i, w)| (super::stream::addr(*i), *w))
        .collect();
    let owner = predict::maglev_owner(
        &members,
        size,
        xdp_lb::config::DEFAULT_FLOW_HASH_SEED,
        Lab::CLIENT_ADDR.parse().expect("client address"),
        port,
        Lab::VIP.parse().expect("VIP"),
        vip_port,
    )
    .expect("a backend in the table");
    backend_index(&owner.to_string()).expect("a lab backend")
}

/// Connects from the client's `port` to VIP:`vip_port` (without a word of any protocol) and
/// holds the connection for up to `hold_s` seconds.
const CONNECT_AND_HOLD: &str = "\
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.settimeout(3)
s.connect((sys.argv[3], int(sys.argv[4])))
print('connected', flush=True)
time.sleep(float(sys.argv[5]))
";

/// Opens a TCP connection from client port `port` to VIP:`vip_port` and finds the backend
/// that accepted it (the one with the connection established); the connection is closed
/// again before this returns.
pub fn tcp_session_lands_on(lab: &Lab, port: u16, vip_port: u16) -> Result<usize, String> {
    let (port_s, vip_port_s) = (port.to_string(), vip_port.to_string());
    let mut probe: LabProcess = lab
        .spawn(
            lab.ns_client(),
            &[
                "python3",
                "-c",
                CONNECT_AND_HOLD,
                Lab::CLIENT_ADDR,
                &port_s,
                Lab::VIP,
                &vip_port_s,
                "5",
            ],
        )
        .map_err(|e| format!("{e:#}"))?;
    let peer = format!("{}:{port}", Lab::CLIENT_ADDR);
    let found = wait_for(Duration::from_secs(4), || {
        (0..lab.backends()).find(|&i| {
            lab.exec_ok(
                lab.ns_backend(i),
                &["ss", "-Htn", "state", "established", "dst", &peer],
            )
            .is_ok_and(|out| out.contains(&peer))
        })
    });
    let _ = probe.kill();
    found.ok_or_else(|| {
        format!(
            "no backend accepted a connection from client port {port}: {}",
            probe.stderr().trim()
        )
    })
}

/// The backend whose nginx answered `GET /` on the VIP's HTTP port from client port `port`.
pub fn http_session_lands_on(lab: &Lab, port: u16) -> Result<usize, String> {
    let body = lab
        .http_get_via_vip_from_port("/", port)
        .map_err(|e| format!("{e:#}"))?;
    (0..lab.backends())
        .find(|&i| body.trim() == Lab::backend_name(i))
        .ok_or_else(|| format!("unexpected answer {body:?}"))
}

/// Opens `n` new sessions to VIP:`vip_port` from fresh client ports (TCP connects, or HTTP
/// requests on the HTTP port): each must land where the agent's `lookup` and `expect` (the
/// new config, from the port) both say. `after` names the change, for messages. Returns
/// where they landed.
#[track_caller]
pub fn new_sessions_follow(
    lab: &Lab,
    binary: &Path,
    ports: &mut Ports,
    n: usize,
    vip_port: u16,
    after: &str,
    expect: &dyn Fn(u16) -> usize,
) -> Vec<usize> {
    (0..n)
        .map(|_| {
            let port = ports.next();
            let (predicted, said) = lookup(lab, binary, port, vip_port);
            let wanted = expect(port);
            assert_eq!(
                predicted,
                Some(wanted),
                "after {after}: lookup names {} for a new session from port {port}: {said}",
                Lab::backend_name(wanted)
            );
            let landed = if vip_port == Lab::HTTP_PORT {
                http_session_lands_on(lab, port)
            } else {
                tcp_session_lands_on(lab, port, vip_port)
            }
            .unwrap_or_else(|e| panic!("after {after}: a new session from port {port}: {e}"));
            assert_eq!(
                landed,
                wanted,
                "after {after}: the new session from port {port} lands on {}",
                Lab::backend_name(wanted)
            );
            landed
        })
        .collect()
}

/// `GET /` with `Connection: close` from client port `port` (the address reusable at once)
/// to the VIP's HTTP port, so that the server closes first and the client leaves no
/// TIME_WAIT behind; the body.
const GET_SERVER_CLOSES: &str = "\
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.settimeout(5)
s.connect((sys.argv[3], int(sys.argv[4])))
s.sendall(b'GET / HTTP/1.1\\r\\nHost: vip\\r\\nConnection: close\\r\\n\\r\\n')
reply = b''
while True:
    chunk = s.recv(4096)
    if not chunk:
        break
    reply += chunk
s.close()
print(reply.split(b'\\r\\n\\r\\n', 1)[-1].decode().strip())
";

/// The backend that answered an HTTP request from exactly client port `port`, which may
/// have been used by an earlier connection (the same 5-tuple again).
pub fn http_session_from_reused_port(lab: &Lab, port: u16) -> Result<usize, String> {
    let port_s = port.to_string();
    let http = Lab::HTTP_PORT.to_string();
    let body = lab
        .exec_ok(
            lab.ns_client(),
            &[
                "python3",
                "-c",
                GET_SERVER_CLOSES,
                Lab::CLIENT_ADDR,
                &port_s,
                Lab::VIP,
                &http,
            ],
        )
        .map_err(|e| format!("{e:#}"))?;
    (0..lab.backends())
        .find(|&i| body.trim() == Lab::backend_name(i))
        .ok_or_else(|| format!("unexpected answer {body:?}"))
}
