//! `xlb`: the agent (`xlb run`) and the tools around it.

use std::{net::IpAddr, path::PathBuf, process::ExitCode};

use anyhow::{Context as _, Result};
use clap::Parser as _;
use lb_userspace::{
    agent::Agent,
    cli::{AgentSocket, Cli, Command},
    config::{self, Severity},
    control::{self, Render as _},
    model::{Model, Slots},
    net::Net,
};

/// Where the running agent listens: `--socket`, or the control socket of `--config`.
fn socket_path(agent: AgentSocket) -> Result<PathBuf> {
    Ok(match agent.config {
        Some(path) => load_config(&path)?.agent.control_socket,
        None => agent.socket,
    })
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
        Command::CheckConfig { file, offline, tables } => check_config(file, offline, tables),
        Command::Stats { agent, json } => exit(stats(agent, json)),
        Command::Weight { agent, service, backend, weight } => exit(set_weight(agent, service, backend, weight)),
        Command::Drain { agent, service, backend } => exit(set_weight(agent, service, backend, 0)),
        Command::Reload { agent } => exit(reload(agent)),
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

/// Two workers: health checks run on their own task and keep their timetable while the
/// agent's loop is busy (a flow-table purge, say).
fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn load_config(path: &std::path::Path) -> Result<config::Config> {
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

fn check_config(file: PathBuf, offline: bool, tables: bool) -> ExitCode {
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
    if tables {
        print_tables(&cfg);
    }
    ExitCode::SUCCESS
}

/// One line per service: its table's fingerprint and each backend's share of the slots.
fn print_tables(cfg: &config::Config) {
    let model = match Model::new(cfg, &Slots::default()) {
        Ok(m) => m,
        Err(e) => return println!("tables: {e}"),
    };
    for svc in &model.services {
        let t = model.table_summary(svc);
        let shares: Vec<String> = t
            .shares
            .iter()
            .map(|(address, n)| format!("{address} {:.2}%", *n as f64 * 100.0 / f64::from(t.slots)))
            .collect();
        println!("table {}: fingerprint {:08x}, {} slots: {}", svc.name, t.fingerprint, t.slots, shares.join(", "));
    }
}

fn set_weight(agent: AgentSocket, service: String, backend: IpAddr, weight: u32) -> Result<()> {
    let message = control::command(&socket_path(agent)?, &control::Request::SetWeight { service, backend, weight })?;
    println!("{message}");
    Ok(())
}

fn reload(agent: AgentSocket) -> Result<()> {
    println!("{}", control::command(&socket_path(agent)?, &control::Request::Reload)?);
    Ok(())
}

fn stats(agent: AgentSocket, json: bool) -> Result<()> {
    let status = control::status(&socket_path(agent)?)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", status.render());
    }
    Ok(())
}
