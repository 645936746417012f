//! Faults of the node's own: map writes that fail (the maps are written again with backoff,
//! a VRRP master steps down meanwhile), a data plane someone detached, virtual MACs VRRP hands
//! over. Forwarding never stops for them; only an explicit stop detaches.


use tracing::{info, warn};

use super::{Agent, DATAPLANE_FAULT, RESYNC_FIRST, RESYNC_MAX, SYNC_FAULT};
use crate::{net::format_mac, vrrp::LocalMac};

impl Agent {
    /// A map write failed: forwarding goes on as it is; the maps are written again after a
    /// backoff, and meanwhile a VRRP master steps down (the node may forward stale state).
    pub(super) fn out_of_sync(&mut self, during: &str, e: &dyn std::fmt::Display) {
        self.faults.map_write_failures += 1;
        self.faults.last_error = Some(format!("{during}: {e}"));
        warn!("{during}: {e}; the maps are written again in a moment");
        if self.resync.is_none() {
            self.resync = Some((tokio::time::Instant::now() + RESYNC_FIRST, RESYNC_FIRST));
            self.faults.out_of_sync = true;
            if let Some(v) = &self.vrrp {
                v.set_fault(SYNC_FAULT, true);
            }
        }
    }

    /// Writes every map for the model again (each write is idempotent); on success the fault
    /// clears, otherwise the next try waits twice as long (up to 5 s).
    pub(super) fn resync(&mut self) {
        let Some((_, wait)) = self.resync else { return };
        match self.write_all() {
            Ok(()) => {
                info!("data plane in the desired state again");
                self.resync = None;
                self.faults.out_of_sync = false;
                if let Some(v) = &self.vrrp {
                    v.set_fault(SYNC_FAULT, false);
                }
            }
            Err(e) => {
                self.faults.map_write_failures += 1;
                self.faults.last_error = Some(format!("writing the maps again: {e}"));
                let wait = (wait * 2).min(RESYNC_MAX);
                warn!("writing the maps again: {e}; next try in {wait:?}");
                self.resync = Some((tokio::time::Instant::now() + wait, wait));
            }
        }
    }

    /// With VRRP or `[announce]`: raises the data plane fault while the program is not attached
    /// to every interface (someone detached it, an interface went away), clears it when it is
    /// back. VRRP instances go to FAULT; the loop withdraws the announced VIPs.
    pub(super) async fn check_dataplane(&mut self) {
        let mut problem = None;
        for iface in &self.attached {
            match self.net.link(iface.ifindex).await {
                Ok(Some(state)) if state.xdp_prog == Some(self.prog_id) => {}
                Ok(Some(state)) => {
                    problem = Some(match state.xdp_prog {
                        Some(other) => format!("{}: program {other} attached instead of ours ({})", iface.name, self.prog_id),
                        None => format!("{}: XDP program not attached", iface.name),
                    })
                }
                Ok(None) => problem = Some(format!("{}: interface gone", iface.name)),
                // A failed query says nothing about the data plane: keep the last verdict.
                Err(e) => {
                    warn!("checking the data plane on {}: {e}", iface.name);
                    return;
                }
            }
        }
        let faulted = problem.is_some();
        if faulted != self.dataplane_fault {
            self.dataplane_fault = faulted;
            let (down, up) = if self.vrrp.is_some() {
                ("VRRP instances go to FAULT", "VRRP fault cleared")
            } else {
                ("the announced VIPs are withdrawn", "the VIPs are announced again")
            };
            match &problem {
                Some(p) => warn!("data plane not forwarding ({p}): {down}"),
                None => info!("data plane forwarding again: {up}"),
            }
            if let Some(v) = &self.vrrp {
                v.set_fault(DATAPLANE_FAULT, faulted);
            }
        }
    }

    /// A VRRP master's virtual MAC comes or goes. A failure is logged: the master then
    /// does not forward what is sent to that MAC, which the data plane counts.
    pub(super) fn apply_local_mac(&mut self, mut m: LocalMac) {
        let result = if m.add { self.dp.add_local_mac(m.ifindex, m.mac) } else { self.dp.remove_local_mac(m.ifindex, m.mac) };
        if let Some(done) = m.done.take() {
            let _ = done.send(());
        }
        match result {
            Ok(()) => info!("data plane: virtual MAC {} {} interface {}", format_mac(&m.mac), if m.add { "taken on" } else { "released from" }, m.ifindex),
            Err(e) => warn!("{e}"),
        }
    }
}
