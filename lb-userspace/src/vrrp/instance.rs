//! One `[[vrrp_instance]]`'s task, on the VRRP thread (see [`super::Vrrp`]).
//!
//! Each instance is a task: it feeds the [`Machine`] adverts from its socket, its timers,
//! faults (tracked interfaces, weight-0 track scripts, the node's data plane) and priority
//! changes (weighted track scripts), and carries out the machine's [`Action`]s: adverts,
//! adding and removing the virtual addresses, gratuitous ARP / unsolicited NA bursts, and
//! notify scripts.

use std::{
    collections::{BTreeSet, HashSet},
    net::{IpAddr, Ipv6Addr},
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
};
use tracing::{debug, info, warn};

use super::{
    announce,
    io::{FrameSender, Incoming, VrrpSocket, GROUP_V4, GROUP_V6},
    machine::{Action, Heard, Machine, Params, Reason, State},
    packet::{self, Advert, Checksum, Expect, Invalid, Peers},
    status::SharedStatus,
    track::{effective_priority, link_fault, link_running, run_track_script, tracked_links, watch_links},
    vmac::{ArpIgnore, LocalMac, Vmac},
    VrrpError,
};
use crate::{
    config::{InterfaceInfo, VrrpConfig},
    net::Net,
    script::{self, Ended, OnDrop, Script},
};

/// What an instance's task is told: by the handle, and by its tracking tasks.
pub(super) enum Command {
    Fault { source: String, on: bool },
    Script { index: usize, ok: bool },
    Shutdown(oneshot::Sender<()>),
}

/// Everything an instance needs that comes from the host.
pub(super) struct Host {
    ifindex: u32,
    mac: [u8; 6],
    primary: IpAddr,
    link_local: Option<Ipv6Addr>,
}

/// The host side of instance `cfg`: its interface, and the address its adverts come from.
pub(super) fn host_of(cfg: &VrrpConfig, interfaces: &[InterfaceInfo]) -> Result<Host, VrrpError> {
    let iface = interfaces
        .iter()
        .find(|i| i.name == cfg.interface)
        .ok_or_else(|| VrrpError::NoInterface { instance: cfg.name.clone(), interface: cfg.interface.clone() })?;
    let v6 = cfg.virtual_addresses.first().is_some_and(IpAddr::is_ipv6);
    let link_local = iface.addrs.iter().find_map(|(a, _)| match a {
        IpAddr::V6(a) if a.is_unicast_link_local() => Some(*a),
        _ => None,
    });
    // The primary address: IPv4, the interface's first address that is not a virtual one;
    // IPv6, its link-local address (RFC 5798 5.1.2.2).
    let primary = if v6 {
        link_local.map(IpAddr::V6)
    } else {
        // Host routes (/32) are what VIPs look like (another instance's, left by a killed
        // agent): an address with a subnet comes first.
        let candidates = || iface.addrs.iter().filter(|(a, _)| a.is_ipv4() && !cfg.virtual_addresses.contains(a));
        candidates().find(|(_, plen)| *plen < 32).or_else(|| candidates().next()).map(|(a, _)| *a)
    };
    let primary = primary.ok_or_else(|| VrrpError::NoAddress {
        instance: cfg.name.clone(),
        interface: cfg.interface.clone(),
        what: if v6 { "link-local IPv6" } else { "IPv4" },
    })?;
    Ok(Host { ifindex: iface.ifindex, mac: iface.mac, primary, link_local })
}

/// What a received advert must match to be valid for instance `cfg` (of the family `ipv6`):
/// multicast instances take adverts from anyone on the link, sent to the group with TTL 255;
/// unicast instances only from their peers, with at least their `min_ttl`.
pub(super) fn expect(cfg: &VrrpConfig, ipv6: bool) -> Expect<'_> {
    let peers = if cfg.unicast_peers.is_empty() {
        Peers::Multicast
    } else {
        Peers::Unicast { peers: &cfg.unicast_peers, min_ttl: cfg.min_ttl }
    };
    Expect { version: cfg.version, vrid: cfg.vrid, ipv6, auth_pass: cfg.auth_pass.as_deref().map(str::as_bytes), peers }
}

/// One running instance.
pub(super) struct Instance {
    cfg: VrrpConfig,
    host: Host,
    machine: Machine,
    socket: VrrpSocket,
    frames: Arc<FrameSender>,
    net: Net,
    status: SharedStatus,
    /// The MAC the announcements carry.
    announce_mac: [u8; 6],
    /// use_vmac: the macvlan that holds the addresses while master.
    vmac: Option<Vmac>,
    faults: BTreeSet<String>,
    /// Last result of each track script (None until its first result).
    scripts: Vec<Option<bool>>,
    garp: Option<JoinHandle<()>>,
    helpers: Vec<JoinHandle<()>>,
    logged_invalid: HashSet<Invalid>,
    logged_mismatch: bool,
}

impl Instance {
    pub(super) async fn open(
        cfg: VrrpConfig,
        host: Host,
        status: SharedStatus,
        local_macs: mpsc::UnboundedSender<LocalMac>,
        arp_ignore: ArpIgnore,
    ) -> Result<Instance, VrrpError> {
        let io_err = |what: &str| {
            let instance = cfg.name.clone();
            let what = what.to_owned();
            move |source| VrrpError::Io { instance, what, source }
        };
        let net = Net::new()?;
        let v6 = host.primary.is_ipv6();
        let vmac = cfg.use_vmac.then(|| Vmac::new(&cfg, host.ifindex, v6, local_macs, arp_ignore));
        let announce_mac = vmac.as_ref().map_or(host.mac, Vmac::mac);
        let multicast = cfg.unicast_peers.is_empty();
        let socket = VrrpSocket::open(&cfg.interface, host.ifindex, host.primary, multicast)
            .map_err(io_err(&format!("opening the VRRP socket on {}", cfg.interface)))?;
        // Announcements leave through the interface itself; with use_vmac they carry the
        // virtual MAC as their source.
        let frames = Arc::new(FrameSender::open(host.ifindex).map_err(io_err("opening the packet socket for announcements"))?);
        let machine = Machine::new(Params {
            version: cfg.version,
            priority: cfg.priority,
            advert_interval: cfg.advert_interval,
            preempt: cfg.preempt,
            preempt_delay: cfg.preempt_delay,
            primary: host.primary,
        });
        Ok(Instance {
            scripts: vec![None; cfg.track_scripts.len()],
            cfg,
            host,
            machine,
            socket,
            frames,
            net,
            status,
            announce_mac,
            vmac,
            faults: BTreeSet::new(),
            garp: None,
            helpers: Vec::new(),
            logged_invalid: Default::default(),
            logged_mismatch: false,
        })
    }

    pub(super) async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>, tx: mpsc::UnboundedSender<Command>) {
        // Addresses left by an agent that was killed belong to whoever is master now.
        self.release_addresses().await;
        let own = (self.cfg.interface.clone(), self.host.ifindex);
        self.helpers.push(tokio::spawn(watch_links(self.net.clone(), tracked_links(&self.cfg), own, tx.clone())));
        for (index, script) in self.cfg.track_scripts.iter().enumerate() {
            self.helpers.push(tokio::spawn(run_track_script(script.clone(), index, tx.clone())));
        }
        drop(tx);
        // Faults known before the first advert: an owner with its link down must not become
        // master for the moment it takes the watcher to say so.
        for name in tracked_links(&self.cfg) {
            if link_running(&self.net, &name, None).await == Some(false) {
                self.faults.insert(link_fault(&name));
            }
        }
        if !self.faults.is_empty() {
            warn!("vrrp_instance \"{}\": starting in FAULT: {}", self.cfg.name, self.faults.iter().cloned().collect::<Vec<_>>().join("; "));
            self.machine.set_fault(true, Instant::now());
        }
        let actions = self.machine.start(Instant::now());
        self.execute(actions).await;
        loop {
            let deadline = self.machine.deadline().map(tokio::time::Instant::from_std);
            let timer = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                command = commands.recv() => match command {
                    Some(Command::Fault { source, on }) => self.fault(source, on).await,
                    Some(Command::Script { index, ok }) => self.script(index, ok).await,
                    Some(Command::Shutdown(done)) => {
                        self.shutdown().await;
                        let _ = done.send(());
                        return;
                    }
                    None => {
                        self.shutdown().await;
                        return;
                    }
                },
                _ = timer => {
                    let actions = self.machine.tick(Instant::now());
                    self.execute(actions).await;
                }
                received = self.socket.recv() => match received {
                    Ok(p) => self.receive(p).await,
                    Err(e) => {
                        warn!("vrrp_instance \"{}\": receiving: {e}", self.cfg.name);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
            }
        }
    }

    /// What a received advert must match to be valid.
    fn expect(&self) -> Expect<'_> {
        expect(&self.cfg, self.host.primary.is_ipv6())
    }

    async fn receive(&mut self, p: Incoming) {
        let advert = match packet::decode(&p.payload, p.src, p.dst, p.ttl, &self.expect()) {
            Ok((advert, _)) => advert,
            Err(reason) => return self.invalid(reason, p.src),
        };
        if p.src == self.host.primary {
            return;
        }
        let mut theirs = advert.addresses.clone();
        theirs.sort();
        let mut ours = self.cfg.virtual_addresses.clone();
        ours.sort();
        self.status.advert_received(theirs != ours);
        if theirs != ours && !self.logged_mismatch {
            self.logged_mismatch = true;
            warn!(
                "vrrp_instance \"{}\": {} advertises addresses {:?}, ours are {:?} (misconfiguration? logged once)",
                self.cfg.name, p.src, theirs, ours
            );
        }
        let advertised = Duration::from_millis(u64::from(advert.interval_cs) * 10);
        if self.cfg.version == 2 && advertised != self.cfg.advert_interval {
            // RFC 3768 7.1 (and keepalived): v2 peers must agree on the interval; two
            // intervals in one VRID would mean two masters.
            self.invalid(Invalid::Interval, p.src);
            return;
        }
        let interval = if self.cfg.version == 3 { advertised } else { self.cfg.advert_interval };
        let heard = Heard { src: p.src, priority: advert.priority, interval };
        let actions = self.machine.advert(heard, Instant::now());
        self.execute(actions).await;
    }

    /// Counts a dropped advert. Another VRID on the segment is normal; anything else is worth
    /// a line, once per reason (the counter carries the rest).
    fn invalid(&mut self, reason: Invalid, src: IpAddr) {
        if reason != Invalid::Vrid && self.logged_invalid.insert(reason) {
            warn!("vrrp_instance \"{}\": dropped an advert from {src}: {reason} (counted; logged once per reason)", self.cfg.name);
        } else {
            debug!("vrrp_instance \"{}\": dropped an advert from {src}: {reason}", self.cfg.name);
        }
        self.status.invalid(reason);
    }

    async fn fault(&mut self, source: String, on: bool) {
        let changed = if on { self.faults.insert(source.clone()) } else { self.faults.remove(&source) };
        if !changed {
            return;
        }
        if on {
            warn!("vrrp_instance \"{}\": fault: {source}", self.cfg.name);
        } else {
            info!("vrrp_instance \"{}\": fault cleared: {source}", self.cfg.name);
        }
        let actions = self.machine.set_fault(!self.faults.is_empty(), Instant::now());
        self.execute(actions).await;
    }

    async fn script(&mut self, index: usize, ok: bool) {
        self.scripts[index] = Some(ok);
        let script = &self.cfg.track_scripts[index];
        if script.weight == 0 {
            let source = format!("track_script {:?} failed", script.command.join(" "));
            self.fault(source, !ok).await;
            return;
        }
        let priority = effective_priority(self.cfg.priority, &self.cfg.track_scripts, &self.scripts);
        if priority != self.machine.priority() {
            info!("vrrp_instance \"{}\": priority {} -> {priority} (track_script {:?} {})", self.cfg.name, self.machine.priority(), script.command.join(" "), if ok { "succeeded" } else { "failed" });
            let actions = self.machine.set_priority(priority, Instant::now());
            self.execute(actions).await;
        }
        self.publish();
    }

    /// Resigns. A master then waits (up to Master_Down_Interval) until it hears the new
    /// master, so that the agent keeps the data plane forwarding until the peer has taken
    /// over: clients' packets still arriving here are forwarded, not lost.
    async fn shutdown(&mut self) {
        let handover = (self.machine.state() == State::Master).then(|| self.machine.master_down_interval());
        let actions = self.machine.shutdown(Instant::now());
        self.execute(actions).await;
        for h in self.helpers.drain(..) {
            h.abort();
        }
        if let Some(limit) = handover {
            let started = Instant::now();
            let heard = tokio::time::timeout(limit, self.hear_new_master()).await;
            match heard {
                Ok(src) => info!("vrrp_instance \"{}\": {src} took over after {:?}", self.cfg.name, started.elapsed()),
                Err(_) => info!("vrrp_instance \"{}\": no new master heard within {limit:?}", self.cfg.name),
            }
        }
    }

    /// The source of the next valid advert with a priority above 0 from another node.
    async fn hear_new_master(&self) -> IpAddr {
        let expect = self.expect();
        loop {
            let Ok(p) = self.socket.recv().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            if let Ok((advert, _)) = packet::decode(&p.payload, p.src, p.dst, p.ttl, &expect) {
                if advert.priority > 0 && p.src != self.host.primary {
                    return p.src;
                }
            }
        }
    }

    async fn execute(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::SendAdvert { priority } => self.send_advert(priority).await,
                Action::TakeAddresses => {
                    // use_vmac: the addresses go on the macvlan.
                    let target = match &mut self.vmac {
                        None => Ok(self.host.ifindex),
                        Some(v) => v.up(&self.net).await,
                    };
                    let target = match target {
                        Ok(t) => t,
                        Err(e) => {
                            warn!("vrrp_instance \"{}\": {e}; holding the addresses on {} instead", self.cfg.name, self.cfg.interface);
                            self.host.ifindex
                        }
                    };
                    for &addr in &self.cfg.virtual_addresses {
                        if let Err(e) = self.net.add_address(target, addr).await {
                            warn!("vrrp_instance \"{}\": {e}", self.cfg.name);
                        }
                    }
                    self.refresh_mac().await;
                    self.announce(true);
                }
                Action::Announce => {
                    self.refresh_mac().await;
                    self.announce(false)
                }
                Action::ReleaseAddresses => self.release_addresses().await,
                Action::Transition { from, to, reason } => {
                    let to_name = if reason == Reason::Shutdown { "STOP" } else { to.as_str() };
                    info!("vrrp_instance \"{}\": {} -> {} ({})", self.cfg.name, from.as_str(), to_name, reason.as_str());
                    self.status.transition(to, format!("{} -> {}: {}", from.as_str(), to_name, reason.as_str()));
                    self.notify(to_name);
                }
            }
        }
        self.publish();
    }

    fn publish(&self) {
        self.status.publish(&self.machine, &self.faults);
    }

    async fn send_advert(&mut self, priority: u8) {
        let advert = Advert {
            version: self.cfg.version,
            vrid: self.cfg.vrid,
            priority,
            interval_cs: (self.cfg.advert_interval.as_millis() / 10) as u16,
            addresses: self.cfg.virtual_addresses.clone(),
        };
        let checksum = if self.cfg.checksum_pseudo_header { Checksum::PseudoHeader } else { Checksum::NoPseudoHeader };
        let auth = self.cfg.auth_pass.as_deref().map(str::as_bytes);
        let destinations: Vec<IpAddr> = if self.cfg.unicast_peers.is_empty() {
            vec![if self.host.primary.is_ipv6() { IpAddr::V6(GROUP_V6) } else { IpAddr::V4(GROUP_V4) }]
        } else {
            self.cfg.unicast_peers.clone()
        };
        for dst in destinations {
            let payload = packet::encode(&advert, self.host.primary, dst, checksum, auth);
            match self.socket.send(dst, &payload).await {
                Ok(()) => self.status.advert_sent(),
                Err(e) => warn!("vrrp_instance \"{}\": sending an advert to {dst}: {e}", self.cfg.name),
            }
        }
    }

    /// Without use_vmac the announcements carry the interface's MAC: read it now, in case it
    /// changed since the start (the agent follows such a change too).
    async fn refresh_mac(&mut self) {
        if self.vmac.is_none() {
            if let Ok(Some(state)) = self.net.link(self.host.ifindex).await {
                if let Some(mac) = state.mac.filter(|m| *m != self.announce_mac) {
                    info!("vrrp_instance \"{}\": {} has a new MAC, {}", self.cfg.name, self.cfg.interface, crate::net::format_mac(&mac));
                    self.announce_mac = mac;
                }
            }
        }
    }

    /// A burst of announcements now and, on becoming master, another after the repeat delay.
    /// A burst without the repeat (a split brain healing) leaves a pending repeat alone.
    fn announce(&mut self, with_repeat: bool) {
        if with_repeat {
            if let Some(g) = self.garp.take() {
                g.abort();
            }
        }
        let frames: Vec<Vec<u8>> =
            self.cfg.virtual_addresses.iter().map(|&a| announce::announcement(a, self.announce_mac, self.host.link_local)).collect();
        let (count, interval) = (self.cfg.garp_count, self.cfg.garp_interval);
        let repeat = (with_repeat && !self.cfg.garp_repeat_delay.is_zero()).then_some(self.cfg.garp_repeat_delay);
        let name = self.cfg.name.clone();
        let sender = self.frames.clone();
        let task = tokio::spawn(async move {
            let burst = |sender: &FrameSender| {
                let r: std::io::Result<()> = frames.iter().try_for_each(|f| sender.send(f));
                r
            };
            for round in 0..if repeat.is_some() { 2 } else { 1 } {
                if round == 1 {
                    tokio::time::sleep(repeat.expect("second round only with a delay")).await;
                }
                for i in 0..count {
                    if i > 0 {
                        tokio::time::sleep(interval).await;
                    }
                    if let Err(e) = burst(&sender) {
                        warn!("vrrp_instance \"{name}\": sending announcements: {e}");
                        return;
                    }
                }
            }
        });
        if with_repeat {
            self.garp = Some(task);
        } else {
            // Short, and ends by itself; leaving master aborts the tracked burst only.
            self.helpers.retain(|h| !h.is_finished());
            self.helpers.push(task);
        }
    }

    async fn release_addresses(&mut self) {
        if let Some(g) = self.garp.take() {
            g.abort();
        }
        for &addr in &self.cfg.virtual_addresses {
            if let Err(e) = self.net.del_address(self.host.ifindex, addr).await {
                warn!("vrrp_instance \"{}\": {e}", self.cfg.name);
            }
        }
        // Gone with the macvlan: its addresses, and its MAC from the data plane's own.
        if let Some(v) = &mut self.vmac {
            v.down(&self.net).await;
        }
    }

    /// Runs the notify scripts for `state` with keepalived's arguments: "INSTANCE", the
    /// instance's name, the state, the priority.
    fn notify(&mut self, state: &str) {
        let specific = match state {
            "MASTER" => &self.cfg.notify_master,
            "BACKUP" => &self.cfg.notify_backup,
            "FAULT" => &self.cfg.notify_fault,
            "STOP" => &self.cfg.notify_stop,
            _ => &None,
        };
        let priority = self.machine.priority().to_string();
        for argv in [specific, &self.cfg.notify].into_iter().flatten() {
            let mut argv = argv.clone();
            argv.extend(["INSTANCE", &self.cfg.name, state, &priority].map(str::to_owned));
            let (timeout, user) = (self.cfg.notify_timeout, self.cfg.notify_user.clone());
            let name = self.cfg.name.clone();
            // Runs on by itself; left running, not killed, if the agent stops meanwhile (a
            // notify_stop script must not be cut short by the exit it reports).
            tokio::spawn(async move {
                let what = argv.join(" ");
                let script = Script { argv: &argv, env: &[], timeout, user: user.as_deref(), on_drop: OnDrop::Leave };
                match script::run(script).await {
                    Ok(Ended::Exited(s)) if s.success() => {}
                    Ok(Ended::Exited(s)) => warn!("vrrp_instance \"{name}\": notify script {what} exited with {s}"),
                    Ok(Ended::TimedOut) => {
                        warn!("vrrp_instance \"{name}\": notify script {what} ran longer than notify_timeout ({timeout:?}): killed")
                    }
                    Err(e) => warn!("vrrp_instance \"{name}\": cannot run notify script {what}: {e}"),
                }
            });
        }
    }
}


#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    /// The first instance of a configuration with `keys` added to a v3 instance on eth0.
    fn instance(keys: &str) -> VrrpConfig {
        let text = format!(
            "[agent]\ninterfaces = [\"eth0\"]\n[[vrrp_instance]]\nname = \"VI_1\"\ninterface = \"eth0\"\nvrid = 51\n\
             virtual_addresses = [\"203.0.113.100\"]\n{keys}"
        );
        parse("t.toml", &text).unwrap_or_else(|e| panic!("{e}")).0.vrrp.remove(0)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Decodes an advert from `src` to `dst` arriving with `ttl`, as `cfg`'s runner would.
    fn receive(cfg: &VrrpConfig, src: &str, dst: &str, ttl: u8) -> Result<(), Invalid> {
        let advert = Advert { version: 3, vrid: 51, priority: 254, interval_cs: 100, addresses: vec![ip("203.0.113.100")] };
        let payload = packet::encode(&advert, ip(src), ip(dst), Checksum::PseudoHeader, None);
        packet::decode(&payload, ip(src), ip(dst), ttl, &expect(cfg, false)).map(|_| ())
    }

    #[test]
    fn a_multicast_instance_takes_anyone_on_the_link_speaking_to_the_group() {
        let cfg = instance("");
        assert_eq!(expect(&cfg, false).peers, Peers::Multicast);
        assert_eq!(receive(&cfg, "203.0.113.66", "224.0.0.18", 255), Ok(()));
        assert_eq!(receive(&cfg, "203.0.113.66", "224.0.0.18", 64), Err(Invalid::Ttl));
        assert_eq!(receive(&cfg, "203.0.113.66", "203.0.113.2", 255), Err(Invalid::Destination), "unicast to the node");
        assert_eq!(receive(&cfg, "203.0.113.66", "203.0.113.100", 255), Err(Invalid::Destination), "unicast to the VIP");
        assert_eq!(receive(&cfg, "198.51.100.10", "203.0.113.2", 254), Err(Invalid::Ttl), "from behind a router");
    }

    #[test]
    fn a_unicast_instance_takes_its_peers_alone_at_its_min_ttl() {
        let cfg = instance("unicast_peers = [\"203.0.113.3\", \"198.51.100.10\"]\n");
        assert_eq!(expect(&cfg, false).peers, Peers::Unicast { peers: &cfg.unicast_peers, min_ttl: 255 });
        assert_eq!(receive(&cfg, "203.0.113.3", "203.0.113.2", 255), Ok(()));
        assert_eq!(receive(&cfg, "203.0.113.66", "203.0.113.2", 255), Err(Invalid::UnknownSource));
        assert_eq!(receive(&cfg, "198.51.100.10", "203.0.113.2", 254), Err(Invalid::Ttl), "one router away");
        let routed = instance("unicast_peers = [\"203.0.113.3\", \"198.51.100.10\"]\nmin_ttl = 254\n");
        assert_eq!(receive(&routed, "198.51.100.10", "203.0.113.2", 254), Ok(()));
        assert_eq!(receive(&routed, "198.51.100.66", "203.0.113.2", 254), Err(Invalid::UnknownSource));
    }
}
