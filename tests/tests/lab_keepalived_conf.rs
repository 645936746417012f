//! xlb started from a keepalived.conf (`xlb run --config keepalived.conf`) in the two-node lab
//! (`xlb_tests::pair`): it forwards real TCP traffic to the backends, health-checks them as the
//! file's HTTP_GET says, and fails over to its peer; and it pairs with a real keepalived
//! started from the peer's keepalived.conf.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _, Result};
use nix::sys::signal::Signal;
use xlb_tests::{
    in_netns,
    pair::{vip4, Node, Options, Pair},
    plan, privileged,
    traffic::http_get,
};

/// The services a keepalived.conf's virtual_servers become (xlb names them by VIP, port and
/// protocol).
const WEB: &str = "203.0.113.100_80";
const DNS: &str = "203.0.113.100_53_udp";

/// A node's keepalived.conf, as an LVS-DR operator writes it: one VRRP instance for the IPv4
/// VIP (`vrrp` holds its version lines), an HTTP-checked TCP service on port 80 over b1..b3,
/// and a UDP service on port 53.
fn keepalived_conf(state: &str, priority: u8, vrrp: &str) -> String {
    let real_servers: String = (11..=13)
        .map(|octet| {
            format!(
                "    real_server 203.0.113.{octet} 80 {{\n        weight 1\n        HTTP_GET {{\n            url {{\n                path /health\n                status_code 200\n            }}\n            connect_timeout 0.2\n            retry 1\n            delay_before_retry 0.1\n        }}\n    }}\n"
            )
        })
        .collect();
    let udp_servers: String = (11..=13).map(|octet| format!("    real_server 203.0.113.{octet} 53 {{\n    }}\n")).collect();
    format!(
        "! Configuration File for keepalived: LVS-DR node ({state})\n\
         global_defs {{\n    router_id xlbt_{state}\n    notification_email {{\n        ops@example.org\n    }}\n}}\n\n\
         vrrp_instance VI_1 {{\n    state {state}\n    interface eth0\n    virtual_router_id 51\n    priority {priority}\n{vrrp}\
         \n    virtual_ipaddress {{\n        {vip}/32 dev eth0\n    }}\n}}\n\n\
         virtual_server {vip} 80 {{\n    delay_loop 0.3\n    lb_algo wrr\n    lb_kind DR\n    protocol TCP\n{real_servers}}}\n\n\
         virtual_server {vip} 53 {{\n    lb_algo rr\n    lb_kind DR\n    protocol UDP\n{udp_servers}}}\n",
        vip = plan::VIP4
    )
}

/// v3 with 100 ms adverts: fast failovers between two xlb nodes.
const FAST_V3: &str = "    version 3\n    advert_int 0.1\n";
/// keepalived's defaults: VRRP v2 (no `version` line), 1 s adverts, with a password.
const DEFAULT_V2: &str = "    advert_int 1\n    authentication {\n        auth_type PASS\n        auth_pass xlbpass\n    }\n";

fn web() -> SocketAddr {
    SocketAddr::new(vip4(), 80)
}

/// `n` new connections from the client, one GET each: how many each backend answered. Every
/// one must be answered.
fn spread(pair: &Pair, n: usize) -> Result<BTreeMap<String, usize>> {
    in_netns(&pair.client.ns, || -> Result<BTreeMap<String, usize>> {
        let mut tally = BTreeMap::new();
        for i in 0..n {
            let name = http_get(web(), Duration::from_secs(2)).with_context(|| format!("request {i} of {n}"))?;
            *tally.entry(name).or_default() += 1;
        }
        Ok(tally)
    })?
}

/// The state xlb on `node` gives backend `address` of service `service`.
fn backend_state(pair: &Pair, node: Node, service: &str, address: &str) -> Result<String> {
    let status = pair.status(node)?;
    let svc = status.service(service).with_context(|| format!("no service {service} on {}: {status:?}", node.name()))?;
    let b = svc.backends.iter().find(|b| b.address == address).with_context(|| format!("no backend {address}"))?;
    Ok(b.state.clone())
}

fn wait_backend(pair: &Pair, node: Node, address: &str, up: bool, timeout: Duration) -> Result<Duration> {
    let started = Instant::now();
    loop {
        let state = backend_state(pair, node, WEB, address)?;
        if state.starts_with("up") == up {
            return Ok(started.elapsed());
        }
        if started.elapsed() > timeout {
            bail!("{address} on {} is {state} after {timeout:?}\nlog:\n{}", node.name(), pair.xlb_log(node));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn xlb_from_keepalived_conf_forwards_checks_and_fails_over() -> Result<()> {
    if !privileged("xlb_from_keepalived_conf_forwards_checks_and_fails_over") {
        return Ok(());
    }
    let mut pair = Pair::start("kconf", Options { http: true, xlb: false, ..Options::default() })?;
    pair.start_xlb_keepalived(Node::Lb2, &keepalived_conf("BACKUP", 100, FAST_V3))?;
    let lb1_conf = pair.start_xlb_keepalived(Node::Lb1, &keepalived_conf("MASTER", 150, FAST_V3))?;
    pair.wait_sole_holder(Node::Lb1, Duration::from_secs(5))?;
    let v = pair.vrrp_status(Node::Lb2)?;
    ensure!(v.state == "BACKUP" && v.version == 3 && v.vrid == 51, "{v:?}");

    // Real TCP traffic, spread over the three backends by weight (wrr: weighted Maglev).
    let tally = spread(&pair, 90)?;
    eprintln!("through lb1: {tally:?}");
    ensure!(tally.len() == 3 && tally.values().all(|&n| n >= 10), "90 connections over b1..b3: {tally:?}");

    // HTTP_GET: b2's server stops, it goes down, and the traffic goes to the others.
    pair.http[1].stop();
    let took = wait_backend(&pair, Node::Lb1, "203.0.113.12", false, Duration::from_secs(3))?;
    eprintln!("b2 down after {took:?} (delay_loop 0.3, retry 1, delay_before_retry 0.1, connect_timeout 0.2)");
    let tally = spread(&pair, 60)?;
    ensure!(!tally.contains_key("b2") && tally.values().sum::<usize>() == 60, "b2 is down: {tally:?}");
    pair.http[1].resume()?;
    wait_backend(&pair, Node::Lb1, "203.0.113.12", true, Duration::from_secs(3))?;

    // A reload reads the keepalived.conf again: b3 quiesced (weight 0) takes no new connections.
    let edited = keepalived_conf("MASTER", 150, FAST_V3).replacen("real_server 203.0.113.13 80 {\n        weight 1", "real_server 203.0.113.13 80 {\n        weight 0", 1);
    std::fs::write(&lb1_conf, edited)?;
    let socket = pair.socket(Node::Lb1).display().to_string();
    let out = std::process::Command::new(&pair.xlb).args(["reload", "--socket", &socket]).output()?;
    ensure!(out.status.success(), "xlb reload: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let tally = spread(&pair, 40)?;
    ensure!(!tally.contains_key("b3") && tally.values().sum::<usize>() == 40, "b3 drained by the reload: {tally:?}");
    // A runtime change applies, but is not written into a keepalived.conf as TOML.
    let change = |save: bool| {
        let mut c = std::process::Command::new(&pair.xlb);
        c.args(["backend", "weight", "--socket", &socket, WEB, "203.0.113.13", "2"]);
        if save {
            c.arg("--save");
        }
        c.output()
    };
    let saved = change(true)?;
    ensure!(!saved.status.success() && String::from_utf8_lossy(&saved.stderr).contains("keepalived.conf"), "{saved:?}");
    ensure!(change(false)?.status.success());
    ensure!(spread(&pair, 40)?.contains_key("b3"), "the runtime weight applies");

    // Failover: lb1's agent stops (it resigns); lb2 takes the VIP and the traffic.
    let prober = pair.prober()?;
    prober.wait_replies_after(Instant::now(), 20, Duration::from_secs(3))?;
    pair.wait_forwarding(Node::Lb1, DNS, Duration::from_secs(2))?;
    let stopped = Instant::now();
    pair.stop_xlb(Node::Lb1, Signal::SIGTERM)?;
    let took_over = pair.wait_holder(Node::Lb2, Duration::from_secs(3))?;
    pair.wait_forwarding(Node::Lb2, DNS, Duration::from_secs(3))?;
    prober.wait_replies_after(Instant::now(), 20, Duration::from_secs(3))?;
    let blackout = prober.stop().blackout_in(stopped, Instant::now());
    eprintln!("lb1 stopped: lb2 holds the VIP after {:?}; client blackout {:?}", took_over - stopped, blackout);
    ensure!(blackout.longest < Duration::from_secs(1), "{blackout:?}");
    let tally = spread(&pair, 30)?;
    ensure!(tally.values().sum::<usize>() == 30 && tally.len() >= 2, "through lb2: {tally:?}");
    ensure!(pair.forwarded(Node::Lb2, WEB)? > 0, "the web traffic went through lb2");
    Ok(())
}

#[test]
fn xlb_from_keepalived_conf_pairs_with_keepalived() -> Result<()> {
    if !privileged("xlb_from_keepalived_conf_pairs_with_keepalived") {
        return Ok(());
    }
    let mut pair = Pair::start("kconfka", Options { http: true, xlb: false, ..Options::default() })?;
    // lb1: keepalived moves the VIP (from its keepalived.conf) over xlb's data plane.
    pair.start_xlb(Node::Lb1, "")?;
    // lb2: xlb alone, from the peer's keepalived.conf with its own state and priority.
    pair.start_xlb_keepalived(Node::Lb2, &keepalived_conf("BACKUP", 100, DEFAULT_V2))?;
    pair.start_keepalived_conf(Node::Lb1, &keepalived_conf("MASTER", 150, DEFAULT_V2))?;
    pair.wait_sole_holder(Node::Lb1, Duration::from_secs(8))?;
    let prober = pair.prober()?;
    prober.wait_replies_after(Instant::now(), 20, Duration::from_secs(3))?;
    // xlb heard keepalived's v2 adverts with the password, and dropped none.
    let deadline = Instant::now() + Duration::from_secs(3);
    let v = loop {
        let v = pair.vrrp_status(Node::Lb2)?;
        if v.adverts_received >= 2 || Instant::now() > deadline {
            break v;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let lb1 = pair.lb(Node::Lb1).v4.to_string();
    ensure!(v.state == "BACKUP" && v.version == 2 && v.master.as_deref() == Some(lb1.as_str()), "{v:?}");
    ensure!(v.adverts_received >= 2 && v.invalid.values().all(|&n| n == 0), "{v:?}");

    // keepalived stops (priority 0): xlb on lb2 takes over, forwards, and checks the backends.
    let stopped = Instant::now();
    pair.stop_keepalived(Node::Lb1, Signal::SIGTERM)?;
    let took_over = pair.wait_holder(Node::Lb2, Duration::from_secs(4))?;
    pair.wait_forwarding(Node::Lb2, DNS, Duration::from_secs(3))?;
    eprintln!("keepalived on lb1 stopped: xlb on lb2 holds the VIP after {:?}", took_over - stopped);
    let tally = spread(&pair, 60)?;
    ensure!(tally.len() == 3, "through lb2 to b1..b3: {tally:?}");
    ensure!(backend_state(&pair, Node::Lb2, WEB, "203.0.113.11")? == "up");

    // keepalived comes back at the higher priority and preempts; xlb steps down.
    pair.start_keepalived_conf(Node::Lb1, &keepalived_conf("MASTER", 150, DEFAULT_V2))?;
    pair.wait_sole_holder(Node::Lb1, Duration::from_secs(8))?;
    let deadline = Instant::now() + Duration::from_secs(3);
    while pair.vrrp_status(Node::Lb2)?.state != "BACKUP" {
        if Instant::now() > deadline {
            bail!("xlb on lb2 did not step down: {:?}\n{}", pair.vrrp_status(Node::Lb2)?, pair.xlb_log(Node::Lb2));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    pair.wait_forwarding(Node::Lb1, "dns4", Duration::from_secs(3))?;
    drop(prober);
    let log = pair.keepalived_log(Node::Lb1);
    ensure!(!log.contains("bad") && !log.contains("invalid"), "keepalived complained:\n{log}");
    Ok(())
}
