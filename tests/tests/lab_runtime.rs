//! Runtime changes (`xlb backend ...`, `xlb service ...`): at once, shown as differences from
//! the file, kept across a restart, dropped by a reload that changes their subject, written
//! into the file with `--save`.

use std::{net::SocketAddr, time::Duration};

use anyhow::{ensure, Result};
use nix::sys::signal::Signal;
use xlb_tests::{
    in_netns, plan, privileged,
    scenario::{agent_config, web4_config, Serve, SingleNode},
    traffic::{self, HeldConnections},
};

fn fresh(node: &SingleNode, target: SocketAddr, n: usize) -> Result<traffic::Tally> {
    in_netns(&node.client.ns, || traffic::http_requests(target, n))?
}

#[test]
fn runtime_changes_act_at_once_survive_a_restart_and_yield_to_the_file() -> Result<()> {
    if !privileged("runtime_changes_act_at_once_survive_a_restart_and_yield_to_the_file") {
        return Ok(());
    }
    let file = format!("# web tier, edited by hand\n{}", web4_config(&[(11, 1), (12, 1)]));
    let mut node = SingleNode::start_with("runtime", &file, Serve::Http)?;
    let target: SocketAddr = format!("{}:80", plan::VIP4).parse()?;
    let mut held = HeldConnections::open(&node.client.ns, target, 80)?;

    // Add b3, weigh b2, drain b1: at once, established connections untouched.
    node.cli_ok(&["backend", "add", "web4", "203.0.113.13"])?;
    node.cli_ok(&["backend", "weight", "web4", "203.0.113.12", "3"])?;
    node.wait_ready(Duration::from_secs(10))?;
    node.cli_ok(&["backend", "drain", "web4", "203.0.113.11"])?;
    let status = node.status()?;
    ensure!(status.runtime_changes.len() == 3, "{:?}", status.runtime_changes);
    let note = |status: &lb_common::status::Status, a: &str| status.backends().find(|b| b.address == a).and_then(|b| b.runtime.clone());
    ensure!(note(&status, "203.0.113.13").is_some_and(|n| n.contains("added")), "{status:?}");
    ensure!(note(&status, "203.0.113.12").is_some_and(|n| n.contains("weight 3")), "{status:?}");
    ensure!(status.backends().any(|b| b.address == "203.0.113.11" && b.state == "drained"), "{status:?}");
    let after = held.check();
    ensure!(after.kept == held.len(), "established connections stay, drained b1's too: {after:?}");
    let tally = fresh(&node, target, 80)?;
    ensure!(!tally.contains_key("b1") && tally.get("b3").copied().unwrap_or(0) > 5, "new connections: {tally:?}");
    ensure!(tally["b2"] > tally["b3"], "b2 at weight 3 takes more: {tally:?}");
    node.cli_ok(&["backend", "enable", "web4", "203.0.113.11"])?;
    ensure!(fresh(&node, target, 60)?.contains_key("b1"), "enabled again, b1 takes new connections");

    // A restart keeps them.
    node.lab.signal("xlb", Signal::SIGUSR2)?;
    node.start_agent()?;
    let status = node.status()?;
    ensure!(status.runtime_changes.len() == 2, "the add and the weight survive the restart: {:?}", status.runtime_changes);
    ensure!(status.backends().count() == 3, "{status:?}");

    // A reload that changes b2 in the file drops b2's runtime weight; b3's add holds.
    std::fs::write(&node.config, agent_config(&file.replace("address = \"203.0.113.12\"\nweight = 1", "address = \"203.0.113.12\"\nweight = 2"), &node.pins, &node.socket))?;
    node.cli_ok(&["reload"])?;
    let status = node.status()?;
    ensure!(status.runtime_changes.len() == 1 && status.runtime_changes[0].contains("203.0.113.13"), "{:?}", status.runtime_changes);
    ensure!(status.backends().any(|b| b.address == "203.0.113.12" && b.weight == 2 && b.runtime.is_none()), "{status:?}");

    // --save writes into the file, its comment kept.
    node.cli_ok(&["backend", "weight", "--save", "web4", "203.0.113.11", "4"])?;
    let text = std::fs::read_to_string(&node.config)?;
    ensure!(text.starts_with("# web tier, edited by hand") && text.contains("weight = 4"), "{text}");
    ensure!(node.status()?.runtime_changes.len() == 1, "a saved change is the file's, not a runtime change");

    // Services come and go.
    node.cli_ok(&["service", "add", "dns4", "--vip", plan::VIP4, "--port", "53", "--protocol", "udp", "--backend", "203.0.113.11"])?;
    ensure!(node.status()?.service("dns4").is_some(), "dns4 added");
    node.cli_ok(&["service", "remove", "dns4"])?;
    ensure!(node.status()?.service("dns4").is_none(), "dns4 removed");

    // What does not fit is refused, and nothing changes.
    let before = node.status()?.runtime_changes;
    for bad in [
        vec!["backend", "add", "web4", "198.51.100.7"],
        vec!["backend", "weight", "web4", "203.0.113.11", "5000"],
        vec!["backend", "remove", "web4", "203.0.113.99"],
        vec!["service", "remove", "nosuch"],
    ] {
        let (success, out) = node.cli(&bad)?;
        ensure!(!success && out.contains("refused"), "xlb {}: {out}", bad.join(" "));
    }
    ensure!(node.status()?.runtime_changes == before, "refused changes change nothing");
    let after = held.check();
    ensure!(after.lost_by("b1") + after.lost_by("b2") == 0, "{after:?}");
    Ok(())
}
