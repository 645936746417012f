//! Tunnel mode end to end, on the routed lab (`xlb_tests::routed`): xlb on lb1 reaches
//! backends t1..t3 on another subnet behind a router through IPIP, 4-in-6, IP6IP6 and GUE, next
//! to a direct-routing backend b1 on the segment; the backends answer the client through the
//! router, never through lb1.

use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _, Result};
use lb_common::status::{BackendStatus, Status};
use lb_userspace::dataplane::OBJECT;
use xlb_tests::{
    in_netns, plan, privileged,
    routed::{backend_v4, backend_v6, mixed_config, service_toml, tunnel_sources, Routed, Sniffer},
    scenario::{lab_agent_section, Serve},
    traffic::{assert_even, http_requests, tcp_connections, udp_exchanges, HeldConnections, Tally},
};

fn target(vip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(vip.parse().expect("a VIP"), port)
}

fn client<T: Send>(r: &Routed, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    in_netns(&r.node.client.ns, f)?
}

/// `count` TCP connections from the client, in rounds of 50: within a round no source port
/// repeats (`tcp_connections` checks), across rounds the kernel may give one out again.
fn connections(r: &Routed, target: SocketAddr, count: usize) -> Result<Tally> {
    let mut tally = Tally::new();
    for round in (0..count).step_by(50) {
        for (name, n) in client(r, || tcp_connections(target, (count - round).min(50)))? {
            *tally.entry(name).or_default() += n;
        }
    }
    Ok(tally)
}

#[test]
fn tcp_and_udp_over_ipv4_and_ipv6_reach_every_backend_and_the_replies_bypass_the_node() -> Result<()> {
    if !privileged("tcp_and_udp_over_ipv4_and_ipv6_reach_every_backend_and_the_replies_bypass_the_node") {
        return Ok(());
    }
    let r = Routed::start_with("tunmix", OBJECT, &mixed_config(), Serve::Name)?;
    let status = r.node.status()?;
    let web4 = &status.services.iter().find(|s| s.name == "web4").context("web4")?.backends;
    let forwards: Vec<(&str, &str)> = web4.iter().map(|b| (b.forward.as_str(), b.next_hop.as_deref().unwrap_or("-"))).collect();
    let router = plan::v4(1);
    let router6 = plan::v6(1);
    ensure!(forwards == [("ipip", router.as_str()), ("ipip", router6.as_str()), ("gue:6080", router.as_str())], "{forwards:?}");

    // 300 connections over three tunnels of three kinds.
    let tally = connections(&r, target(plan::VIP4, 80), 300)?;
    eprintln!("web4 (IPIP, 4-in-6, GUE): {tally:?}");
    assert_even(&tally, &["t1", "t2", "t3"], 300, 0.10)?;
    // Mixed methods in one service: every backend answers, by direct routing or a tunnel.
    let everyone = ["b1", "t1", "t2", "t3"];
    for (label, tally) in [
        ("dns4 (UDP, IPIP + DR)", client(&r, || udp_exchanges(target(plan::VIP4, 53), 200))?),
        ("web6 (TCP, IP6IP6 + DR)", connections(&r, target(plan::VIP6, 80), 200)?),
        ("dns6 (UDP, IP6IP6 + DR)", client(&r, || udp_exchanges(target(plan::VIP6, 53), 200))?),
    ] {
        eprintln!("{label}: {tally:?}");
        // Every backend takes a share (the even spread is web4's to show), and nobody else.
        ensure!(tally.values().sum::<usize>() == 200 && tally.len() == 4, "{label}: {tally:?}");
        ensure!(everyone.iter().all(|b| tally.get(*b).is_some_and(|&n| n >= 10)), "{label}: {tally:?}");
    }
    let encapsulated = r.node.counter("encapsulated")?;
    ensure!(encapsulated > 900, "encapsulated {encapsulated}");

    // The replies (from a VIP) go from the backends through the router to the client; lb1
    // sees none of them.
    let vips: [IpAddr; 2] = [plan::VIP4.parse()?, plan::VIP6.parse()?];
    let at_lb1 = Sniffer::open(&r.node.lb.ns, "eth0")?;
    let at_router = Sniffer::open(&r.router.ns, "eth0")?;
    let t4 = client(&r, || tcp_connections(target(plan::VIP4, 80), 20))?;
    let u6 = client(&r, || udp_exchanges(target(plan::VIP6, 53), 20))?;
    let (lb1_saw, router_saw) = (at_lb1.count_from(&vips), at_router.count_from(&vips));
    eprintln!("replies seen: lb1 {lb1_saw}, router {router_saw} ({t4:?} {u6:?})");
    ensure!(lb1_saw == 0, "lb1 saw {lb1_saw} frames from a VIP");
    ensure!(router_saw >= 40, "the router carried {router_saw} frames from a VIP");
    r.node.no_agent_errors()
}

fn backend<'a>(status: &'a Status, service: &str, address: &str) -> Result<&'a BackendStatus> {
    let svc = status.services.iter().find(|s| s.name == service).context("service")?;
    svc.backends.iter().find(|b| b.address == address).with_context(|| format!("backend {address}"))
}

#[test]
fn a_dead_tunnelled_backend_is_detected_and_its_flows_move() -> Result<()> {
    if !privileged("a_dead_tunnelled_backend_is_detected_and_its_flows_move") {
        return Ok(());
    }
    let backends: Vec<(String, &str)> = (11..=13).map(|h| (backend_v4(h), "ipip")).collect();
    let config = lab_agent_section().to_owned()
        + &tunnel_sources()
        + &service_toml("web4", plan::VIP4, 80, "tcp", &backends)
        + "[service.check]\ntype = \"http\"\npath = \"/health\"\ninterval = \"300ms\"\nfast_interval = \"100ms\"\ntimeout = \"200ms\"\nrise = 2\nfall = 2\n";
    let mut r = Routed::start_with("tundead", OBJECT, &config, Serve::Http)?;
    let t2 = backend_v4(12);
    let held = HeldConnections::open(&r.node.client.ns, target(plan::VIP4, 80), 60)?;
    let on_t2 = held.tally().get("t2").copied().unwrap_or(0);
    ensure!(on_t2 > 0, "no held connection on t2: {:?}", held.tally());
    let flows_before = backend(&r.node.status()?, "web4", &t2)?.flows;
    // t2's server dies (its address still answers: the check is what notices).
    let stopped = Instant::now();
    r.node.http.iter_mut().find(|h| h.name() == "t2").context("t2's server")?.stop();
    let deadline = stopped + Duration::from_secs(5);
    loop {
        let status = r.node.status()?;
        let b = backend(&status, "web4", &t2)?;
        if b.health == "down" && b.flows == Some(0) {
            eprintln!("t2 down after {:?} ({:?}), flows {flows_before:?} -> 0", stopped.elapsed(), b.reason);
            break;
        }
        if Instant::now() > deadline {
            bail!("t2 after 5 s: health {} flows {:?} ({:?})", b.health, b.flows, b.reason);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let tally: Tally = client(&r, || http_requests(target(plan::VIP4, 80), 60))?;
    ensure!(!tally.contains_key("t2") && tally.values().sum::<usize>() == 60, "new connections: {tally:?}");
    drop(held);
    r.node.no_agent_errors()
}

/// A server on `addrs` in `ns` that reads each connection to its end and answers with the
/// number of bytes it read.
fn counting_server(ns: &str, addrs: &[SocketAddr]) -> Result<()> {
    for addr in addrs {
        let listener = in_netns(ns, || TcpListener::bind(addr))??;
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut n = 0usize;
                let mut buf = [0u8; 65536];
                while let Ok(k) = conn.read(&mut buf) {
                    if k == 0 {
                        break;
                    }
                    n += k;
                }
                let _ = conn.write_all(n.to_string().as_bytes());
            }
        });
    }
    Ok(())
}

/// Sends `len` bytes to `target` (the kernel sets DF on TCP), then reads the count answered.
fn upload(target: SocketAddr, len: usize) -> Result<String> {
    let mut conn = TcpStream::connect_timeout(&target, Duration::from_secs(3))?;
    conn.set_write_timeout(Some(Duration::from_secs(20)))?;
    conn.set_read_timeout(Some(Duration::from_secs(20)))?;
    conn.write_all(&vec![0x5a; len]).with_context(|| format!("sending {len} bytes to {target}"))?;
    conn.shutdown(std::net::Shutdown::Write)?;
    let mut reply = String::new();
    conn.read_to_string(&mut reply)?;
    Ok(reply)
}

#[test]
fn path_mtu_discovery_works_end_to_end_through_the_tunnel() -> Result<()> {
    if !privileged("path_mtu_discovery_works_end_to_end_through_the_tunnel") {
        return Ok(());
    }
    // One tunnelled backend per family: every full-sized segment of the client's is too big
    // for lb1's 1500-byte link once wrapped.
    let config = lab_agent_section().to_owned()
        + &tunnel_sources()
        + &service_toml("bulk4", plan::VIP4, 9000, "tcp", &[(backend_v4(11), "ipip")])
        + &service_toml("bulk6", plan::VIP6, 9000, "tcp", &[(backend_v6(11), "ipip")]);
    let r = Routed::start_with("tunpmtu", OBJECT, &config, Serve::Name)?;
    counting_server(&r.tunnel("t1")?.ns, &[target(plan::VIP4, 9000), target(plan::VIP6, 9000)])?;
    const MIB: usize = 1 << 20;
    for vip in [plan::VIP4, plan::VIP6] {
        let sent_before = r.node.counter("too_big_sent")?;
        let started = Instant::now();
        let reply = client(&r, || upload(target(vip, 9000), MIB))?;
        let answers = r.node.counter("too_big_sent")? - sent_before;
        eprintln!("{vip}: 1 MiB with DF in {:?}, {answers} too-big answers from lb1", started.elapsed());
        ensure!(reply == MIB.to_string(), "{vip}: the backend read {reply} bytes");
        ensure!(answers >= 1, "{vip}: no packet was too big, so nothing was shown");
    }
    ensure!(r.node.counter("drop_too_big")? == 0, "nothing dropped");
    r.node.no_agent_errors()
}

/// Waits until backend `address` of `service` is in `state`; returns its status.
fn wait_state(r: &Routed, service: &str, address: &str, state: &str, timeout: Duration) -> Result<BackendStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        let status = r.node.status()?;
        let b = backend(&status, service, address)?;
        if b.state == state {
            return Ok(b.clone());
        }
        if Instant::now() > deadline {
            bail!("{address} still {} after {timeout:?}", b.state);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_tunnelled_backend_follows_its_route_and_the_route_s_mtu() -> Result<()> {
    if !privileged("a_tunnelled_backend_follows_its_route_and_the_route_s_mtu") {
        return Ok(());
    }
    let config = lab_agent_section().to_owned()
        + &tunnel_sources()
        + &service_toml("bulk4", plan::VIP4, 9000, "tcp", &[(backend_v4(11), "ipip")]);
    let r = Routed::start_with("tunroute", OBJECT, &config, Serve::Name)?;
    counting_server(&r.tunnel("t1")?.ns, &[target(plan::VIP4, 9000)])?;
    let t1 = backend_v4(11);
    let lb = r.node.lb.ns.clone();
    // The route goes: the backend is unusable (its service has nothing left: dropped, counted).
    xlb_tests::ip(&["-n", &lb, "route", "del", xlb_tests::routed::BACKEND_NET4])?;
    let gone = Instant::now();
    let b = wait_state(&r, "bulk4", &t1, "no-route", Duration::from_secs(8))?;
    eprintln!("route removed: {t1} {} after {:?}", b.state, gone.elapsed());
    ensure!(client(&r, || upload(target(plan::VIP4, 9000), 1000)).is_err(), "served without a route");
    ensure!(r.node.counter("drop_no_backend")? > 0, "the service's packets are dropped");
    // It comes back with an MTU of its own: the tunnel's packets must fit 1400 bytes.
    xlb_tests::ip(&["-n", &lb, "route", "add", xlb_tests::routed::BACKEND_NET4, "via", &plan::v4(1), "mtu", "1400"])?;
    let back = Instant::now();
    let b = wait_state(&r, "bulk4", &t1, "up", Duration::from_secs(8))?;
    eprintln!("route back: {t1} {} after {:?}, next hop {:?}", b.state, back.elapsed(), b.next_hop);
    const MIB: usize = 1 << 20;
    let reply = client(&r, || upload(target(plan::VIP4, 9000), MIB))?;
    ensure!(reply == MIB.to_string(), "the backend read {reply} bytes");
    // The client learnt the path MTU the node told it: 1400 less IPIP's 20 bytes.
    let out = xlb_tests::ip(&["-n", &r.node.client.ns, "route", "get", plan::VIP4])?;
    let route = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(route.contains("mtu 1380"), "the client's route to the VIP: {route}");
    r.node.no_agent_errors()
}
