//! Stable identities in the lab: a backend keeps its slot, and every connection on it keeps
//! going to it, across an edit of the file and a restart of the agent that adopts the pinned
//! maps.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use anyhow::{ensure, Context as _, Result};
use lb_common::status::Status;
use xlb_tests::{
    in_netns, plan, privileged,
    scenario::{agent_config, web4_config, Serve, SingleNode},
    traffic::{self, Hammer, HeldConnections, HttpServer},
};

/// Each backend's slot, by address.
fn slots(status: &Status) -> BTreeMap<String, u32> {
    status.backends().map(|b| (b.address.clone(), b.slot)).collect()
}

#[test]
fn connections_keep_their_backends_across_kill_9_edit_and_restart() -> Result<()> {
    if !privileged("connections_keep_their_backends_across_kill_9_edit_and_restart") {
        return Ok(());
    }
    let mut node = SingleNode::start_with("ident", &web4_config(&[(11, 1), (12, 1), (13, 1)]), Serve::Http)?;
    let b4 = node.lab.backend("b4", 14, &[plan::VIP4, plan::VIP6])?;
    let _b4_http = HttpServer::start(&b4.ns, "b4", 80)?;
    let target: SocketAddr = format!("{}:80", plan::VIP4).parse()?;

    let mut held = HeldConnections::open(&node.client.ns, target, 200)?;
    let tally = held.tally();
    ensure!(tally.len() == 3 && tally.values().all(|&n| n >= 30), "200 connections spread over b1..b3: {tally:?}");
    let slots_before = slots(&node.status()?);

    node.lab.signal("xlb", nix::sys::signal::Signal::SIGKILL)?;
    // The edit: b4 before the others, b3 removed, b2's weight changed.
    let edited = web4_config(&[(14, 1), (11, 1), (12, 3)]);
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
    let mut node = SingleNode::start_with("ident2", &web4_config(&[(11, 1), (12, 2), (13, 1)]), Serve::Http)?;
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

/// `web4` over `backends` with a TCP check on each (an unchanged check keeps its state).
fn web4_checked(backends: &[(u8, u32)]) -> String {
    web4_config(backends) + "[service.check]\ntype = \"tcp\"\ninterval = \"500ms\"\n"
}

fn write_config(node: &SingleNode, text: &str) -> Result<()> {
    Ok(std::fs::write(&node.config, agent_config(text, &node.pins, &node.socket))?)
}

#[test]
fn reload_applies_the_diff_and_keeps_every_connection_that_can_stay() -> Result<()> {
    if !privileged("reload_applies_the_diff_and_keeps_every_connection_that_can_stay") {
        return Ok(());
    }
    let mut node = SingleNode::start_with("reload", &web4_checked(&[(11, 1), (12, 1), (13, 1)]), Serve::Http)?;
    let b4 = node.lab.backend("b4", 14, &[plan::VIP4, plan::VIP6])?;
    let _b4_http = HttpServer::start(&b4.ns, "b4", 80)?;
    let target: SocketAddr = format!("{}:80", plan::VIP4).parse()?;
    // 200 connections talking every 50 ms, and a steady stream of new ones.
    let held = HeldConnections::open(&node.client.ns, target, 200)?;
    let tally = held.tally();
    let chatter = held.chatter(Duration::from_millis(50));
    let hammer = Hammer::start(&node.client.ns, target)?;
    let slots_before = slots(&node.status()?);
    let settle = || std::thread::sleep(Duration::from_millis(300));
    let untouched = |step: &str| -> Result<()> {
        let (seen, _) = chatter.snapshot();
        ensure!(seen.kept == 200, "{step}: {seen:?}");
        Ok(())
    };

    // 1. An unrelated change (the service renamed, the file reordered): nothing moves, no
    //    check starts over.
    write_config(&node, &web4_checked(&[(13, 1), (12, 1), (11, 1)]).replace("name = \"web4\"", "name = \"www\""))?;
    let (ok, out) = node.cli(&["reload"])?;
    ensure!(ok && out.contains("backends +0 -0 ~0"), "{out}");
    settle();
    untouched("an unrelated reload")?;
    let status = node.status()?;
    ensure!(status.services[0].name == "www" && slots(&status) == slots_before, "{:?}", slots(&status));
    ensure!(status.services[0].backends.iter().all(|b| b.health == "up" && b.transitions == 0), "health carried over: {status:?}");

    // 2. A backend added and a weight changed: nothing established moves; new flows reach b4.
    write_config(&node, &web4_checked(&[(14, 1), (11, 1), (12, 3), (13, 1)]))?;
    let (ok, out) = node.cli(&["reload"])?;
    ensure!(ok && out.contains("backends +1 -0 ~1"), "{out}");
    node.wait_ready(Duration::from_secs(10))?;
    settle();
    untouched("adding a backend, changing a weight")?;
    // b4 has 1/6 of the table: about 33 of 200 new connections (60 were too few to tell: CI
    // once saw 3 of 60).
    let fresh = in_netns(&node.client.ns, || traffic::http_requests(target, 200))??;
    ensure!(fresh.get("b4").copied().unwrap_or(0) > 12, "new connections reach b4: {fresh:?}");

    // 3. b3 removed: its connections end, and only those.
    write_config(&node, &web4_checked(&[(14, 1), (11, 1), (12, 3)]))?;
    let (ok, out) = node.cli(&["reload"])?;
    ensure!(ok && out.contains("backends +0 -1 ~0"), "{out}");
    settle();
    let (after, _) = chatter.snapshot();
    ensure!(after.lost_by("b1") == 0 && after.lost_by("b2") == 0, "{after:?}");
    ensure!(after.lost_by("b3") == tally["b3"], "b3's connections end: {after:?}");

    // 4. A broken file: refused with file:line, nothing changes.
    let before = slots(&node.status()?);
    std::fs::write(&node.config, agent_config(&web4_config(&[(11, 1)]), &node.pins, &node.socket).replace("port = 80", "port = 80000"))?;
    let (ok, out) = node.cli(&["reload"])?;
    let file = node.config.display().to_string();
    ensure!(!ok && out.contains(&format!("{file}:")) && out.contains("nothing changed"), "a broken file is refused: {out}");
    ensure!(slots(&node.status()?) == before, "nothing changed");
    // A setting that cannot change live is refused too.
    write_config(&node, &web4_checked(&[(14, 1), (11, 1), (12, 3)]).replace("flow_table_size = 65536", "flow_table_size = 131072"))?;
    let (ok, out) = node.cli(&["reload"])?;
    ensure!(!ok && out.contains("flow_table_size cannot change"), "{out}");

    // 7. SIGHUP reloads and the agent lives on.
    write_config(&node, &web4_checked(&[(14, 1), (11, 1), (12, 1)]))?;
    node.lab.notify("xlb", nix::sys::signal::Signal::SIGHUP)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !node.lab.log("xlb").contains("backends +0 -0 ~1") {
        ensure!(std::time::Instant::now() < deadline, "no reload after SIGHUP:\n{}", node.lab.log("xlb"));
        std::thread::sleep(Duration::from_millis(50));
    }
    ensure!(node.lab.running("xlb"), "the agent survives SIGHUP");
    settle();
    let (after, exchanges) = chatter.finish();
    let requests = hammer.finish();
    let failed = requests.iter().filter(|(_, r)| r.is_err()).count();
    eprintln!(
        "reloads under traffic: 200 connections exchanging every 50 ms ({exchanges} exchanges): {} kept, {} moved, \
         {} broken (b3, removed, had {} and lost {}); new connections: {failed} of {} failed",
        after.kept,
        after.moved.len(),
        after.broken.len(),
        tally["b3"],
        after.lost_by("b3"),
        requests.len()
    );
    ensure!(after.moved.is_empty() && after.broken.len() == tally["b3"] && after.lost_by("b3") == tally["b3"], "{after:?}");
    ensure!(requests.len() > 100, "the stream of new connections ran: {}", requests.len());
    Ok(())
}
