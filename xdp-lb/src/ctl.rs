//! The subcommands that talk to a running agent over its control socket, and `cleanup`.

use std::{
    io::Write as _,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use clap::Subcommand;
use xdp_lb::{
    control::{
        client::call,
        protocol::{DEFAULT_SOCKET, Request, Response},
        view,
    },
    pins::{DEFAULT_PIN_DIR, PinDir},
};

#[derive(clap::Args, Debug)]
pub struct SocketArg {
    /// The agent's control socket.
    #[arg(long, default_value = DEFAULT_SOCKET, global = true)]
    pub socket: PathBuf,
}

#[derive(Subcommand, Debug)]
pub enum BackendCommand {
    /// Adds a backend to a running service (kept across agent restarts).
    Add {
        service: String,
        address: IpAddr,
        #[arg(long, default_value_t = 1)]
        weight: u32,
        /// Its MAC; resolved from the neighbour table when not given.
        #[arg(long)]
        mac: Option<String>,
        /// The VLAN it is on, when not the service's: its frames' outer VLAN tag is
        /// rewritten to it (a service bound to a VLAN only).
        #[arg(long)]
        vlan: Option<u16>,
    },
    /// Removes a backend: its flows are balanced afresh.
    Remove { service: String, address: IpAddr },
    /// Weight 0: no new flows; the ones it has stay until they end.
    Drain { service: String, address: IpAddr },
    /// Undoes `drain` (and any run-time weight): back to the configured weight.
    Enable { service: String, address: IpAddr },
    /// Sets a backend's weight (0..=1000).
    Weight {
        service: String,
        address: IpAddr,
        weight: u32,
    },
}

#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Sends new flows of the clients in PREFIX (ADDRESS/LENGTH, or one address) to a pool
    /// of a service, or refuses them; flows already running keep their server. Kept across
    /// agent restarts.
    Set {
        prefix: String,
        #[arg(long)]
        service: String,
        /// The pool (`default`: the service's own backends).
        #[arg(long, conflicts_with = "drop", required_unless_present = "drop")]
        pool: Option<String>,
        /// Refuses the clients: their frames are dropped.
        #[arg(long)]
        drop: bool,
    },
    /// Removes the rule for PREFIX: its clients follow the next longest rule, or go to the
    /// service's own backends.
    Remove {
        prefix: String,
        #[arg(long)]
        service: String,
    },
    /// The client rules in force, with where each comes from (the YAML or a run-time change).
    List {
        #[arg(long)]
        service: Option<String>,
        /// Prints the rules as JSON, for scripts.
        #[arg(long)]
        json: bool,
    },
}

/// Exit status of `status` when the data plane differs from the agent's intent (the report
/// is printed all the same).
pub const EXIT_DRIFT: u8 = 3;

/// Sends a request: the agent's answer, or (reported on stderr) the exit status for a
/// refusal or a failure to ask.
fn ask(socket: &Path, request: &Request) -> Result<Response, ExitCode> {
    match call(socket, request) {
        Ok(Response::Error { message }) => {
            eprintln!("error: {message}");
            Err(ExitCode::from(1))
        }
        Ok(response) => Ok(response),
        Err(err) => {
            eprintln!("error: {err:#}");
            Err(ExitCode::from(1))
        }
    }
}

/// An answer of the wrong kind (an agent of another version).
fn unexpected(response: Response) -> ExitCode {
    eprintln!("error: unexpected answer {response:?}");
    ExitCode::from(1)
}

fn answer(socket: &Path, request: &Request) -> ExitCode {
    match ask(socket, request) {
        Ok(Response::Ok { message }) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        Ok(other) => unexpected(other),
        Err(code) => code,
    }
}

pub fn backend(socket: &Path, command: BackendCommand) -> ExitCode {
    let request = match command {
        BackendCommand::Add {
            service,
            address,
            weight,
            mac,
            vlan,
        } => Request::BackendAdd {
            service,
            address,
            weight,
            mac,
            vlan,
        },
        BackendCommand::Remove { service, address } => Request::BackendRemove { service, address },
        BackendCommand::Drain { service, address } => Request::BackendDrain { service, address },
        BackendCommand::Enable { service, address } => Request::BackendEnable { service, address },
        BackendCommand::Weight {
            service,
            address,
            weight,
        } => Request::BackendWeight {
            service,
            address,
            weight,
        },
    };
    answer(socket, &request)
}

pub fn client(socket: &Path, command: ClientCommand) -> ExitCode {
    let (service, json) = match command {
        ClientCommand::Set {
            prefix,
            service,
            pool,
            drop,
        } => {
            return answer(
                socket,
                &Request::ClientSet {
                    service,
                    prefix,
                    pool,
                    drop,
                },
            );
        }
        ClientCommand::Remove { prefix, service } => {
            return answer(socket, &Request::ClientRemove { service, prefix });
        }
        ClientCommand::List { service, json } => (service, json),
    };
    let list = match ask(socket, &Request::ClientList { service }) {
        Ok(Response::Clients(list)) => list,
        Ok(other) => {
            return unexpected(other);
        }
        Err(code) => {
            return code;
        }
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&list).unwrap_or_default()
        );
        return ExitCode::SUCCESS;
    }
    println!("{:<24} {:<44} {:<16} Origin", "Service", "Prefix", "Pool");
    for rule in &list.rules {
        let pool = rule.pool.as_deref().unwrap_or("(drop)");
        println!(
            "{:<24} {:<44} {:<16} {}",
            rule.service, rule.prefix, pool, rule.origin
        );
    }
    ExitCode::SUCCESS
}

#[derive(Subcommand, Debug)]
pub enum ServiceCommand {
    /// Adds a service described in FILE (`-`: standard input): one item of `services:` in
    /// the YAML format, health checks, pools and all. Validated as the YAML is; kept across
    /// agent restarts.
    Add { file: PathBuf },
    /// Removes a service: its frames are the LB host's again.
    Remove { service: String },
}

pub fn service(socket: &Path, command: ServiceCommand) -> ExitCode {
    let request = match command {
        ServiceCommand::Add { file } => {
            // The YAML goes in one control request: nothing longer can be sent.
            let max = xdp_lb::control::server::MAX_REQUEST as u64;
            let bytes = if file.as_os_str() == "-" {
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(
                    &mut std::io::Read::take(std::io::stdin(), max + 1),
                    &mut bytes,
                )
                .map_err(|e| format!("cannot be read: {e}"))
                .and_then(|_| {
                    if bytes.len() as u64 > max {
                        Err(format!("is larger than {max} bytes"))
                    } else {
                        Ok(bytes)
                    }
                })
            } else {
                xdp_lb::files::read_regular(&file, max)
            };
            let yaml = bytes
                .and_then(|b| String::from_utf8(b).map_err(|_| "is not UTF-8 text".to_owned()));
            match yaml {
                Ok(yaml) => Request::ServiceAdd { yaml },
                Err(err) => {
                    let name = if file.as_os_str() == "-" {
                        "standard input".to_owned()
                    } else {
                        file.display().to_string()
                    };
                    eprintln!(
                        "error: {name} {err} (a service's YAML must fit in one control request)"
                    );
                    return ExitCode::from(1);
                }
            }
        }
        ServiceCommand::Remove { service } => Request::ServiceRemove { service },
    };
    answer(socket, &request)
}

pub fn reload(socket: &Path) -> ExitCode {
    answer(socket, &Request::Reload)
}

pub fn status(socket: &Path, json: bool, watch: Option<f64>) -> ExitCode {
    loop {
        let report = match ask(socket, &Request::Status) {
            Ok(Response::Status(report)) => report,
            Ok(other) => {
                return unexpected(other);
            }
            Err(code) => {
                return code;
            }
        };
        let text = if json {
            serde_json::to_string_pretty(&report).unwrap_or_default() + "\n"
        } else {
            view::render(&report)
        };
        let Some(seconds) = watch else {
            print!("{text}");
            if report.drift.is_empty() {
                return ExitCode::SUCCESS;
            }
            return ExitCode::from(EXIT_DRIFT);
        };
        // Clear the screen and redraw, as `watch` does.
        print!("\x1b[2J\x1b[H{text}");
        let _ = std::io::stdout().flush();
        std::thread::sleep(Duration::from_secs_f64(seconds.clamp(0.1, 3600.0)));
    }
}

pub fn lookup(socket: &Path, client: SocketAddr, vip: SocketAddr, protocol: &str) -> ExitCode {
    match ask(
        socket,
        &Request::Lookup {
            client,
            vip,
            protocol: protocol.to_owned(),
        },
    ) {
        Ok(Response::Lookup(a)) => {
            let rule = a.rule.as_deref().map_or_else(
                || "no client rule".to_owned(),
                |r| format!("client rule {r}"),
            );
            match a.backend {
                Some(b) => println!(
                    "{client} -> {vip}/{protocol}: {b} (service {}, pool {}, {rule}, from the {})",
                    a.service, a.pool, a.source
                ),
                None if a.rule.as_deref().is_some_and(|r| r.ends_with("-> drop")) => {
                    println!(
                        "{client} -> {vip}/{protocol}: dropped (service {}, {rule})",
                        a.service
                    )
                }
                None => println!(
                    "{client} -> {vip}/{protocol}: no backend (service {}, pool {} has none usable, {rule})",
                    a.service, a.pool
                ),
            }
            ExitCode::SUCCESS
        }
        Ok(other) => unexpected(other),
        Err(code) => code,
    }
}

/// Detaches and removes everything a (running or dead) agent pinned.
pub fn cleanup(pin_dir: Option<PathBuf>) -> ExitCode {
    let pins = PinDir::new(pin_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_PIN_DIR)));
    let links = pins.pinned_links();
    match pins.remove_all() {
        Ok(removed) if removed.is_empty() => {
            println!("nothing pinned under {}", pins.root().display());
            ExitCode::SUCCESS
        }
        Ok(removed) => {
            for path in &removed {
                println!("removed {}", path.display());
            }
            if !links.is_empty() {
                println!(
                    "detached from {} (once the agent, if one still runs, exits)",
                    links.join(", ")
                );
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(1)
        }
    }
}
