//! `xlb`: the agent (`xlb run`) and the tools around it.

use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use lb_userspace::{
    agent::Agent,
    config::{self, Severity},
    control,
    net::Net,
};

#[derive(Parser)]
#[command(name = "xlb", version, about = "XDP layer-4 load balancer (direct routing, Maglev)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent: load and attach the XDP program, keep its maps in step with the
    /// configuration and the neighbour table, until SIGINT or SIGTERM.
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a configuration file and report every problem as file:line: message (like
    /// `keepalived -t`). Exits non-zero if there is an error.
    CheckConfig {
        file: PathBuf,
        /// Only check the file itself, not that its interfaces and backends fit this host.
        #[arg(long)]
        offline: bool,
    },
    /// Show services, backends and counters of the running agent (like `ipvsadm -ln --stats`).
    Stats {
        /// Control socket of the agent.
        #[arg(long, default_value = "/run/xlb/xlb.sock")]
        socket: PathBuf,
        /// Take the control socket from this configuration file instead.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Print the raw JSON status.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match Cli::parse().command {
        Command::Run { config } => exit(run(config)),
        Command::CheckConfig { file, offline } => check_config(file, offline),
        Command::Stats { socket, config, json } => exit(stats(socket, config, json)),
    }
}

fn exit(result: Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xlb: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")
}

fn load_config(path: &PathBuf) -> Result<config::Config> {
    match config::load(path) {
        Ok((cfg, warnings)) => {
            for w in warnings {
                tracing::warn!("{w}");
            }
            Ok(cfg)
        }
        Err(e) => anyhow::bail!("invalid configuration:\n{e}"),
    }
}

fn run(config: PathBuf) -> Result<()> {
    let cfg = load_config(&config)?;
    runtime()?.block_on(async {
        let agent = Agent::start(cfg).await.with_context(|| format!("starting with {}", config.display()))?;
        agent.run(shutdown_signal()).await.context("running")?;
        Ok(())
    })
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = int.recv() => tracing::info!("SIGINT: stopping"),
    }
}

fn check_config(file: PathBuf, offline: bool) -> ExitCode {
    let (cfg, mut diagnostics) = match config::load(&file) {
        Ok(ok) => ok,
        Err(e) => {
            for d in &e.diagnostics {
                println!("{d}");
            }
            return ExitCode::FAILURE;
        }
    };
    if !offline {
        let host = runtime().and_then(|rt| {
            rt.block_on(async { Ok(Net::new()?.interfaces().await?) })
        });
        match host {
            Ok(ifaces) => diagnostics.extend(config::check_environment(&cfg, &ifaces)),
            Err(e) => {
                println!("{}: cannot read this host's interfaces: {e:#}", file.display());
                return ExitCode::FAILURE;
            }
        }
    }
    for d in &diagnostics {
        println!("{d}");
    }
    if diagnostics.iter().any(|d| d.severity == Severity::Error) {
        return ExitCode::FAILURE;
    }
    println!("{}: configuration OK ({} services)", file.display(), cfg.services.len());
    ExitCode::SUCCESS
}

fn stats(socket: PathBuf, config: Option<PathBuf>, json: bool) -> Result<()> {
    let socket = match config {
        Some(path) => load_config(&path)?.agent.control_socket,
        None => socket,
    };
    let status = control::status(&socket)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", status.render());
    }
    Ok(())
}
