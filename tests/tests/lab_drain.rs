//! `xlb backend drain --wait`: the drain is set at once, established connections go on, and
//! the command returns when the backend has no flow entry left: its connections reset (the
//! entry goes with the client's RST) or finished (the client's FIN marks it; the agent's flow
//! scanner removes it once quiet for `tcp_fin_timeout`). At its `--timeout` it gives up,
//! saying how many are left.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context as _, Result};
use lb_common::status::Status;
use xlb_tests::{
    plan, privileged,
    scenario::{web4_config, Serve, SingleNode},
    traffic::HeldConnections,
};

const B1: &str = "203.0.113.11";
const FIN_TIMEOUT: Duration = Duration::from_secs(2);

/// b1..b3 with a 2 s FIN timeout, and 60 keep-alive connections over them.
fn start(tag: &str) -> Result<(SingleNode, HeldConnections)> {
    let config = web4_config(&[(11, 1), (12, 1), (13, 1)])
        .replace("flow_table_size = 65536", &format!("flow_table_size = 65536\ntcp_fin_timeout = \"{}s\"", FIN_TIMEOUT.as_secs()));
    let node = SingleNode::start_with(tag, &config, Serve::Http)?;
    let target: SocketAddr = format!("{}:80", plan::VIP4).parse()?;
    let held = HeldConnections::open(&node.client.ns, target, 60)?;
    ensure!(held.tally().get("b1").is_some_and(|&n| n >= 4), "b1 holds a few connections: {:?}", held.tally());
    Ok((node, held))
}

/// b1's flow entries as the agent counts them.
fn b1_flows(status: &Status) -> Result<Option<usize>> {
    Ok(status.backends().find(|b| b.address == B1).context("b1 in the status")?.flows)
}

/// Waits until the flow scanner counts `n` entries for b1 (it counts every 100 ms).
fn wait_b1_flows(node: &SingleNode, n: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let flows = b1_flows(&node.status()?)?;
        if flows == Some(n) {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "b1's flows: {flows:?}, expected {n}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn drain_wait_returns_once_the_drained_backends_connections_have_ended() -> Result<()> {
    if !privileged("drain_wait_returns_once_the_drained_backends_connections_have_ended") {
        return Ok(());
    }
    let (mut node, mut held) = start("drainw")?;
    let on_b1 = held.tally()["b1"];
    wait_b1_flows(&node, on_b1)?;

    let socket = node.socket.display().to_string();
    let (ns, xlb) = (node.lb.ns.clone(), node.xlb.clone());
    node.lab.spawn(&ns, "drain", &xlb, &["backend", "drain", "web4", B1, "--wait", "--timeout", "60s", "--socket", &socket])?;
    std::thread::sleep(Duration::from_secs(3));
    ensure!(node.lab.running("drain"), "drain --wait returned with b1's connections open:\n{}", node.lab.log("drain"));
    let out = node.lab.log("drain");
    ensure!(out.contains(&format!("{on_b1} flows left")), "drain --wait says how many flows are left: {out}");
    let status = node.status()?;
    ensure!(status.backends().any(|b| b.address == B1 && b.state == "drained"), "b1 drained: {status:?}");
    ensure!(b1_flows(&status)? == Some(on_b1), "b1's flows stay while its connections do: {:?}", b1_flows(&status)?);
    let after = held.check();
    ensure!(after.kept == held.len(), "a drained backend keeps its established connections: {after:?}");

    // b1's connections end, half with a FIN, half with a RST.
    let (reset0, expired0) = (node.counter("flow_reset")?, status.flows_expired);
    let mut conns = held.take("b1");
    let finished = conns.split_off(conns.len() / 2);
    let reset = conns.len();
    for conn in conns {
        conn.reset()?;
    }
    let closed = Instant::now();
    let fin = finished.len();
    drop(finished);
    let exit = node.lab.wait_exit("drain", FIN_TIMEOUT + Duration::from_secs(10))?;
    let took = closed.elapsed();
    let out = node.lab.log("drain");
    eprintln!(
        "lab_drain: drain --wait returned {exit} {:.1} s after b1's last {on_b1} connections ended ({reset} reset, {fin} \
         closed; tcp_fin_timeout {} s): {}",
        took.as_secs_f64(),
        FIN_TIMEOUT.as_secs(),
        out.lines().last().unwrap_or("")
    );
    ensure!(exit.success(), "drain --wait failed ({exit}):\n{out}");
    ensure!(out.contains("drained, no flows left"), "{out}");
    // The FIN linger, up to a second of the program's last-seen granularity, a scan and a poll.
    ensure!(took <= FIN_TIMEOUT + Duration::from_secs(3), "drain --wait took {took:?} after the last connection ended");

    let status = node.status()?;
    ensure!(b1_flows(&status)? == Some(0), "b1's flows: {:?}", b1_flows(&status)?);
    let reset_counted = status.counters["flow_reset"] - reset0;
    ensure!(reset_counted >= reset as u64, "{reset} connections reset, flow_reset grew by {reset_counted}");
    let expired = status.flows_expired - expired0;
    ensure!(expired >= fin as u64, "{fin} connections closed, flows_expired grew by {expired}");
    let others = held.check();
    ensure!(others.kept == held.len(), "the other backends' connections go on: {others:?}");
    node.no_agent_errors()
}

#[test]
fn drain_wait_gives_up_at_its_timeout_and_says_how_many_flows_are_left() -> Result<()> {
    if !privileged("drain_wait_gives_up_at_its_timeout_and_says_how_many_flows_are_left") {
        return Ok(());
    }
    let (node, mut held) = start("draint")?;
    let on_b1 = held.tally()["b1"];
    wait_b1_flows(&node, on_b1)?;
    // The agent found through its configuration file, this time.
    let config = node.config.display().to_string();
    let started = Instant::now();
    let run = std::process::Command::new(&node.xlb).args(["backend", "drain", "-c", &config, "web4", B1, "--wait", "--timeout", "3s"]).output()?;
    let took = started.elapsed();
    let (success, out) = (run.status.success(), format!("{}{}", String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr)));
    eprintln!(
        "lab_drain: drain --wait --timeout 3s with {on_b1} connections open on b1: {} after {:.1} s: {}",
        run.status,
        took.as_secs_f64(),
        out.lines().last().unwrap_or("")
    );
    ensure!(!success, "drain --wait succeeded with b1's connections open: {out}");
    ensure!(out.contains(&format!("{on_b1} flows left after 3s")), "says how many flows are left: {out}");
    ensure!(took >= Duration::from_secs(3) && took < Duration::from_secs(6), "gave up after {took:?}");
    ensure!(held.check().kept == held.len(), "the connections go on");
    node.no_agent_errors()
}
