//! Small faults of the node's own (a map write that fails, a netlink dump that fails, no
//! descriptor left for a health check) never take forwarding down: the agent counts them,
//! retries, and recovers by itself when the fault clears. Faults are injected through
//! `XLB_FAULTS` (a file naming what fails) or made for real (a descriptor limit).

use std::{net::SocketAddr, process::Command, time::{Duration, Instant}};

use anyhow::{ensure, Context as _, Result};
use lb_common::status::Status;
use xlb_tests::{
    plan, privileged,
    scenario::{web4_config, Serve, SingleNode},
    traffic::{Hammer, HeldConnections},
};

fn wait_for(node: &SingleNode, what: &str, timeout: Duration, ok: impl Fn(&Status) -> bool) -> Result<Status> {
    let deadline = Instant::now() + timeout;
    loop {
        let status = node.status()?;
        if ok(&status) {
            return Ok(status);
        }
        ensure!(Instant::now() < deadline, "{what} within {timeout:?}: {:?}\nlog:\n{}", status.faults, node.lab.log("xlb"));
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn failed_map_writes_and_netlink_dumps_leave_forwarding_alone_and_heal() -> Result<()> {
    if !privileged("failed_map_writes_and_netlink_dumps_leave_forwarding_alone_and_heal") {
        return Ok(());
    }
    let config = web4_config(&[(11, 1), (12, 1), (13, 1)]);
    let mut node = SingleNode::start_with("faults", &config, Serve::Http)?;
    let faults = node.lab.dir.join("faults");
    std::fs::write(&faults, "")?;
    let faults_env = faults.display().to_string();
    node.lab.signal("xlb", nix::sys::signal::Signal::SIGUSR2)?;
    node.start_agent_with(&[("XLB_FAULTS", &faults_env)], &[])?;
    let target: SocketAddr = format!("{}:80", plan::VIP4).parse()?;
    let chatter = HeldConnections::open(&node.client.ns, target, 100)?.chatter(Duration::from_millis(50));
    let hammer = Hammer::start(&node.client.ns, target)?;

    // Map writes fail: a weight change is taken but cannot be written; the maps are written
    // again with backoff; forwarding goes on as it was.
    std::fs::write(&faults, "map-write")?;
    let (ok, out) = node.cli(&["backend", "weight", "web4", "203.0.113.12", "3"])?;
    ensure!(!ok && out.contains("retrying"), "{out}");
    let status = wait_for(&node, "out of sync", Duration::from_secs(2), |s| s.faults.out_of_sync && s.faults.map_write_failures >= 2)?;
    ensure!(status.faults.last_error.as_deref().is_some_and(|e| e.contains("injected")), "{:?}", status.faults);
    std::thread::sleep(Duration::from_secs(1));
    std::fs::write(&faults, "")?;
    let status = wait_for(&node, "back in sync", Duration::from_secs(8), |s| !s.faults.out_of_sync)?;
    ensure!(status.backends().any(|b| b.address == "203.0.113.12" && b.weight == 3), "the change reached the maps: {status:?}");

    // Netlink dumps fail while a backend lacks a MAC (203.0.113.14: no such host): counted,
    // nothing else happens.
    let (ok, out) = node.cli(&["backend", "add", "web4", "203.0.113.14"])?;
    ensure!(ok, "{out}");
    std::fs::write(&faults, "netlink")?;
    let before = node.status()?.faults.netlink_failures;
    let status = wait_for(&node, "netlink failures counted", Duration::from_secs(3), |s| s.faults.netlink_failures >= before + 2)?;
    ensure!(!status.faults.out_of_sync, "a failed dump is no map fault");
    std::fs::write(&faults, "")?;
    std::thread::sleep(Duration::from_millis(700));
    let settled = node.status()?.faults.netlink_failures;
    std::thread::sleep(Duration::from_millis(1200));
    ensure!(node.status()?.faults.netlink_failures == settled, "dumps work again once the fault clears");
    ensure!(node.lab.running("xlb"), "the agent runs on");

    let (held, exchanges) = chatter.finish();
    let requests = hammer.finish();
    let failed = requests.iter().filter(|(_, r)| r.is_err()).count();
    eprintln!(
        "map-write and netlink faults: 100 connections ({exchanges} exchanges): {} kept, {} moved, {} broken; \
         new connections {failed} of {} failed; {:?}",
        held.kept,
        held.moved.len(),
        held.broken.len(),
        requests.len(),
        node.status()?.faults
    );
    ensure!(held.kept == 100, "{held:?}");
    ensure!(failed == 0, "new connections failed during the faults: {failed}");
    Ok(())
}

#[test]
fn no_descriptor_for_a_check_is_not_a_backend_failure() -> Result<()> {
    if !privileged("no_descriptor_for_a_check_is_not_a_backend_failure") {
        return Ok(());
    }
    let config = web4_config(&[(11, 1), (12, 1), (13, 1)])
        + "[service.check]\ntype = \"tcp\"\ninterval = \"100ms\"\nfast_interval = \"100ms\"\nfall = 2\n";
    let mut node = SingleNode::start_with("nofile", &config, Serve::Http)?;
    // Started with a low soft limit under a higher hard one: the agent raises it.
    node.lab.signal("xlb", nix::sys::signal::Signal::SIGUSR2)?;
    node.start_agent_with(&[], &["prlimit", "--nofile=64:4096"])?;
    let log = node.lab.log("xlb");
    ensure!(log.contains("descriptor limit raised from 64"), "{log}");

    // Now no descriptor is left at all (a limit below every free descriptor number): every
    // check fails on this node. So does the control socket, so the status is read after.
    let pid = node.lab.pid("xlb").context("agent pid")?.to_string();
    let before = node.status()?.faults.check_local_errors;
    xlb_tests::run(Command::new("prlimit").args(["--pid", &pid, "--nofile=3:4096"]))?;
    let target: SocketAddr = format!("{}:80", plan::VIP4).parse()?;
    let tally = xlb_tests::in_netns(&node.client.ns, || xlb_tests::traffic::http_requests(target, 30))??;
    ensure!(tally.len() == 3, "forwarding as before: {tally:?}");
    std::thread::sleep(Duration::from_secs(2));
    xlb_tests::run(Command::new("prlimit").args(["--pid", &pid, "--nofile=4096:4096"]))?;
    let status = wait_for(&node, "local check errors", Duration::from_secs(5), |s| s.faults.check_local_errors >= before + 20)?;
    ensure!(status.backends().all(|b| b.health == "up" && b.transitions == 0), "backends stay up: {status:?}");

    // Descriptors again: checks pass, the count of local errors stops.
    std::thread::sleep(Duration::from_millis(1200));
    let settled = node.status()?.faults.check_local_errors;
    std::thread::sleep(Duration::from_millis(1200));
    let status = node.status()?;
    eprintln!(
        "no descriptor for 2 s: {} local check errors, backends {:?}, transitions {:?}",
        settled - before,
        status.backends().map(|b| b.health.as_str()).collect::<Vec<_>>(),
        status.backends().map(|b| b.transitions).collect::<Vec<_>>()
    );
    ensure!(status.faults.check_local_errors == settled, "no more local errors: {settled} -> {}", status.faults.check_local_errors);
    ensure!(status.backends().all(|b| b.health == "up" && b.transitions == 0), "{status:?}");
    Ok(())
}

/// The node holds the IPv6 VIP on the backends' subnet; its health checks must not leave from
/// it (every backend holds the VIP on `lo` and would answer itself), so they see the backends
/// up, and the checks' source is the node's own address.
#[test]
fn ipv6_checks_do_not_leave_from_the_vip() -> Result<()> {
    if !privileged("ipv6_checks_do_not_leave_from_the_vip") {
        return Ok(());
    }
    // b1 (::11) and a backend at ::101, whose address shares a longer prefix with the VIP
    // (::100) than with the node (::2): without care the kernel would pick the VIP as source.
    let web6 = |backends: &[&str]| {
        let mut config = xlb_tests::scenario::lab_agent_section().to_owned();
        config += &format!("[[service]]\nname = \"web6\"\nvip = \"{}\"\nport = 80\n", plan::VIP6);
        for b in backends {
            config += &format!("[[service.backend]]\naddress = \"{b}\"\n");
        }
        config + "[service.check]\ntype = \"tcp\"\ninterval = \"200ms\"\n"
    };
    let mut node = SingleNode::start_with("v6check", &web6(&["2001:db8:0:1::11"]), Serve::Http)?;
    let config = web6(&["2001:db8:0:1::11", "2001:db8:0:1::101"]);
    let near = node.lab.backend("b101", 101, &[plan::VIP4, plan::VIP6])?;
    let _http = xlb_tests::traffic::HttpServer::start(&near.ns, "b101", 80)?;
    std::fs::write(&node.config, xlb_tests::scenario::agent_config(&config, &node.pins, &node.socket))?;
    let (ok, out) = node.cli(&["reload"])?;
    ensure!(ok, "{out}");
    node.wait_ready(Duration::from_secs(10))?;
    std::thread::sleep(Duration::from_secs(1));
    let status = node.status()?;
    ensure!(status.backends().count() == 2 && status.backends().all(|b| b.health == "up" && b.transitions == 0 && b.checks > 0), "{status:?}");
    let route = xlb_tests::run(Command::new("ip").args(["-n", &node.lb.ns, "-6", "route", "get", "2001:db8:0:1::101"]))?;
    let route = String::from_utf8_lossy(&route.stdout).into_owned();
    ensure!(!route.contains(plan::VIP6) && route.contains(&node.lb.v6.to_string()), "source towards ::101: {route}");
    Ok(())
}
