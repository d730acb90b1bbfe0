//! The control surface: a Unix socket speaking JSON lines (`protocol`), served by the agent
//! (`server`), spoken by the `xdp-lb` subcommands (`client`), and the status table (`view`).

pub mod client;
pub mod protocol;
pub mod report;
pub mod server;
pub mod view;
