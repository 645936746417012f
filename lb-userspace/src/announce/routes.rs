//! The edge of `[announce]`: the tun device and the VIP routes through it, in the kernel
//! routing table BIRD's kernel protocol imports (`kernel table N; learn;`). A route added is
//! a VIP announced; a route removed, a VIP withdrawn; the device gone (the agent stopped or
//! died), everything withdrawn at once.

use std::{collections::BTreeSet, io, net::IpAddr};

use lb_common::status::{AnnounceStatus, VipAnnouncement};
use tracing::{info, warn};

use super::{tun::Tun, Drain, Withheld};
use crate::{
    config::AnnounceConfig,
    net::{Net, NetError},
};

#[derive(Debug, thiserror::Error)]
pub enum AnnounceError {
    #[error("[announce] interface {name}: creating its tun device: {source}{hint}")]
    Tun {
        name: String,
        #[source]
        source: io::Error,
        hint: &'static str,
    },
    #[error("[announce] interface {name}: {source}")]
    Net {
        name: String,
        #[source]
        source: NetError,
    },
}

/// The VIPs this node announces, through its tun device.
#[derive(Debug)]
pub struct Announcer {
    pub config: AnnounceConfig,
    /// Held: the routes go with it.
    tun: Tun,
    ifindex: u32,
    /// VIPs whose route is in the table.
    announced: BTreeSet<IpAddr>,
    /// The last decision for each VIP of `[announce]`.
    decided: Vec<(IpAddr, Result<(), Withheld>)>,
    /// Set while the node drains.
    pub drain: Option<Drain>,
    announcements: u64,
    withdrawals: u64,
    /// The last failure logged: the same one is not logged again on every try.
    last_error: Option<String>,
}

impl Announcer {
    /// Creates the tun device of `config` and sets it up; nothing is announced yet.
    pub async fn open(config: AnnounceConfig, net: &Net) -> Result<Announcer, AnnounceError> {
        let name = config.interface.clone();
        let tun = Tun::create(&name).map_err(|source| {
            let hint = match source.raw_os_error() {
                Some(libc::EBUSY) | Some(libc::EEXIST) | Some(libc::EINVAL) => {
                    " (an interface of that name exists already: another agent's, or someone else's; the agent creates it and it must go with the agent)"
                }
                Some(libc::ENOENT) | Some(libc::ENODEV) => " (this kernel has no tun driver: /dev/net/tun is missing)",
                _ => "",
            };
            AnnounceError::Tun { name: name.clone(), source, hint }
        })?;
        let net_err = |source| AnnounceError::Net { name: name.clone(), source };
        let ifindex = net.index_of(&name).await.map_err(net_err)?.ok_or_else(|| net_err(NetError::Missing(name.clone())))?;
        net.set_up(ifindex).await.map_err(net_err)?;
        info!("[announce]: created {name}: VIP routes go through it into table {} for BIRD", config.table);
        Ok(Announcer {
            config,
            tun,
            ifindex,
            announced: BTreeSet::new(),
            decided: Vec::new(),
            drain: None,
            announcements: 0,
            withdrawals: 0,
            last_error: None,
        })
    }

    /// Brings the routes to `decided`: adds those of the VIPs to announce, removes the others'.
    /// A failed change is logged (once, until the failure changes) and tried again on the
    /// next call. Returns whether what the status shows changed.
    pub async fn apply(&mut self, net: &Net, decided: Vec<(IpAddr, Result<(), Withheld>)>) -> bool {
        let mut changed = decided != self.decided;
        let mut failure = None;
        let table = self.config.table;
        // Withdrawals first: a node that cannot serve stops attracting flows before anything.
        // A VIP that left the configuration goes too.
        let withdrawn: Vec<(IpAddr, String)> = self
            .announced
            .iter()
            .filter_map(|vip| match decided.iter().find(|(v, _)| v == vip) {
                Some((_, Ok(()))) => None,
                Some((_, Err(why))) => Some((*vip, why.to_string())),
                None => Some((*vip, "no longer to be announced".to_owned())),
            })
            .collect();
        for (vip, why) in withdrawn {
            match net.del_host_route(table, self.ifindex, vip).await {
                Ok(()) => {
                    warn!("[announce]: withdrawing {vip}: {why}");
                    self.announced.remove(&vip);
                    self.withdrawals += 1;
                    changed = true;
                }
                Err(e) => failure = Some(e.to_string()),
            }
        }
        for (vip, verdict) in &decided {
            if verdict.is_err() || self.announced.contains(vip) {
                continue;
            }
            match net.add_host_route(table, self.ifindex, *vip).await {
                Ok(_) => {
                    info!("[announce]: announcing {vip} (route in table {table} through {})", self.tun.name);
                    self.announced.insert(*vip);
                    self.announcements += 1;
                    changed = true;
                }
                Err(e) => failure = Some(e.to_string()),
            }
        }
        if failure != self.last_error {
            if let Some(e) = &failure {
                warn!("[announce]: {e}; trying again");
            }
            self.last_error = failure;
        }
        self.decided = decided;
        changed
    }

    /// What `xlb stats` shows.
    pub fn status(&self) -> AnnounceStatus {
        AnnounceStatus {
            interface: self.tun.name.clone(),
            table: self.config.table,
            vips: self
                .decided
                .iter()
                .map(|(vip, verdict)| VipAnnouncement {
                    vip: vip.to_string(),
                    announced: self.announced.contains(vip),
                    reason: match verdict {
                        Err(why) => Some(why.to_string()),
                        Ok(()) if !self.announced.contains(vip) => self.last_error.clone(),
                        Ok(()) => None,
                    },
                })
                .collect(),
            draining: self.drain.is_some(),
            announcements: self.announcements,
            withdrawals: self.withdrawals,
        }
    }
}
