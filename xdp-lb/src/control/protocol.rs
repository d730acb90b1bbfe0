//! The control API: one JSON request per line on the agent's Unix socket, one JSON
//! response line back. The `xdp-lb` subcommands are its client; scripts can speak it too.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
};

use serde::{Deserialize, Serialize};

use crate::audit::Drift;

/// Default path of the control socket (root only, mode 0600).
pub const DEFAULT_SOCKET: &str = "/run/xdp-lb/control.sock";

/// Reads one request: JSON with a `command` tag and exactly that command's fields. An
/// unknown field is refused for every command, including those without fields (serde's
/// `deny_unknown_fields` lets an internally tagged unit variant through with any fields, so
/// `{"command":"reload","dry_run":true}` would reload).
pub fn parse_request(text: &str) -> Result<Request, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let serde_json::Value::Object(fields) = &value else {
        return Err("a request is a JSON object with a `command`".to_owned());
    };
    if let Some(serde_json::Value::String(command)) = fields.get("command")
        && FIELDLESS_COMMANDS.contains(&command.as_str())
    {
        let extra: Vec<&str> = fields
            .keys()
            .map(String::as_str)
            .filter(|k| *k != "command")
            .collect();
        if !extra.is_empty() {
            return Err(format!(
                "`{command}` takes no fields; unknown: {}",
                extra.join(", ")
            ));
        }
    }
    serde_json::from_value(value).map_err(|e| e.to_string())
}

impl Request {
    /// Every service or pool name the request carries is one a file could hold: a request
    /// naming `"x".repeat(50_000_000)` is refused here, with the name clipped, and never
    /// echoed whole into a log line or a reply.
    pub fn check_names(&self) -> Result<(), String> {
        let (service, pool) = match self {
            Request::Status | Request::Reload | Request::Lookup { .. } => (None, None),
            Request::ServiceAdd { .. } => (None, None),
            Request::BackendAdd { service, .. }
            | Request::BackendRemove { service, .. }
            | Request::BackendDrain { service, .. }
            | Request::BackendEnable { service, .. }
            | Request::BackendWeight { service, .. }
            | Request::ClientRemove { service, .. }
            | Request::ServiceRemove { service } => (Some(service), None),
            Request::ClientSet { service, pool, .. } => (Some(service), pool.as_ref()),
            Request::ClientList { service } => (service.as_ref(), None),
        };
        for (what, name) in [("service", service), ("pool", pool)] {
            if let Some(name) = name
                && !crate::config::valid_name(name)
            {
                return Err(format!(
                    "{} is not a {what} name (1 to 64 characters of A-Z a-z 0-9 _ . -)",
                    crate::config::quoted(name)
                ));
            }
        }
        Ok(())
    }

    /// The request's `command` tag (`status`, `backend_add`, ...), for logs.
    pub fn command(&self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.get("command")?.as_str().map(str::to_owned))
            .unwrap_or_default()
    }
}

/// The commands of [`Request`]'s variants without fields.
const FIELDLESS_COMMANDS: [&str; 2] = ["status", "reload"];

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Services, backends, states and counters.
    Status,
    /// Re-read the YAML file and apply the difference (as SIGHUP).
    Reload,
    /// The backend a flow gets now: the connection table first, then Maglev.
    Lookup {
        client: SocketAddr,
        vip: SocketAddr,
        protocol: String,
    },
    BackendAdd {
        service: String,
        address: IpAddr,
        weight: u32,
        mac: Option<String>,
        /// The VLAN it is on when not its service's (a VLAN-bound service's only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        vlan: Option<u16>,
    },
    BackendRemove {
        service: String,
        address: IpAddr,
    },
    /// Weight 0: no new flows, existing ones stay.
    BackendDrain {
        service: String,
        address: IpAddr,
    },
    /// Back to the weight it had before it was drained (its configured weight).
    BackendEnable {
        service: String,
        address: IpAddr,
    },
    BackendWeight {
        service: String,
        address: IpAddr,
        weight: u32,
    },
    /// New flows of the clients in `prefix` (`ADDRESS/LENGTH`) go to `pool` of the service
    /// (`default`: its own backends), or, with `drop`, are refused. Flows already running
    /// keep their server.
    ClientSet {
        service: String,
        prefix: String,
        pool: Option<String>,
        #[serde(default)]
        drop: bool,
    },
    /// Removes the client rule for `prefix`: its clients follow the next longest one.
    ClientRemove {
        service: String,
        prefix: String,
    },
    /// The client rules of every service, or of one.
    ClientList {
        #[serde(default)]
        service: Option<String>,
    },
    /// Adds a whole service: `yaml` is one item of `services:` (kept across restarts).
    ServiceAdd {
        yaml: String,
    },
    /// Removes a whole service: its frames are the host's again.
    ServiceRemove {
        service: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
// One answer per request, moved once: boxing the report would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Response {
    Ok { message: String },
    Status(StatusReport),
    Lookup(LookupAnswer),
    Error { message: String },
    Clients(ClientList),
}

impl Response {
    pub fn error(message: impl Into<String>) -> Self {
        Response::Error {
            message: message.into(),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    pub services: Vec<ServiceStatus>,
    /// Per verdict reason: packets, bytes.
    pub verdicts: Vec<NamedCounter>,
    /// Per connection-table event: packets.
    pub flow_events: Vec<NamedCounter>,
    /// Entries in the connection table now.
    pub active_flows: u64,
    /// How big the connection table really is (see `FlowTableSize`).
    #[serde(default)]
    pub flow_table: FlowTableSize,
    /// The flow filter in front of the connection table (see `FlowFilterStatus`).
    #[serde(default)]
    pub flow_filter: Option<FlowFilterStatus>,
    /// Runs of the notify command since the agent started, by how they ended (`ok`,
    /// `failed`, `timeout`, `not_started`).
    #[serde(default)]
    pub notify_runs: BTreeMap<String, u64>,
    /// Where the kernel's maps (or the XDP attachment) differ from the agent's intent, as
    /// the audit run for this report found; empty when they agree (see `crate::audit`).
    #[serde(default)]
    pub drift: Vec<Drift>,
    /// When that audit ran, in milliseconds since the Unix epoch (`None`: it did not run).
    #[serde(default)]
    pub audit_last_run_ms: Option<u64>,
    /// The agent itself: its version, start, configuration and reloads.
    #[serde(default)]
    pub agent: AgentInfo,
    /// Which VIPs this LB announces to the routers, and why (`None`: no `announce:`).
    #[serde(default)]
    pub announce: Option<AnnounceStatus>,
    /// Flow-state sync with the other LBs (`None`: no `sync:`).
    #[serde(default)]
    pub sync: Option<SyncStatus>,
    /// When the report was made, in milliseconds since the Unix epoch: rates are the
    /// difference of two reports' counters over the difference of their times.
    #[serde(default)]
    pub at_ms: u64,
    /// Recent health verdicts, backend state changes and table switches, oldest first (at
    /// most `control::timeline::MAX_EVENTS`).
    #[serde(default)]
    pub events: Vec<TimelineEvent>,
}

/// Flow-state sync with the other LBs (see `crate::sync`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncStatus {
    /// The address and port this LB listens on, or why it does not.
    pub listen: String,
    /// Whether it listens (and so sends).
    pub listening: bool,
    pub peers: Vec<SyncPeerStatus>,
    /// Entries sent (each peer's copy counted), datagrams and bytes sent.
    pub sent: u64,
    pub datagrams_sent: u64,
    pub bytes_sent: u64,
    /// Entries received from peers in authentic, fresh datagrams, and of those applied to
    /// the connection table.
    pub received: u64,
    pub applied: u64,
    /// Received entries not applied, by reason (`local_fresher`, `unknown_service`,
    /// `unknown_backend`, `rate_limited`, `map_error`).
    pub rejected: BTreeMap<String, u64>,
    /// Datagrams refused, by reason (`not_a_peer`, `auth`, `replay`, `stale`, ...).
    pub datagrams_rejected: BTreeMap<String, u64>,
    /// Entries this LB placed but did not send, by reason (`rate_limited`, `queue_full`,
    /// `unknown_backend`, `send_error`, `ring_full`).
    pub not_sent: BTreeMap<String, u64>,
    /// Entries the last refresh walk found live and sent again.
    pub last_refresh_entries: u64,
}

/// One other LB as flow-state sync sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncPeerStatus {
    pub addr: std::net::IpAddr,
    /// `up` (an authentic datagram within the last 3 s), `silent` or `never heard`.
    pub state: String,
    /// Milliseconds since its last authentic datagram.
    pub last_heard_ms: Option<u64>,
    /// Its last datagram's receive time minus its send time, in milliseconds (the clocks'
    /// difference included).
    pub lag_ms: Option<i64>,
    pub received: u64,
    pub applied: u64,
    pub rejected: u64,
    pub datagrams_rejected: u64,
}

/// The VIP routes BIRD exports (see `crate::announce`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnounceStatus {
    /// The kernel table holding them.
    pub table: u32,
    pub vips: Vec<VipAnnouncement>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VipAnnouncement {
    pub vip: std::net::IpAddr,
    /// Its route is in the table: BIRD announces it.
    pub announced: bool,
    /// Why it is (or is not).
    pub reason: String,
}

/// One entry of the report's timeline (see `control/timeline.rs`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineEvent {
    /// When it happened, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// `health` (a checker's verdict), `state` (a backend's state changed otherwise:
    /// drained, unresolved, added...), `switch` (a Maglev table switch) or `service`
    /// (added or removed).
    pub kind: String,
    pub service: String,
    pub backend: Option<IpAddr>,
    /// The state before and after (`None`: the backend was not there).
    pub from: Option<String>,
    pub to: Option<String>,
    /// What a verdict's last check saw, what a switch left serving.
    pub detail: String,
}

/// What the agent reports of itself (`xdp_lb_build_info`, `xdp_lb_start_time_seconds`,
/// `xdp_lb_config_info`, `xdp_lb_config_reloads_total`...).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentInfo {
    /// The agent's version (its crate's).
    pub version: String,
    /// When it started, in seconds since the Unix epoch.
    pub started_at_s: u64,
    /// A hash of the configuration file in force (FNV-1a, 64 bits, hex): equal on every LB
    /// running the same file.
    pub config_hash: String,
    /// Reloads by outcome: `applied`, `refused` (nothing changed), `failed` (some changes
    /// failed).
    pub reloads: BTreeMap<String, u64>,
    /// When the last reload was applied, in seconds since the Unix epoch.
    pub last_reload_success_s: Option<u64>,
}

/// The connection table's size. It has one LRU list shared by all CPUs: any CPU can fill
/// the whole table, a flow's entry is found whatever CPU made it, and a full table evicts
/// its least recently used flow whatever CPU made it. The kernel makes exactly the
/// configured number of entries (no rounding to the CPUs).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowTableSize {
    /// `flow_table.size` as configured.
    pub configured: u32,
    /// Entries the kernel made (`bpftool map show`): the most flows the table holds.
    pub entries: u32,
}

impl FlowTableSize {
    pub fn new(configured: u32, entries: u32) -> Self {
        Self {
            configured,
            entries,
        }
    }
}

/// The flow filter: one-byte slots, one per hash of a 5-tuple, set for every entry of the
/// connection table, which a TCP SYN whose slot is clear does not look up. Its walk of the
/// table renews it (and turns it on the first time), so slots of entries gone clear.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowFilterStatus {
    /// The half the packet path reads (1 or 2), or 0: off (every SYN looks the table up).
    pub half: u32,
    /// Slots of each half.
    pub slots: u32,
    /// Slots set in the half read: about the chance a SYN of an unknown flow still looks
    /// the table up, as a fraction of `slots`.
    pub set: u64,
    /// Seconds since the last renewal, and the connection-table entries it walked.
    pub renewed_s_ago: Option<u64>,
    pub renewed_entries: Option<usize>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedCounter {
    pub name: String,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    pub vip: IpAddr,
    pub port: u16,
    pub protocol: String,
    pub vlan: Option<u16>,
    pub maglev_size: u32,
    pub hash: String,
    pub persistence_s: Option<u32>,
    /// Backends in the live tables of its pools.
    pub serving: usize,
    pub packets: u64,
    pub bytes: u64,
    pub backends: Vec<BackendStatus>,
    /// Maglev table switches since the service was set up (each change of who fills its
    /// table is one).
    #[serde(default)]
    pub table_switches: u64,
    /// How long the last measured switch took, in microseconds (switches made by health
    /// verdicts and by control requests that resolve nothing are measured).
    #[serde(default)]
    pub last_switch_us: Option<u64>,
    /// Its pools (its own backends first, as `default`), when it has named pools or
    /// client rules.
    #[serde(default)]
    pub pools: Vec<PoolStatus>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendStatus {
    /// Its id and epoch in the data plane (what connection-table entries name).
    #[serde(default)]
    pub id: u32,
    #[serde(default)]
    pub epoch: u32,
    pub address: IpAddr,
    pub weight: u32,
    /// `up`, `drain` (weight 0, still usable), `down` (health), `unresolved` (no MAC),
    /// `no-slot` (up with a weight, but its pool's Maglev table gave it no slot: it takes
    /// no new flow), or its standby role while it stands in.
    pub state: String,
    /// Slots it holds in its pool's live Maglev table.
    #[serde(default)]
    pub slots: u32,
    pub mac: Option<String>,
    /// The VLAN it is on when not its service's: its frames' outer tag is rewritten to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// Live connection-table entries naming it (idle no longer than `flow_table`'s
    /// timeout).
    pub flows: u64,
    pub packets: u64,
    pub bytes: u64,
    /// Its health checks; `None` when it is not checked.
    #[serde(default)]
    pub health: Option<HealthStatus>,
    /// The pool it serves (`default`: the service's own backends).
    #[serde(default = "default_pool")]
    pub pool: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthStatus {
    /// `primary`, `backup` or `fallback`.
    pub role: String,
    /// `up` or `down`, as its checks decided.
    pub state: String,
    /// `None` until its first check has ended.
    pub last_check: Option<CheckResult>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    pub ok: bool,
    /// What it saw (`HTTP 200`) or why it failed (`connect: connection refused`).
    pub detail: String,
    pub duration_us: u64,
    /// When it ended, RFC 3339 UTC.
    pub at: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookupAnswer {
    pub service: String,
    pub backend: Option<IpAddr>,
    /// `connection table`, `persistence` or `maglev`.
    pub source: String,
    /// The client rule that placed (or would place) the flow, `PREFIX -> pool P` or
    /// `PREFIX -> drop`; `None` when no rule matches (the default pool).
    #[serde(default)]
    pub rule: Option<String>,
    /// The pool the backend was picked from.
    #[serde(default = "default_pool")]
    pub pool: String,
}

/// What `client list` answers: every client rule in force.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientList {
    pub rules: Vec<ClientRuleStatus>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRuleStatus {
    pub service: String,
    pub prefix: String,
    /// The pool its clients go to; `None` for a `drop` rule.
    pub pool: Option<String>,
    /// `yaml` or `run-time` (`xdp-lb client set`, kept across restarts).
    pub origin: String,
}

/// A service's pool as `status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolStatus {
    /// `default` for the service's own backends.
    pub name: String,
    pub maglev_size: u32,
    /// Backends in its live table.
    pub serving: usize,
    /// Client rules sending clients there.
    pub rules: usize,
}

fn default_pool() -> String {
    "default".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_through_json_with_a_command_tag() {
        let req = Request::BackendDrain {
            service: "video-rtmp".into(),
            address: "10.0.0.11".parse().unwrap(),
        };
        let text = serde_json::to_string(&req).unwrap();
        assert_eq!(
            text,
            r#"{"command":"backend_drain","service":"video-rtmp","address":"10.0.0.11"}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), req);
    }

    #[test]
    fn a_report_without_the_newer_fields_still_reads() {
        let old = r#"{"services":[{"name":"s","vip":"10.0.0.100","port":80,"protocol":"tcp","vlan":null,
            "maglev_size":251,"hash":"flow","persistence_s":null,"serving":1,"packets":1,"bytes":2,
            "backends":[{"address":"10.0.0.11","weight":1,"state":"up","mac":null,"flows":0,"packets":1,"bytes":2}]}],
            "verdicts":[],"flow_events":[],"active_flows":0}"#;
        let report: StatusReport = serde_json::from_str(old).unwrap();
        assert_eq!(report.services[0].table_switches, 0);
        assert_eq!(report.services[0].backends[0].health, None);
        assert!(report.notify_runs.is_empty());
    }

    #[test]
    fn an_unknown_field_is_refused_for_every_command() {
        assert_eq!(
            parse_request(r#"{"command":"reload"}"#),
            Ok(Request::Reload)
        );
        assert_eq!(
            parse_request(r#"{"command":"status"}"#),
            Ok(Request::Status)
        );
        for (bad, says) in [
            (r#"{"command":"reload","dry_run":true}"#, "unknown: dry_run"),
            (r#"{"command":"status","service":"x"}"#, "unknown: service"),
            (
                r#"{"command":"backend_drain","service":"s","address":"10.0.0.1","force":1}"#,
                "unknown field `force`",
            ),
            (r#"[{"command":"reload"}]"#, "a JSON object"),
        ] {
            let err = parse_request(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
        // Every field-less variant is listed, so none slips through.
        for command in FIELDLESS_COMMANDS {
            let request = parse_request(&format!(r#"{{"command":"{command}"}}"#)).unwrap();
            assert_eq!(
                serde_json::to_value(&request)
                    .unwrap()
                    .as_object()
                    .unwrap()
                    .len(),
                1
            );
        }
    }

    #[test]
    fn a_malformed_request_is_an_error_not_a_panic() {
        for bad in [
            "",
            "{",
            r#"{"command":"explode"}"#,
            r#"{"command":"backend_drain","service":1}"#,
        ] {
            assert!(serde_json::from_str::<Request>(bad).is_err(), "{bad}");
        }
    }
}
