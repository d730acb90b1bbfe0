//! The control surface: a Unix socket speaking JSON lines (`protocol`), served by the agent
//! (`server`), spoken by the `xdp-lb` subcommands (`client`), and the status table (`view`).
//! The status report (`report`) also feeds the metrics and the web console; `switches` times
//! table switches, `timeline` keeps recent events.

pub mod census;
pub mod client;
pub mod protocol;
pub mod report;
pub mod server;
pub mod switches;
pub mod timeline;
pub mod view;
