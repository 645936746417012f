//! xlb's own VRRP in the two-node lab (`xlb_tests::pair`): election, failover on kill -9 and
//! SIGTERM, preemption, partition and heal, bad and forged adverts (off the link, not to the
//! group, from strangers to unicast instances, a lower-priority flood), the data-plane fault,
//! tracking and notify scripts, and pairing with keepalived (v2 with PASS auth, v3) with
//! tshark checking the adverts.

use std::{
    net::{IpAddr, Ipv4Addr},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _, Result};
use lb_common::status::InstanceStatus;
use lb_userspace::vrrp::packet::{self, Advert, Checksum};
use nix::sys::signal::Signal;
use serde_json::Value;
use xlb_tests::{
    in_netns,
    pair::{vip4, vrrp_adverts, KeepalivedInstance, Node, Options, Pair, Tap},
    privileged,
};

const FAST: Duration = Duration::from_millis(100);
const VRID: u8 = 51;

/// A `[[vrrp_instance]]` for the IPv4 VIP on eth0, v3 at 100 ms unless `extra` says otherwise
/// (`extra` lines come first, so they override nothing but add keys).
fn instance(priority: u8, extra: &[&str]) -> String {
    let mut s = format!("[[vrrp_instance]]\nname = \"VI_1\"\ninterface = \"eth0\"\nvrid = {VRID}\npriority = {priority}\n");
    let has = |k: &str| extra.iter().any(|l| l.starts_with(k));
    if !has("advert_interval") {
        s.push_str("advert_interval = \"100ms\"\n");
    }
    s.push_str(&format!("virtual_addresses = [\"{}\"]\n", vip4()));
    for l in extra {
        s.push_str(l);
        s.push('\n');
    }
    s
}

/// Master_Down_Interval of a v3 backup at `priority` with 100 ms adverts.
fn mdi(priority: u8) -> Duration {
    FAST * 3 + skew(priority)
}

fn skew(priority: u8) -> Duration {
    FAST * (256 - u32::from(priority)) / 256
}

/// A pair whose nodes run xlb with VRRP: lb2 at `p2` started first, then lb1 at `p1`.
fn xlb_pair(tag: &str, p1: u8, p2: u8, extra: &[&str]) -> Result<Pair> {
    let mut pair = Pair::start(tag, Options { xlb: false, ..Options::default() })?;
    pair.start_xlb(Node::Lb2, &instance(p2, extra))?;
    pair.start_xlb(Node::Lb1, &instance(p1, extra))?;
    Ok(pair)
}

fn state(pair: &Pair, node: Node) -> Result<String> {
    Ok(pair.vrrp_status(node)?.state)
}

fn wait_state(pair: &Pair, node: Node, want: &str, timeout: Duration) -> Result<Instant> {
    let deadline = Instant::now() + timeout;
    loop {
        let s = state(pair, node)?;
        if s == want {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            bail!("{} is {s}, not {want}, after {timeout:?}\nlog:\n{}", node.name(), pair.xlb_log(node));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until lb1 alone holds the VIP (within `within`) and lb2 is its backup.
fn wait_lb1_master(pair: &Pair, within: Duration) -> Result<()> {
    pair.wait_sole_holder(Node::Lb1, within)?;
    wait_state(pair, Node::Lb2, "BACKUP", Duration::from_secs(1))?;
    Ok(())
}

/// Both nodes' instance status, lb1's first.
fn statuses(pair: &Pair) -> Result<Vec<InstanceStatus>> {
    Node::BOTH.iter().map(|&n| pair.vrrp_status(n)).collect()
}

/// Waits until the node's xlb forwards the prober's packets (its `dns4` counter moves).
fn wait_forwarding(pair: &Pair, node: Node, timeout: Duration) -> Result<Instant> {
    pair.wait_forwarding(node, "dns4", timeout)
}

/// The probes go through `node` alone: its counter moves, the other's does not.
fn assert_only_through(pair: &Pair, node: Node) -> Result<()> {
    let other = node.other();
    let (a, b) = (pair.forwarded(node, "dns4")?, pair.forwarded(other, "dns4").unwrap_or(0));
    std::thread::sleep(Duration::from_millis(300));
    let (a2, b2) = (pair.forwarded(node, "dns4")?, pair.forwarded(other, "dns4").unwrap_or(0));
    ensure!(a2 >= a + 20, "{} forwarded {} probes in 300 ms", node.name(), a2 - a);
    ensure!(b2 == b, "{} still forwarded {} probes", other.name(), b2 - b);
    Ok(())
}

#[test]
fn xlb_elects_by_priority_then_by_address() -> Result<()> {
    if !privileged("xlb_elects_by_priority_then_by_address") {
        return Ok(());
    }
    // lb1 (203.0.113.2) at 150 beats lb2 (.3) at 100, although lb2 started first.
    let pair = xlb_pair("velect", 150, 100, &[])?;
    wait_lb1_master(&pair, Duration::from_secs(3))?;
    let backup = pair.vrrp_status(Node::Lb2)?;
    ensure!(backup.master == Some(pair.lb(Node::Lb1).v4.to_string()), "lb2 names its master: {backup:?}");
    let prober = pair.prober()?;
    prober.wait_replies_after(Instant::now(), 30, Duration::from_secs(3))?;
    assert_only_through(&pair, Node::Lb1)?;
    drop(prober);
    drop(pair);

    // Equal priority: the higher primary address (lb2, .3) wins, whoever starts first.
    let pair = xlb_pair("vaddr", 100, 100, &[])?;
    pair.wait_sole_holder(Node::Lb2, Duration::from_secs(3))?;
    wait_state(&pair, Node::Lb1, "BACKUP", Duration::from_secs(1))?;
    Ok(())
}

#[test]
fn xlb_master_killed_backup_takes_over_within_master_down_interval() -> Result<()> {
    if !privileged("xlb_master_killed_backup_takes_over_within_master_down_interval") {
        return Ok(());
    }
    let mut pair = xlb_pair("vkill", 150, 100, &[])?;
    pair.wait_sole_holder(Node::Lb1, Duration::from_secs(3))?;
    let prober = pair.prober()?;
    prober.wait_replies_after(Instant::now(), 30, Duration::from_secs(3))?;
    assert_only_through(&pair, Node::Lb1)?;
    let killed = Instant::now();
    pair.stop_xlb(Node::Lb1, Signal::SIGKILL)?;
    let took_over = wait_state(&pair, Node::Lb2, "MASTER", Duration::from_secs(3))?;
    // The gratuitous ARPs move the client: the probes now go through lb2's XDP program (lb1's
    // stays attached on its pinned link and would have forwarded them too).
    let moved = wait_forwarding(&pair, Node::Lb2, Duration::from_secs(3))?;
    assert_only_through(&pair, Node::Lb2)?;
    prober.wait_replies_after(moved, 20, Duration::from_secs(3))?;
    let probes = prober.stop();
    eprintln!(
        "kill -9 of the master: takeover after {:?} (Master_Down_Interval {:?}), through lb2 after {:?}, client {:?}",
        took_over - killed,
        mdi(100),
        moved - killed,
        probes.blackout()
    );
    ensure!(took_over - killed <= mdi(100) + Duration::from_millis(100), "takeover took {:?}", took_over - killed);
    ensure!(took_over - killed >= mdi(100) - FAST, "takeover after {:?}: sooner than Master_Down_Interval?", took_over - killed);
    ensure!(probes.replies_after(moved) > 10, "traffic resumed through lb2");
    Ok(())
}

#[test]
fn xlb_master_sigterm_hands_over_after_skew_time() -> Result<()> {
    if !privileged("xlb_master_sigterm_hands_over_after_skew_time") {
        return Ok(());
    }
    let notify = "notify = [\"/bin/sh\", \"-c\", \"echo \\\"$@\\\" >> \\\"$0\\\"\"";
    let mut pair = Pair::start("vterm", Options { xlb: false, ..Options::default() })?;
    let log = |n: Node| pair.lab.dir.join(format!("notify-{}.log", n.name()));
    let (log1, log2) = (log(Node::Lb1), log(Node::Lb2));
    let n1 = format!("{notify}, \"{}\"]", log1.display());
    let n2 = format!("{notify}, \"{}\"]", log2.display());
    pair.start_xlb(Node::Lb2, &instance(100, &[&n2]))?;
    pair.start_xlb(Node::Lb1, &instance(150, &[&n1]))?;
    pair.wait_sole_holder(Node::Lb1, Duration::from_secs(3))?;
    let prober = pair.prober()?;
    prober.wait_replies_after(Instant::now(), 30, Duration::from_secs(3))?;
    let stopped = Instant::now();
    pair.stop_xlb(Node::Lb1, Signal::SIGTERM)?;
    let took_over = wait_state(&pair, Node::Lb2, "MASTER", Duration::from_secs(3))?;
    pair.wait_sole_holder(Node::Lb2, Duration::from_secs(1))?;
    let moved = wait_forwarding(&pair, Node::Lb2, Duration::from_secs(3))?;
    prober.wait_replies_after(moved, 20, Duration::from_secs(3))?;
    let probes = prober.stop();
    eprintln!(
        "SIGTERM of the master: takeover after {:?} (skew {:?}, Master_Down_Interval {:?}), client {:?}",
        took_over - stopped,
        skew(100),
        mdi(100),
        probes.blackout()
    );
    assert_resigned(&pair, took_over - stopped)?;
    ensure!(probes.replies_after(moved) > 10, "traffic resumed through lb2");
    // A planned handover loses nothing: lb1 keeps forwarding until it hears lb2 as master.
    let blackout = probes.blackout();
    ensure!(blackout.lost == 0 && blackout.longest < Duration::from_millis(50), "the client noticed the handover: {blackout:?}");
    // Notify scripts ran with keepalived's arguments.
    std::thread::sleep(Duration::from_millis(100));
    let l1 = std::fs::read_to_string(&log1).unwrap_or_default();
    let l2 = std::fs::read_to_string(&log2).unwrap_or_default();
    ensure!(l1.lines().collect::<Vec<_>>() == ["INSTANCE VI_1 BACKUP 150", "INSTANCE VI_1 MASTER 150", "INSTANCE VI_1 STOP 150"], "lb1 notify: {l1:?}");
    ensure!(l2.ends_with("INSTANCE VI_1 MASTER 100\n"), "lb2 notify: {l2:?}");
    Ok(())
}

#[test]
fn xlb_kills_and_logs_a_notify_script_past_its_timeout() -> Result<()> {
    if !privileged("xlb_kills_and_logs_a_notify_script_past_its_timeout") {
        return Ok(());
    }
    let mut pair = Pair::start("vnotifyto", Options { xlb: false, udp_echo: false, ..Options::default() })?;
    let pidfile = pair.lab.dir.join("notify.pid");
    let notify = format!("notify_master = [\"/bin/sh\", \"-c\", \"echo $$ > \\\"$0\\\"; exec sleep 30\", \"{}\"]", pidfile.display());
    pair.start_xlb(Node::Lb1, &instance(150, &[&notify, "notify_timeout = \"300ms\""]))?;
    wait_state(&pair, Node::Lb1, "MASTER", Duration::from_secs(3))?;
    let deadline = Instant::now() + Duration::from_secs(3);
    let pid = loop {
        if let Some(pid) = std::fs::read_to_string(&pidfile).ok().filter(|p| p.ends_with('\n')) {
            break pid.trim().to_owned();
        }
        ensure!(Instant::now() < deadline, "the notify script did not start:\n{}", pair.xlb_log(Node::Lb1));
        std::thread::sleep(Duration::from_millis(10));
    };
    let deadline = Instant::now() + Duration::from_secs(3);
    while !pair.xlb_log(Node::Lb1).contains("ran longer than notify_timeout") || std::path::Path::new(&format!("/proc/{pid}")).exists() {
        ensure!(Instant::now() < deadline, "notify script {pid} not killed and logged:\n{}", pair.xlb_log(Node::Lb1));
        std::thread::sleep(Duration::from_millis(10));
    }
    ensure!(state(&pair, Node::Lb1)? == "MASTER", "the instance runs on");
    Ok(())
}

/// lb2 took over because lb1 resigned (priority 0: after skew time, 61 ms here), not because
/// lb1 fell silent (Master_Down_Interval, 361 ms), and within Master_Down_Interval.
fn assert_resigned(pair: &Pair, took: Duration) -> Result<()> {
    let st = pair.vrrp_status(Node::Lb2)?;
    ensure!(st.last_transition.as_deref().is_some_and(|t| t.contains("priority 0")), "lb2 took over for another reason: {st:?}");
    ensure!(took < mdi(100), "takeover took {took:?}\nlb1:\n{}\nlb2:\n{}", pair.xlb_log(Node::Lb1), pair.xlb_log(Node::Lb2));
    Ok(())
}

#[test]
fn xlb_preempt_nopreempt_and_preempt_delay() -> Result<()> {
    if !privileged("xlb_preempt_nopreempt_and_preempt_delay") {
        return Ok(());
    }
    // Preempt (default): lb1 at 150 joining a running lb2 master takes over at once.
    let mut pair = Pair::start("vpreempt", Options { xlb: false, ..Options::default() })?;
    pair.start_xlb(Node::Lb2, &instance(100, &[]))?;
    pair.wait_sole_holder(Node::Lb2, Duration::from_secs(3))?;
    let joined = Instant::now();
    pair.start_xlb(Node::Lb1, &instance(150, &[]))?;
    let took = pair.wait_sole_holder(Node::Lb1, Duration::from_secs(3))?;
    eprintln!("preempt: lb1 master {:?} after it was started", took - joined);

    // nopreempt: lb1 restarted with preempt = false stays backup under the lower lb2.
    pair.stop_xlb(Node::Lb1, Signal::SIGTERM)?;
    pair.wait_sole_holder(Node::Lb2, Duration::from_secs(3))?;
    pair.start_xlb(Node::Lb1, &instance(150, &["preempt = false"]))?;
    std::thread::sleep(mdi(150) * 3);
    ensure!(state(&pair, Node::Lb1)? == "BACKUP", "nopreempt lb1 is {}", state(&pair, Node::Lb1)?);
    ensure!(pair.holders()? == [Node::Lb2], "holders {:?}", pair.holders()?);

    // preempt_delay = 1.5 s: lb1 waits that long after its start, then takes over.
    pair.stop_xlb(Node::Lb1, Signal::SIGTERM)?;
    let started = Instant::now();
    pair.start_xlb(Node::Lb1, &instance(150, &["preempt_delay = \"1500ms\""]))?;
    std::thread::sleep(Duration::from_millis(1000).saturating_sub(started.elapsed()));
    ensure!(state(&pair, Node::Lb1)? == "BACKUP", "lb1 preempted before its delay");
    let took = wait_state(&pair, Node::Lb1, "MASTER", Duration::from_secs(3))?;
    let after = took - started;
    eprintln!("preempt_delay 1.5 s: lb1 master {after:?} after its start");
    ensure!(after >= Duration::from_millis(1500) && after < Duration::from_millis(1500) + mdi(150) + Duration::from_millis(500), "{after:?}");
    pair.wait_sole_holder(Node::Lb1, Duration::from_secs(1))?;
    Ok(())
}

#[test]
fn xlb_partition_heals_to_one_master_and_the_client_follows() -> Result<()> {
    if !privileged("xlb_partition_heals_to_one_master_and_the_client_follows") {
        return Ok(());
    }
    let pair = xlb_pair("vpart", 150, 100, &[])?;
    pair.wait_sole_holder(Node::Lb1, Duration::from_secs(3))?;
    let prober = pair.prober()?;
    prober.wait_replies_after(Instant::now(), 30, Duration::from_secs(3))?;
    pair.partition()?;
    // Split brain: lb2 hears nothing and becomes master too; its announcements take the
    // client.
    pair.wait_holders(Duration::from_secs(3), |h| h.len() == 2)?;
    wait_forwarding(&pair, Node::Lb2, Duration::from_secs(3))?;
    std::thread::sleep(Duration::from_millis(300));
    pair.heal()?;
    let healed = Instant::now();
    pair.wait_sole_holder(Node::Lb1, Duration::from_secs(3))?;
    // The master left standing re-announced: the client is back on lb1.
    wait_forwarding(&pair, Node::Lb1, Duration::from_secs(3))?;
    assert_only_through(&pair, Node::Lb1)?;
    prober.wait_replies_after(healed, 20, Duration::from_secs(3))?;
    let probes = prober.stop();
    eprintln!("partition and heal: healed to one master in {:?}; client {:?}", healed.elapsed(), probes.blackout());
    ensure!(state(&pair, Node::Lb2)? == "BACKUP", "lb2 is {}", state(&pair, Node::Lb2)?);
    Ok(())
}

/// Sends `payload` as IP protocol 112 from the client to 224.0.0.18 with `ttl`.
fn send_raw(pair: &Pair, payload: &[u8], ttl: u32) -> Result<()> {
    send_raw_from(&pair.client.ns, GROUP, payload, ttl, 1, Duration::ZERO)
}

/// The VRRP group.
const GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);

/// Sends `payload` as IP protocol 112 out of `eth0` of namespace `ns` to `dst` with TTL
/// `ttl` (unicast or multicast alike), `count` times `every` apart, from one socket.
fn send_raw_from(ns: &str, dst: Ipv4Addr, payload: &[u8], ttl: u32, count: usize, every: Duration) -> Result<()> {
    let payload = payload.to_vec();
    in_netns(ns, move || -> Result<()> {
        // SAFETY: plain socket calls on a descriptor owned here and closed before returning;
        // every pointer refers to a live local of the size passed.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, 112);
            ensure!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
            let ttl = ttl as libc::c_int;
            let size = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            let ok = libc::setsockopt(fd, libc::IPPROTO_IP, libc::IP_MULTICAST_TTL, (&ttl as *const libc::c_int).cast(), size) == 0
                && libc::setsockopt(fd, libc::IPPROTO_IP, libc::IP_TTL, (&ttl as *const libc::c_int).cast(), size) == 0
                && libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_BINDTODEVICE, c"eth0".as_ptr().cast(), 5) == 0;
            let mut to: libc::sockaddr_in = std::mem::zeroed();
            to.sin_family = libc::AF_INET as libc::sa_family_t;
            to.sin_addr.s_addr = u32::from(dst).to_be();
            let mut sent = ok;
            for i in 0..count {
                if !sent {
                    break;
                }
                if i > 0 && !every.is_zero() {
                    std::thread::sleep(every);
                }
                sent = libc::sendto(
                    fd,
                    payload.as_ptr().cast(),
                    payload.len(),
                    0,
                    (&to as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                ) >= 0;
            }
            let err = std::io::Error::last_os_error();
            libc::close(fd);
            ensure!(sent, "sending a forged advert to {dst}: {err}");
        }
        Ok(())
    })?
}

/// A v3 advert for our VRID and the VIP at `priority`, checksummed for `src` to `dst`.
fn forged(priority: u8, src: IpAddr, dst: Ipv4Addr) -> Vec<u8> {
    let advert = Advert { version: 3, vrid: VRID, priority, interval_cs: 10, addresses: vec![vip4()] };
    packet::encode(&advert, src, IpAddr::V4(dst), Checksum::PseudoHeader, None)
}

fn v4(addr: IpAddr) -> Result<Ipv4Addr> {
    match addr {
        IpAddr::V4(a) => Ok(a),
        other => bail!("{other} is not IPv4"),
    }
}

/// A forged advert: why it is refused, its sender's namespace and address, its destination,
/// the TTL it is sent with, and the nodes that receive it.
type Forgery<'a> = (&'a str, &'a str, IpAddr, Ipv4Addr, u32, &'a [Node]);

/// The count of adverts dropped for `reason`.
fn dropped(st: &InstanceStatus, reason: &str) -> u64 {
    st.invalid.get(reason).copied().unwrap_or(0)
}

#[test]
fn xlb_multicast_instances_ignore_adverts_not_sent_on_the_link_to_the_group() -> Result<()> {
    if !privileged("xlb_multicast_instances_ignore_adverts_not_sent_on_the_link_to_the_group") {
        return Ok(());
    }
    let mut pair = Pair::start("vforge", Options { xlb: false, udp_echo: false, ..Options::default() })?;
    let far = pair.add_routed_host()?;
    pair.start_xlb(Node::Lb2, &instance(100, &[]))?;
    pair.start_xlb(Node::Lb1, &instance(150, &[]))?;
    wait_lb1_master(&pair, Duration::from_secs(3))?;
    // Each forgery claims priority 255 (the address owner): accepted, it would make lb1 step
    // down at once. Checksums are right for where each goes.
    let (client, lb1) = (pair.client.v4, v4(pair.lb(Node::Lb1).v4)?);
    let vip = v4(vip4())?;
    let cases: [Forgery; 5] = [
        ("destination", &pair.client.ns, client, lb1, 255, &[Node::Lb1]),
        ("destination", &pair.client.ns, client, vip, 255, &[Node::Lb1]),
        ("ttl", &pair.client.ns, client, GROUP, 64, &Node::BOTH),
        ("ttl", &pair.client.ns, client, lb1, 64, &[Node::Lb1]),
        // From behind the router: sent with 255, it arrives with 254.
        ("ttl", &far.ns, far.v4, lb1, 255, &[Node::Lb1]),
    ];
    let before = statuses(&pair)?;
    for (_, ns, src, dst, ttl, _) in &cases {
        send_raw_from(ns, *dst, &forged(255, *src, *dst), *ttl, 3, Duration::from_millis(5))?;
    }
    std::thread::sleep(Duration::from_millis(300));
    for (node, before) in Node::BOTH.into_iter().zip(before) {
        let after = pair.vrrp_status(node)?;
        for reason in ["destination", "ttl"] {
            let expected = 3 * cases.iter().filter(|c| c.0 == reason && c.5.contains(&node)).count() as u64;
            let counted = dropped(&after, reason) - dropped(&before, reason);
            ensure!(counted == expected, "{}: {reason} counted {counted} of {expected}: {after:?}", node.name());
        }
        ensure!(after.transitions == before.transitions && after.state == before.state, "{}: {before:?} -> {after:?}", node.name());
        // The master heard no advert at all (its backup is silent); the backup, only its master.
        let heard_only_lb1 = node == Node::Lb2 && after.master == Some(lb1.to_string());
        ensure!(after.adverts_received == before.adverts_received || heard_only_lb1, "{} took a forgery: {after:?}", node.name());
    }
    ensure!(pair.holders()? == [Node::Lb1], "holders {:?}", pair.holders()?);
    eprintln!("forged priority-255 adverts (unicast to the node and to the VIP, TTL 64, from behind a router): 0 state changes");
    Ok(())
}

#[test]
fn xlb_unicast_instances_take_adverts_from_their_peers_alone() -> Result<()> {
    if !privileged("xlb_unicast_instances_take_adverts_from_their_peers_alone") {
        return Ok(());
    }
    let mut pair = Pair::start("vunisrc", Options { xlb: false, udp_echo: false, ..Options::default() })?;
    let far = pair.add_routed_host()?;
    let (lb1, lb2) = (pair.lb(Node::Lb1).v4, pair.lb(Node::Lb2).v4);
    // The routed host is one of lb1's peers (across the router), not lb2's.
    let peers1 = format!("unicast_peers = [\"{lb2}\", \"{}\"]", far.v4);
    let peers2 = format!("unicast_peers = [\"{lb1}\"]");
    pair.start_xlb(Node::Lb2, &instance(100, &[&peers2]))?;
    pair.start_xlb(Node::Lb1, &instance(150, &[&peers1]))?;
    wait_lb1_master(&pair, Duration::from_secs(3))?;

    // From the client, a stranger on the link: a perfect advert (TTL 255), to each node.
    let before = statuses(&pair)?;
    for node in Node::BOTH {
        let dst = v4(pair.lb(node).v4)?;
        send_raw_from(&pair.client.ns, dst, &forged(255, pair.client.v4, dst), 255, 3, Duration::from_millis(5))?;
    }
    // From the routed peer, with the default min_ttl 255: it arrives with 254.
    let to1 = v4(lb1)?;
    send_raw_from(&far.ns, to1, &forged(255, far.v4, to1), 255, 3, Duration::from_millis(5))?;
    std::thread::sleep(Duration::from_millis(300));
    for (node, before) in Node::BOTH.into_iter().zip(before) {
        let after = pair.vrrp_status(node)?;
        let strangers = dropped(&after, "unknown_source") - dropped(&before, "unknown_source");
        let ttl = dropped(&after, "ttl") - dropped(&before, "ttl");
        let want_ttl = if node == Node::Lb1 { 3 } else { 0 };
        ensure!(strangers == 3 && ttl == want_ttl, "{}: unknown_source {strangers}, ttl {ttl}: {after:?}", node.name());
        ensure!(after.transitions == before.transitions, "{}: {before:?} -> {after:?}", node.name());
    }
    ensure!(pair.holders()? == [Node::Lb1], "holders {:?}", pair.holders()?);
    // lb2 still hears lb1: the check let its peer through.
    let heard = pair.vrrp_status(Node::Lb2)?.adverts_received;
    std::thread::sleep(Duration::from_millis(300));
    ensure!(pair.vrrp_status(Node::Lb2)?.adverts_received >= heard + 2, "lb2 hears lb1");

    // min_ttl = 254 lets the routed peer in: its priority-254 adverts make lb1 step down.
    pair.stop_xlb(Node::Lb1, Signal::SIGTERM)?;
    pair.start_xlb(Node::Lb1, &instance(150, &[&peers1, "min_ttl = 254"]))?;
    wait_state(&pair, Node::Lb1, "MASTER", Duration::from_secs(3))?;
    let advert = forged(254, far.v4, to1);
    let (ns, stop) = (far.ns.clone(), std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)));
    let flag = stop.clone();
    let sender = std::thread::spawn(move || -> Result<()> {
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            send_raw_from(&ns, to1, &advert, 255, 10, FAST / 2)?;
        }
        Ok(())
    });
    let stepped_down = wait_state(&pair, Node::Lb1, "BACKUP", Duration::from_secs(2));
    let st = pair.vrrp_status(Node::Lb1);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    sender.join().map_err(|_| anyhow::anyhow!("the sender panicked"))??;
    stepped_down?;
    let st = st?;
    ensure!(st.master == Some(far.v4.to_string()), "lb1 follows the routed peer: {st:?}");
    eprintln!("unicast: strangers and an off-link peer refused, the routed peer accepted with min_ttl = 254");
    Ok(())
}

#[test]
fn xlb_master_answers_a_lower_priority_flood_once_per_advert_interval() -> Result<()> {
    if !privileged("xlb_master_answers_a_lower_priority_flood_once_per_advert_interval") {
        return Ok(());
    }
    let pair = xlb_pair("vflood", 150, 100, &[])?;
    wait_lb1_master(&pair, Duration::from_secs(3))?;
    let lb1 = pair.lb(Node::Lb1).v4;
    let before = pair.vrrp_status(Node::Lb1)?;
    let capture = pair.start_capture(Tap::Switch, Duration::from_millis(1500))?;
    // 1000 valid adverts at priority 50 (a lower-priority master) in about a second.
    let flood = forged(50, pair.client.v4, GROUP);
    let started = Instant::now();
    send_raw_from(&pair.client.ns, GROUP, &flood, 255, 1000, Duration::from_millis(1))?;
    let took = started.elapsed();
    std::thread::sleep(Duration::from_millis(100));
    let after = pair.vrrp_status(Node::Lb1)?;
    let adverts = vrrp_adverts(&capture.finish()?)?;
    let answers = after.answers_sent - before.answers_sent;
    let suppressed = after.answers_suppressed - before.answers_suppressed;
    let bursts = after.announcements_suppressed - before.announcements_suppressed;
    let sent = after.adverts_sent - before.adverts_sent;
    let on_wire = adverts.iter().filter(|a| a.src == lb1).count();
    let intervals = took.as_secs_f64() / FAST.as_secs_f64();
    eprintln!(
        "lower-priority flood: 1000 adverts in {took:?} ({intervals:.1} advert intervals): lb1 answered {answers}, \
         suppressed {suppressed} answers and {bursts} announcement bursts; it sent {sent} adverts in all \
         ({on_wire} captured in 1.5 s)"
    );
    ensure!(answers >= 1, "the master answers the flood at all: {after:?}");
    ensure!(answers as f64 <= intervals.ceil() + 1.0, "{answers} answers in {intervals:.1} intervals");
    ensure!(suppressed + answers >= 990 && bursts == suppressed, "every other advert was counted: {after:?}");
    // Its periodic adverts plus the answers: about two per interval, not a thousand.
    ensure!(sent as f64 <= 2.0 * intervals.ceil() + 4.0, "lb1 sent {sent} adverts");
    ensure!(on_wire as f64 <= 2.0 * 15.0 + 4.0, "{on_wire} adverts from lb1 on the wire in 1.5 s");
    ensure!(after.transitions == before.transitions && after.state == "MASTER", "{after:?}");
    ensure!(state(&pair, Node::Lb2)? == "BACKUP", "lb2 is {}", state(&pair, Node::Lb2)?);
    Ok(())
}

#[test]
fn xlb_counts_and_ignores_bad_adverts() -> Result<()> {
    if !privileged("xlb_counts_and_ignores_bad_adverts") {
        return Ok(());
    }
    // v2 with a password, so that authentication can be wrong too. lb1 is master at 150.
    let v2 = ["version = 2", "advert_interval = \"1s\"", "auth_pass = \"s3cret\""];
    let pair = xlb_pair("vbad", 150, 100, &v2)?;
    wait_lb1_master(&pair, Duration::from_secs(6))?;
    let client: IpAddr = pair.client.v4;
    let group = IpAddr::V4(GROUP);
    // Every forged advert claims priority 254 from the client: accepted, it would make lb1
    // step down.
    let advert = |version: u8, vrid: u8| Advert { version, vrid, priority: 254, interval_cs: 100, addresses: vec![vip4()] };
    let good = |a: &Advert, pass: &[u8]| packet::encode(a, client, group, Checksum::PseudoHeader, Some(pass));
    let mut bad_checksum = good(&advert(2, VRID), b"s3cret");
    bad_checksum[6] ^= 0x55;
    let mut bad_version = good(&advert(2, VRID), b"s3cret");
    bad_version[0] = 0x41;
    let cases: Vec<(&str, Vec<u8>, u32)> = vec![
        ("ttl", good(&advert(2, VRID), b"s3cret"), 64),
        ("checksum", bad_checksum, 255),
        ("vrid", good(&advert(2, VRID + 1), b"s3cret"), 255),
        ("version", bad_version, 255),
        ("version", packet::encode(&advert(3, VRID), client, group, Checksum::PseudoHeader, None), 255),
        ("auth", good(&advert(2, VRID), b"wrong"), 255),
        ("auth", packet::encode(&advert(2, VRID), client, group, Checksum::PseudoHeader, None), 255),
        ("truncated", good(&advert(2, VRID), b"s3cret")[..10].to_vec(), 255),
        ("truncated", vec![0x21], 255),
    ];
    let before = statuses(&pair)?;
    for (_, payload, ttl) in &cases {
        for _ in 0..3 {
            send_raw(&pair, payload, *ttl)?;
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    for (node, before) in Node::BOTH.into_iter().zip(before) {
        let after = pair.vrrp_status(node)?;
        for reason in ["ttl", "checksum", "vrid", "version", "auth", "truncated"] {
            let n = |v: &InstanceStatus| v.invalid.get(reason).copied().unwrap_or(0);
            let expected = 3 * cases.iter().filter(|c| c.0 == reason).count() as u64;
            ensure!(n(&after) - n(&before) == expected, "{}: {reason} counted {} of {expected}: {after:?}", node.name(), n(&after) - n(&before));
        }
    }
    // Nothing changed hands.
    ensure!(state(&pair, Node::Lb1)? == "MASTER" && state(&pair, Node::Lb2)? == "BACKUP", "states changed");
    ensure!(pair.holders()? == [Node::Lb1], "holders {:?}", pair.holders()?);
    // A valid advert (lower priority) naming other addresses: logged and counted, not dropped.
    let other = Advert { priority: 50, addresses: vec!["203.0.113.99".parse()?], ..advert(2, VRID) };
    let mismatched = |n: Node| -> Result<u64> { Ok(pair.vrrp_status(n)?.address_mismatch) };
    let m0 = mismatched(Node::Lb2)?;
    send_raw(&pair, &good(&other, b"s3cret"), 255)?;
    std::thread::sleep(Duration::from_millis(200));
    ensure!(mismatched(Node::Lb2)? == m0 + 1, "address mismatch counted: {:?}", pair.vrrp_status(Node::Lb2)?);
    ensure!(pair.xlb_log(Node::Lb2).contains("advertises addresses"), "address mismatch logged:\n{}", pair.xlb_log(Node::Lb2));
    // The control case: the same advert, valid, is obeyed (lb1 steps down to the client).
    send_raw(&pair, &good(&advert(2, VRID), b"s3cret"), 255)?;
    wait_state(&pair, Node::Lb1, "BACKUP", Duration::from_secs(1))?;
    Ok(())
}

#[test]
fn xlb_master_without_its_data_plane_steps_down() -> Result<()> {
    if !privileged("xlb_master_without_its_data_plane_steps_down") {
        return Ok(());
    }
    let pair = xlb_pair("vdp", 150, 100, &[])?;
    pair.wait_sole_holder(Node::Lb1, Duration::from_secs(3))?;
    // Someone detaches lb1's XDP program (its pinned link).
    let link = pair.lab.dir.join("bpffs").join("xlb-lb1").join("link_eth0");
    let link = if link.exists() { link } else { find_link(&pair, "xlb-lb1")? };
    let detached = Instant::now();
    xlb_tests::run(std::process::Command::new("bpftool").args(["link", "detach", "pinned"]).arg(&link))?;
    let fault = wait_state(&pair, Node::Lb1, "FAULT", Duration::from_secs(1))?;
    pair.wait_sole_holder(Node::Lb2, Duration::from_secs(1))?;
    eprintln!("data plane detached: FAULT after {:?}, lb2 holds the VIP after {:?}", fault - detached, detached.elapsed());
    let st = pair.vrrp_status(Node::Lb1)?;
    ensure!(st.faults.iter().any(|f| f.contains("data plane")), "{st:?}");
    Ok(())
}

/// The pinned link of `pins` under the lab's bpffs, wherever the lab mounted it.
fn find_link(pair: &Pair, pins: &str) -> Result<std::path::PathBuf> {
    let out = xlb_tests::run(std::process::Command::new("find").arg(&pair.lab.dir).args(["-path", &format!("*{pins}/link_eth0")]))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().next().map(Into::into).with_context(|| format!("no pinned link for {pins} under {}", pair.lab.dir.display()))
}

#[test]
fn xlb_track_script_weight_and_fault() -> Result<()> {
    if !privileged("xlb_track_script_weight_and_fault") {
        return Ok(());
    }
    let mut pair = Pair::start("vtrack", Options { xlb: false, udp_echo: false, ..Options::default() })?;
    let flag = pair.lab.dir.join("healthy");
    let fault_flag = pair.lab.dir.join("fault");
    std::fs::write(&flag, "")?;
    let script = |path: &std::path::Path, weight: i32| {
        format!(
            "[[vrrp_instance.track_script]]\ncommand = [\"/usr/bin/test\", \"-e\", \"{}\"]\ninterval = \"100ms\"\ntimeout = \"1s\"\nweight = {weight}",
            path.display()
        )
    };
    // lb1 at 150 with a -100 weight script (while it fails: 50), and a weight-0 one on lb2.
    pair.start_xlb(Node::Lb2, &format!("{}\n{}", instance(100, &[]), script(&fault_flag, 0)))?;
    std::fs::write(&fault_flag, "")?;
    pair.start_xlb(Node::Lb1, &format!("{}\n{}", instance(150, &[]), script(&flag, -100)))?;
    pair.wait_sole_holder(Node::Lb1, Duration::from_secs(3))?;
    std::fs::remove_file(&flag)?;
    pair.wait_sole_holder(Node::Lb2, Duration::from_secs(2))?;
    ensure!(pair.vrrp_status(Node::Lb1)?.priority == 50, "{:?}", pair.vrrp_status(Node::Lb1)?);
    std::fs::write(&flag, "")?;
    pair.wait_sole_holder(Node::Lb1, Duration::from_secs(2))?;
    // lb2's weight-0 script fails: FAULT.
    std::fs::remove_file(&fault_flag)?;
    wait_state(&pair, Node::Lb2, "FAULT", Duration::from_secs(2))?;
    std::fs::write(&fault_flag, "")?;
    wait_state(&pair, Node::Lb2, "BACKUP", Duration::from_secs(2))?;
    Ok(())
}

#[test]
fn xlb_track_script_runs_as_its_user() -> Result<()> {
    if !privileged("xlb_track_script_runs_as_its_user") {
        return Ok(());
    }
    let mut pair = Pair::start("vscriptuser", Options { xlb: false, udp_echo: false, ..Options::default() })?;
    // Weight 0: the instance is in FAULT unless the script runs as nobody, without root's
    // groups.
    let script = "[[vrrp_instance.track_script]]\n\
                  command = [\"/bin/sh\", \"-c\", \"test \\\"$(id -u)\\\" = \\\"$(id -u nobody)\\\" && test \\\"$(id -G)\\\" = \\\"$(id -g nobody)\\\"\"]\n\
                  interval = \"100ms\"\nuser = \"nobody\"";
    pair.start_xlb(Node::Lb1, &format!("{}\n{script}", instance(150, &[])))?;
    wait_state(&pair, Node::Lb1, "MASTER", Duration::from_secs(3))?;
    std::thread::sleep(Duration::from_millis(500));
    let st = pair.vrrp_status(Node::Lb1)?;
    ensure!(st.state == "MASTER" && st.faults.is_empty(), "{st:?}\n{}", pair.xlb_log(Node::Lb1));
    Ok(())
}

/// xlb on one node, keepalived on the other, each in turn master: `ka` configures keepalived,
/// `extra` the xlb instance the same way.
fn with_keepalived(tag: &str, ka: KeepalivedInstance, extra: &[&str]) -> Result<()> {
    let mut pair = Pair::start(tag, Options { xlb: false, ..Options::default() })?;
    // keepalived's node forwards with xlb too, without VRRP (assign_vips = false).
    pair.start_xlb(Node::Lb2, "")?;
    let prober = pair.prober()?;
    let mdi_ka = ka.master_down_interval();
    // keepalived master (150) on lb2, xlb backup (100) on lb1.
    pair.start_keepalived(Node::Lb2, &KeepalivedInstance { priority: 150, ..ka.clone() })?;
    pair.start_xlb(Node::Lb1, &instance(100, extra))?;
    pair.wait_sole_holder(Node::Lb2, mdi_ka + Duration::from_secs(3))?;
    wait_state(&pair, Node::Lb1, "BACKUP", Duration::from_secs(1))?;
    ensure!(pair.vrrp_status(Node::Lb1)?.master == Some(pair.lb(Node::Lb2).v4.to_string()), "xlb hears keepalived");
    // keepalived stops (priority 0): xlb takes over.
    let t = Instant::now();
    pair.stop_keepalived(Node::Lb2, Signal::SIGTERM)?;
    pair.wait_sole_holder(Node::Lb1, Duration::from_secs(3))?;
    wait_forwarding(&pair, Node::Lb1, Duration::from_secs(3))?;
    eprintln!("{tag}: keepalived master stopped, xlb master after {:?}", t.elapsed());
    // keepalived comes back at 150 and preempts xlb; xlb's adverts are checked by tshark on
    // the way.
    let capture = pair.start_capture(Tap::Switch, Duration::from_millis(1500).max(ka.advert_interval * 3))?;
    pair.start_keepalived(Node::Lb2, &KeepalivedInstance { priority: 150, ..ka.clone() })?;
    pair.wait_sole_holder(Node::Lb2, mdi_ka + Duration::from_secs(3))?;
    wait_state(&pair, Node::Lb1, "BACKUP", Duration::from_secs(1))?;
    let adverts = vrrp_adverts(&capture.finish()?)?;
    let from_xlb: Vec<_> = adverts.iter().filter(|a| a.src == pair.lb(Node::Lb1).v4).collect();
    ensure!(!from_xlb.is_empty(), "no adverts from xlb captured: {adverts:?}");
    for a in &adverts {
        ensure!(a.checksum == "Good" && a.ttl == 255 && a.vrid == VRID && a.version == ka.version, "{a:?}");
    }
    for a in &from_xlb {
        ensure!(a.priority == 100 && a.addresses == [vip4()], "{a:?}");
        if ka.version == 2 {
            ensure!(a.auth == Some((1, ka.auth_pass.clone().unwrap_or_default())) && a.interval == 1, "{a:?}");
        } else {
            ensure!(a.interval == (ka.advert_interval.as_millis() / 10) as u16, "{a:?}");
        }
    }
    // Now xlb is the master (200) and keepalived the backup; xlb stops, keepalived takes over.
    pair.stop_xlb(Node::Lb1, Signal::SIGTERM)?;
    pair.start_xlb(Node::Lb1, &instance(200, extra))?;
    pair.wait_sole_holder(Node::Lb1, mdi_ka + Duration::from_secs(3))?;
    wait_forwarding(&pair, Node::Lb1, Duration::from_secs(3))?;
    let t = Instant::now();
    pair.stop_xlb(Node::Lb1, Signal::SIGTERM)?;
    pair.wait_sole_holder(Node::Lb2, Duration::from_secs(3))?;
    let moved = wait_forwarding(&pair, Node::Lb2, Duration::from_secs(3))?;
    eprintln!("{tag}: xlb master stopped, keepalived master after {:?}", t.elapsed());
    prober.wait_replies_after(moved, 20, Duration::from_secs(3))?;
    drop(prober);
    Ok(())
}

#[test]
fn xlb_pairs_with_keepalived_v3() -> Result<()> {
    if !privileged("xlb_pairs_with_keepalived_v3") {
        return Ok(());
    }
    with_keepalived("vkav3", KeepalivedInstance::v3(VRID, 150, FAST), &[])
}

#[test]
fn xlb_pairs_with_keepalived_v2_pass_auth() -> Result<()> {
    if !privileged("xlb_pairs_with_keepalived_v2_pass_auth") {
        return Ok(());
    }
    with_keepalived(
        "vkav2",
        KeepalivedInstance::v2(VRID, 150, Some("s3cret")),
        &["version = 2", "advert_interval = \"1s\"", "auth_pass = \"s3cret\""],
    )
}

#[test]
fn xlb_ipv6_instance_fails_over_with_valid_adverts() -> Result<()> {
    if !privileged("xlb_ipv6_instance_fails_over_with_valid_adverts") {
        return Ok(());
    }
    let vip6: IpAddr = xlb_tests::plan::VIP6.parse()?;
    let v6 = |priority: u8| {
        format!(
            "[[vrrp_instance]]\nname = \"VI_6\"\ninterface = \"eth0\"\nvrid = {VRID}\npriority = {priority}\nadvert_interval = \"100ms\"\nvirtual_addresses = [\"{vip6}\"]\n"
        )
    };
    let mut pair = Pair::start("vipv6", Options { xlb: false, ..Options::default() })?;
    pair.start_xlb(Node::Lb2, &v6(100))?;
    pair.start_xlb(Node::Lb1, &v6(150))?;
    let holders = |pair: &Pair| pair.holders_of(vip6);
    let deadline = Instant::now() + Duration::from_secs(3);
    while holders(&pair)? != [Node::Lb1] {
        ensure!(Instant::now() < deadline, "IPv6 VIP holders {:?}\n{}", holders(&pair)?, pair.xlb_log(Node::Lb1));
        std::thread::sleep(Duration::from_millis(10));
    }
    let prober = xlb_tests::pair::Prober::start(&pair.client.ns, std::net::SocketAddr::new(vip6, 53), Duration::from_millis(10))?;
    prober.wait_replies_after(Instant::now(), 30, Duration::from_secs(3))?;
    ensure!(pair.forwarded(Node::Lb1, "dns6")? > 0, "lb1 forwards the IPv6 probes");
    let pcap = pair.capture(Tap::Switch, Duration::from_millis(400))?;
    let adverts = vrrp_adverts(&pcap)?;
    ensure!(adverts.len() >= 2, "adverts: {adverts:?}");
    for a in &adverts {
        ensure!(a.checksum == "Good" && a.ttl == 255 && a.version == 3 && a.addresses == [vip6] && a.priority == 150, "{a:?}");
        ensure!(matches!(a.src, IpAddr::V6(s) if s.is_unicast_link_local()), "adverts come from the link-local address: {a:?}");
    }
    let stopped = Instant::now();
    pair.stop_xlb(Node::Lb1, Signal::SIGTERM)?;
    let took_over = wait_state(&pair, Node::Lb2, "MASTER", Duration::from_secs(2))?;
    assert_resigned(&pair, took_over - stopped)?;
    // The unsolicited neighbour advertisements move the client.
    let deadline = Instant::now() + Duration::from_secs(3);
    let before = pair.forwarded(Node::Lb2, "dns6")?;
    while pair.forwarded(Node::Lb2, "dns6")? < before + 3 {
        ensure!(Instant::now() < deadline, "lb2 does not forward the IPv6 probes\n{}", pair.xlb_log(Node::Lb2));
        std::thread::sleep(Duration::from_millis(10));
    }
    ensure!(holders(&pair)? == [Node::Lb2], "holders {:?}", holders(&pair)?);
    drop(prober);
    Ok(())
}

#[test]
fn xlb_tracked_interface_down_means_fault() -> Result<()> {
    if !privileged("xlb_tracked_interface_down_means_fault") {
        return Ok(());
    }
    let mut pair = Pair::start("vtrackif", Options { xlb: false, udp_echo: false, ..Options::default() })?;
    let ns1 = pair.lb(Node::Lb1).ns.clone();
    // An uplink of lb1's own (a veth pair inside its namespace; no dummy driver here).
    xlb_tests::ip(&["-n", &ns1, "link", "add", "uplink0", "type", "veth", "peer", "name", "uplink0p"])?;
    xlb_tests::ip(&["-n", &ns1, "link", "set", "uplink0p", "up"])?;
    xlb_tests::ip(&["-n", &ns1, "link", "set", "uplink0", "up"])?;
    pair.start_xlb(Node::Lb2, &instance(100, &[]))?;
    pair.start_xlb(Node::Lb1, &instance(150, &["track_interfaces = [\"uplink0\"]"]))?;
    pair.wait_sole_holder(Node::Lb1, Duration::from_secs(3))?;
    let down = Instant::now();
    xlb_tests::ip(&["-n", &ns1, "link", "set", "uplink0", "down"])?;
    let fault = wait_state(&pair, Node::Lb1, "FAULT", Duration::from_secs(1))?;
    pair.wait_sole_holder(Node::Lb2, Duration::from_secs(1))?;
    eprintln!("tracked interface down: FAULT after {:?}, lb2 sole holder after {:?}", fault - down, down.elapsed());
    ensure!(pair.vrrp_status(Node::Lb1)?.faults.iter().any(|f| f.contains("uplink0")), "{:?}", pair.vrrp_status(Node::Lb1)?);
    // Priority 0 on entering FAULT: lb2 took over after its skew time.
    assert_resigned(&pair, down.elapsed())?;
    xlb_tests::ip(&["-n", &ns1, "link", "set", "uplink0", "up"])?;
    pair.wait_sole_holder(Node::Lb1, Duration::from_secs(2))?;
    // Deleting it is a fault too.
    xlb_tests::ip(&["-n", &ns1, "link", "del", "uplink0"])?;
    wait_state(&pair, Node::Lb1, "FAULT", Duration::from_secs(1))?;
    pair.wait_sole_holder(Node::Lb2, Duration::from_secs(1))?;
    Ok(())
}

#[test]
fn xlb_unicast_peers_work_without_multicast() -> Result<()> {
    if !privileged("xlb_unicast_peers_work_without_multicast") {
        return Ok(());
    }
    let mut pair = Pair::start("vunicast", Options { xlb: false, udp_echo: false, ..Options::default() })?;
    // The segment carries no VRRP multicast at all.
    for node in Node::BOTH {
        let script = "table ip xlb_nomcast { chain out { type filter hook output priority 0; ip daddr 224.0.0.18 drop; }; \
                      chain in { type filter hook input priority 0; ip daddr 224.0.0.18 drop; }; }";
        let path = pair.lab.dir.join(format!("nomcast-{}.nft", node.name()));
        std::fs::write(&path, script)?;
        xlb_tests::run(std::process::Command::new("ip").args(["netns", "exec", &pair.lb(node).ns, "nft", "-f"]).arg(&path))?;
    }
    let peer = |n: Node| format!("unicast_peers = [\"{}\"]", pair.lb(n).v4);
    let (to1, to2) = (peer(Node::Lb1), peer(Node::Lb2));
    pair.start_xlb(Node::Lb2, &instance(100, &[&to1]))?;
    pair.start_xlb(Node::Lb1, &instance(150, &[&to2]))?;
    wait_lb1_master(&pair, Duration::from_secs(3))?;
    let heard = pair.vrrp_status(Node::Lb2)?.adverts_received;
    std::thread::sleep(Duration::from_millis(500));
    let st = pair.vrrp_status(Node::Lb2)?;
    ensure!(st.adverts_received >= heard + 3, "lb2 hears lb1's unicast adverts: {st:?}");
    ensure!(st.state == "BACKUP", "{st:?}");
    pair.stop_xlb(Node::Lb1, Signal::SIGTERM)?;
    pair.wait_sole_holder(Node::Lb2, Duration::from_secs(1))?;
    Ok(())
}

#[test]
fn xlb_sends_the_configured_v3_checksum_and_accepts_both() -> Result<()> {
    if !privileged("xlb_sends_the_configured_v3_checksum_and_accepts_both") {
        return Ok(());
    }
    // lb1 (master) checksums without the pseudo-header, lb2 with it (the default).
    let mut pair = Pair::start("vcsum", Options { xlb: false, udp_echo: false, ..Options::default() })?;
    pair.start_xlb(Node::Lb2, &instance(100, &[]))?;
    pair.start_xlb(Node::Lb1, &instance(150, &["checksum = \"no-pseudo-header\""]))?;
    wait_lb1_master(&pair, Duration::from_secs(3))?;
    let pcap = pair.capture(Tap::Switch, Duration::from_millis(400))?;
    let adverts = vrrp_adverts(&pcap)?;
    ensure!(adverts.len() >= 2, "adverts: {adverts:?}");
    // tshark checks the RFC 5798 form (pseudo-header): lb1's other form shows as Bad to it,
    // which proves the configured variant is what goes out; lb2 accepts it all the same.
    ensure!(adverts.iter().all(|a| a.src == pair.lb(Node::Lb1).v4 && a.checksum == "Bad"), "{adverts:?}");
    let st = pair.vrrp_status(Node::Lb2)?;
    ensure!(!st.invalid.contains_key("checksum") && st.adverts_received > 2, "{st:?}");
    // Master lb1 stops: lb2's RFC-form adverts are accepted by lb1 when it comes back.
    pair.stop_xlb(Node::Lb1, Signal::SIGTERM)?;
    pair.wait_sole_holder(Node::Lb2, Duration::from_secs(1))?;
    pair.start_xlb(Node::Lb1, &instance(50, &["checksum = \"no-pseudo-header\""]))?;
    wait_state(&pair, Node::Lb1, "BACKUP", Duration::from_secs(2))?;
    // Longer than its Master_Down_Interval: had it refused lb2's adverts it would be master.
    std::thread::sleep(mdi(50) * 2);
    let st = pair.vrrp_status(Node::Lb1)?;
    ensure!(st.state == "BACKUP" && !st.invalid.contains_key("checksum"), "{st:?}");
    Ok(())
}

/// The node's interfaces with their MACs and addresses (`ip -j addr`).
fn links(pair: &Pair, node: Node) -> Result<Vec<(String, String, Vec<String>)>> {
    let out = xlb_tests::ip(&["-n", &pair.lb(node).ns, "-j", "addr"])?;
    let v: Value = serde_json::from_slice(&out.stdout)?;
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .map(|l| {
            let addrs = l["addr_info"].as_array().into_iter().flatten().filter_map(|a| a["local"].as_str().map(str::to_owned)).collect();
            (l["ifname"].as_str().unwrap_or("").to_owned(), l["address"].as_str().unwrap_or("").to_owned(), addrs)
        })
        .collect())
}

/// The client's neighbour entry for the VIP: its MAC.
fn client_neighbour(pair: &Pair) -> Result<Option<String>> {
    let out = xlb_tests::ip(&["-n", &pair.client.ns, "-j", "neigh", "show", &vip4().to_string()])?;
    let v: Value = serde_json::from_slice(&out.stdout)?;
    Ok(v.get(0).and_then(|n| n["lladdr"].as_str()).map(str::to_owned))
}

#[test]
fn xlb_use_vmac_keeps_the_vip_on_the_virtual_mac_across_failover() -> Result<()> {
    if !privileged("xlb_use_vmac_keeps_the_vip_on_the_virtual_mac_across_failover") {
        return Ok(());
    }
    let vmac = format!("00:00:5e:00:01:{VRID:02x}");
    let mut pair = xlb_pair("vvmac", 150, 100, &["use_vmac = true"])?;
    let holder = |pair: &Pair, node: Node| -> Result<bool> {
        Ok(links(pair, node)?.iter().any(|(name, mac, addrs)| name == "vrrp.51" && *mac == vmac && addrs.contains(&vip4().to_string())))
    };
    let deadline = Instant::now() + Duration::from_secs(3);
    while !holder(&pair, Node::Lb1)? {
        ensure!(Instant::now() < deadline, "lb1 holds no VIP on vrrp.51: {:?}\n{}", links(&pair, Node::Lb1)?, pair.xlb_log(Node::Lb1));
        std::thread::sleep(Duration::from_millis(10));
    }
    ensure!(!links(&pair, Node::Lb2)?.iter().any(|l| l.0 == "vrrp.51"), "the backup has no virtual MAC interface");
    let prober = pair.prober()?;
    prober.wait_replies_after(Instant::now(), 30, Duration::from_secs(3))?;
    ensure!(client_neighbour(&pair)?.as_deref() == Some(vmac.as_str()), "the client resolves the VIP to {:?}", client_neighbour(&pair)?);
    assert_only_through(&pair, Node::Lb1)?;
    // Failover: the VIP's MAC stays the same for the client; only the switch learns a new
    // port (from the new master's announcements).
    pair.stop_xlb(Node::Lb1, Signal::SIGTERM)?;
    wait_state(&pair, Node::Lb2, "MASTER", Duration::from_secs(2))?;
    ensure!(holder(&pair, Node::Lb2)?, "lb2 holds the VIP on vrrp.51: {:?}", links(&pair, Node::Lb2)?);
    let moved = wait_forwarding(&pair, Node::Lb2, Duration::from_secs(3))?;
    prober.wait_replies_after(moved, 20, Duration::from_secs(3))?;
    ensure!(client_neighbour(&pair)?.as_deref() == Some(vmac.as_str()), "the client still resolves the VIP to the virtual MAC");
    // lb1 cleaned up: no macvlan left, arp_ignore back to what it was.
    ensure!(!links(&pair, Node::Lb1)?.iter().any(|l| l.0 == "vrrp.51"), "{:?}", links(&pair, Node::Lb1)?);
    let out = xlb_tests::run(std::process::Command::new("ip").args(["netns", "exec", &pair.lb(Node::Lb1).ns, "cat", "/proc/sys/net/ipv4/conf/eth0/arp_ignore"]))?;
    ensure!(String::from_utf8_lossy(&out.stdout).trim() == "0", "arp_ignore restored");
    drop(prober);
    Ok(())
}

/// `web4` over b1..b3 at weights 1, 2, 3, listed in the order `order` (last octets).
fn web4_in_order(order: [u8; 3]) -> String {
    xlb_tests::scenario::web4_config(&order.map(|octet| (octet, u32::from(octet) - 10)))
}

#[test]
fn xlb_failover_keeps_every_connection_on_its_backend_whatever_the_file_order() -> Result<()> {
    if !privileged("xlb_failover_keeps_every_connection_on_its_backend_whatever_the_file_order") {
        return Ok(());
    }
    let mut pair = Pair::start("vorder", Options { xlb: false, udp_echo: false, http: true, ..Options::default() })?;
    // The two nodes list the same backends in other orders (so they number them differently).
    pair.start_xlb_with(Node::Lb2, &web4_in_order([13, 11, 12]), &instance(100, &[]))?;
    pair.start_xlb_with(Node::Lb1, &web4_in_order([11, 12, 13]), &instance(150, &[]))?;
    pair.wait_sole_holder(Node::Lb1, Duration::from_secs(3))?;
    let target = std::net::SocketAddr::new(vip4(), 80);
    let mut held = xlb_tests::traffic::HeldConnections::open(&pair.client.ns, target, 200)?;
    let tally = held.tally();
    ensure!(tally.len() == 3, "connections spread over b1..b3: {tally:?}");
    let through_lb1 = pair.forwarded(Node::Lb1, "web4")?;
    ensure!(through_lb1 >= 400, "the connections went through lb1: {through_lb1} packets");

    // lb1 vanishes from the segment; lb2 takes over and the client follows its GARP.
    pair.vanish(Node::Lb1)?;
    wait_state(&pair, Node::Lb2, "MASTER", Duration::from_secs(3))?;
    // Its gratuitous ARP reaches the client at once; TCP's retransmissions cover the rest.
    std::thread::sleep(Duration::from_millis(300));
    let before_lb2 = pair.forwarded(Node::Lb2, "web4")?;
    let after = held.check();
    let through_lb2 = pair.forwarded(Node::Lb2, "web4")? - before_lb2;
    eprintln!(
        "failover between nodes with other file orders: {} connections held, {} kept, {} moved, {} broken; \
         lb2 forwarded {through_lb2} packets of them",
        held.len(),
        after.kept,
        after.moved.len(),
        after.broken.len()
    );
    ensure!(through_lb2 >= 200, "the connections went on through lb2: {through_lb2} packets");
    ensure!(after.kept == held.len(), "every connection keeps its backend: {after:?}\nlb2 log:\n{}", pair.xlb_log(Node::Lb2));
    Ok(())
}

/// A restart of the master as `systemctl restart` does it with the shipped unit (SIGUSR2, then
/// a start that adopts the pins): it hands over cleanly, then takes the VIP back by preemption.
#[test]
fn xlb_master_restarted_hands_over_without_two_masters() -> Result<()> {
    if !privileged("xlb_master_restarted_hands_over_without_two_masters") {
        return Ok(());
    }
    let mut pair = xlb_pair("vrestart", 150, 100, &[])?;
    pair.wait_sole_holder(Node::Lb1, Duration::from_secs(3))?;
    let prober = pair.prober()?;
    prober.wait_replies_after(Instant::now(), 30, Duration::from_secs(3))?;
    let takeovers = |pair: &Pair| pair.xlb_log(Node::Lb2).matches("-> MASTER").count();
    let lb2_before = takeovers(&pair);
    let watch = pair.watch_holders();
    let restarted = Instant::now();
    pair.stop_xlb(Node::Lb1, Signal::SIGUSR2)?;
    ensure!(pair.xlb_log(Node::Lb1).contains("stopped for a restart"), "{}", pair.xlb_log(Node::Lb1));
    pair.start_xlb(Node::Lb1, &instance(150, &[]))?;
    let back = wait_state(&pair, Node::Lb1, "MASTER", Duration::from_secs(5))?;
    wait_forwarding(&pair, Node::Lb1, Duration::from_secs(3))?;
    std::thread::sleep(Duration::from_millis(300));
    let end = Instant::now();
    let spans = watch.finish();
    let probes = prober.stop();
    let b = probes.blackout_in(restarted, end);
    eprintln!(
        "restart of the master (SIGUSR2 + start): master again after {:?}; client blackout {:?} (lost {} of {}), \
         Master_Down_Interval {:?}; both nodes held the VIP at most {:?}, neither at most {:?} ({} samples)",
        back - restarted,
        b.longest,
        b.lost,
        b.sent,
        mdi(100),
        spans.longest_both,
        spans.longest_none,
        spans.samples
    );
    ensure!(takeovers(&pair) > lb2_before, "lb2 took over while lb1 restarted:\n{}", pair.xlb_log(Node::Lb2));
    // Preemption hands the VIP back within one advert: the new master's advert demotes the old
    // one at once, so two holders never last beyond an advert interval.
    ensure!(spans.longest_both <= FAST, "both nodes held the VIP for {:?}", spans.longest_both);
    ensure!(spans.longest_none <= mdi(100), "nobody held the VIP for {:?}", spans.longest_none);
    ensure!(b.longest <= mdi(100), "client blackout {:?} beyond Master_Down_Interval {:?}", b.longest, mdi(100));
    Ok(())
}

/// `xlb reload` on `node`; (success, output).
fn reload_node(pair: &Pair, node: Node) -> Result<(bool, String)> {
    let out = std::process::Command::new(&pair.xlb).args(["reload", "--socket"]).arg(pair.socket(node)).output()?;
    Ok((out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))))
}

#[test]
fn xlb_reload_adds_changes_and_removes_vrrp_instances() -> Result<()> {
    if !privileged("xlb_reload_adds_changes_and_removes_vrrp_instances") {
        return Ok(());
    }
    let vip6: IpAddr = xlb_tests::plan::VIP6.parse()?;
    let v6 = |priority: u8, interface: &str| {
        format!(
            "[[vrrp_instance]]\nname = \"VI_6\"\ninterface = \"{interface}\"\nvrid = {}\npriority = {priority}\nadvert_interval = \"100ms\"\nvirtual_addresses = [\"{vip6}\"]\n",
            VRID + 1
        )
    };
    let pair = xlb_pair("vreload", 150, 100, &[])?;
    pair.wait_sole_holder(Node::Lb1, Duration::from_secs(3))?;
    let masters = |pair: &Pair| pair.xlb_log(Node::Lb1).matches("-> MASTER").count();
    let lb1_masters = masters(&pair);
    let files: Vec<(Node, String)> = Node::BOTH.iter().map(|&n| Ok((n, std::fs::read_to_string(pair.xlb_config(n))?))).collect::<Result<_>>()?;
    let write = |extra: &dyn Fn(Node) -> String| -> Result<()> {
        for (node, base) in &files {
            std::fs::write(pair.xlb_config(*node), format!("{base}\n{}", extra(*node)))?;
        }
        Ok(())
    };
    let holders6 = |pair: &Pair| pair.holders_of(vip6);

    // Added on both nodes: lb1 (150) takes the IPv6 VIP; VI_1 is left alone.
    write(&|n| v6(if n == Node::Lb1 { 150 } else { 100 }, "eth0"))?;
    for node in [Node::Lb2, Node::Lb1] {
        let (ok, out) = reload_node(&pair, node)?;
        ensure!(ok, "{}: {out}", node.name());
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while holders6(&pair)? != [Node::Lb1] {
        ensure!(Instant::now() < deadline, "IPv6 VIP holders {:?}\n{}", holders6(&pair)?, pair.xlb_log(Node::Lb1));
        std::thread::sleep(Duration::from_millis(10));
    }
    ensure!(pair.holders()? == [Node::Lb1], "VI_1 untouched");
    ensure!(masters(&pair) == lb1_masters + 1, "only VI_6 became master on lb1:\n{}", pair.xlb_log(Node::Lb1));
    ensure!(pair.status(Node::Lb1)?.vrrp.len() == 2, "two instances");

    // Changed (priorities swapped): VI_6 restarts on both nodes, and lb2 ends up holding it.
    write(&|n| v6(if n == Node::Lb1 { 100 } else { 150 }, "eth0"))?;
    for node in [Node::Lb1, Node::Lb2] {
        let (ok, out) = reload_node(&pair, node)?;
        ensure!(ok, "{}: {out}", node.name());
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while holders6(&pair)? != [Node::Lb2] {
        ensure!(Instant::now() < deadline, "IPv6 VIP holders {:?}\n{}", holders6(&pair)?, pair.xlb_log(Node::Lb2));
        std::thread::sleep(Duration::from_millis(10));
    }
    ensure!(pair.holders()? == [Node::Lb1], "VI_1 untouched");

    // An instance that cannot open here is refused, and nothing changes.
    write(&|_| v6(100, "nosuch0"))?;
    let (ok, out) = reload_node(&pair, Node::Lb1)?;
    ensure!(!ok && out.contains("nothing changed"), "{out}");
    ensure!(pair.status(Node::Lb1)?.vrrp.len() == 2, "VI_6 still runs");

    // Removed: the holder releases the IPv6 VIP.
    write(&|_| String::new())?;
    for node in Node::BOTH {
        let (ok, out) = reload_node(&pair, node)?;
        ensure!(ok, "{}: {out}", node.name());
    }
    ensure!(holders6(&pair)?.is_empty(), "VI_6 removed, its VIP released");
    ensure!(pair.status(Node::Lb1)?.vrrp.len() == 1 && pair.holders()? == [Node::Lb1], "VI_1 runs on");
    Ok(())
}

/// A master whose maps cannot be brought to the desired state (a map write fails) steps down
/// (FAULT) while its data plane goes on forwarding, and comes back once the writes work again.
#[test]
fn xlb_master_out_of_sync_steps_down_and_comes_back() -> Result<()> {
    if !privileged("xlb_master_out_of_sync_steps_down_and_comes_back") {
        return Ok(());
    }
    let mut pair = Pair::start("vsync", Options { xlb: false, ..Options::default() })?;
    let faults = pair.lab.dir.join("faults-lb1");
    std::fs::write(&faults, "")?;
    let faults_env = faults.display().to_string();
    pair.start_xlb(Node::Lb2, &instance(100, &[]))?;
    pair.start_xlb_env(Node::Lb1, xlb_tests::scenario::LAB_CONFIG, &instance(150, &[]), &[("XLB_FAULTS", &faults_env)])?;
    pair.wait_sole_holder(Node::Lb1, Duration::from_secs(3))?;
    let prober = pair.prober()?;
    prober.wait_replies_after(Instant::now(), 30, Duration::from_secs(3))?;

    std::fs::write(&faults, "map-write")?;
    let out = std::process::Command::new(&pair.xlb)
        .args(["backend", "weight", "dns4", "203.0.113.12", "3", "--socket"])
        .arg(pair.socket(Node::Lb1))
        .output()?;
    ensure!(!out.status.success(), "the change cannot be written: {}", String::from_utf8_lossy(&out.stderr));
    wait_state(&pair, Node::Lb1, "FAULT", Duration::from_secs(2))?;
    wait_state(&pair, Node::Lb2, "MASTER", Duration::from_secs(2))?;
    let moved = wait_forwarding(&pair, Node::Lb2, Duration::from_secs(3))?;
    prober.wait_replies_after(moved, 20, Duration::from_secs(3))?;

    std::fs::write(&faults, "")?;
    wait_state(&pair, Node::Lb1, "MASTER", Duration::from_secs(8))?;
    pair.wait_sole_holder(Node::Lb1, Duration::from_secs(3))?;
    let status = pair.status(Node::Lb1)?;
    ensure!(!status.faults.out_of_sync && status.faults.map_write_failures > 0, "{:?}", status.faults);
    let probes = prober.stop();
    eprintln!("a master out of sync: stepped down and back, client blackout {:?} (lost {} of {})", probes.blackout().longest, probes.blackout().lost, probes.blackout().sent);
    Ok(())
}
