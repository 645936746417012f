//! Stable identities in the lab: a backend keeps its slot, and every connection on it keeps
//! going to it, across an edit of the file and a restart of the agent that adopts the pinned
//! maps.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use anyhow::{ensure, Context as _, Result};
use lb_common::status::Status;
use xlb_tests::{
    in_netns, plan, privileged,
    scenario::{agent_config, lab_agent_section, Serve, SingleNode},
    traffic::{self, HeldConnections, HttpServer},
};

/// config/lab.toml's `[agent]` with one TCP service on the IPv4 VIP's port 80 over
/// `backends`: (last octet, weight), in this order.
fn web4(backends: &[(u8, u32)]) -> String {
    let mut text = format!("{}[[service]]\nname = \"web4\"\nvip = \"{}\"\nport = 80\n", lab_agent_section(), plan::VIP4);
    for (octet, weight) in backends {
        text += &format!("[[service.backend]]\naddress = \"203.0.113.{octet}\"\nweight = {weight}\n");
    }
    text
}

/// Each backend's slot, by address.
fn slots(status: &Status) -> BTreeMap<String, u32> {
    status.backends().map(|b| (b.address.clone(), b.slot)).collect()
}

#[test]
fn connections_keep_their_backends_across_kill_9_edit_and_restart() -> Result<()> {
    if !privileged("connections_keep_their_backends_across_kill_9_edit_and_restart") {
        return Ok(());
    }
    let mut node = SingleNode::start_with("ident", &web4(&[(11, 1), (12, 1), (13, 1)]), Serve::Http)?;
    let b4 = node.lab.backend("b4", 14, &[plan::VIP4, plan::VIP6])?;
    let _b4_http = HttpServer::start(&b4.ns, "b4", 80)?;
    let target: SocketAddr = format!("{}:80", plan::VIP4).parse()?;

    let mut held = HeldConnections::open(&node.client.ns, target, 200)?;
    let tally = held.tally();
    ensure!(tally.len() == 3 && tally.values().all(|&n| n >= 30), "200 connections spread over b1..b3: {tally:?}");
    let slots_before = slots(&node.status()?);

    node.lab.signal("xlb", nix::sys::signal::Signal::SIGKILL)?;
    // The edit: b4 before the others, b3 removed, b2's weight changed.
    let edited = web4(&[(14, 1), (11, 1), (12, 3)]);
    std::fs::write(&node.config, agent_config(&edited, &node.pins, &node.socket))?;
    node.start_agent()?;

    let after = held.check();
    let on_b3 = tally["b3"];
    let kept_possible = held.len() - on_b3;
    eprintln!(
        "kill -9, edit, restart: {} connections held, {} on backends still configured: {} kept, {} moved, {} broken; \
         {} on the removed b3 lost {}",
        held.len(),
        kept_possible,
        after.kept,
        after.moved.iter().filter(|(f, _)| f != "b3").count(),
        after.broken.iter().filter(|(f, _)| f != "b3").count(),
        on_b3,
        after.lost_by("b3"),
    );
    for b in ["b1", "b2"] {
        ensure!(after.lost_by(b) == 0, "connections on {b} moved or broke: {after:?}\nlog:\n{}", node.lab.log("xlb"));
    }
    ensure!(after.kept == kept_possible, "{after:?}");

    let status = node.status()?;
    let slots_after = slots(&status);
    for address in ["203.0.113.11", "203.0.113.12"] {
        ensure!(slots_after[address] == slots_before[address], "{address} changed slot: {slots_before:?} -> {slots_after:?}");
    }
    ensure!(!slots_before.values().any(|s| *s == slots_after["203.0.113.14"]), "b4 took a slot another backend held");
    let log = node.lab.log("xlb");
    ensure!(log.contains("took over 1 services and 3 backends"), "the agent adopts the slots:\n{log}");

    // New connections go to the new set: b4 included, b3 never.
    let fresh = in_netns(&node.client.ns, || traffic::http_requests(target, 90))??;
    ensure!(fresh.get("b4").copied().unwrap_or(0) > 5 && !fresh.contains_key("b3"), "new connections: {fresh:?}");
    let b2_share = fresh.get("b2").copied().unwrap_or(0);
    ensure!(b2_share > fresh.get("b1").copied().unwrap_or(0), "b2 at weight 3 takes more: {fresh:?}");
    Ok(())
}

#[test]
fn a_restart_with_the_same_file_changes_nothing() -> Result<()> {
    if !privileged("a_restart_with_the_same_file_changes_nothing") {
        return Ok(());
    }
    let mut node = SingleNode::start_with("ident2", &web4(&[(11, 1), (12, 2), (13, 1)]), Serve::Http)?;
    let target: SocketAddr = format!("{}:80", plan::VIP4).parse()?;
    let mut held = HeldConnections::open(&node.client.ns, target, 60)?;
    let before = node.status()?;
    let counters_before: u64 = before.services[0].backends.iter().map(|b| b.counters.packets).sum();
    node.lab.signal("xlb", nix::sys::signal::Signal::SIGKILL)?;
    node.start_agent()?;
    let after = held.check();
    ensure!(after.kept == held.len(), "{after:?}");
    let status = node.status()?;
    ensure!(slots(&status) == slots(&before), "slots moved: {:?} -> {:?}", slots(&before), slots(&status));
    let counters_after: u64 = status.services[0].backends.iter().map(|b| b.counters.packets).sum();
    ensure!(counters_after >= counters_before + 60, "backend counters survive: {counters_before} -> {counters_after}");
    let log = node.lab.log("xlb");
    ensure!(!log.contains("flows that no longer fit"), "no flow was dropped:\n{log}");
    // Drop the connections before the lab goes.
    drop(held);
    std::thread::sleep(Duration::from_millis(10));
    node.status().context("agent still answers")?;
    Ok(())
}
