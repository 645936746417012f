//! BGP scale-out in the lab (`xlb_tests::ecmp`): three xlb nodes behind a router running BIRD
//! with ECMP, each node announcing the VIPs through its own BIRD. 200 long-lived TCP
//! connections talk through the VIP while new ones keep coming; nodes drain, vanish, get
//! killed, come back, lose their data plane, and a backend is added. Each test prints its
//! figures.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::{ensure, Result};
use nix::sys::signal::Signal;
use xlb_tests::{
    ecmp::{Ecmp, Options, BACKEND_NAMES, VIP4, VIP6},
    pair::Prober,
    privileged,
    traffic::{assert_even, Chatter, Held, HeldConnections, Hammer, Outcome, Tally},
};

/// One lab at a time: BFD at 100 ms x 3 on a 2-CPU machine must not starve for another
/// lab's traffic.
static ONE_LAB: Mutex<()> = Mutex::new(());

fn one_lab() -> std::sync::MutexGuard<'static, ()> {
    ONE_LAB.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Long-lived connections in every test.
const HELD: usize = 200;
/// How often each of them sends a request.
const CHATTER: Duration = Duration::from_millis(50);
/// UDP flows probing the VIP every 10 ms, for the blackout of the flows a fault hits.
const PROBES: usize = 24;
/// The lab's nodes.
const ALL: [usize; 3] = [0, 1, 2];
const OTHERS: [usize; 2] = [1, 2];

/// New connections that failed, and those that succeeded, by the backend that answered.
fn new_connections(outcomes: &[Outcome]) -> (Vec<String>, Tally) {
    let mut failed = Vec::new();
    let mut tally = Tally::new();
    for (_, result) in outcomes {
        match result {
            Ok(name) => *tally.entry(name.clone()).or_default() += 1,
            Err(e) => failed.push(e.clone()),
        }
    }
    (failed, tally)
}

/// Each node's share of the new flows its xlb recorded for `service`.
fn node_flows(lab: &Ecmp, service: &str) -> Result<Vec<u64>> {
    (0..lab.nodes.len()).map(|i| lab.flows(i, service)).collect()
}

fn spread(tag: &str, vip: &str, service: &str) -> Result<()> {
    let _one = one_lab();
    let lab = Ecmp::start(tag, Options::default())?;
    let target = Ecmp::web(vip);
    let held = HeldConnections::open(&lab.client.ns, target, HELD)?;
    let hammer = Hammer::start(&lab.client.ns, target)?;
    std::thread::sleep(Duration::from_secs(2));
    let (failed, mut tally) = new_connections(&hammer.finish());
    // The spread is what this test is about; the drain and kill tests require every new
    // connection to succeed. Here one late answer (500 ms) on a cold lab is no spread problem.
    let tried = failed.len() + tally.values().sum::<usize>();
    ensure!(failed.len() * 100 <= tried, "{} of {tried} new connections failed: {:?}", failed.len(), &failed[..failed.len().min(5)]);
    let fresh: usize = tally.values().sum();
    for (name, n) in held.tally() {
        *tally.entry(name).or_default() += n;
    }
    let total = HELD + fresh;
    let flows = node_flows(&lab, service)?;
    let recorded: u64 = flows.iter().sum();
    eprintln!(
        "{vip}: {HELD} long-lived + {fresh} new connections ({} failed); per node {:?} flows ({:?}); per backend {tally:?}",
        failed.len(),
        flows,
        flows.iter().map(|f| format!("{:.1}%", 100.0 * *f as f64 / recorded as f64)).collect::<Vec<_>>()
    );
    // A new connection that reuses the 5-tuple of one just closed finds its entry: not a new
    // flow. Nearly every connection is one.
    // (A failed one may have been recorded.)
    ensure!(
        recorded as usize <= HELD + tried && recorded as usize >= total * 98 / 100,
        "the nodes recorded {recorded} flows for {total} connections ({} failed)",
        failed.len()
    );
    let per_node: Tally = flows.iter().enumerate().map(|(i, f)| (format!("lb{}", i + 1), *f as usize)).collect();
    assert_even(&per_node, &["lb1", "lb2", "lb3"], recorded as usize, 0.10)?;
    assert_even(&tally, &BACKEND_NAMES, total, 0.10)?;
    Ok(())
}

#[test]
fn flows_spread_over_nodes_and_backends_v4() -> Result<()> {
    if !privileged("flows_spread_over_nodes_and_backends_v4") {
        return Ok(());
    }
    spread("bgp-spread4", VIP4, "web4")
}

#[test]
fn flows_spread_over_nodes_and_backends_v6() -> Result<()> {
    if !privileged("flows_spread_over_nodes_and_backends_v6") {
        return Ok(());
    }
    spread("bgp-spread6", VIP6, "web6")
}

/// The traffic of a test: long-lived connections talking, new connections one after the
/// other, UDP flows probing.
struct Traffic {
    chatter: Chatter,
    hammer: Hammer,
    probers: Vec<Prober>,
}

/// What became of the traffic.
struct Seen {
    held: Held,
    exchanges: usize,
    new_failed: Vec<(Instant, String)>,
    new_ok: usize,
    probes: Vec<xlb_tests::pair::Probes>,
}

impl Traffic {
    fn start(lab: &Ecmp, vip: &str) -> Result<Traffic> {
        let held = HeldConnections::open(&lab.client.ns, Ecmp::web(vip), HELD)?;
        let probers =
            (0..PROBES).map(|_| Prober::start(&lab.client.ns, Ecmp::dns(vip), Duration::from_millis(10))).collect::<Result<Vec<_>>>()?;
        let traffic = Traffic { chatter: held.chatter(CHATTER), hammer: Hammer::start(&lab.client.ns, Ecmp::web(vip))?, probers };
        // A second of normal traffic first.
        std::thread::sleep(Duration::from_secs(1));
        Ok(traffic)
    }

    fn finish(self) -> Seen {
        let (held, exchanges) = self.chatter.finish();
        let outcomes = self.hammer.finish();
        let new_ok = outcomes.iter().filter(|(_, r)| r.is_ok()).count();
        let new_failed = outcomes.into_iter().filter_map(|(at, r)| r.err().map(|e| (at, e))).collect();
        Seen { held, exchanges, new_failed, new_ok, probes: self.probers.into_iter().map(Prober::stop).collect() }
    }
}

impl Seen {
    /// One line: the long-lived connections, the new ones.
    fn summary(&self) -> String {
        format!(
            "long-lived: {} kept, {} moved, {} broken ({} exchanges); new: {} of {} failed",
            self.held.kept,
            self.held.moved.len(),
            self.held.broken.len(),
            self.exchanges,
            self.new_failed.len(),
            self.new_failed.len() + self.new_ok
        )
    }

    /// No long-lived connection broke or changed backend.
    fn none_broken(&self) -> Result<()> {
        ensure!(
            self.held.kept == HELD && self.held.moved.is_empty() && self.held.broken.is_empty(),
            "{}: moved {:?}, broken {:?}",
            self.summary(),
            &self.held.moved[..self.held.moved.len().min(5)],
            &self.held.broken[..self.held.broken.len().min(5)]
        );
        Ok(())
    }

    fn no_new_failed(&self) -> Result<()> {
        ensure!(self.new_failed.is_empty(), "{}: {:?}", self.summary(), &self.new_failed[..self.new_failed.len().min(3)]);
        Ok(())
    }

    /// The probe flows that went silent for over 50 ms in the 5 s from `from` (or until the
    /// last probe): their blackouts, longest first.
    fn blackouts(&self, from: Instant) -> Vec<Duration> {
        let mut gaps: Vec<Duration> = self
            .probes
            .iter()
            .filter_map(|p| Some(p.blackout_in(from, (from + Duration::from_secs(5)).min(*p.sent.last()?)).longest))
            .filter(|d| *d > Duration::from_millis(50))
            .collect();
        gaps.sort_by(|a, b| b.cmp(a));
        gaps
    }
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

/// The router leads `vip` to `nodes` within `within`; when it did.
fn routed(lab: &Ecmp, nodes: &[usize], within: Duration) -> Result<Instant> {
    let v4 = lab.wait_next_hops(VIP4.parse()?, nodes, within)?;
    let v6 = lab.wait_next_hops(VIP6.parse()?, nodes, within)?;
    Ok(v4.max(v6))
}

fn drain_and_return(tag: &str, vip: &str) -> Result<()> {
    let _one = one_lab();
    let mut lab = Ecmp::start(tag, Options::default())?;
    let traffic = Traffic::start(&lab, vip)?;
    let started = Instant::now();
    let (out, gone) = std::thread::scope(|s| {
        let watch = s.spawn(|| lab.wait_next_hops(vip.parse()?, &OTHERS, Duration::from_secs(5)));
        let out = lab.xlb_command(0, &["drain-node", "--timeout", "30s"]);
        (out, watch.join().expect("watcher"))
    });
    let (out, gone) = (out?, gone?);
    let stopped = started.elapsed();
    lab.xlb_exited(0, Duration::from_secs(5))?;
    eprintln!("xlb drain-node said:\n{}", out.trim());
    ensure!(lab.next_hops(vip.parse()?)? == OTHERS, "the router still leads {vip} to lb1 after the drain");
    // The node comes back.
    std::thread::sleep(Duration::from_secs(1));
    let back = Instant::now();
    lab.start_xlb(0)?;
    let announced = routed(&lab, &ALL, Duration::from_secs(10))?;
    std::thread::sleep(Duration::from_secs(2));
    let seen = traffic.finish();
    eprintln!(
        "{vip}: lb1 drained: route withdrawn {} after drain-node, agent stopped after {}; came back: announced {} after its start; {}",
        ms(gone - started),
        ms(stopped),
        ms(announced - back),
        seen.summary()
    );
    seen.none_broken()?;
    seen.no_new_failed()?;
    Ok(())
}

#[test]
fn a_node_drained_and_back_breaks_nothing_v4() -> Result<()> {
    if !privileged("a_node_drained_and_back_breaks_nothing_v4") {
        return Ok(());
    }
    drain_and_return("bgp-drain4", VIP4)
}

#[test]
fn a_node_drained_and_back_breaks_nothing_v6() -> Result<()> {
    if !privileged("a_node_drained_and_back_breaks_nothing_v6") {
        return Ok(());
    }
    drain_and_return("bgp-drain6", VIP6)
}

fn vanish_and_return(tag: &str, vip: &str) -> Result<()> {
    let _one = one_lab();
    let lab = Ecmp::start(tag, Options::default())?;
    let traffic = Traffic::start(&lab, vip)?;
    let vanished = Instant::now();
    lab.vanish(0)?;
    let detected = routed(&lab, &OTHERS, Duration::from_secs(5))?;
    std::thread::sleep(Duration::from_secs(3));
    let back = Instant::now();
    lab.restore(0)?;
    let returned = routed(&lab, &ALL, Duration::from_secs(15))?;
    std::thread::sleep(Duration::from_secs(2));
    let seen = traffic.finish();
    let gaps = seen.blackouts(vanished);
    eprintln!(
        "{vip}: lb1 vanished: the router dropped it after {} (BFD 100 ms x 3); {} of {PROBES} probe flows went dark, for {} (longest first); \
         back {} after its link returned; {}",
        ms(detected - vanished),
        gaps.len(),
        gaps.iter().map(|g| ms(*g)).collect::<Vec<_>>().join(", "),
        ms(returned - back),
        seen.summary()
    );
    seen.none_broken()?;
    Ok(())
}

#[test]
fn a_node_vanishing_and_back_breaks_no_connection_v4() -> Result<()> {
    if !privileged("a_node_vanishing_and_back_breaks_no_connection_v4") {
        return Ok(());
    }
    vanish_and_return("bgp-vanish4", VIP4)
}

#[test]
fn a_node_vanishing_and_back_breaks_no_connection_v6() -> Result<()> {
    if !privileged("a_node_vanishing_and_back_breaks_no_connection_v6") {
        return Ok(());
    }
    vanish_and_return("bgp-vanish6", VIP6)
}

fn kill_and_restart(tag: &str, vip: &str) -> Result<()> {
    let _one = one_lab();
    let mut lab = Ecmp::start(tag, Options::default())?;
    let traffic = Traffic::start(&lab, vip)?;
    let killed = Instant::now();
    lab.stop_xlb(0, Signal::SIGKILL)?;
    let withdrawn = routed(&lab, &OTHERS, Duration::from_secs(5))?;
    // What systemd's Restart= does: a new agent, which adopts the pinned maps.
    std::thread::sleep(Duration::from_secs(1));
    let restarted = Instant::now();
    lab.start_xlb(0)?;
    let announced = routed(&lab, &ALL, Duration::from_secs(10))?;
    std::thread::sleep(Duration::from_secs(2));
    let seen = traffic.finish();
    ensure!(lab.xlb_log(0).contains("adopted pinned maps"), "the new agent did not adopt the pins:\n{}", lab.xlb_log(0));
    eprintln!(
        "{vip}: lb1's agent killed with -9: both VIPs withdrawn after {} (the kernel removed its tun device and routes; the program forwarded meanwhile); \
         restarted agent announced again {} after its start; {}",
        ms(withdrawn - killed),
        ms(announced - restarted),
        seen.summary()
    );
    seen.none_broken()?;
    seen.no_new_failed()?;
    Ok(())
}

#[test]
fn a_killed_agent_withdraws_and_its_successor_announces_again_v4() -> Result<()> {
    if !privileged("a_killed_agent_withdraws_and_its_successor_announces_again_v4") {
        return Ok(());
    }
    kill_and_restart("bgp-kill4", VIP4)
}

#[test]
fn a_killed_agent_withdraws_and_its_successor_announces_again_v6() -> Result<()> {
    if !privileged("a_killed_agent_withdraws_and_its_successor_announces_again_v6") {
        return Ok(());
    }
    kill_and_restart("bgp-kill6", VIP6)
}

fn detach(tag: &str, vip: &str) -> Result<()> {
    let _one = one_lab();
    let lab = Ecmp::start(tag, Options::default())?;
    let traffic = Traffic::start(&lab, vip)?;
    let detached = Instant::now();
    lab.detach(0)?;
    let withdrawn = routed(&lab, &OTHERS, Duration::from_secs(2))?;
    std::thread::sleep(Duration::from_secs(2));
    let seen = traffic.finish();
    let status = lab.status(0)?;
    let announce = status.announce.clone().expect("announce status");
    ensure!(
        announce.vips.iter().all(|v| !v.announced && v.reason.as_deref() == Some("data plane not forwarding")),
        "{announce:?}"
    );
    eprintln!(
        "{vip}: lb1's program detached: both VIPs withdrawn after {} (data-plane check every 100 ms, then BGP); {}; {} probe flows went dark, longest {}",
        ms(withdrawn - detached),
        seen.summary(),
        seen.blackouts(detached).len(),
        seen.blackouts(detached).first().map_or("-".into(), |g| ms(*g))
    );
    ensure!(withdrawn - detached < Duration::from_millis(300), "withdrawn after {:?}", withdrawn - detached);
    seen.none_broken()?;
    Ok(())
}

#[test]
fn a_node_without_its_data_plane_stops_announcing_v4() -> Result<()> {
    if !privileged("a_node_without_its_data_plane_stops_announcing_v4") {
        return Ok(());
    }
    detach("bgp-detach4", VIP4)
}

#[test]
fn a_node_without_its_data_plane_stops_announcing_v6() -> Result<()> {
    if !privileged("a_node_without_its_data_plane_stops_announcing_v6") {
        return Ok(());
    }
    detach("bgp-detach6", VIP6)
}

/// The backend address Maglev gives the TCP flow from `client` to `vip`:80 with a table over
/// `backends` (weight 1 each), as every node computes it.
fn maglev_choice(backends: &[String], client: std::net::SocketAddr, vip: &str) -> Result<String> {
    use lb_common::{hash::flow_hash, FlowKey, PROTO_TCP};
    let set: Vec<(&[u8], u32)> = backends.iter().map(|a| (a.as_bytes(), 1)).collect();
    let table = lb_userspace::maglev::build_for_set(&set, lb_common::DEFAULT_RING_SIZE)?;
    let key = FlowKey::new(PROTO_TCP, client.ip(), client.port(), vip.parse()?, 80);
    let at = (flow_hash(&key) % lb_common::DEFAULT_RING_SIZE) as usize;
    Ok(backends[table[at] as usize].clone())
}

/// Test 6 over `vip` (of `service`): backends' addresses `prefix` + the backend's number + 10.
fn added_then_leaving(tag: &str, vip: &str, service: &str, prefix: &str) -> Result<()> {
    let _one = one_lab();
    let mut lab = Ecmp::start(tag, Options::default())?;
    let held = HeldConnections::open(&lab.client.ns, Ecmp::web(vip), HELD)?;
    let address = |name: &str| format!("{prefix}{}", 10 + name.trim_start_matches('b').parse::<u8>().expect("bN"));
    let flows = held.flows()?;
    let chatter = held.chatter(CHATTER);
    // b4 joins every node's service, one node after the other, as an operator would.
    lab.add_backend("b4", 14)?;
    for i in ALL {
        lab.xlb_command(i, &["backend", "add", service, &address("b4")])?;
    }
    let old: Vec<String> = BACKEND_NAMES.iter().map(|b| address(b)).collect();
    let new: Vec<String> = ["b1", "b2", "b3", "b4"].iter().map(|b| address(b)).collect();
    // The held connections whose backend the new table would change: those lose their
    // backend if the router moves them to a node that has no entry for them.
    let mut at_risk = 0;
    for (client, backend) in &flows {
        let was = maglev_choice(&old, *client, vip)?;
        ensure!(was == address(backend), "{client} is on {backend}, but the table gives {was}");
        if maglev_choice(&new, *client, vip)? != was {
            at_risk += 1;
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    // New connections reach b4.
    let fresh = xlb_tests::in_netns(&lab.client.ns, || xlb_tests::traffic::http_requests(Ecmp::web(vip), 60))??;
    ensure!(fresh.get("b4").copied().unwrap_or(0) > 0, "no new connection reached b4: {fresh:?}");
    let before: u64 = OTHERS.iter().map(|&i| lab.flows(i, service)).sum::<Result<u64>>()?;
    lab.vanish(0)?;
    routed(&lab, &OTHERS, Duration::from_secs(5))?;
    std::thread::sleep(Duration::from_secs(3));
    let (seen, _) = chatter.finish();
    let after: u64 = OTHERS.iter().map(|&i| lab.flows(i, service)).sum::<Result<u64>>()?;
    let moved = after - before;
    let broken = seen.broken.len() + seen.moved.len();
    eprintln!(
        "{vip}: b4 added on every node, then lb1 vanished: {moved} of {HELD} long-lived connections moved to another node (lb1's and those ECMP rehashed); \
         {at_risk} had a backend the new table changes; {broken} broke ({} reset, {} answered by another backend), {} kept; \
         expected about {at_risk} x {moved}/{HELD} = {:.0}",
        seen.broken.len(),
        seen.moved.len(),
        seen.kept,
        at_risk as f64 * moved as f64 / HELD as f64
    );
    // A flow breaks only if it moved and the new table changed its backend.
    ensure!(broken <= at_risk, "{broken} broke, but only {at_risk} connections had a backend the new table changes");
    ensure!(broken as u64 <= moved, "{broken} broke, but only {moved} moved");
    Ok(())
}

#[test]
fn a_backend_added_then_a_node_leaving_breaks_a_bounded_share_v4() -> Result<()> {
    if !privileged("a_backend_added_then_a_node_leaving_breaks_a_bounded_share_v4") {
        return Ok(());
    }
    added_then_leaving("bgp-added4", VIP4, "web4", "203.0.113.")
}

#[test]
fn a_backend_added_then_a_node_leaving_breaks_a_bounded_share_v6() -> Result<()> {
    if !privileged("a_backend_added_then_a_node_leaving_breaks_a_bounded_share_v6") {
        return Ok(());
    }
    added_then_leaving("bgp-added6", VIP6, "web6", "2001:db8:0:1::")
}

#[test]
fn a_vip_whose_service_falls_below_quorum_is_withdrawn() -> Result<()> {
    if !privileged("a_vip_whose_service_falls_below_quorum_is_withdrawn") {
        return Ok(());
    }
    let _one = one_lab();
    let lab = Ecmp::start("bgp-quorum", Options::default())?;
    // On lb1, web4 loses every usable backend (drained); its VIP goes, the IPv6 one stays.
    let started = Instant::now();
    for b in ["203.0.113.11", "203.0.113.12", "203.0.113.13"] {
        lab.xlb_command(0, &["backend", "drain", "web4", b])?;
    }
    let withdrawn = lab.wait_next_hops(VIP4.parse()?, &OTHERS, Duration::from_secs(2))?;
    ensure!(lab.next_hops(VIP6.parse()?)? == ALL, "the IPv6 VIP left lb1 too");
    let status = lab.status(0)?.announce.expect("announce status");
    let v4 = status.vips.iter().find(|v| v.vip == VIP4).expect("VIP4");
    ensure!(!v4.announced && v4.reason.as_deref() == Some("service web4 below quorum"), "{v4:?}");
    let restored = Instant::now();
    lab.xlb_command(0, &["backend", "enable", "web4", "203.0.113.12"])?;
    let back = lab.wait_next_hops(VIP4.parse()?, &ALL, Duration::from_secs(2))?;
    eprintln!(
        "web4 below quorum on lb1: {VIP4} withdrawn {} after the three drains began, announced again {} after one backend came back",
        ms(withdrawn - started),
        ms(back - restored)
    );
    Ok(())
}

/// What systemd's watchdog sees: an agent started with `WatchdogSec=1s` pings from its loop;
/// one that hangs (here SIGSTOP) stops pinging, and the kill systemd then sends (here by the
/// test: SIGABRT, systemd's WatchdogSignal) withdraws its VIPs.
#[test]
fn a_hung_agent_stops_pinging_the_watchdog_and_its_kill_withdraws() -> Result<()> {
    use std::os::unix::net::UnixDatagram;
    if !privileged("a_hung_agent_stops_pinging_the_watchdog_and_its_kill_withdraws") {
        return Ok(());
    }
    let _one = one_lab();
    let mut lab = Ecmp::start("bgp-watchdog", Options::default())?;
    // lb1's agent again, as systemd starts it: a notify socket and WATCHDOG_USEC (1 s).
    lab.stop_xlb(0, Signal::SIGKILL)?;
    routed(&lab, &OTHERS, Duration::from_secs(5))?;
    let path = lab.lab.dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path)?;
    socket.set_read_timeout(Some(Duration::from_millis(100)))?;
    let notify = path.display().to_string();
    lab.start_xlb_env(0, &[("NOTIFY_SOCKET", &notify), ("WATCHDOG_USEC", "1000000")])?;
    routed(&lab, &ALL, Duration::from_secs(10))?;
    let pid = nix::unistd::Pid::from_raw(lab.xlb_pid(0).expect("running") as i32);
    // The pings that arrive within `window`, as times.
    let pings = |window: Duration| -> Vec<Instant> {
        let end = Instant::now() + window;
        let mut seen = Vec::new();
        let mut buf = [0u8; 512];
        while Instant::now() < end {
            if let Ok(n) = socket.recv(&mut buf) {
                if String::from_utf8_lossy(&buf[..n]).lines().any(|l| l == "WATCHDOG=1") {
                    seen.push(Instant::now());
                }
            }
        }
        seen
    };
    let alive = pings(Duration::from_secs(2));
    ensure!(alive.len() >= 3, "{} watchdog pings in 2 s from a running agent", alive.len());
    nix::sys::signal::kill(pid, Signal::SIGSTOP)?;
    let hung = Instant::now();
    let silent = pings(Duration::from_millis(1500));
    ensure!(silent.is_empty(), "a stopped agent pinged {} times", silent.len());
    // The watchdog expired (1 s without a ping); systemd sends WatchdogSignal.
    let expired = Instant::now();
    nix::sys::signal::kill(pid, Signal::SIGABRT)?;
    nix::sys::signal::kill(pid, Signal::SIGCONT)?;
    let withdrawn = routed(&lab, &OTHERS, Duration::from_secs(5))?;
    lab.xlb_exited(0, Duration::from_secs(5))?;
    eprintln!(
        "watchdog: {} pings in 2 s from a running agent (WatchdogSec 1 s), none in the {} after it hung; \
         its kill withdrew the VIPs after {} ({} after the hang)",
        alive.len(),
        ms(expired - hung),
        ms(withdrawn - expired),
        ms(withdrawn - hung)
    );
    Ok(())
}
