//! BGP scale-out in the lab (`xlb_tests::ecmp`): three xlb nodes behind a router running BIRD
//! with ECMP, each node announcing the VIPs through its own BIRD. 200 long-lived TCP
//! connections talk through the VIP while new ones keep coming; nodes drain, vanish, get
//! killed, come back, lose their data plane, and a backend is added. Each test prints its
//! figures.

use std::time::Duration;

use anyhow::{ensure, Result};
use xlb_tests::{
    ecmp::{Ecmp, Options, BACKEND_NAMES, VIP4, VIP6},
    privileged,
    traffic::{assert_even, HeldConnections, Hammer, Outcome, Tally},
};

/// Long-lived connections in every test.
const HELD: usize = 200;
/// How often each of them sends a request.
const CHATTER: Duration = Duration::from_millis(50);

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
    let lab = Ecmp::start(tag, Options::default())?;
    let target = Ecmp::web(vip);
    let held = HeldConnections::open(&lab.client.ns, target, HELD)?;
    let hammer = Hammer::start(&lab.client.ns, target)?;
    std::thread::sleep(Duration::from_secs(2));
    let (failed, mut tally) = new_connections(&hammer.finish());
    ensure!(failed.is_empty(), "{} of {} new connections failed: {:?}", failed.len(), failed.len() + tally.values().sum::<usize>(), &failed[..failed.len().min(5)]);
    let fresh: usize = tally.values().sum();
    for (name, n) in held.tally() {
        *tally.entry(name).or_default() += n;
    }
    let total = HELD + fresh;
    let flows = node_flows(&lab, service)?;
    let recorded: u64 = flows.iter().sum();
    eprintln!(
        "{vip}: {HELD} long-lived + {fresh} new connections; per node {:?} flows ({:?}); per backend {tally:?}",
        flows,
        flows.iter().map(|f| format!("{:.1}%", 100.0 * *f as f64 / recorded as f64)).collect::<Vec<_>>()
    );
    ensure!(recorded as usize == total, "the nodes recorded {recorded} flows for {total} connections");
    let per_node: Tally = flows.iter().enumerate().map(|(i, f)| (format!("lb{}", i + 1), *f as usize)).collect();
    assert_even(&per_node, &["lb1", "lb2", "lb3"], total, 0.10)?;
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
