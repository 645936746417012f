//! The two-node lab (`xlb_tests::pair`) proven with keepalived alone: two keepalived nodes
//! hold the VIP, xlb runs on both as the data plane (`assign_vips = false`). These tests are
//! the ground the xlb VRRP tests and the failover benchmark stand on.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use nix::sys::signal::Signal;
use xlb_tests::{
    pair::{vrrp_adverts, KeepalivedInstance, Node, Options, Pair, Prober, Tap},
    privileged,
};

const FAST: Duration = Duration::from_millis(100);

/// The master re-sends gratuitous ARPs every second. keepalived 2.2.7 does not re-announce
/// after a partition heals when the master's advert reaches the other side first (that side
/// steps down at once and the master never hears it): the client keeps sending to the node
/// that stepped down, whose XDP program still forwards, so only the nodes' counters tell.
const REANNOUNCE: &[&str] = &["garp_master_refresh 1"];

/// Both nodes run keepalived v3 with 100 ms adverts; lb1 (priority 150) must end up the sole
/// holder. `extra`: more keepalived instance lines.
fn elected_pair(tag: &str, extra: &[&str]) -> Result<(Pair, KeepalivedInstance)> {
    let mut pair = Pair::start(tag, Options::default())?;
    let backup = KeepalivedInstance { extra: extra.iter().map(|l| l.to_string()).collect(), ..KeepalivedInstance::v3(51, 100, FAST) };
    let master = KeepalivedInstance { priority: 150, ..backup.clone() };
    // The backup first: the master wins by priority, not by starting first.
    pair.start_keepalived(Node::Lb2, &backup)?;
    pair.start_keepalived(Node::Lb1, &master)?;
    pair.wait_sole_holder(Node::Lb1, Duration::from_secs(5))?;
    Ok((pair, backup))
}

/// A prober from the client, once its probes are answered.
fn probing(pair: &Pair) -> Result<Prober> {
    let prober = pair.prober()?;
    prober.wait_replies_after(Instant::now(), 30, Duration::from_secs(3))?;
    Ok(prober)
}

/// Waits until the node's xlb forwards the probes (its `dns4` counter moves); returns when.
fn wait_forwarding(pair: &Pair, node: Node, timeout: Duration) -> Result<Instant> {
    pair.wait_forwarding(node, "dns4", timeout)
}

/// Asserts that the probes now go through `node` alone: its counter moves, the other's not.
fn assert_only_through(pair: &Pair, node: Node) -> Result<()> {
    let other = node.other();
    let (a, b) = (pair.forwarded(node, "dns4")?, pair.forwarded(other, "dns4")?);
    std::thread::sleep(Duration::from_millis(300));
    let (a2, b2) = (pair.forwarded(node, "dns4")?, pair.forwarded(other, "dns4")?);
    ensure!(a2 >= a + 20, "{} forwarded {} probes in 300 ms", node.name(), a2 - a);
    ensure!(b2 == b, "{} still forwarded {} probes", other.name(), b2 - b);
    Ok(())
}

#[test]
fn keepalived_pair_elects_by_priority_and_the_vip_answers() -> Result<()> {
    if !privileged("keepalived_pair_elects_by_priority_and_the_vip_answers") {
        return Ok(());
    }
    let (pair, _) = elected_pair("kaelect", &[])?;
    // The unadvertised IPv6 VIP follows the instance. keepalived moves it in a step of its
    // own, after the IPv4 one, so it may lag the IPv4 VIP by a few milliseconds.
    pair.wait_holders_of(xlb_tests::plan::VIP6.parse()?, Duration::from_secs(1), |h| h == [Node::Lb1]).context("IPv6 VIP on lb1 alone")?;
    let prober = probing(&pair)?;
    assert_only_through(&pair, Node::Lb1)?;
    let probes = prober.stop();
    let blackout = probes.blackout();
    eprintln!("steady state: {blackout:?} responders {:?}", probes.responders());
    ensure!(blackout.lost <= 1, "lost probes in steady state: {blackout:?}");
    ensure!(probes.responders().len() == 1, "one flow, one backend: {:?}", probes.responders());
    Ok(())
}

#[test]
fn keepalived_master_killed_backup_takes_over() -> Result<()> {
    if !privileged("keepalived_master_killed_backup_takes_over") {
        return Ok(());
    }
    let (mut pair, backup) = elected_pair("kakill", &[])?;
    let prober = probing(&pair)?;
    let killed = Instant::now();
    pair.stop_keepalived(Node::Lb1, Signal::SIGKILL)?;
    let took_over = pair.wait_holder(Node::Lb2, Duration::from_secs(3))?;
    // lb2's gratuitous ARPs move the client: the probes now go through lb2's XDP program.
    let moved = wait_forwarding(&pair, Node::Lb2, Duration::from_secs(3))?;
    assert_only_through(&pair, Node::Lb2)?;
    let probes = prober.stop();
    let blackout = probes.blackout();
    eprintln!(
        "kill -9 of the master (v3, 100 ms): takeover after {:?} (Master_Down_Interval {:?}), traffic through lb2 after {:?}, client blackout {:?}, lost {}",
        took_over - killed,
        backup.master_down_interval(),
        moved - killed,
        blackout.longest,
        blackout.lost
    );
    ensure!(took_over - killed < backup.master_down_interval() + Duration::from_millis(500), "takeover took {:?}", took_over - killed);
    // lb1's data plane outlives its keepalived, so the client hardly notices.
    ensure!(blackout.longest < Duration::from_secs(1), "{blackout:?}");
    ensure!(probes.replies_after(moved) > 10, "traffic resumed through lb2");
    // The crashed keepalived left the VIP on lb1.
    ensure!(pair.holders()? == [Node::Lb1, Node::Lb2], "holders {:?}", pair.holders()?);
    Ok(())
}

#[test]
fn keepalived_master_vanishes_then_returns() -> Result<()> {
    if !privileged("keepalived_master_vanishes_then_returns") {
        return Ok(());
    }
    let (pair, backup) = elected_pair("kavanish", REANNOUNCE)?;
    let prober = probing(&pair)?;
    let gone = Instant::now();
    pair.vanish(Node::Lb1)?;
    let took_over = pair.wait_holder(Node::Lb2, Duration::from_secs(3))?;
    prober.wait_replies_after(took_over, 20, Duration::from_secs(3))?;
    let probes = prober.snapshot();
    let blackout = probes.blackout_in(gone, Instant::now());
    eprintln!(
        "master vanished (v3, 100 ms): takeover after {:?} (Master_Down_Interval {:?}), client blackout {:?}, lost {}",
        took_over - gone,
        backup.master_down_interval(),
        blackout.longest,
        blackout.lost
    );
    ensure!(blackout.longest >= backup.master_down_interval() - FAST, "the client saw the failover: {blackout:?}");
    ensure!(blackout.longest < backup.master_down_interval() + Duration::from_secs(1), "{blackout:?}");
    // Back: lb1 (higher priority, preempting) is master again and the probes go through it.
    pair.restore(Node::Lb1)?;
    pair.wait_sole_holder(Node::Lb1, Duration::from_secs(3))?;
    wait_forwarding(&pair, Node::Lb1, Duration::from_secs(3))?;
    assert_only_through(&pair, Node::Lb1)?;
    drop(prober);
    Ok(())
}

#[test]
fn keepalived_partition_heals_to_one_holder() -> Result<()> {
    if !privileged("keepalived_partition_heals_to_one_holder") {
        return Ok(());
    }
    let (pair, _) = elected_pair("kapart", REANNOUNCE)?;
    let prober = pair.prober()?;
    pair.partition()?;
    // Split brain: lb2 hears no adverts and becomes master too.
    pair.wait_holders(Duration::from_secs(3), |h| h.len() == 2)?;
    std::thread::sleep(Duration::from_millis(300));
    pair.heal()?;
    pair.wait_sole_holder(Node::Lb1, Duration::from_secs(3))?;
    let healed = Instant::now();
    prober.wait_replies_after(healed, 20, Duration::from_secs(3))?;
    // The master left standing announces itself again, so the client goes back to lb1.
    wait_forwarding(&pair, Node::Lb1, Duration::from_secs(3))?;
    assert_only_through(&pair, Node::Lb1)?;
    let probes = prober.stop();
    eprintln!("partition and heal: {:?}", probes.blackout());
    Ok(())
}

/// Both nodes with `instance` (lb1 at priority 150); every advert on the segment is checked
/// with tshark.
fn adverts_valid(tag: &str, instance: KeepalivedInstance, capture: Duration) -> Result<()> {
    let mut pair = Pair::start(tag, Options { udp_echo: false, xlb: false, ..Options::default() })?;
    pair.start_keepalived(Node::Lb2, &instance)?;
    pair.start_keepalived(Node::Lb1, &KeepalivedInstance { priority: 150, ..instance.clone() })?;
    pair.wait_sole_holder(Node::Lb1, instance.master_down_interval() + Duration::from_secs(3))?;
    let pcap = pair.capture(Tap::Switch, capture)?;
    let adverts = vrrp_adverts(&pcap)?;
    let lb1 = pair.lb(Node::Lb1).v4;
    let from_lb1: Vec<_> = adverts.iter().filter(|a| a.src == lb1).collect();
    ensure!(from_lb1.len() >= 2, "adverts from lb1 in {capture:?}: {adverts:?}");
    for a in &adverts {
        ensure!(a.checksum == "Good", "checksum {}: {a:?}", a.checksum);
        ensure!(a.ttl == 255 && a.version == instance.version && a.vrid == instance.vrid, "{a:?}");
        ensure!(a.addresses == [instance.virtual_addresses[0]], "advertised addresses: {a:?}");
    }
    for a in from_lb1 {
        ensure!(a.priority == 150, "{a:?}");
        match instance.version {
            2 => ensure!(a.interval == 1 && a.auth == Some((1, instance.auth_pass.clone().unwrap_or_default())), "{a:?}"),
            _ => ensure!(a.interval == 10, "v3 interval in centiseconds: {a:?}"),
        }
    }
    Ok(())
}

#[test]
fn keepalived_v3_adverts_are_valid_for_tshark() -> Result<()> {
    if !privileged("keepalived_v3_adverts_are_valid_for_tshark") {
        return Ok(());
    }
    adverts_valid("kav3", KeepalivedInstance::v3(52, 100, FAST), Duration::from_millis(600))
}

#[test]
fn keepalived_v2_adverts_are_valid_for_tshark() -> Result<()> {
    if !privileged("keepalived_v2_adverts_are_valid_for_tshark") {
        return Ok(());
    }
    adverts_valid("kav2", KeepalivedInstance::v2(53, 100, Some("xlbpass")), Duration::from_millis(2500))
}
