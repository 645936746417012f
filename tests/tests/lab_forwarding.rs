//! The lab with one load-balancer node running xlb, three backends and a client: real TCP and
//! UDP traffic over IPv4 and IPv6 through the XDP program.

use std::{net::SocketAddr, process::Command, time::Duration};

use anyhow::{Context as _, Result};
use xlb_tests::{
    in_netns, ip, plan, privileged, run,
    scenario::{SingleNode, BACKEND_NAMES},
    traffic::{self, assert_even},
};

const CONNECTIONS: usize = 300;
/// Each backend's share must be 1/3 within 10 points.
const TOLERANCE: f64 = 0.10;

/// An nftables counter in the client's namespace for what it sends to `vip` on `proto` `port`:
/// the ground truth the node's counters are compared with.
fn count_client_output(node: &SingleNode, vip: &str, proto: &str, port: u16) -> Result<()> {
    let family = if vip.contains(':') { "ip6" } else { "ip" };
    let script = format!(
        "table inet xlbtest {{ chain out {{ type filter hook output priority 0; {family} daddr {vip} {proto} dport {port} counter; }}; }}"
    );
    let path = node.lab.dir.join("count.nft");
    std::fs::write(&path, script)?;
    run(Command::new("ip").args(["netns", "exec", &node.client.ns, "nft", "-f"]).arg(&path))?;
    Ok(())
}

/// (packets, bytes) of the client's counter.
fn client_output(node: &SingleNode) -> Result<(u64, u64)> {
    let out = run(Command::new("ip").args(["netns", "exec", &node.client.ns, "nft", "-j", "list", "table", "inet", "xlbtest"]))?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    for item in v["nftables"].as_array().into_iter().flatten() {
        for expr in item["rule"]["expr"].as_array().into_iter().flatten() {
            if let Some(c) = expr.get("counter") {
                return Ok((c["packets"].as_u64().unwrap_or(0), c["bytes"].as_u64().unwrap_or(0)));
            }
        }
    }
    anyhow::bail!("no counter in {v}")
}

/// Received packets on the node's eth0.
fn node_rx_packets(node: &SingleNode) -> Result<u64> {
    let out = ip(&["-n", &node.lb.ns, "-j", "-s", "link", "show", "eth0"])?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    v[0]["stats64"]["rx"]["packets"].as_u64().context("rx packets")
}

/// Sends `CONNECTIONS` TCP connections or UDP exchanges to `service` and checks the spread,
/// and that the node counted exactly the client's packets to the VIP and forwarded nothing
/// else: replies go from the backends straight to the client.
fn spread_and_count(tag: &str, service: &str, target: SocketAddr, tcp: bool) -> Result<()> {
    let node = SingleNode::start(tag)?;
    let vip = target.ip().to_string();
    count_client_output(&node, &vip, if tcp { "tcp" } else { "udp" }, target.port())?;
    let rx_before = node_rx_packets(&node)?;
    let tally = in_netns(&node.client.ns, || {
        if tcp {
            traffic::tcp_connections(target, CONNECTIONS)
        } else {
            traffic::udp_exchanges(target, CONNECTIONS)
        }
    })??;
    // Late FINs and ACKs may still be on their way.
    std::thread::sleep(Duration::from_millis(300));
    assert_even(&tally, &BACKEND_NAMES, CONNECTIONS, TOLERANCE)?;

    let (sent_packets, sent_bytes) = client_output(&node)?;
    let ((packets, bytes), backends) = node.service_counters(service)?;
    assert_eq!(packets, sent_packets, "{service}: node forwarded {packets} packets, client sent {sent_packets} to the VIP");
    assert_eq!(bytes, sent_bytes, "{service}: bytes forwarded vs sent");
    let per_backend: u64 = backends.iter().map(|b| b.1).sum();
    assert_eq!(per_backend, packets, "backend counters add up to the service's: {backends:?}");
    assert!(backends.iter().all(|b| b.1 > 0), "every backend forwarded to: {backends:?}");

    // The node received the client's packets and little else (ARP/ND); had the replies come
    // through it, it would have received about twice as many.
    let rx = node_rx_packets(&node)? - rx_before;
    assert!(rx >= packets && rx <= packets + packets / 20 + 10, "node received {rx} packets for {packets} client packets");
    Ok(())
}

#[test]
fn tcp_v4_connections_spread_and_replies_bypass_the_node() -> Result<()> {
    if !privileged("tcp_v4_connections_spread_and_replies_bypass_the_node") {
        return Ok(());
    }
    spread_and_count("tcp4", "web4", format!("{}:80", plan::VIP4).parse()?, true)
}

#[test]
fn tcp_v6_connections_spread_and_replies_bypass_the_node() -> Result<()> {
    if !privileged("tcp_v6_connections_spread_and_replies_bypass_the_node") {
        return Ok(());
    }
    spread_and_count("tcp6", "web6", format!("[{}]:80", plan::VIP6).parse()?, true)
}

#[test]
fn udp_v4_exchanges_spread_and_replies_bypass_the_node() -> Result<()> {
    if !privileged("udp_v4_exchanges_spread_and_replies_bypass_the_node") {
        return Ok(());
    }
    spread_and_count("udp4", "dns4", format!("{}:53", plan::VIP4).parse()?, false)
}

#[test]
fn udp_v6_exchanges_spread_and_replies_bypass_the_node() -> Result<()> {
    if !privileged("udp_v6_exchanges_spread_and_replies_bypass_the_node") {
        return Ok(());
    }
    spread_and_count("udp6", "dns6", format!("[{}]:53", plan::VIP6).parse()?, false)
}

#[test]
fn traffic_for_the_node_itself_still_reaches_its_stack() -> Result<()> {
    if !privileged("traffic_for_the_node_itself_still_reaches_its_stack") {
        return Ok(());
    }
    let node = SingleNode::start("own")?;
    let before = node.counter("pass_not_service")?;
    // The node's own address answers ping, and a TCP port of the node answers (here with a
    // reset, as nothing listens): both went through XDP_PASS to the kernel.
    run(Command::new("ip").args(["netns", "exec", &node.client.ns, "ping", "-c", "2", "-W", "1", &node.lb.v4.to_string()]))?;
    let refused = in_netns(&node.client.ns, || {
        std::net::TcpStream::connect_timeout(&SocketAddr::new(node.lb.v4, 22), Duration::from_secs(2))
    })?;
    let err = refused.expect_err("nothing listens on the node's port 22");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    // A port of the VIP without a service reaches the node's stack too.
    let vip: std::net::IpAddr = plan::VIP4.parse()?;
    let refused = in_netns(&node.client.ns, || std::net::TcpStream::connect_timeout(&SocketAddr::new(vip, 8080), Duration::from_secs(2)))?;
    assert_eq!(refused.expect_err("no service on 8080").kind(), std::io::ErrorKind::ConnectionRefused);
    assert!(node.counter("pass_not_service")? >= before + 2, "TCP SYNs to the node counted as passed");
    Ok(())
}

#[test]
fn sigterm_detaches_and_cleans_up() -> Result<()> {
    if !privileged("sigterm_detaches_and_cleans_up") {
        return Ok(());
    }
    let mut node = SingleNode::start("stop")?;
    let xdp_attached = |ns: &str| -> Result<bool> {
        let out = ip(&["-n", ns, "-j", "link", "show", "eth0"])?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        Ok(v[0].get("xdp").is_some())
    };
    let has_vip = |ns: &str| -> Result<bool> {
        let out = ip(&["-n", ns, "addr", "show", "dev", "eth0"])?;
        Ok(String::from_utf8_lossy(&out.stdout).contains(&format!("{}/32", plan::VIP4)))
    };
    assert!(xdp_attached(&node.lb.ns)?, "attached while running");
    assert!(has_vip(&node.lb.ns)?, "VIP on eth0 while running");
    node.lab.teardown_processes();
    let log = node.lab.log("xlb");
    assert!(!xdp_attached(&node.lb.ns)?, "still attached after SIGTERM; log:\n{log}");
    assert!(!has_vip(&node.lb.ns)?, "VIP left behind; log:\n{log}");
    assert!(log.contains("detached and unpinned"), "log:\n{log}");
    assert!(!node.socket.exists(), "control socket removed");
    Ok(())
}
