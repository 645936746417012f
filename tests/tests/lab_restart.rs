//! Restart and upgrade without loss, under traffic: the shipped unit's restart (its signal and
//! commands, run directly: systemd is not PID 1 here) and a
//! new binary taking over (`xlb run --takeover`), then a kill -9; and what the agent tells
//! systemd (Type=notify) on the way.

use std::{
    net::SocketAddr,
    process::Command,
    os::unix::net::UnixDatagram,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context as _, Result};
use nix::sys::signal::Signal;
use xlb_tests::{
    plan, privileged,
    scenario::{web4_config, Serve, SingleNode},
    traffic::{Hammer, HeldConnections},
};

/// `web4` over b1..b3 with a TCP check on each (health must carry over a restart).
fn checked_web4() -> String {
    web4_config(&[(11, 1), (12, 1), (13, 1)]) + "[service.check]\ntype = \"tcp\"\ninterval = \"500ms\"\n"
}

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !ok() {
        ensure!(Instant::now() < deadline, "{what} after {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

#[test]
fn restart_upgrade_and_kill_9_lose_no_connection() -> Result<()> {
    if !privileged("restart_upgrade_and_kill_9_lose_no_connection") {
        return Ok(());
    }
    let mut node = SingleNode::start_with("restart", &checked_web4(), Serve::Http)?;
    let target: SocketAddr = format!("{}:80", plan::VIP4).parse()?;
    let held = HeldConnections::open(&node.client.ns, target, 200)?;
    let chatter = held.chatter(Duration::from_millis(50));
    let hammer = Hammer::start(&node.client.ns, target)?;
    std::thread::sleep(Duration::from_millis(500));

    // 1. What `systemctl restart` does with the shipped unit (systemd is not PID 1 here, so
    //    its commands and signals are run directly): RestartKillSignal, ExecStartPre, ExecStart.
    let unit = xlb_tests::unit::shipped()?;
    let exit = node.lab.signal("xlb", unit.restart_kill_signal)?;
    ensure!(exit.success(), "{:?} is a clean stop: {exit}", unit.restart_kill_signal);
    let log = node.lab.log("xlb");
    ensure!(log.contains("stopped for a restart"), "{log}");
    for pre in &unit.exec_start_pre {
        let out = xlb_tests::run(Command::new("ip").args(["netns", "exec", &node.lb.ns]).arg(&node.xlb).args(pre.args(&node.config)))?;
        ensure!(out.status.success(), "ExecStartPre: {}", String::from_utf8_lossy(&out.stdout));
    }
    let (ns, xlb) = (node.lb.ns.clone(), node.xlb.clone());
    let args = unit.exec_start.args(&node.config);
    node.lab.spawn(&ns, "xlb", &xlb, &args.iter().map(String::as_str).collect::<Vec<_>>())?;
    node.wait_ready(Duration::from_secs(15))?;
    let reload = xlb_tests::run(Command::new("ip").args(["netns", "exec", &ns]).arg(&xlb).args(unit.exec_reload.args(&node.config)))?;
    ensure!(reload.status.success(), "ExecReload: {}", String::from_utf8_lossy(&reload.stderr));
    let status = node.status()?;
    ensure!(status.backends().all(|b| b.health == "up" && b.state == "up"), "health carried over: {status:?}");
    std::thread::sleep(Duration::from_millis(500));

    // 2. An upgrade: another binary started beside the running one takes over.
    let upgraded = node.lab.dir.join("xlb-upgraded");
    std::fs::copy(&node.xlb, &upgraded)?;
    let config = node.config.display().to_string();
    let ns = node.lb.ns.clone();
    node.lab.spawn(&ns, "xlb-upgraded", &upgraded, &["run", "--config", &config, "--takeover"])?;
    wait_until("the old agent stops", Duration::from_secs(15), || !node.lab.running("xlb"))?;
    node.wait_ready(Duration::from_secs(15)).with_context(|| node.lab.log("xlb-upgraded"))?;
    ensure!(node.lab.log("xlb").contains("a successor takes over"), "{}", node.lab.log("xlb"));
    std::thread::sleep(Duration::from_millis(500));

    // 3. kill -9 of the upgraded agent, then a start.
    node.lab.signal("xlb-upgraded", Signal::SIGKILL)?;
    std::thread::sleep(Duration::from_millis(300));
    node.start_agent()?;
    std::thread::sleep(Duration::from_millis(500));

    let (held, exchanges) = chatter.finish();
    let requests = hammer.finish();
    let failed: Vec<_> = requests.iter().filter_map(|(_, r)| r.as_ref().err()).collect();
    eprintln!(
        "restart (SIGUSR2 + start), upgrade (--takeover), kill -9 + start: 200 connections exchanging every 50 ms \
         ({exchanges} exchanges): {} kept, {} moved, {} broken; new connections: {} of {} failed",
        held.kept,
        held.moved.len(),
        held.broken.len(),
        failed.len(),
        requests.len()
    );
    ensure!(held.kept == 200 && held.moved.is_empty() && held.broken.is_empty(), "{held:?}");
    ensure!(failed.is_empty(), "new connections failed: {:?}", &failed[..failed.len().min(5)]);
    ensure!(requests.len() > 100, "the stream of new connections ran: {}", requests.len());

    // `systemctl stop`: KillSignal is a real stop: detached, pins gone.
    let exit = node.lab.signal("xlb", unit.kill_signal)?;
    ensure!(exit.success(), "{:?}: {exit}", unit.kill_signal);
    let link = xlb_tests::run(Command::new("ip").args(["-n", &node.lb.ns, "-d", "link", "show", "eth0"]))?;
    ensure!(!String::from_utf8_lossy(&link.stdout).contains("prog/xdp"), "detached on stop");
    ensure!(!node.pins.exists(), "pins removed on stop: {}", node.pins.display());
    Ok(())
}

/// Reads what the agent sent to `NOTIFY_SOCKET` until `want` arrives.
fn expect_notification(socket: &UnixDatagram, want: &str, seen: &mut Vec<String>) -> Result<()> {
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        ensure!(Instant::now() < deadline, "no {want} from the agent; got {seen:?}");
        match socket.recv(&mut buf) {
            Ok(n) => {
                let message = String::from_utf8_lossy(&buf[..n]).into_owned();
                let found = message.lines().any(|l| l == want);
                seen.push(message);
                if found {
                    return Ok(());
                }
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

#[test]
fn the_agent_tells_systemd_when_it_is_ready_reloading_and_stopping() -> Result<()> {
    if !privileged("the_agent_tells_systemd_when_it_is_ready_reloading_and_stopping") {
        return Ok(());
    }
    let mut node = SingleNode::start_with("notify", &checked_web4(), Serve::Http)?;
    node.lab.signal("xlb", Signal::SIGTERM)?;
    let path = node.lab.dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path)?;
    socket.set_read_timeout(Some(Duration::from_millis(200)))?;
    let (ns, xlb, config) = (node.lb.ns.clone(), node.xlb.clone(), node.config.display().to_string());
    let notify = path.display().to_string();
    node.lab.spawn_with_env(&ns, "xlb", &xlb, &["run", "--config", &config], &[("NOTIFY_SOCKET", &notify)])?;
    let mut seen = Vec::new();
    expect_notification(&socket, "READY=1", &mut seen)?;
    // Ready means attached, every map written, the control socket answering.
    let status = node.status().context("the control socket answers once READY=1 is sent")?;
    ensure!(!status.interfaces.is_empty() && status.services.len() == 1, "{status:?}");
    let link = xlb_tests::run(std::process::Command::new("ip").args(["-n", &ns, "-d", "link", "show", "eth0"]))?;
    ensure!(String::from_utf8_lossy(&link.stdout).contains("xdp"), "the program is attached when READY=1 is sent");

    node.lab.notify("xlb", Signal::SIGHUP)?;
    expect_notification(&socket, "RELOADING=1", &mut seen)?;
    expect_notification(&socket, "READY=1", &mut seen)?;

    // SIGUSR1: the status in the log, like keepalived's data dump.
    node.lab.notify("xlb", Signal::SIGUSR1)?;
    wait_until("a status dump in the log", Duration::from_secs(5), || node.lab.log("xlb").contains("status: "))?;
    ensure!(node.lab.running("xlb"), "SIGUSR1 leaves the agent running");

    node.lab.notify("xlb", Signal::SIGTERM)?;
    expect_notification(&socket, "STOPPING=1", &mut seen)?;
    Ok(())
}
