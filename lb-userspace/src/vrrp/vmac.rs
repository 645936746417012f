//! `use_vmac`: a master holds its addresses on a macvlan that carries the virtual MAC
//! (RFC 5798 section 7.3), as keepalived's `use_vmac` does. While it exists the data plane
//! takes that MAC as the node's own ([`LocalMac`]), and the interface under it does not
//! answer ARP for the addresses ([`ArpIgnore`]), so that they resolve to the virtual MAC only.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use super::{announce, VrrpError};
use crate::{config::VrrpConfig, net::Net};

/// A MAC the data plane must (or must no longer) take as addressed to the node on
/// `ifindex`: the virtual MAC of a `use_vmac` instance while it is master.
#[derive(Debug)]
pub struct LocalMac {
    pub ifindex: u32,
    pub mac: [u8; 6],
    pub add: bool,
    /// Answered once the data plane has the change.
    pub done: Option<oneshot::Sender<()>>,
}

/// arp_ignore = 1 on an interface while any `use_vmac` master on it needs it; the value it
/// had before comes back when the last one leaves (several instances may share an interface).
#[derive(Clone, Default)]
pub(super) struct ArpIgnore(Arc<Mutex<HashMap<String, (u32, String)>>>);

impl ArpIgnore {
    fn path(ifname: &str) -> String {
        format!("/proc/sys/net/ipv4/conf/{ifname}/arp_ignore")
    }

    fn hold(&self, ifname: &str) -> std::io::Result<()> {
        let mut held = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let entry = held.entry(ifname.to_owned()).or_insert((0, String::new()));
        entry.0 += 1;
        if entry.0 == 1 {
            entry.1 = std::fs::read_to_string(Self::path(ifname))?.trim().to_owned();
            std::fs::write(Self::path(ifname), "1")?;
        }
        Ok(())
    }

    fn release(&self, ifname: &str) -> std::io::Result<()> {
        let mut held = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let Some(entry) = held.get_mut(ifname) else { return Ok(()) };
        entry.0 = entry.0.saturating_sub(1);
        if entry.0 == 0 {
            let (_, original) = held.remove(ifname).expect("present");
            if !original.is_empty() {
                std::fs::write(Self::path(ifname), original)?;
            }
        }
        Ok(())
    }
}

/// A `use_vmac` instance's macvlan.
pub(super) struct Vmac {
    /// The instance's name, for the log.
    instance: String,
    /// The interface the macvlan sits on, and its index.
    parent: (String, u32),
    ipv4: bool,
    name: String,
    mac: [u8; 6],
    /// Its index while it exists.
    index: Option<u32>,
    /// This instance holds arp_ignore = 1 on the interface (see [`ArpIgnore`]).
    holds_arp_ignore: bool,
    /// Tells the agent which MACs the data plane must take as the node's own.
    local_macs: mpsc::UnboundedSender<LocalMac>,
    arp_ignore: ArpIgnore,
}

impl Vmac {
    /// The macvlan of instance `cfg` on its interface (index `parent_index`): `vrrp.{vrid}`,
    /// or `vrrp6.{vrid}` for IPv6. Nothing is made until [`Vmac::up`].
    pub(super) fn new(
        cfg: &VrrpConfig,
        parent_index: u32,
        ipv6: bool,
        local_macs: mpsc::UnboundedSender<LocalMac>,
        arp_ignore: ArpIgnore,
    ) -> Vmac {
        Vmac {
            instance: cfg.name.clone(),
            parent: (cfg.interface.clone(), parent_index),
            ipv4: !ipv6,
            name: format!("vrrp{}.{}", if ipv6 { "6" } else { "" }, cfg.vrid),
            mac: announce::virtual_mac(cfg.vrid, ipv6),
            index: None,
            holds_arp_ignore: false,
            local_macs,
            arp_ignore,
        }
    }

    pub(super) fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Creates the macvlan with the virtual MAC (up), has the data plane take the MAC as the
    /// node's own, and keeps the interface itself from answering ARP for the addresses
    /// (arp_ignore = 1, as keepalived does). Returns the macvlan's index: where the addresses
    /// go.
    pub(super) async fn up(&mut self, net: &Net) -> Result<u32, VrrpError> {
        let index = net.macvlan(&self.name, self.parent.1, self.mac).await?;
        self.index = Some(index);
        if self.ipv4 {
            // As keepalived does for its vmacs: the macvlan answers ARP only for its own
            // addresses (not the parent's, with the virtual MAC), and takes requests for them
            // although the route back to the client leaves through the parent.
            for (key, value) in [("arp_ignore", "1"), ("accept_local", "1"), ("rp_filter", "0")] {
                let path = format!("/proc/sys/net/ipv4/conf/{}/{key}", self.name);
                if let Err(e) = std::fs::write(&path, value) {
                    warn!("vrrp_instance \"{}\": setting {path}: {e}", self.instance);
                }
            }
            if std::fs::read_to_string("/proc/sys/net/ipv4/conf/all/rp_filter").is_ok_and(|v| v.trim() == "1") {
                warn!("vrrp_instance \"{}\": net.ipv4.conf.all.rp_filter = 1 overrides {}'s 0: ARP for the addresses may go unanswered", self.instance, self.name);
            }
            if !self.holds_arp_ignore {
                self.holds_arp_ignore = true;
                if let Err(e) = self.arp_ignore.hold(&self.parent.0) {
                    warn!("vrrp_instance \"{}\": {e}", self.instance);
                }
            }
        }
        // The data plane must take the MAC before the announcements point clients at it.
        let (done, applied) = oneshot::channel();
        let _ = self.local_macs.send(LocalMac { ifindex: self.parent.1, mac: self.mac, add: true, done: Some(done) });
        if tokio::time::timeout(Duration::from_millis(200), applied).await.is_err() {
            warn!("vrrp_instance \"{}\": the data plane did not confirm the virtual MAC within 200 ms", self.instance);
        }
        info!("vrrp_instance \"{}\": virtual MAC {} on {}", self.instance, crate::net::format_mac(&self.mac), self.name);
        Ok(index)
    }

    /// Undoes [`Vmac::up`]: the data plane lets the MAC go, the macvlan is deleted (with its
    /// addresses; also one left behind by an agent that was killed) and the interface's
    /// arp_ignore is released.
    pub(super) async fn down(&mut self, net: &Net) {
        let _ = self.local_macs.send(LocalMac { ifindex: self.parent.1, mac: self.mac, add: false, done: None });
        let index = match self.index.take() {
            Some(i) => Some(i),
            None => net.index_of(&self.name).await.ok().flatten(),
        };
        if let Some(index) = index {
            if let Err(e) = net.del_link(index).await {
                warn!("vrrp_instance \"{}\": {e}", self.instance);
            }
        }
        if std::mem::take(&mut self.holds_arp_ignore) {
            if let Err(e) = self.arp_ignore.release(&self.parent.0) {
                warn!("vrrp_instance \"{}\": {e}", self.instance);
            }
        }
    }
}
