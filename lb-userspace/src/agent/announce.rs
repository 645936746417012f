//! `[announce]` in the running agent: the announcements follow what the node can serve (the
//! loop brings them in line after every event), and a drain (`xlb drain-node`, SIGTERM)
//! withdraws every VIP, keeps forwarding while the router moves the flows away, then stops.

use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::{Agent, AgentError, Result, Stop};
use crate::{
    announce::{decide, Announcer, Drain, DrainEnd, NodeState, ServiceState},
    config::AnnounceConfig,
    model::TableMode,
};

/// How often a draining node looks at its packet counters.
pub(super) const DRAIN_TICK: Duration = Duration::from_millis(50);

impl Agent {
    /// Creates the announcer of `config` (once the data plane forwards: nothing is announced
    /// before).
    pub(super) async fn open_announcer(&mut self, config: Option<AnnounceConfig>) -> Result<()> {
        if let Some(config) = config {
            self.announce = Some(Announcer::open(config, &self.net).await.map_err(|e| AgentError::Environment(e.to_string()))?);
        }
        Ok(())
    }

    /// Brings the announcements in line with what the node can serve now.
    pub(super) async fn sync_announce(&mut self) {
        let Some(announcer) = &self.announce else { return };
        let node = NodeState {
            draining: announcer.drain.is_some(),
            forwarding: !self.dataplane_fault,
            in_sync: self.resync.is_none(),
        };
        let services: Vec<ServiceState> = self
            .model
            .services
            .iter()
            .map(|s| ServiceState {
                name: s.name.clone(),
                vip: s.vip,
                at_quorum: self.modes.get(&s.id) == Some(&TableMode::Normal),
            })
            .collect();
        let decided = decide(&announcer.config.vips_of(&self.model.vips()), node, &services);
        let net = self.net.clone();
        if self.announce.as_mut().expect("checked above").apply(&net, decided).await {
            self.view_dirty = true;
        }
    }

    /// Starts draining the node: every VIP withdrawn at once; the loop stops the agent once
    /// the router has moved the flows (see [`Agent::drain_step`]). Refused without
    /// `[announce]`.
    pub(super) async fn start_drain(&mut self) -> std::result::Result<String, String> {
        let packets = self.vip_packets();
        let Some(announcer) = self.announce.as_mut() else {
            return Err("this node announces nothing ([announce] is not configured): stop it with SIGTERM".into());
        };
        if announcer.drain.is_some() {
            return Ok("already draining".into());
        }
        let (quiet, timeout) = (announcer.config.drain_quiet, announcer.config.drain_timeout);
        announcer.drain = Some(Drain::start(Instant::now(), packets, quiet, timeout));
        self.sync_announce().await;
        let message = format!(
            "draining: every VIP withdrawn; forwarding goes on until no VIP packet arrived for {quiet:?} (at most {timeout:?}), then the agent stops"
        );
        info!("{message}");
        Ok(message)
    }

    /// One look at a draining node: `Some` once the drain is over (the agent then stops).
    pub(super) fn drain_step(&mut self) -> Option<Stop> {
        let packets = self.vip_packets();
        let drain = self.announce.as_mut()?.drain.as_mut()?;
        let end = drain.observe(Instant::now(), packets)?;
        let took = drain.started.elapsed();
        let since_last = drain.last_packet().saturating_duration_since(drain.started);
        match end {
            DrainEnd::Quiet => info!("drained in {took:?}: the last VIP packet came {since_last:?} after the withdrawal; stopping"),
            DrainEnd::Timeout => warn!("drain timeout after {took:?}: VIP packets still arrive (the router has not moved every flow); stopping"),
        }
        Some(Stop::Full)
    }

    /// Packets the node forwarded (or dropped) for its services so far.
    fn vip_packets(&self) -> u64 {
        self.model.services.iter().map(|s| self.dp.service_counters(s.id).map_or(0, |c| c.packets)).sum()
    }

    /// A reload's `[announce]`: adding or removing it, or changing its device or table, needs a
    /// restart; the VIPs and drain times change live.
    pub(super) fn check_announce_change(&self, new: Option<&AnnounceConfig>) -> std::result::Result<(), String> {
        let old = self.announce.as_ref().map(|a| &a.config);
        match (old, new) {
            (None, None) => Ok(()),
            (Some(_), None) | (None, Some(_)) => {
                Err("adding or removing [announce] changes who routes the VIPs here: restart the agent for that; nothing changed".into())
            }
            (Some(old), Some(new)) if old.interface != new.interface || old.table != new.table => {
                Err("[announce] interface and table cannot change while the agent runs (restart it for that); nothing changed".into())
            }
            _ => Ok(()),
        }
    }

    /// Takes a reload's `[announce]` (checked by [`Agent::check_announce_change`]).
    pub(super) fn take_announce(&mut self, new: Option<AnnounceConfig>) {
        if let (Some(announcer), Some(new)) = (self.announce.as_mut(), new) {
            announcer.config = new;
        }
    }
}
