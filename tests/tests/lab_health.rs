//! Health checks in the lab: three backends serving HTTP, a client requesting without pause,
//! and backends failing in the ways real ones do.

use std::{
    net::SocketAddr,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use lb_common::status::{BackendStatus, Status};
use xlb_tests::{
    in_netns, plan, privileged, run,
    scenario::{lab_agent_section, Serve, SingleNode},
    traffic::{self, Hammer, HttpServer, KeepAlive},
};

const INTERVAL: Duration = Duration::from_millis(300);
const TIMEOUT: Duration = Duration::from_millis(200);
const FALL: u32 = 3;
const RISE: u32 = 2;
/// Polling the agent's status adds a little to what we measure.
const SLACK: Duration = Duration::from_millis(250);

fn config(service_keys: &str, check: &str) -> String {
    format!(
        r#"{agent}
[[service]]
name = "web4"
vip = "{vip}"
port = 80
{service_keys}
[service.check]
{check}
interval = "{interval}ms"
fast_interval = "100ms"
timeout = "{timeout}ms"
rise = {RISE}
fall = {FALL}

[[service.backend]]
address = "203.0.113.11"
[[service.backend]]
address = "203.0.113.12"
[[service.backend]]
address = "203.0.113.13"
"#,
        agent = lab_agent_section(),
        vip = plan::VIP4,
        interval = INTERVAL.as_millis(),
        timeout = TIMEOUT.as_millis(),
    )
}

fn http_config() -> String {
    config("", "type = \"http\"\npath = \"/health\"")
}

fn target() -> SocketAddr {
    format!("{}:80", plan::VIP4).parse().expect("address")
}

fn backend<'a>(status: &'a Status, address: &str) -> Option<&'a BackendStatus> {
    status.services.first()?.backends.iter().find(|b| b.address == address)
}

/// Waits until backend `address` has health `health`; returns how long that took and the
/// reason the agent gives.
fn wait_health(node: &SingleNode, address: &str, health: &str, limit: Duration) -> Result<(Duration, String)> {
    let start = Instant::now();
    loop {
        let status = node.status()?;
        let b = backend(&status, address);
        if let Some(b) = b.filter(|b| b.health == health) {
            return Ok((start.elapsed(), b.reason.clone().unwrap_or_default()));
        }
        if start.elapsed() > limit + Duration::from_secs(3) {
            bail!("{address} not {health} after {:?}: {b:?}\n{}", start.elapsed(), node.lab.log("xlb"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The longest a backend may take to be marked down: interval x fall + timeout.
fn detection_bound() -> Duration {
    INTERVAL * FALL + TIMEOUT
}

/// Requests that failed after `after`.
fn failures_after(log: &[(Instant, Result<String, String>)], after: Instant) -> Vec<String> {
    log.iter().filter(|(t, r)| *t > after && r.is_err()).map(|(_, r)| r.clone().unwrap_err()).collect()
}

fn served_by(log: &[(Instant, Result<String, String>)], after: Instant, name: &str) -> usize {
    log.iter().filter(|(t, r)| *t > after && r.as_deref() == Ok(name)).count()
}

/// Keep-alive connections, at least one to each backend.
fn connections_to_every_backend(node: &SingleNode) -> Result<Vec<(String, KeepAlive)>> {
    in_netns(&node.client.ns, || -> Result<Vec<(String, KeepAlive)>> {
        let mut conns = Vec::new();
        for _ in 0..60 {
            let mut c = KeepAlive::connect(target())?;
            let name = c.get()?;
            if !conns.iter().any(|(n, _)| *n == name) {
                conns.push((name, c));
            }
            if conns.len() == 3 {
                return Ok(conns);
            }
        }
        bail!("no connection to every backend in 60 tries")
    })?
}

#[test]
fn a_stopped_server_goes_down_in_time_and_comes_back() -> Result<()> {
    if !privileged("a_stopped_server_goes_down_in_time_and_comes_back") {
        return Ok(());
    }
    let mut node = SingleNode::start_with("hstop", &http_config(), Serve::Http)?;
    let mut held = connections_to_every_backend(&node)?;
    let hammer = Hammer::start(&node.client.ns, target())?;
    std::thread::sleep(Duration::from_millis(500));

    node.http[0].stop();
    let (took, reason) = wait_health(&node, "203.0.113.11", "down", detection_bound())?;
    assert!(took <= detection_bound() + SLACK, "marked down after {took:?}, bound {:?}", detection_bound());
    assert!(reason.contains("connect refused"), "reason: {reason}");
    let down_at = Instant::now();
    std::thread::sleep(Duration::from_millis(1500));

    // Restore it: it rejoins after `rise` good checks and takes new flows.
    let resumed_at = Instant::now();
    node.http[0].resume()?;
    let (_, reason) = wait_health(&node, "203.0.113.11", "up", INTERVAL * RISE)?;
    assert!(reason.contains("checks passed"), "reason: {reason}");
    let up_at = Instant::now();
    std::thread::sleep(Duration::from_millis(1500));
    let log = hammer.finish();

    let failed = failures_after(&log, down_at + Duration::from_millis(50));
    let when: Vec<String> = log
        .iter()
        .filter(|(t, r)| *t > down_at && r.is_err())
        .map(|(t, _)| format!("{:?} after down, {:?} after up", t.duration_since(down_at), t.saturating_duration_since(up_at)))
        .collect();
    assert!(failed.is_empty(), "{} of {} requests failed after b1 was marked down: {:?} at {when:?}", failed.len(), log.len(), &failed[..failed.len().min(5)]);
    assert_eq!(served_by(&log, down_at, "b1") - served_by(&log, resumed_at, "b1"), 0, "b1 took no flows while down");
    assert!(served_by(&log, up_at, "b1") > 0, "b1 takes new flows once back");
    // The long-lived connections to b2 and b3 lived through all of it.
    for (name, conn) in held.iter_mut().filter(|(n, _)| n != "b1") {
        assert_eq!(&conn.get().with_context(|| format!("long-lived connection to {name}"))?, name);
    }
    Ok(())
}

#[test]
fn http_503_takes_a_backend_down() -> Result<()> {
    if !privileged("http_503_takes_a_backend_down") {
        return Ok(());
    }
    let node = SingleNode::start_with("h503", &http_config(), Serve::Http)?;
    node.http[1].set_status(503);
    let (took, reason) = wait_health(&node, "203.0.113.12", "down", detection_bound())?;
    assert!(took <= detection_bound() + SLACK, "{took:?}");
    assert_eq!(reason, "HTTP 503");
    node.http[1].set_status(200);
    wait_health(&node, "203.0.113.12", "up", INTERVAL * RISE)?;
    Ok(())
}

#[test]
fn a_backend_dropping_packets_goes_down_by_timeout() -> Result<()> {
    if !privileged("a_backend_dropping_packets_goes_down_by_timeout") {
        return Ok(());
    }
    let node = SingleNode::start_with("hdrop", &http_config(), Serve::Http)?;
    let b3 = &node.backends[2];
    let nft = |script: &str| -> Result<()> {
        let path = node.lab.dir.join("drop.nft");
        std::fs::write(&path, script)?;
        run(Command::new("ip").args(["netns", "exec", &b3.ns, "nft", "-f"]).arg(&path))?;
        Ok(())
    };
    nft("table inet blackhole { chain input { type filter hook input priority 0; tcp dport 80 drop; }; }")?;
    let (took, reason) = wait_health(&node, "203.0.113.13", "down", detection_bound())?;
    assert!(took <= detection_bound() + SLACK, "{took:?}");
    assert_eq!(reason, format!("timeout after {} ms", TIMEOUT.as_millis()));
    nft("delete table inet blackhole")?;
    wait_health(&node, "203.0.113.13", "up", INTERVAL * RISE)?;
    Ok(())
}

#[test]
fn a_script_check_goes_down_and_up() -> Result<()> {
    if !privileged("a_script_check_goes_down_and_up") {
        return Ok(());
    }
    let flags = std::env::temp_dir().join(format!("xlb-script-{}", std::process::id()));
    std::fs::create_dir_all(&flags)?;
    let check = format!(
        "type = \"script\"\ncommand = [\"sh\", \"-c\", \"test ! -e {}/down-$XLB_BACKEND_ADDRESS\"]",
        flags.display()
    );
    let node = SingleNode::start_with("hscript", &config("", &check), Serve::Http)?;
    let flag = flags.join("down-203.0.113.12");
    std::fs::write(&flag, "")?;
    let result = (|| -> Result<()> {
        let (took, reason) = wait_health(&node, "203.0.113.12", "down", detection_bound())?;
        assert!(took <= detection_bound() + SLACK, "{took:?}");
        assert_eq!(reason, "script exit 1");
        std::fs::remove_file(&flag)?;
        wait_health(&node, "203.0.113.12", "up", INTERVAL * RISE)?;
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&flags);
    result
}

#[test]
fn drain_keeps_established_flows_but_health_down_moves_them() -> Result<()> {
    if !privileged("drain_keeps_established_flows_but_health_down_moves_them") {
        return Ok(());
    }
    let node = SingleNode::start_with("hdrain", &http_config(), Serve::Http)?;
    let mut held = connections_to_every_backend(&node)?;

    // Drain b1: no new flows, its established flow keeps working.
    let out = node.cli_ok(&["backend", "drain", "web4", "203.0.113.11"])?;
    assert!(out.contains("web4 203.0.113.11: drained"), "{out}");
    let b1_status = node.status()?.backends().find(|b| b.address == "203.0.113.11").cloned().expect("b1");
    assert_eq!((b1_status.weight, b1_status.state.as_str()), (0, "drained"), "a drained backend has weight 0");
    let tally = in_netns(&node.client.ns, || traffic::http_requests(target(), 90))??;
    assert_eq!(tally.get("b1"), None, "no new flow reaches a drained backend: {tally:?}");
    let (_, b1) = held.iter_mut().find(|(n, _)| n == "b1").expect("held");
    assert_eq!(b1.get()?, "b1", "a drained backend keeps its established flows");

    // Health down for b2 (its checks, from the node, are dropped; clients still reach it):
    // its flows are removed, so the held connection's next packet lands on a live backend,
    // which knows nothing of it and resets it.
    let nft = node.lab.dir.join("checks.nft");
    std::fs::write(
        &nft,
        format!("table inet nochecks {{ chain input {{ type filter hook input priority 0; ip saddr {} tcp dport 80 drop; }}; }}", node.lb.v4),
    )?;
    run(Command::new("ip").args(["netns", "exec", &node.backends[1].ns, "nft", "-f"]).arg(&nft))?;
    wait_health(&node, "203.0.113.12", "down", detection_bound())?;
    let (_, b2) = held.iter_mut().find(|(n, _)| n == "b2").expect("held");
    let moved = b2.get();
    assert!(moved.is_err(), "the flow of a backend that went down must leave it, but b2 still answered: {moved:?}");
    let tally = in_netns(&node.client.ns, || traffic::http_requests(target(), 60))??;
    assert_eq!(tally.keys().collect::<Vec<_>>(), ["b3"], "only b3 takes new flows: {tally:?}");
    let status = node.status()?;
    assert_eq!(backend(&status, "203.0.113.11").map(|b| b.state.as_str()), Some("drained"));
    assert_eq!(backend(&status, "203.0.113.12").map(|b| b.state.as_str()), Some("down"));
    Ok(())
}

#[test]
fn below_quorum_the_sorry_backend_takes_new_flows() -> Result<()> {
    if !privileged("below_quorum_the_sorry_backend_takes_new_flows") {
        return Ok(());
    }
    let cfg = config("quorum = 2\nsorry = \"203.0.113.14\"", "type = \"tcp\"");
    let mut node = SingleNode::start_with("hsorry", &cfg, Serve::Http)?;
    let sorry_host = node.lab.backend("sorry", 14, &[plan::VIP4])?;
    let _sorry = HttpServer::start(&sorry_host.ns, "sorry", 80)?;
    node.http[0].stop();
    wait_health(&node, "203.0.113.11", "down", detection_bound())?;
    let tally = in_netns(&node.client.ns, || traffic::http_requests(target(), 30))??;
    assert!(tally.keys().all(|k| k == "b2" || k == "b3"), "quorum of 2 still met: {tally:?}");
    node.http[1].stop();
    wait_health(&node, "203.0.113.12", "down", detection_bound())?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while node.status()?.services[0].mode != "sorry" {
        anyhow::ensure!(Instant::now() < deadline, "not in sorry mode: {:?}", node.status()?);
        std::thread::sleep(Duration::from_millis(50));
    }
    let tally = in_netns(&node.client.ns, || traffic::http_requests(target(), 30))??;
    assert_eq!(tally.get("sorry"), Some(&30), "{tally:?}");
    Ok(())
}

#[test]
fn with_no_healthy_backend_and_no_sorry_packets_are_dropped_not_passed() -> Result<()> {
    if !privileged("with_no_healthy_backend_and_no_sorry_packets_are_dropped_not_passed") {
        return Ok(());
    }
    let mut node = SingleNode::start_with("hnone", &config("", "type = \"tcp\""), Serve::Http)?;
    for http in &mut node.http {
        http.stop();
    }
    for addr in ["203.0.113.11", "203.0.113.12", "203.0.113.13"] {
        wait_health(&node, addr, "down", detection_bound())?;
    }
    let before = node.counter("drop_no_backend")?;
    let attempt = in_netns(&node.client.ns, || std::net::TcpStream::connect_timeout(&target(), Duration::from_millis(700)))?;
    let err = attempt.expect_err("nobody may answer");
    // Refused would mean the node's own stack answered (the VIP is on its interface).
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
    assert!(node.counter("drop_no_backend")? > before, "the SYNs were dropped and counted");
    assert_eq!(node.status()?.services[0].mode, "degraded");
    Ok(())
}
