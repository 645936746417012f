//! `xlb`: the agent (`xlb run`) and the tools around it.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use clap::Parser as _;
use lb_userspace::{
    agent::{Agent, Stop},
    cli::{AgentSocket, BackendAction, Cli, Command, Input, ServiceAction},
    config::edit::Change,
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
    lb_userspace::logging::init();
    match Cli::parse().command {
        Command::Run { config, input, takeover } => exit(run(config, input, takeover)),
        Command::CheckConfig { file, input, offline, tables } => check_config(file, input, offline, tables),
        Command::Convert { file, input } => convert(file, input),
        Command::Stats { agent, json } => exit(stats(agent, json)),
        Command::Backend { action } => exit(backend_change(action)),
        Command::Service { action } => exit(service_change(action)),
        Command::Reload { agent } => exit(reload(agent)),
        Command::DrainNode { agent, timeout } => exit(drain_node(agent, timeout)),
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
    load_config_as(path, Input::default())
}

/// The configuration at `path`, read as `input` says (TOML or keepalived.conf); its warnings
/// are logged.
fn load_config_as(path: &std::path::Path, input: Input) -> Result<config::Config> {
    match config::load_as(path, &input.into()) {
        Ok(loaded) => {
            for w in loaded.warnings {
                tracing::warn!("{w}");
            }
            Ok(loaded.config)
        }
        Err(e) => anyhow::bail!("invalid configuration:\n{e}"),
    }
}

fn run(config: PathBuf, input: Input, takeover: bool) -> Result<()> {
    let cfg = load_config_as(&config, input)?;
    runtime()?.block_on(async {
        // Before anything else: a signal from now on stops the agent as it says.
        let stop = stop_signals().context("installing signal handlers")?;
        if takeover {
            take_over(&cfg.agent.control_socket)?;
        }
        let agent = Agent::start(cfg).await.with_context(|| format!("starting with {}", config.display()))?;
        agent.run(stop).await.context("running")?;
        Ok(())
    })
}

/// Asks the agent answering on `socket` to stop for a successor, and waits until it is gone
/// (at most 30 s). Its program goes on forwarding meanwhile.
fn take_over(socket: &std::path::Path) -> Result<()> {
    if control::ensure_free(socket).is_ok() {
        tracing::info!("--takeover: no agent answers on {}, starting afresh", socket.display());
        return Ok(());
    }
    let message = control::command(socket, &control::Request::Handover)?;
    tracing::info!("--takeover: {message}");
    wait_gone(socket, Duration::from_secs(30)).context("the handover")?;
    Ok(())
}

/// Waits until the agent on `socket` has stopped: it removes its socket last, once it has
/// (after a VRRP handover or a drain, say).
fn wait_gone(socket: &Path, timeout: Duration) -> Result<Duration> {
    let started = Instant::now();
    while socket.exists() {
        if started.elapsed() > timeout {
            bail!("the agent on {} did not stop within {timeout:?}", socket.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(started.elapsed())
}

/// `xlb drain-node`: the agent withdraws its VIPs and stops once the router has moved the flows
/// away; this waits for that.
fn drain_node(agent: AgentSocket, timeout: Duration) -> Result<()> {
    let socket = socket_path(agent)?;
    println!("{}", control::command(&socket, &control::Request::DrainNode)?);
    let took = wait_gone(&socket, timeout)?;
    println!("drained: the agent stopped after {:.1} s", took.as_secs_f64());
    Ok(())
}

/// SIGTERM, SIGINT and SIGQUIT stop for good; SIGUSR2 (the unit's RestartKillSignal) stops for a
/// restart, leaving the program forwarding for the next agent.
fn stop_signals() -> std::io::Result<impl std::future::Future<Output = Stop>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut quit = signal(SignalKind::quit())?;
    let mut usr2 = signal(SignalKind::user_defined2())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: stopping"); Stop::Full }
            _ = int.recv() => { tracing::info!("SIGINT: stopping"); Stop::Full }
            _ = quit.recv() => { tracing::info!("SIGQUIT: stopping"); Stop::Full }
            _ = usr2.recv() => { tracing::info!("SIGUSR2: stopping for a restart"); Stop::Restart }
        }
    })
}

fn check_config(file: PathBuf, input: Input, offline: bool, tables: bool) -> ExitCode {
    let (cfg, mut diagnostics) = match config::load_as(&file, &input.into()) {
        Ok(loaded) => (loaded.config, loaded.warnings),
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

/// `xlb convert`: the TOML on stdout, the diagnostics on stderr; nothing on stdout after an
/// error.
fn convert(file: PathBuf, input: Input) -> ExitCode {
    match config::load_as(&file, &input.into()) {
        Ok(loaded) => {
            for d in &loaded.warnings {
                eprintln!("{d}");
            }
            print!("{}", loaded.toml);
            ExitCode::SUCCESS
        }
        Err(e) => {
            for d in &e.diagnostics {
                eprintln!("{d}");
            }
            ExitCode::FAILURE
        }
    }
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

fn backend_change(action: BackendAction) -> Result<()> {
    let (backend, change) = match action {
        BackendAction::Add { backend, weight } => {
            let change = Change::BackendAdd { service: backend.service.clone(), address: backend.address, weight };
            (backend, change)
        }
        BackendAction::Remove { backend } => {
            let change = Change::BackendRemove { service: backend.service.clone(), address: backend.address };
            (backend, change)
        }
        BackendAction::Weight { backend, weight } => {
            let change = Change::BackendWeight { service: backend.service.clone(), address: backend.address, weight };
            (backend, change)
        }
        BackendAction::Drain { backend, wait, timeout } => {
            let change = Change::BackendDrain { service: backend.service.clone(), address: backend.address };
            let socket = socket_path(backend.agent)?;
            println!("{}", control::command(&socket, &control::Request::Change { change, save: backend.save })?);
            return if wait { wait_for_drain(&socket, &backend.service, backend.address, timeout) } else { Ok(()) };
        }
        BackendAction::Enable { backend } => {
            let change = Change::BackendEnable { service: backend.service.clone(), address: backend.address };
            (backend, change)
        }
    };
    send_change(backend.agent, change, backend.save)
}

/// Polls the agent until the backend has no flow entry left, or `timeout` passed (an error
/// then, saying how many are left).
fn wait_for_drain(socket: &Path, service: &str, address: IpAddr, timeout: Duration) -> Result<()> {
    let started = Instant::now();
    let mut last = None;
    loop {
        let status = control::status(socket)?;
        let svc = status.services.iter().find(|s| s.name == service).with_context(|| format!("service \"{service}\" is gone"))?;
        let backend = svc
            .backends
            .iter()
            .find(|b| b.address.parse::<IpAddr>().ok() == Some(address))
            .with_context(|| format!("backend {address} is no longer in service \"{service}\""))?;
        let flows = backend.flows.context("the agent does not count flows per backend (its flow scanner is not running)")?;
        if flows == 0 {
            println!("{service} {address}: drained, no flows left ({:.1} s)", started.elapsed().as_secs_f64());
            return Ok(());
        }
        if last != Some(flows) {
            println!("{service} {address}: {flows} flows left");
            last = Some(flows);
        }
        if started.elapsed() >= timeout {
            bail!("{service} {address}: {flows} flows left after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn service_change(action: ServiceAction) -> Result<()> {
    match action {
        ServiceAction::Add { agent, save, name, vip, port, protocol, backends } => {
            send_change(agent, Change::ServiceAdd { name, vip, port, protocol, backends }, save)
        }
        ServiceAction::Remove { agent, save, name } => send_change(agent, Change::ServiceRemove { name }, save),
    }
}

fn send_change(agent: AgentSocket, change: Change, save: bool) -> Result<()> {
    println!("{}", control::command(&socket_path(agent)?, &control::Request::Change { change, save })?);
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
