//! Spoofed floods, as fast as the lab sends them, against established connections, while
//! the backend set changes (b4 is added): a connection whose flow entry the flood pushed out
//! is balanced by the new Maglev table, and if its entry there changed it lands on a backend
//! that knows nothing of it and is reset. A SYN flood records nothing (a connection is
//! recorded at the handshake's ACK, which spoofed SYNs never send); a flood of spoofed ACKs
//! is recorded, up to `new_flow_rate` per CPU per second.
//!
//! What the flow table does under a flood decides the setup. It is an LRU hash with a list per
//! CPU (each CPU holds an equal share of the entries), each list in two halves: a new entry
//! goes on the inactive list, an entry looked up since it was last scanned goes to the active
//! one, and every insert scans 4 entries of the active list (moving the unreferenced ones to
//! the inactive list, to be evicted) while it is longer than the inactive one. So a flood
//! pushes established flows out at its start, while its own entries are still few, and
//! whenever established flows hold more than half of a CPU's share. The connections are
//! opened, and the flood sent, from one CPU (in this lab a frame crosses the veths and the
//! bridge on the CPU that sends it, so the node's XDP program records their flows in that
//! CPU's list); the flood's senders run at idle priority, so that the clients, servers and
//! agent run first and the flood takes the rest: the node is busy, not overwhelmed, and the
//! chatting connections (a request every 100 ms each) keep talking. Idle connections (one
//! request, then silence, as keep-alive connections between requests) fill the table where a
//! test asks for it.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{ensure, Result};
use lb_common::{Flow, FlowKey, PROTO_TCP};
use lb_userspace::config::DEFAULT_NEW_FLOW_RATE;
use xlb_tests::{
    flood::{self, Flood},
    frames::{TCP_ACK, TCP_SYN},
    link_mac, plan, privileged,
    scenario::{agent_config, web4_config, Serve, SingleNode},
    traffic::{Held, HeldConnections, HttpServer, Tally},
};

/// A flood takes every CPU: one test at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Connections sending a request every `CHATTER_EVERY`.
const CHATTING: usize = 200;
const CHATTER_EVERY: Duration = Duration::from_millis(100);
/// The share of one CPU's part of the flow table that chatting and idle connections hold
/// together before the flood, where the table is filled.
const FILLED_PERCENT: usize = 80;
/// The CPU the connections and the flood start from.
const CPU: usize = 0;
/// The flood before the backend set changes, and after.
const FLOOD_BEFORE: Duration = Duration::from_secs(2);
const FLOOD_AFTER: Duration = Duration::from_secs(3);
/// Different prebuilt SYNs per sender (each sent again with a new source port every round).
const FRAMES: usize = 4096;

/// What a flood did.
struct Flooded {
    /// The chatting connections' backends before, what became of them, their exchanges.
    before: Tally,
    chatting: Held,
    exchanges: usize,
    /// The idle connections, and what became of them (one request each after the flood).
    idle: usize,
    idle_after: Held,
    /// Each CPU's share of the flow table.
    share: usize,
    /// Of which the connections held this much before the flood.
    fill_percent: usize,
    /// Fewest chatting and idle connections whose flow had an entry during the flood.
    present: (usize, usize),
    seconds: f64,
    sent: u64,
    /// Deltas of the node's counters over the flood.
    recorded: u64,
    unrecorded: u64,
}

impl Flooded {
    fn report(&self, label: &str) {
        let per_s = |n: u64| n as f64 / self.seconds;
        let lost = |h: &Held| h.moved.len() + h.broken.len();
        eprintln!(
            "lab_flood {label}: {:.1} s flood: {:.0} frames/s sent; the node saw {:.0} new flows/s, recorded {:.0}/s, \
             unrecorded {:.0}/s. {CHATTING} chatting connections ({:?}, {} exchanges, at least {} with an entry): {} kept \
             their backend, {} lost it; {} idle ones (at least {} with an entry): {} kept, {} lost; together {}% of the {} \
             entries of CPU {CPU}",
            self.seconds,
            per_s(self.sent),
            per_s(self.recorded + self.unrecorded),
            per_s(self.recorded),
            per_s(self.unrecorded),
            self.before,
            self.exchanges,
            self.present.0,
            self.chatting.kept,
            lost(&self.chatting),
            self.idle,
            self.present.1,
            self.idle_after.kept,
            lost(&self.idle_after),
            self.fill_percent,
            self.share,
        );
    }

    /// Connections that lost their backend, chatting and idle.
    fn lost(&self) -> usize {
        CHATTING - self.chatting.kept + self.idle - self.idle_after.kept
    }

    /// Fails unless every established connection kept its backend.
    fn none_lost(&self) -> Result<()> {
        ensure!(
            self.lost() == 0,
            "established connections lost their backend under the flood: chatting {:?}, idle {:?}",
            self.chatting,
            self.idle_after
        );
        Ok(())
    }
}

/// Counts, every 250 ms until stopped, how many of the given flows have an entry in the
/// agent's pinned flow table; the fewest seen, per set.
struct Presence {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<Vec<usize>>>,
}

impl Presence {
    fn watch(node: &SingleNode, sets: Vec<Vec<FlowKey>>) -> Presence {
        let pin = node.pins.join(lb_common::maps::FLOWS);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || -> Result<Vec<usize>> {
            let map = aya::maps::MapData::from_pin(&pin)?;
            let flows: aya::maps::HashMap<_, FlowKey, Flow> = aya::maps::HashMap::try_from(aya::maps::Map::LruHashMap(map))?;
            let mut fewest: Vec<usize> = sets.iter().map(Vec::len).collect();
            while !flag.load(Ordering::Relaxed) {
                for (set, min) in sets.iter().zip(&mut fewest) {
                    *min = (*min).min(set.iter().filter(|k| flows.get(k, 0).is_ok()).count());
                }
                std::thread::sleep(Duration::from_millis(250));
            }
            Ok(fewest)
        });
        Presence { stop, thread }
    }

    fn finish(self) -> Result<Vec<usize>> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().map_err(|_| anyhow::anyhow!("presence thread panicked"))?
    }
}

/// b1..b3, a flow table of 512 entries per CPU, the chatting connections and enough idle ones
/// to hold `fill_percent` of a CPU's share; then `new_flow_rate` (by a reload: the connections
/// were opened faster than a low limit records), and a flood of spoofed TCP segments with
/// `flags` from the client on each CPU, during which b4 is added.
fn flood_while_adding_a_backend(tag: &str, new_flow_rate: u32, fill_percent: usize, flags: u8) -> Result<Flooded> {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let possible = flood::possible_cpus()?;
    // At least 1024 (the smallest table allowed): one CPU then holds all of it.
    let table = 512 * possible.max(2);
    let share = table / possible;
    let config = |rate: u32| {
        web4_config(&[(11, 1), (12, 1), (13, 1)])
            .replace("flow_table_size = 65536", &format!("flow_table_size = {table}\nnew_flow_rate = {rate}"))
    };
    let mut node = SingleNode::start_with(tag, &config(0), Serve::Http)?;
    let b4 = node.lab.backend("b4", 14, &[plan::VIP4, plan::VIP6])?;
    let _b4_http = HttpServer::start(&b4.ns, "b4", 80)?;
    let vip: IpAddr = plan::VIP4.parse()?;
    let target = SocketAddr::new(vip, 80);

    let chatting = HeldConnections::open_on(&node.client.ns, target, CHATTING, CPU)?;
    let idle_count = (share * fill_percent / 100).saturating_sub(CHATTING);
    let mut idle = HeldConnections::open_on(&node.client.ns, target, idle_count, CPU)?;
    std::fs::write(&node.config, agent_config(&config(new_flow_rate), &node.pins, &node.socket))?;
    node.cli_ok(&["reload"])?;
    // The flow scanner counts the entries every 100 ms.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let status = node.status()?;
        if status.counters["flow_unrecorded"] == 0 && status.flows >= CHATTING + idle_count {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "every connection's flow recorded before the flood: {} entries, {} unrecorded",
            status.flows,
            status.counters["flow_unrecorded"]
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let keys = |held: &HeldConnections| -> Result<Vec<FlowKey>> {
        Ok(held.local_addrs()?.iter().map(|a| FlowKey::new(PROTO_TCP, a.ip(), a.port(), vip, 80)).collect())
    };
    let presence = Presence::watch(&node, vec![keys(&chatting)?, keys(&idle)?]);
    let before = chatting.tally();
    // A busy node answers late at times; only a reset or another backend counts here.
    chatting.set_read_timeout(Duration::from_secs(10))?;
    let chatter = chatting.chatter_on(CHATTER_EVERY, CPU);

    let (node_mac, client_mac) = (link_mac(&node.lb.ns, "eth0")?, link_mac(&node.client.ns, "eth0")?);
    let counters = |node: &SingleNode| -> Result<(u64, u64)> { Ok((node.counter("flow_new")?, node.counter("flow_unrecorded")?)) };
    let (new0, unrecorded0) = counters(&node)?;
    let started = Instant::now();
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut floods = Vec::new();
    for i in 0..cpus.min(2) {
        let frames = flood::spoofed_segments(flags, node_mac, client_mac, vip, 80, FRAMES, 1 + i as u64);
        floods.push(Flood::start_background(&node.client.ns, frames, (CPU + i) % cpus, flood::next_source_port)?);
    }
    std::thread::sleep(FLOOD_BEFORE);
    node.cli_ok(&["backend", "add", "web4", "203.0.113.14"])?;
    node.wait_ready(Duration::from_secs(10))?;
    std::thread::sleep(FLOOD_AFTER);
    let mut sent = 0;
    for f in floods {
        sent += f.stop()?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let (new1, unrecorded1) = counters(&node)?;
    // Every chatting connection speaks a few times more after the flood.
    std::thread::sleep(CHATTER_EVERY * 10);
    let (chatting, exchanges) = chatter.finish();
    let present = presence.finish()?;
    let idle_after = idle.check();
    node.no_agent_errors()?;
    Ok(Flooded {
        before,
        chatting,
        exchanges,
        idle: idle_count,
        idle_after,
        share,
        fill_percent: (CHATTING + idle_count) * 100 / share,
        present: (present[0], present[1]),
        seconds,
        sent,
        recorded: new1 - new0,
        unrecorded: unrecorded1 - unrecorded0,
    })
}

/// The table filled to 80% of a CPU's share by established flows, a SYN flood at full speed
/// (the default new-flow limit): the flood takes no entry, and no connection loses its backend.
#[test]
fn established_connections_keep_their_backends_under_a_syn_flood() -> Result<()> {
    if !privileged("established_connections_keep_their_backends_under_a_syn_flood") {
        return Ok(());
    }
    let run = flood_while_adding_a_backend("flood", DEFAULT_NEW_FLOW_RATE, FILLED_PERCENT, TCP_SYN)?;
    run.report("SYN flood, default new_flow_rate");
    ensure!(run.recorded == 0, "the SYN flood took {} flow entries", run.recorded);
    run.none_lost()
}

/// Only the 200 chatting connections, 39% of a CPU's 512 entries: none loses its backend.
#[test]
fn chatting_connections_keep_their_backends_under_a_syn_flood() -> Result<()> {
    if !privileged("chatting_connections_keep_their_backends_under_a_syn_flood") {
        return Ok(());
    }
    let run = flood_while_adding_a_backend("floodfew", DEFAULT_NEW_FLOW_RATE, 0, TCP_SYN)?;
    run.report("SYN flood, default new_flow_rate, chatting connections only");
    ensure!(run.recorded == 0, "the SYN flood took {} flow entries", run.recorded);
    run.none_lost()
}

/// A flood of spoofed ACKs (each a new flow to the program) without a limit pushes
/// established flows out of the table (the idle connections' beyond half of the CPU's
/// share), and those whose Maglev entry changed move: what the limit is for.
#[test]
fn without_the_limit_an_ack_flood_evicts_established_flows_and_they_move() -> Result<()> {
    if !privileged("without_the_limit_an_ack_flood_evicts_established_flows_and_they_move") {
        return Ok(());
    }
    let run = flood_while_adding_a_backend("floodctl", 0, FILLED_PERCENT, TCP_ACK)?;
    run.report("ACK flood, new_flow_rate = 0");
    ensure!(run.unrecorded == 0, "without a limit every new flow is recorded: {} unrecorded", run.unrecorded);
    ensure!(run.lost() > 0, "no established connection lost its backend: chatting {:?}, idle {:?}", run.chatting, run.idle_after);
    Ok(())
}

/// The same ACK flood with a limit the table's free entries can take for the flood's length
/// (10 a second per CPU: about 60 entries, of the 100 free in the CPU's share): none loses
/// its backend, and the rest of the flood went unrecorded.
#[test]
fn a_new_flow_limit_within_the_free_entries_keeps_established_flows_under_an_ack_flood() -> Result<()> {
    if !privileged("a_new_flow_limit_within_the_free_entries_keeps_established_flows_under_an_ack_flood") {
        return Ok(());
    }
    let run = flood_while_adding_a_backend("floodack", 10, FILLED_PERCENT, TCP_ACK)?;
    run.report("ACK flood, new_flow_rate = 10");
    ensure!(run.unrecorded > 0, "the limit never acted: {} recorded, {} unrecorded", run.recorded, run.unrecorded);
    run.none_lost()
}
