//! `xdp-lb`: the agent and its command line.

mod ctl;
mod manual;

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    process::ExitCode,
};

use clap::{Parser, Subcommand, ValueEnum};
use xdp_lb::{
    agent::{self, RunOptions},
    config::{self, LiveHost, XdpAttachMode},
    control::protocol::DEFAULT_SOCKET,
    pins::DEFAULT_PIN_DIR,
    runtime::DEFAULT_RUNTIME_FILE,
    simulate,
};

const DEFAULT_CONFIG: &str = "/etc/xdp-lb/xdp-lb.yaml";
/// Where the agent's bookkeeping for the next agent is kept (with the pins, until reboot).
const DEFAULT_STATE_FILE: &str = "/run/xdp-lb/agent-state.json";

/// XDP Layer-4 load balancer: direct server return over Maglev.
///
/// With no subcommand, runs the agent: loads the XDP program, fills its maps from the
/// config, attaches it and runs until SIGINT/SIGTERM, then detaches.
#[derive(Parser, Debug)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// The YAML configuration.
    #[arg(long, short, default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    /// Overrides the config's `xdp_mode`.
    #[arg(long, value_enum)]
    xdp_mode: Option<ModeArg>,
    /// The control socket the subcommands talk to.
    #[arg(long, default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Where run-time changes (`xdp-lb backend ...`) are kept across restarts.
    #[arg(long, default_value = DEFAULT_RUNTIME_FILE)]
    runtime_file: PathBuf,
    /// Where the data plane is pinned, so it outlives the agent (SIGQUIT or kill -9) and
    /// the next agent takes it over.
    #[arg(long, default_value = DEFAULT_PIN_DIR)]
    pin_dir: PathBuf,
    /// Keeps the data plane private to this process: nothing pinned, nothing adopted.
    #[arg(long)]
    no_pin: bool,
    /// Where the agent keeps what the next agent needs to adopt the pinned data plane.
    #[arg(long, default_value = DEFAULT_STATE_FILE)]
    state_file: PathBuf,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs the agent (the same as giving no subcommand).
    Run(RunArgs),
    /// Validates a config and prints the effective config; changes nothing.
    Check {
        /// The YAML configuration.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The YAML configuration (the same as --config).
        #[arg(conflicts_with = "config", value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// Shows how flows would spread over the configured backends (random flows through the
    /// data plane's own hash and Maglev tables), and what share would move if a backend
    /// were removed or added; touches nothing.
    Simulate(SimulateArgs),
    /// The running agent's services, backends, states, flows and counters, like
    /// `ipvsadm -Ln --stats`, after a fresh audit of the data plane: exits with status 3
    /// (after printing the report, `DRIFT:` lines first) when the kernel's maps differ from
    /// what the agent wrote.
    Status {
        /// Prints the report as JSON, for scripts.
        #[arg(long)]
        json: bool,
        /// Redraws every SECONDS (default 2) until interrupted.
        #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "2")]
        watch: Option<f64>,
        #[command(flatten)]
        socket: ctl::SocketArg,
    },
    /// Run-time backend changes (validated first; kept across agent restarts).
    Backend {
        #[command(subcommand)]
        command: ctl::BackendCommand,
        #[command(flatten)]
        socket: ctl::SocketArg,
    },
    /// Run-time client rules: which pool new flows of a client prefix go to, or that they
    /// are refused (validated first; kept across agent restarts).
    Client {
        #[command(subcommand)]
        command: ctl::ClientCommand,
        #[command(flatten)]
        socket: ctl::SocketArg,
    },
    /// Run-time service changes (validated first; kept across agent restarts).
    Service {
        #[command(subcommand)]
        command: ctl::ServiceCommand,
        #[command(flatten)]
        socket: ctl::SocketArg,
    },
    /// Which backend a flow gets now (connection table first, then the client rules and
    /// Maglev).
    Lookup {
        /// The client, as IP:PORT ([IPv6]:PORT).
        client: SocketAddr,
        /// The service, as VIP:PORT.
        vip: SocketAddr,
        #[arg(default_value = "tcp", value_parser = ["tcp", "udp"])]
        protocol: String,
        #[command(flatten)]
        socket: ctl::SocketArg,
    },
    /// Makes the running agent re-read its YAML file (as SIGHUP) and reports the outcome.
    Reload {
        #[command(flatten)]
        socket: ctl::SocketArg,
    },
    /// Detaches and removes everything an agent pinned (its program, maps and links).
    Cleanup {
        /// The pin directory.
        #[arg(long)]
        pin_dir: Option<PathBuf>,
    },
    /// Prints the completion script for SHELL (installed by `cargo xtask install`).
    #[command(hide = true)]
    Completions {
        #[arg(value_enum)]
        shell: manual::Shell,
    },
    /// Prints the man page, xdp-lb(8), as roff (installed by `cargo xtask install`).
    #[command(hide = true)]
    Man,
}

#[derive(clap::Args, Debug)]
struct SimulateArgs {
    /// The YAML configuration (its interfaces need not exist on this host).
    #[arg(long, short, default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    /// Also shows the share of flows that would move if this backend were removed (from
    /// every service that has it); repeatable, each removal on its own.
    #[arg(long, value_name = "ADDR")]
    remove: Vec<IpAddr>,
    /// Also shows the share of flows that would move if this backend (weight 1) were added
    /// to every service of its address family; repeatable, each addition on its own.
    #[arg(long, value_name = "ADDR")]
    add: Vec<IpAddr>,
    /// Random flows per service.
    #[arg(long, default_value_t = simulate::DEFAULT_FLOWS)]
    flows: u32,
    /// Draws the spread and the moves into this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ModeArg {
    /// Driver (native) XDP.
    Native,
    /// Generic (skb) XDP.
    Generic,
}

/// The exit status of a command that only prints.
fn printed(result: std::io::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Exit status for an invalid config (nothing was attached or changed).
const EXIT_BAD_CONFIG: u8 = 2;

fn main() -> ExitCode {
    xdp_lb::logging::init();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Check { config, file }) => check(file.as_deref().unwrap_or(&config)),
        Some(Command::Run(args)) => run(args),
        Some(Command::Simulate(args)) => simulate(args),
        Some(Command::Status {
            json,
            watch,
            socket,
        }) => ctl::status(&socket.socket, json, watch),
        Some(Command::Backend { command, socket }) => ctl::backend(&socket.socket, command),
        Some(Command::Service { command, socket }) => ctl::service(&socket.socket, command),
        Some(Command::Client { command, socket }) => ctl::client(&socket.socket, command),
        Some(Command::Lookup {
            client,
            vip,
            protocol,
            socket,
        }) => ctl::lookup(&socket.socket, client, vip, &protocol),
        Some(Command::Reload { socket }) => ctl::reload(&socket.socket),
        Some(Command::Cleanup { pin_dir }) => ctl::cleanup(pin_dir),
        Some(Command::Completions { shell }) => printed(manual::completions::<Cli>(shell)),
        Some(Command::Man) => printed(manual::man::<Cli>()),
        None => run(cli.run),
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match config::load_file(path, &LiveHost) {
        Ok(file) => {
            print!("{}", config::render_file(&file));
            eprintln!("{}: OK", path.display());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::from(EXIT_BAD_CONFIG)
        }
    }
}

fn simulate(args: SimulateArgs) -> ExitCode {
    let config = match config::load(&args.config, &simulate::AnyHost) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    let opts = simulate::Options {
        flows: args.flows,
        remove: args.remove,
        add: args.add,
        ..simulate::Options::default()
    };
    let spreads = match simulate::simulate(&config, &opts) {
        Ok(spreads) => spreads,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    print!("{}", simulate::render(&spreads));
    if let Some(path) = args.plot {
        if let Err(err) = simulate::plot(&spreads, &path) {
            eprintln!("error: {err:#}");
            return ExitCode::FAILURE;
        }
        eprintln!("wrote {}", path.display());
    }
    ExitCode::SUCCESS
}

fn run(args: RunArgs) -> ExitCode {
    let config = match config::load_file(&args.config, &LiveHost) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("nothing was attached or changed");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    let opts = RunOptions {
        xdp_mode: args.xdp_mode.map(|m| match m {
            ModeArg::Native => XdpAttachMode::Native,
            ModeArg::Generic => XdpAttachMode::Generic,
        }),
        socket: Some(args.socket),
        runtime_file: Some(args.runtime_file),
        pin_dir: (!args.no_pin).then_some(args.pin_dir),
        state_file: Some(args.state_file),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: starting the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(agent::run(config, opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if err.downcast_ref::<agent::Conflict>().is_some() => {
            log::error!("{err:#}");
            ExitCode::from(EXIT_BAD_CONFIG)
        }
        Err(err) => {
            log::error!("{err:#}");
            ExitCode::FAILURE
        }
    }
}
