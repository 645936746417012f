//! What a node announces, and when a drain is over.

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use super::{decide, Drain, DrainEnd, NodeState, ServiceState, Withheld};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const V4: &str = "192.0.2.100";
const V6: &str = "2001:db8:100::100";

const SERVING: NodeState = NodeState { draining: false, forwarding: true, in_sync: true };

fn svc(name: &str, vip: &str, at_quorum: bool) -> ServiceState {
    ServiceState { name: name.into(), vip: ip(vip), at_quorum }
}

/// web4 and dns4 on the IPv4 VIP, web6 on the IPv6 one.
fn services(web4: bool, dns4: bool, web6: bool) -> Vec<ServiceState> {
    vec![svc("web4", V4, web4), svc("dns4", V4, dns4), svc("web6", V6, web6)]
}

#[test]
fn a_serving_node_announces_every_vip_whose_services_are_at_quorum() {
    let vips = [ip(V4), ip(V6)];
    assert_eq!(decide(&vips, SERVING, &services(true, true, true)), vec![(ip(V4), Ok(())), (ip(V6), Ok(()))]);
    // One service of a VIP below quorum withdraws that VIP alone; the other VIP stays.
    assert_eq!(
        decide(&vips, SERVING, &services(true, false, true)),
        vec![(ip(V4), Err(Withheld::BelowQuorum(vec!["dns4".into()]))), (ip(V6), Ok(()))]
    );
    assert_eq!(
        decide(&vips, SERVING, &services(false, false, true))[0].1.as_ref().unwrap_err().to_string(),
        "services web4, dns4 below quorum"
    );
    // Only the VIPs asked about, in their order.
    assert_eq!(decide(&[ip(V6)], SERVING, &services(false, false, true)), vec![(ip(V6), Ok(()))]);
}

#[test]
fn a_vip_without_services_is_not_announced() {
    assert_eq!(decide(&[ip(V4)], SERVING, &[]), vec![(ip(V4), Err(Withheld::NoService))]);
}

#[test]
fn node_faults_withdraw_everything_draining_first() {
    let vips = [ip(V4), ip(V6)];
    let all = services(true, true, true);
    let every = |why: Withheld| vec![(ip(V4), Err(why.clone())), (ip(V6), Err(why))];
    assert_eq!(decide(&vips, NodeState { forwarding: false, ..SERVING }, &all), every(Withheld::DataPlane));
    assert_eq!(decide(&vips, NodeState { in_sync: false, ..SERVING }, &all), every(Withheld::OutOfSync));
    assert_eq!(decide(&vips, NodeState { draining: true, ..SERVING }, &all), every(Withheld::Draining));
    // The reason shown is the first that holds: draining, then the data plane, then the maps.
    let everything = NodeState { draining: true, forwarding: false, in_sync: false };
    assert_eq!(decide(&vips, everything, &services(false, false, false)), every(Withheld::Draining));
    let broken = NodeState { draining: false, forwarding: false, in_sync: false };
    assert_eq!(decide(&vips, broken, &all), every(Withheld::DataPlane));
    assert_eq!(Withheld::DataPlane.to_string(), "data plane not forwarding");
}

#[test]
fn a_drain_ends_once_packets_stop_for_the_quiet_time() {
    let t0 = Instant::now();
    let ms = |n: u64| t0 + Duration::from_millis(n);
    let mut drain = Drain::start(t0, 1000, Duration::from_millis(500), Duration::from_secs(10));
    // The router has not converged yet: packets keep coming.
    assert_eq!(drain.observe(ms(100), 1010), None);
    assert_eq!(drain.observe(ms(200), 1020), None);
    assert_eq!(drain.last_packet(), ms(200));
    // Then nothing: quiet from the last packet seen, not from the withdrawal.
    assert_eq!(drain.observe(ms(600), 1020), None);
    assert_eq!(drain.observe(ms(699), 1020), None);
    assert_eq!(drain.observe(ms(700), 1020), Some(DrainEnd::Quiet));
}

#[test]
fn a_drain_without_traffic_lasts_the_quiet_time() {
    let t0 = Instant::now();
    let mut drain = Drain::start(t0, 7, Duration::from_secs(1), Duration::from_secs(30));
    assert_eq!(drain.observe(t0 + Duration::from_millis(999), 7), None);
    assert_eq!(drain.observe(t0 + Duration::from_secs(1), 7), Some(DrainEnd::Quiet));
}

#[test]
fn a_drain_with_packets_that_never_stop_ends_at_the_timeout() {
    let t0 = Instant::now();
    let mut drain = Drain::start(t0, 0, Duration::from_secs(1), Duration::from_secs(3));
    let mut packets = 0;
    let mut end = None;
    let mut at = Duration::ZERO;
    while end.is_none() {
        at += Duration::from_millis(50);
        packets += 5;
        end = drain.observe(t0 + at, packets);
    }
    assert_eq!((end, at), (Some(DrainEnd::Timeout), Duration::from_secs(3)));
}
