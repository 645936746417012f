//! The routed lab and its tunnel backends' `lab_decap`, without the agent: `lb1` sends
//! hand-built tunnelled frames (outer source `lb1`, outer destination `t1`, inner packet from
//! the client to a VIP) to the router's MAC, as xlb will. Each must reach `t1`'s servers, and
//! `t1`'s answer must reach the client's address from the router, not through `lb1`.
//!
//! TCP: the test plays the client's side of the handshake by hand (SYN, then ACK, both
//! tunnelled) and waits for `t1`'s server to send its name. UDP: a real socket on the client
//! receives `t1`'s answer from the VIP.

use std::{
    net::{IpAddr, UdpSocket},
    time::Duration,
};

use anyhow::{bail, ensure, Context as _, Result};
use lb_userspace::dataplane::OBJECT;
use xlb_tests::{
    frames::{self, encapsulate, ethernet_frame, send_raw, Tunnel, V4, PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_SYN},
    in_netns, ip, link_mac, plan, privileged,
    routed::{backend_v4, ip_of, Options, Routed, Sniffer, DEFAULT_GUE_PORT},
    scenario::{web4_config, Serve},
    traffic::tcp_connections,
    NS_PREFIX,
};

const WAIT: Duration = Duration::from_secs(5);

/// Outer and inner families and the tunnel.
#[derive(Clone, Copy, Debug)]
struct Case {
    outer_v6: bool,
    inner_v6: bool,
    tunnel: Tunnel,
}

const GUE: Tunnel = Tunnel::Gue { sport: 49152, dport: DEFAULT_GUE_PORT };

struct Ends {
    /// lb1's MAC and the router's.
    lb_mac: [u8; 6],
    router_mac: [u8; 6],
    outer_src: IpAddr,
    outer_dst: IpAddr,
    client: IpAddr,
    vip: IpAddr,
}

fn ends(r: &Routed, case: Case) -> Result<Ends> {
    let t1 = r.tunnel("t1")?;
    let (outer_src, outer_dst) = if case.outer_v6 { (r.node.lb.v6, t1.v6) } else { (r.node.lb.v4, t1.v4) };
    let (client, vip) = if case.inner_v6 { (r.node.client.v6, plan::VIP6.parse()?) } else { (r.node.client.v4, plan::VIP4.parse()?) };
    Ok(Ends { lb_mac: link_mac(&r.node.lb.ns, "eth0")?, router_mac: r.router_mac()?, outer_src, outer_dst, client, vip })
}

/// Sends `inner` (an IP packet) from lb1 to t1 through the tunnel, to the router's MAC.
fn send_tunnelled(r: &Routed, e: &Ends, case: Case, inner: &[u8]) -> Result<()> {
    let frame = ethernet_frame(e.router_mac, e.lb_mac, &encapsulate(e.outer_src, e.outer_dst, case.tunnel, inner));
    in_netns(&r.node.lb.ns, || send_raw("eth0", &frame))??;
    Ok(())
}

/// A TCP segment (an IP packet) with these flags and numbers.
fn tcp_packet(src: IpAddr, sport: u16, dst: IpAddr, dport: u16, flags: u8, seq: u32, ack: u32) -> Vec<u8> {
    let mut l4 = frames::transport(PROTO_TCP, sport, dport, &[]);
    l4[4..8].copy_from_slice(&seq.to_be_bytes());
    l4[8..12].copy_from_slice(&ack.to_be_bytes());
    l4[13] = flags;
    frames::finish_l4(&mut l4, src, dst, PROTO_TCP);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => V4::new(s, d, PROTO_TCP).packet(&l4),
        (IpAddr::V6(s), IpAddr::V6(d)) => frames::ipv6_packet(s, d, PROTO_TCP, &l4),
        _ => unreachable!("one family"),
    }
}

/// `frame` is a packet from `e.vip` to `e.client` of `proto` between these ports, sent by the
/// router: its transport header and onwards.
fn from_vip<'a>(frame: &'a [u8], e: &Ends, proto: u8, sport: u16, dport: u16) -> Option<&'a [u8]> {
    let (src, dst, p, l4) = ip_of(frame)?;
    let ports = l4.get(..4)? == [sport.to_be_bytes(), dport.to_be_bytes()].concat();
    (src == e.vip && dst == e.client && p == proto && ports).then_some(l4)
}

fn assert_from_router(frame: &[u8], e: &Ends) -> Result<()> {
    ensure!(frame[6..12] == e.router_mac, "t1's answer came from MAC {:02x?}, not the router's {:02x?}", &frame[6..12], e.router_mac);
    ensure!(frame[6..12] != e.lb_mac, "t1's answer came through lb1");
    Ok(())
}

/// TCP through the tunnel: a handshake played by hand, then t1's server writes its name.
fn tcp_through(r: &Routed, case: Case, sport: u16) -> Result<()> {
    let e = ends(r, case)?;
    let sniffer = Sniffer::open(&r.node.client.ns, "eth0")?;
    send_tunnelled(r, &e, case, &tcp_packet(e.client, sport, e.vip, 80, TCP_SYN, 1000, 0))?;
    let syn_ack = sniffer
        .wait_for(WAIT, |f| from_vip(f, &e, PROTO_TCP, 80, sport).is_some_and(|l4| l4[13] & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK))
        .with_context(|| format!("{case:?}: no SYN-ACK from t1's server on the client"))?;
    assert_from_router(&syn_ack, &e)?;
    let l4 = from_vip(&syn_ack, &e, PROTO_TCP, 80, sport).expect("matched");
    ensure!(l4[8..12] == 1001u32.to_be_bytes(), "SYN-ACK acknowledges {:02x?}", &l4[8..12]);
    let server_seq = u32::from_be_bytes(l4[4..8].try_into()?);
    send_tunnelled(r, &e, case, &tcp_packet(e.client, sport, e.vip, 80, TCP_ACK, 1001, server_seq.wrapping_add(1)))?;
    let data = sniffer
        .wait_for(WAIT, |f| from_vip(f, &e, PROTO_TCP, 80, sport).is_some_and(|l4| l4.len() > 20 && l4[20..].starts_with(b"t1\n")))
        .with_context(|| format!("{case:?}: t1's server did not send its name to the client"))?;
    assert_from_router(&data, &e)
}

/// UDP through the tunnel: a real socket on the client gets t1's answer from the VIP.
fn udp_through(r: &Routed, case: Case) -> Result<()> {
    let e = ends(r, case)?;
    let client = e.client;
    let socket = in_netns(&r.node.client.ns, move || UdpSocket::bind((client, 0)))??;
    socket.set_read_timeout(Some(Duration::from_secs(1)))?;
    let sport = socket.local_addr()?.port();
    let sniffer = Sniffer::open(&r.node.client.ns, "eth0")?;
    let inner = frames::flow_frame(PROTO_UDP, e.client, sport, e.vip, 53, b"who")[frames::ETH_LEN..].to_vec();
    let mut buf = [0u8; 64];
    let mut answer = None;
    // The first datagram waits for the router's and t1's neighbour resolution; retry in case.
    for _ in 0..3 {
        send_tunnelled(r, &e, case, &inner)?;
        if let Ok((n, from)) = socket.recv_from(&mut buf) {
            answer = Some((buf[..n].to_vec(), from));
            break;
        }
    }
    let Some((payload, from)) = answer else { bail!("{case:?}: no UDP answer on the client") };
    ensure!(payload == b"t1" && from.ip() == e.vip && from.port() == 53, "{case:?}: answer {payload:?} from {from}");
    let frame = sniffer.wait_for(WAIT, |f| from_vip(f, &e, PROTO_UDP, 53, sport).is_some())?;
    assert_from_router(&frame, &e)
}

fn through(tag: &str, cases: &[Case]) -> Result<()> {
    let r = Routed::start(tag, OBJECT, Options::default())?;
    for (i, &case) in cases.iter().enumerate() {
        udp_through(&r, case)?;
        tcp_through(&r, case, 40000 + i as u16)?;
    }
    Ok(())
}

#[test]
fn ipip_reaches_the_backend_and_it_answers_through_the_router() -> Result<()> {
    if !privileged("ipip_reaches_the_backend_and_it_answers_through_the_router") {
        return Ok(());
    }
    through("ipip", &[Case { outer_v6: false, inner_v6: false, tunnel: Tunnel::Ip }])
}

#[test]
fn ip6ip6_reaches_the_backend_and_it_answers_through_the_router() -> Result<()> {
    if !privileged("ip6ip6_reaches_the_backend_and_it_answers_through_the_router") {
        return Ok(());
    }
    through("ip6ip6", &[Case { outer_v6: true, inner_v6: true, tunnel: Tunnel::Ip }])
}

#[test]
fn four_in_six_reaches_the_backend_and_it_answers_through_the_router() -> Result<()> {
    if !privileged("four_in_six_reaches_the_backend_and_it_answers_through_the_router") {
        return Ok(());
    }
    through("4in6", &[Case { outer_v6: true, inner_v6: false, tunnel: Tunnel::Ip }])
}

#[test]
fn gue_reaches_the_backend_and_it_answers_through_the_router() -> Result<()> {
    if !privileged("gue_reaches_the_backend_and_it_answers_through_the_router") {
        return Ok(());
    }
    through("gue", &[Case { outer_v6: false, inner_v6: false, tunnel: GUE }])
}

/// What lab_decap takes beyond what xlb sends: 6-in-4, IPv6 in GUE, GUE over IPv6.
#[test]
fn six_in_four_and_other_gue_families_reach_the_backend() -> Result<()> {
    if !privileged("six_in_four_and_other_gue_families_reach_the_backend") {
        return Ok(());
    }
    through(
        "tunx",
        &[
            Case { outer_v6: false, inner_v6: true, tunnel: Tunnel::Ip },
            Case { outer_v6: false, inner_v6: true, tunnel: GUE },
            Case { outer_v6: true, inner_v6: false, tunnel: GUE },
        ],
    )
}

/// lab_decap leaves other traffic alone: lb1 reaches t1's own address over TCP (a health
/// check's path), and a UDP datagram to the GUE port that carries no IP packet reaches a
/// socket on t1 as it was sent.
#[test]
fn other_traffic_passes_untouched() -> Result<()> {
    if !privileged("other_traffic_passes_untouched") {
        return Ok(());
    }
    let r = Routed::start("tunpass", OBJECT, Options::default())?;
    let t1 = r.tunnel("t1")?.clone();
    let target = std::net::SocketAddr::new(t1.v4, 80);
    let name = in_netns(&r.node.lb.ns, move || -> Result<String> {
        let mut s = std::net::TcpStream::connect_timeout(&target, WAIT)?;
        s.set_read_timeout(Some(WAIT))?;
        let mut text = String::new();
        std::io::Read::read_to_string(&mut s, &mut text)?;
        Ok(text)
    })??;
    ensure!(name == "t1\n", "t1's own address answered {name:?}");

    let gue_port = in_netns(&t1.ns, || UdpSocket::bind(("0.0.0.0", DEFAULT_GUE_PORT)))??;
    gue_port.set_read_timeout(Some(Duration::from_secs(1)))?;
    let sender = in_netns(&r.node.lb.ns, || UdpSocket::bind(("0.0.0.0", 0)))??;
    let payload = b"\x00not an IP packet";
    let mut buf = [0u8; 64];
    let mut got = None;
    for _ in 0..3 {
        sender.send_to(payload, (backend_v4(11).as_str(), DEFAULT_GUE_PORT))?;
        if let Ok((n, _)) = gue_port.recv_from(&mut buf) {
            got = Some(buf[..n].to_vec());
            break;
        }
    }
    ensure!(got.as_deref() == Some(&payload[..]), "t1's socket on the GUE port got {got:?}");
    Ok(())
}

/// The hook for the agent: xlb starts on lb1 of the routed lab with a configuration and
/// serves the client (here through b1 alone, by direct routing; the tunnel backends' programs
/// change nothing for it).
#[test]
fn xlb_runs_on_the_routed_lab() -> Result<()> {
    if !privileged("xlb_runs_on_the_routed_lab") {
        return Ok(());
    }
    let r = Routed::start_with("tunxlb", OBJECT, &web4_config(&[(11, 1)]), Serve::Name)?;
    let target = std::net::SocketAddr::new(plan::VIP4.parse()?, 80);
    let tally = in_netns(&r.node.client.ns, move || tcp_connections(target, 20))??;
    ensure!(tally.get("b1") == Some(&20) && tally.len() == 1, "answers {tally:?}");
    r.node.no_agent_errors()
}

fn lab_namespaces(prefix: &str) -> Result<Vec<String>> {
    let out = ip(&["netns", "list"])?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&format!("{prefix}-")))
        .map(str::to_owned)
        .collect())
}

/// Everything the routed lab creates goes with it: on drop and on panic.
#[test]
fn routed_lab_tears_down_cleanly() -> Result<()> {
    if !privileged("routed_lab_tears_down_cleanly") {
        return Ok(());
    }
    let r = Routed::start("tundown", OBJECT, Options::default())?;
    let prefix = r.node.lab.prefix.clone();
    let dir = r.node.lab.dir.clone();
    let namespaces = lab_namespaces(&prefix)?;
    // switch, client, lb1, router, b1, t1..t3
    ensure!(namespaces.len() == 8, "namespaces {namespaces:?}");
    ensure!(namespaces.iter().all(|n| n.starts_with(NS_PREFIX)));
    drop(r);
    ensure!(lab_namespaces(&prefix)?.is_empty(), "left after drop: {:?}", lab_namespaces(&prefix)?);
    ensure!(!dir.exists(), "{} left after drop", dir.display());

    let (tx, rx) = std::sync::mpsc::channel();
    let panicked = std::thread::spawn(move || {
        let r = Routed::start("tunpanic", OBJECT, Options::default()).expect("lab");
        tx.send(r.node.lab.prefix.clone()).expect("receiver waits");
        panic!("a test fails with the lab up");
    })
    .join();
    ensure!(panicked.is_err(), "the thread should have panicked");
    let prefix = rx.recv()?;
    ensure!(lab_namespaces(&prefix)?.is_empty(), "left after a panic: {:?}", lab_namespaces(&prefix)?);
    Ok(())
}
