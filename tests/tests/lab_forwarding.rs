//! The lab with one load-balancer node running xlb, three backends and a client: real TCP and
//! UDP traffic over IPv4 and IPv6 through the XDP program.

use std::{net::SocketAddr, process::Command, time::Duration};

use anyhow::{Context as _, Result};
use xlb_tests::{
    frames, in_netns, ip, link_mac, plan, privileged, run,
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

#[test]
fn a_second_agent_is_refused_and_the_first_goes_on() -> Result<()> {
    if !privileged("a_second_agent_is_refused_and_the_first_goes_on") {
        return Ok(());
    }
    let node = SingleNode::start("second")?;
    let target: SocketAddr = format!("{}:80", plan::VIP4).parse()?;
    let out = xlb_tests::run(
        Command::new("ip").args(["netns", "exec", &node.lb.ns]).arg(&node.xlb).args(["run", "--config"]).arg(&node.config),
    );
    let err = match out {
        Ok(o) => anyhow::bail!("a second agent started: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("another agent is answering"), "{err}");
    // The first agent's VIP, program and tables are untouched: it still answers and forwards.
    node.status()?;
    let tally = in_netns(&node.client.ns, || traffic::tcp_connections(target, 90))??;
    assert_even(&tally, &BACKEND_NAMES, 90, 0.2)?;
    Ok(())
}

#[test]
fn kill_9_leaves_forwarding_running_and_a_new_agent_adopts_it() -> Result<()> {
    if !privileged("kill_9_leaves_forwarding_running_and_a_new_agent_adopts_it") {
        return Ok(());
    }
    let mut node = SingleNode::start("kill9")?;
    let target: SocketAddr = format!("{}:80", plan::VIP4).parse()?;
    in_netns(&node.client.ns, || traffic::tcp_connections(target, 50))??;
    // The count in the status is taken off the agent's loop, at most 100 ms old.
    std::thread::sleep(std::time::Duration::from_millis(250));
    let flows_before = node.status()?.flows;
    assert!(flows_before >= 50, "flows recorded: {flows_before}");

    node.lab.signal("xlb", nix::sys::signal::Signal::SIGKILL)?;
    // No agent now: the pinned link, program and maps keep forwarding.
    let tally = in_netns(&node.client.ns, || traffic::tcp_connections(target, 150))??;
    assert_even(&tally, &BACKEND_NAMES, 150, 0.15)?;

    node.start_agent()?;
    let log = node.lab.log("xlb");
    assert!(log.contains("adopted pinned maps"), "the new agent adopts the maps:\n{log}");
    let flows_after = node.status()?.flows;
    assert!(flows_after >= flows_before + 150, "flows survive the restart: {flows_before} before, {flows_after} after");
    in_netns(&node.client.ns, || traffic::tcp_connections(target, 50))??;
    Ok(())
}

#[test]
fn backend_behind_a_second_interface_is_reached_by_redirect() -> Result<()> {
    if !privileged("backend_behind_a_second_interface_is_reached_by_redirect") {
        return Ok(());
    }
    let xlb = xlb_tests::scenario::xlb_bin()?;
    let mut lab = xlb_tests::Lab::new("redir")?;
    let client = lab.host("client", 10)?;
    let lb = lab.host("lb1", 2)?;
    lab.add_bridge("br1")?;
    lab.leg(&lb.ns, "q-lb1", "br1", "eth1", &["198.51.100.2/24".into()])?;
    // A router between the segments carries the backend's replies to the client (the node
    // cannot: their source, the VIP, is one of its own addresses).
    let gw = lab.host("gw", 1)?;
    lab.leg(&gw.ns, "q-gw", "br1", "eth1", &["198.51.100.1/24".into()])?;
    lab.sysctl(&gw.ns, "net.ipv4.ip_forward", "1")?;
    lab.attach_xdp_pass("p-lb1")?;
    lab.attach_xdp_pass("q-lb1")?;
    // A backend on the second segment only.
    let ns = format!("{}-far", lab.prefix);
    ip(&["netns", "add", &ns])?;
    let far = xlb_tests::Host { name: "far".into(), ns: ns.clone(), v4: "198.51.100.11".parse()?, v6: "2001:db8:0:2::11".parse()? };
    lab.adopt_namespace(&ns);
    ip(&["-n", &ns, "link", "set", "lo", "up"])?;
    lab.leg(&ns, "q-far", "br1", "eth0", &["198.51.100.11/24".into()])?;
    ip(&["-n", &ns, "addr", "add", &format!("{}/32", plan::VIP4), "dev", "lo"])?;
    ip(&["-n", &ns, "route", "add", "default", "via", "198.51.100.1"])?;
    for key in ["all", "eth0"] {
        lab.sysctl(&ns, &format!("net.ipv4.conf.{key}.arp_ignore"), "1")?;
        lab.sysctl(&ns, &format!("net.ipv4.conf.{key}.arp_announce"), "2")?;
    }
    let mut servers = xlb_tests::traffic::Servers::default();
    servers.tcp(&far.ns, "far", 80)?;
    let socket = lab.dir.join("xlb.sock");
    let config = lab.dir.join("xlb.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[agent]
interfaces = ["eth0", "eth1"]
pin_path = "{}/xlb"
control_socket = "{}"
flow_table_size = 4096
max_services = 2

[[service]]
name = "far"
vip = "{}"
port = 80
[[service.backend]]
address = "198.51.100.11"
"#,
            lab.bpffs()?.display(),
            socket.display(),
            plan::VIP4
        ),
    )?;
    let config_arg = config.display().to_string();
    lab.spawn(&lb.ns, "xlb", &xlb, &["run", "--config", &config_arg])?;
    let ready = std::time::Instant::now();
    loop {
        if let Ok(s) = xlb_tests::scenario::status(&xlb, &socket) {
            if s.services.first().and_then(|s| s.backends.first()).is_some_and(|b| b.state == "up") {
                break;
            }
        }
        anyhow::ensure!(ready.elapsed() < Duration::from_secs(15), "not ready:\n{}", lab.log("xlb"));
        std::thread::sleep(Duration::from_millis(100));
    }
    let target: SocketAddr = format!("{}:80", plan::VIP4).parse()?;
    let tally = in_netns(&client.ns, || traffic::tcp_connections(target, 50))??;
    assert_eq!(tally.get("far"), Some(&50), "{tally:?}");
    let status = xlb_tests::scenario::status(&xlb, &socket)?;
    let forwarded = status.services[0].counters.packets;
    assert!(forwarded >= 150, "SYN, ACK and FIN of each connection: {forwarded}");
    assert_eq!(status.counters.get("redirect").copied(), Some(forwarded), "all through the devmap: {status:?}");
    drop(servers);
    Ok(())
}

#[test]
fn a_backend_that_changes_its_mac_is_followed() -> Result<()> {
    if !privileged("a_backend_that_changes_its_mac_is_followed") {
        return Ok(());
    }
    let node = SingleNode::start("newmac")?;
    let target: SocketAddr = format!("{}:80", plan::VIP4).parse()?;
    in_netns(&node.client.ns, || traffic::tcp_connections(target, 30))??;
    // b1 gets a new NIC, so to speak, and announces itself as hosts do when a link comes up.
    let b1 = &node.backends[0];
    let new_mac = "02:00:5e:10:00:11";
    ip(&["-n", &b1.ns, "link", "set", "eth0", "address", new_mac])?;
    run(Command::new("ip").args(["netns", "exec", &b1.ns, "arping", "-U", "-c", "2", "-I", "eth0", &b1.v4.to_string()]))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = node.status()?;
        let mac = status.services[0].backends[0].mac.clone().unwrap_or_default();
        if mac == new_mac {
            break;
        }
        anyhow::ensure!(std::time::Instant::now() < deadline, "agent still has {mac} for b1:\n{}", node.lab.log("xlb"));
        std::thread::sleep(Duration::from_millis(100));
    }
    let tally = in_netns(&node.client.ns, || traffic::tcp_connections(target, 150))??;
    assert_even(&tally, &BACKEND_NAMES, 150, 0.15)?;
    Ok(())
}

/// A UDP datagram from the client to the VIP's DNS service, Ethernet addressed to `dst`.
fn client_udp_frame(node: &SingleNode, dst: [u8; 6], sport: u16) -> Result<Vec<u8>> {
    let vip: std::net::IpAddr = plan::VIP4.parse()?;
    let mut frame = frames::flow_frame(frames::PROTO_UDP, node.client.v4, sport, vip, 53, b"who");
    frame[..6].copy_from_slice(&dst);
    frame[6..12].copy_from_slice(&link_mac(&node.client.ns, "eth0")?);
    Ok(frame)
}

#[test]
fn a_frame_for_another_hosts_mac_is_not_forwarded() -> Result<()> {
    if !privileged("a_frame_for_another_hosts_mac_is_not_forwarded") {
        return Ok(());
    }
    let node = SingleNode::start("othermac")?;
    // No host on the segment has this MAC, so the bridge floods the frames to every port, the
    // node's among them: what a switch does with unknown unicast, and what the backup of a VRRP
    // pair sees of the master's traffic.
    let stranger = [0x02, 0, 0, 0, 0x99, 0x99];
    let to_stranger = client_udp_frame(&node, stranger, 40100)?;
    let to_node = client_udp_frame(&node, link_mac(&node.lb.ns, "eth0")?, 40101)?;
    let (tx, other) = (node.counter("tx")?, node.counter("pass_other_host")?);
    for _ in 0..5 {
        in_netns(&node.client.ns, || frames::send_raw("eth0", &to_stranger))??;
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(node.counter("tx")?, tx, "a frame for another host was forwarded");
    assert!(node.counter("pass_other_host")? >= other + 5, "the 5 frames counted as another host's");
    // The same datagram addressed to the node is forwarded: only the destination MAC differed.
    in_netns(&node.client.ns, || frames::send_raw("eth0", &to_node))??;
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(node.counter("tx")?, tx + 1, "the frame to the node's MAC is forwarded");
    Ok(())
}

#[test]
fn a_new_mac_on_the_node_is_followed() -> Result<()> {
    if !privileged("a_new_mac_on_the_node_is_followed") {
        return Ok(());
    }
    let node = SingleNode::start("nodemac")?;
    let target: SocketAddr = format!("{}:80", plan::VIP4).parse()?;
    in_netns(&node.client.ns, || traffic::tcp_connections(target, 30))??;
    ip(&["-n", &node.lb.ns, "link", "set", "eth0", "address", "02:00:5e:10:00:02"])?;
    // The agent re-reads the interface's MAC with its 5 s neighbour refresh.
    let deadline = std::time::Instant::now() + Duration::from_secs(12);
    while !node.lab.log("xlb").contains("MAC changed") {
        anyhow::ensure!(std::time::Instant::now() < deadline, "agent did not see the new MAC:\n{}", node.lab.log("xlb"));
        std::thread::sleep(Duration::from_millis(100));
    }
    // The client learns the node's new MAC, and its frames to it are balanced again.
    ip(&["-n", &node.client.ns, "neigh", "flush", "dev", "eth0"])?;
    let tally = in_netns(&node.client.ns, || traffic::tcp_connections(target, 150))??;
    assert_even(&tally, &BACKEND_NAMES, 150, 0.15)?;
    Ok(())
}
