//! The command line of `xlb`, apart from what each command does (src/main.rs), so that
//! man pages and shell completions are generated from the same definition.

use std::{net::IpAddr, path::PathBuf};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xlb", version, about = "XDP layer-4 load balancer (direct routing, Maglev)")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the agent: load and attach the XDP program, keep its maps in step with the
    /// configuration and the neighbour table. SIGTERM or SIGINT stop it and detach; SIGUSR2
    /// stops it for a restart (the program forwards until the next agent adopts it); SIGHUP
    /// reloads; SIGUSR1 writes the status to the log.
    Run {
        #[arg(long, short)]
        config: PathBuf,
        #[command(flatten)]
        input: Input,
        /// Take over from an agent already running with the same control socket (an upgrade:
        /// start the new binary with this): it stops for a restart, its program forwarding
        /// until this agent adopts the pinned maps.
        #[arg(long)]
        takeover: bool,
    },
    /// Check a configuration file and report every problem as file:line: message (like
    /// `keepalived -t`). Exits non-zero if there is an error.
    CheckConfig {
        file: PathBuf,
        #[command(flatten)]
        input: Input,
        /// Only check the file itself, not that its interfaces and backends fit this host.
        #[arg(long)]
        offline: bool,
        /// Also print each service's Maglev table fingerprint and each backend's share of it.
        /// Nodes given the same backends and weights print the same fingerprint, whatever the
        /// order of their files: compare them across the nodes of a cluster.
        #[arg(long)]
        tables: bool,
    },
    /// Print the xlb TOML a keepalived.conf converts to (what `xlb run` runs from it), with
    /// comments where the mapping is not one to one; its warnings and errors go to stderr as
    /// file:line: message. Exits non-zero, printing no TOML, if there is an error.
    Convert {
        file: PathBuf,
        #[command(flatten)]
        input: Input,
    },
    /// Show services, backends and counters of the running agent (like `ipvsadm -ln --stats`).
    Stats {
        #[command(flatten)]
        agent: AgentSocket,
        /// Print the raw JSON status.
        #[arg(long)]
        json: bool,
    },
    /// Reload the configuration file (like SIGHUP): checked as check-config does; on any
    /// error nothing changes and the errors are printed. Flows of backends that stay keep
    /// their backend; flows of removed backends end.
    Reload {
        #[command(flatten)]
        agent: AgentSocket,
    },
    /// Change a backend at run time (like `ipvsadm -a/-d/-e`): at once, kept across restarts
    /// and reloads until the file changes that backend; `--save` writes it into the file.
    Backend {
        #[command(subcommand)]
        action: BackendAction,
    },
    /// Drain this node of a BGP scale-out (`[announce]`): withdraw every VIP, keep forwarding
    /// until the router has moved the flows away (no VIP packet for `drain_quiet`, at most
    /// `drain_timeout`), then stop as SIGTERM does. Returns once the agent has stopped.
    DrainNode {
        #[command(flatten)]
        agent: AgentSocket,
        /// How long to wait for the agent to stop: "30s", "5m", ...
        #[arg(long, default_value = "5m", value_parser = crate::config::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Add or remove a service at run time (like `ipvsadm -A/-D`).
    Service {
        #[command(subcommand)]
        action: ServiceAction,
    },
}

/// How the configuration file is read: TOML or keepalived.conf.
#[derive(clap::Args, Clone, Default)]
pub struct Input {
    /// The file's format; without it, its content decides (a keepalived.conf starts with
    /// keywords and braces, a TOML file with [tables] and key = value).
    #[arg(long, value_enum)]
    pub format: Option<FileFormat>,
    /// For a keepalived.conf: a TOML file with the [agent] table it lacks (interfaces,
    /// xdp_mode, pin_path, control_socket, ...). Without it, interfaces are those of the
    /// vrrp_instances and the rest xlb's defaults.
    #[arg(long, value_name = "FILE")]
    pub agent_config: Option<PathBuf>,
}

/// `--format`.
#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum FileFormat {
    Toml,
    Keepalived,
}

impl From<Input> for crate::config::ReadAs {
    fn from(input: Input) -> Self {
        let format = input.format.map(|f| match f {
            FileFormat::Toml => crate::config::Format::Toml,
            FileFormat::Keepalived => crate::config::Format::Keepalived,
        });
        crate::config::ReadAs { format, agent_config: input.agent_config }
    }
}

/// Where the running agent listens.
#[derive(clap::Args)]
pub struct AgentSocket {
    /// Control socket of the agent.
    #[arg(long, default_value = "/run/xlb/xlb.sock")]
    pub socket: PathBuf,
    /// Take the control socket from this configuration file instead.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}


/// The backend a runtime change is about, and where it goes.
#[derive(clap::Args)]
pub struct BackendRef {
    #[command(flatten)]
    pub agent: AgentSocket,
    /// Also write the change into the configuration file (comments and layout kept).
    #[arg(long)]
    pub save: bool,
    /// The service's name.
    pub service: String,
    /// The backend's address.
    pub address: IpAddr,
}

#[derive(Subcommand)]
pub enum BackendAction {
    /// Add a backend to a service.
    Add {
        #[command(flatten)]
        backend: BackendRef,
        #[arg(long, default_value_t = 1)]
        weight: u32,
    },
    /// Remove a backend: its established flows end.
    Remove {
        #[command(flatten)]
        backend: BackendRef,
    },
    /// Set a backend's weight. Only flows whose table entries change move; established flows
    /// stay.
    Weight {
        #[command(flatten)]
        backend: BackendRef,
        weight: u32,
    },
    /// Drain a backend: weight 0, no new flows, established flows stay until they end.
    Drain {
        #[command(flatten)]
        backend: BackendRef,
        /// Return once the backend has no flow entry left (its flows reset, finished, or
        /// went idle past the flow timeouts); exit code 1 if some are left at --timeout.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits: "30s", "5m", ...
        #[arg(long, default_value = "5m", value_parser = crate::config::parse_duration, requires = "wait")]
        timeout: std::time::Duration,
    },
    /// End a drain: the weight before it applies again.
    Enable {
        #[command(flatten)]
        backend: BackendRef,
    },
}

#[derive(Subcommand)]
pub enum ServiceAction {
    /// Add a service (checked like one in the file).
    Add {
        #[command(flatten)]
        agent: AgentSocket,
        /// Also write the change into the configuration file.
        #[arg(long)]
        save: bool,
        name: String,
        #[arg(long)]
        vip: IpAddr,
        #[arg(long)]
        port: u16,
        #[arg(long, default_value = "tcp")]
        protocol: String,
        /// A backend (repeat for more), weight 1.
        #[arg(long = "backend")]
        backends: Vec<IpAddr>,
    },
    /// Remove a service and its backends: their flows end.
    Remove {
        #[command(flatten)]
        agent: AgentSocket,
        #[arg(long)]
        save: bool,
        name: String,
    },
}
