//! BGP scale-out (`[announce]`): whether this node should carry each VIP, and telling BIRD.
//!
//! Several nodes run active-active behind a router that spreads flows over them with ECMP;
//! each node's BIRD announces the VIPs over BGP. xlb decides *whether* this node announces a
//! VIP, and BIRD does the rest. A VIP is announced while all of these hold:
//!
//! - the node is not draining (`xlb drain-node`, SIGTERM);
//! - its data plane is attached to every interface and the maps are in the desired state;
//! - the VIP has services, and each of them is at or above its quorum of usable backends.
//!
//! and withdrawn as soon as one stops holding. The pure part here ([`decide`], [`Drain`]) says
//! what to announce and when a drain is over; [`Announcer`] is the edge that puts the VIP
//! routes where BIRD's kernel protocol imports them (see `config/announce.rs`). Nodes given the
//! same backends pick the same backend for a flow (the same Maglev table, the same hash, no
//! per-node seed), so a flow the router moves to another node keeps its backend.

mod routes;
mod tun;

use std::{
    fmt,
    net::IpAddr,
    time::{Duration, Instant},
};

pub use routes::{AnnounceError, Announcer};

/// Why a VIP is not announced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Withheld {
    /// The node is draining: every VIP is withdrawn.
    Draining,
    /// The program is not attached to every interface.
    DataPlane,
    /// A map write failed and the maps are being written again.
    OutOfSync,
    /// No service has this VIP (removed at run time, say).
    NoService,
    /// These services of the VIP have fewer usable backends than their quorum.
    BelowQuorum(Vec<String>),
}

impl fmt::Display for Withheld {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Withheld::Draining => f.write_str("draining"),
            Withheld::DataPlane => f.write_str("data plane not forwarding"),
            Withheld::OutOfSync => f.write_str("data plane not in the desired state"),
            Withheld::NoService => f.write_str("no service has this VIP"),
            Withheld::BelowQuorum(names) if names.len() == 1 => write!(f, "service {} below quorum", names[0]),
            Withheld::BelowQuorum(names) => write!(f, "services {} below quorum", names.join(", ")),
        }
    }
}

/// What the node as a whole is in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeState {
    pub draining: bool,
    /// The program is attached to every interface.
    pub forwarding: bool,
    /// The maps are in the desired state.
    pub in_sync: bool,
}

/// A service as the decision sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceState {
    pub name: String,
    pub vip: IpAddr,
    /// At least `quorum` usable backends.
    pub at_quorum: bool,
}

/// Whether each of `vips` is to be announced (`Ok`), or why not, in the order given.
pub fn decide(vips: &[IpAddr], node: NodeState, services: &[ServiceState]) -> Vec<(IpAddr, Result<(), Withheld>)> {
    vips.iter()
        .map(|&vip| {
            let verdict = if node.draining {
                Err(Withheld::Draining)
            } else if !node.forwarding {
                Err(Withheld::DataPlane)
            } else if !node.in_sync {
                Err(Withheld::OutOfSync)
            } else {
                let of_vip: Vec<&ServiceState> = services.iter().filter(|s| s.vip == vip).collect();
                let below: Vec<String> = of_vip.iter().filter(|s| !s.at_quorum).map(|s| s.name.clone()).collect();
                if of_vip.is_empty() {
                    Err(Withheld::NoService)
                } else if !below.is_empty() {
                    Err(Withheld::BelowQuorum(below))
                } else {
                    Ok(())
                }
            };
            (vip, verdict)
        })
        .collect()
}

/// How a drain ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DrainEnd {
    /// No packet for a VIP arrived for `drain_quiet`: the router sends the flows elsewhere.
    Quiet,
    /// `drain_timeout` passed with packets still arriving.
    Timeout,
}

/// A node draining: its VIPs are withdrawn; it keeps forwarding what still arrives, and is
/// done once no packet for a VIP arrived for `quiet` (the router converged, no new flow comes),
/// or after `timeout` at the latest.
#[derive(Clone, Debug)]
pub struct Drain {
    pub started: Instant,
    quiet: Duration,
    timeout: Duration,
    /// Packets to the services when last observed, and when that figure last moved.
    packets: u64,
    last_packet: Instant,
}

impl Drain {
    /// A drain whose withdrawal happened at `now`, when the services had seen `packets`.
    pub fn start(now: Instant, packets: u64, quiet: Duration, timeout: Duration) -> Drain {
        Drain { started: now, quiet, timeout, packets, last_packet: now }
    }

    /// Takes in the services' packet count at `now`; says whether the drain is over.
    pub fn observe(&mut self, now: Instant, packets: u64) -> Option<DrainEnd> {
        if packets != self.packets {
            self.packets = packets;
            self.last_packet = now;
        }
        if now.saturating_duration_since(self.last_packet) >= self.quiet {
            Some(DrainEnd::Quiet)
        } else if now.saturating_duration_since(self.started) >= self.timeout {
            Some(DrainEnd::Timeout)
        } else {
            None
        }
    }

    /// When the last packet for a VIP arrived (the withdrawal, if none came since).
    pub fn last_packet(&self) -> Instant {
        self.last_packet
    }
}

#[cfg(test)]
mod tests;
