//! Tracking: what besides the adverts moves an instance. Its interface and its
//! `track_interfaces` missing, down or without carrier are faults ([`watch_links`]); each
//! track script runs every interval ([`run_track_script`]) and either moves the priority by
//! its weight ([`effective_priority`]) or, with weight 0, is a fault while it fails.
//!
//! Both report to the instance's task as [`Command`]s.

use std::{collections::BTreeMap, time::Duration};

use tokio::sync::mpsc;
use tracing::warn;

use super::instance::Command;
use crate::{
    config::{TrackScript, VrrpConfig},
    health::state::{Health, Params, RiseFall},
    net::{LinkEvents, Net},
    script::{Ended, OnDrop, Script},
};

/// The interfaces whose loss means FAULT: the instance's own and `track_interfaces`.
pub(super) fn tracked_links(cfg: &VrrpConfig) -> Vec<String> {
    let mut names = vec![cfg.interface.clone()];
    names.extend(cfg.track_interfaces.iter().cloned());
    names.dedup();
    names
}

/// The fault of a tracked interface `name` that is missing, down or without carrier.
pub(super) fn link_fault(name: &str) -> String {
    format!("interface {name} down")
}

/// The configured priority moved by the weights of the track scripts (keepalived's rule):
/// a positive weight adds while its script succeeds, a negative one adds (subtracts) while it
/// fails. The result stays in 1 ..= 254; the address owner (255) is never moved.
pub fn effective_priority(base: u8, scripts: &[TrackScript], results: &[Option<bool>]) -> u8 {
    if base == 255 {
        return 255;
    }
    let mut p = i32::from(base);
    for (s, r) in scripts.iter().zip(results) {
        match (s.weight, r) {
            (w, Some(true)) if w > 0 => p += w,
            (w, Some(false)) if w < 0 => p += w,
            _ => {}
        }
    }
    p.clamp(1, 254) as u8
}

/// Follows the interfaces `names`: any missing, down or without carrier is a fault.
/// `own` is the instance's interface and the index its sockets are bound to: if that
/// interface is deleted and made again it has a new index the sockets do not follow, which
/// stays a fault until the agent restarts.
pub(super) async fn watch_links(net: Net, names: Vec<String>, own: (String, u32), tx: mpsc::UnboundedSender<Command>) {
    let mut events = match LinkEvents::subscribe() {
        Ok(e) => Some(e),
        Err(e) => {
            warn!("vrrp: cannot follow interface changes ({e}); polling every 100 ms");
            None
        }
    };
    let mut known: BTreeMap<String, bool> = BTreeMap::new();
    loop {
        for name in &names {
            // A failed netlink query says nothing about the interface: keep what is known.
            let bound = (*name == own.0).then_some(own.1);
            let Some(up) = link_running(&net, name, bound).await else { continue };
            if known.insert(name.clone(), up) != Some(up) && tx.send(Command::Fault { source: link_fault(name), on: !up }).is_err() {
                return;
            }
        }
        match &mut events {
            Some(e) => {
                if e.next().await.is_none() {
                    events = None;
                }
            }
            None => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Whether the interface `name` exists, is up and has carrier; None when netlink failed.
/// With `bound`, an interface of that name at another index counts as missing.
pub(super) async fn link_running(net: &Net, name: &str, bound: Option<u32>) -> Option<bool> {
    let interfaces = net.interfaces().await.ok()?;
    match interfaces.iter().find(|i| i.name == name) {
        Some(i) if bound.is_some_and(|b| b != i.ifindex) => {
            warn!("vrrp: interface {name} was made again (index {} instead of {}): restart xlb to use it", i.ifindex, bound.unwrap_or(0));
            Some(false)
        }
        Some(i) => Some(net.link(i.ifindex).await.ok()?.is_some_and(|s| s.running)),
        None => Some(false),
    }
}

/// What a track script reports: its first result at once, then a change once `rise`
/// successes or `fall` failures in a row contradict the last report (the health checks'
/// [`RiseFall`] count).
#[derive(Debug)]
struct Reported {
    params: Params,
    count: Option<RiseFall>,
}

impl Reported {
    fn new(script: &TrackScript) -> Reported {
        Reported { params: Params { rise: script.rise, fall: script.fall }, count: None }
    }

    /// Takes one result; returns what to report now, if anything.
    fn record(&mut self, ok: bool) -> Option<bool> {
        match &mut self.count {
            Some(count) => count.record(ok).map(|h| h == Health::Up),
            None => {
                self.count = Some(RiseFall::new(self.params, if ok { Health::Up } else { Health::Down }));
                Some(ok)
            }
        }
    }
}

/// Runs a track script every interval; reports its state when rise/fall say it changed.
pub(super) async fn run_track_script(script: TrackScript, index: usize, tx: mpsc::UnboundedSender<Command>) {
    let mut reported = Reported::new(&script);
    let mut ticker = tokio::time::interval(script.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Logged once each until the script runs normally again (the count of failures is in
    // rise/fall and the instance's log of priority changes).
    let mut logged = false;
    loop {
        ticker.tick().await;
        let what = || script.command.join(" ");
        let run = Script { argv: &script.command, env: &[], timeout: script.timeout, user: script.user.as_deref(), on_drop: OnDrop::Kill };
        let ok = match crate::script::run(run).await {
            Ok(Ended::Exited(s)) => {
                logged = false;
                s.success()
            }
            Ok(Ended::TimedOut) => {
                if !std::mem::replace(&mut logged, true) {
                    warn!("track_script {:?} ran longer than its timeout ({:?}): killed, counted as a failure", what(), script.timeout);
                }
                false
            }
            Err(e) => {
                if !std::mem::replace(&mut logged, true) {
                    warn!("track_script {:?}: cannot run it: {e}", what());
                }
                false
            }
        };
        if let Some(ok) = reported.record(ok) {
            if tx.send(Command::Script { index, ok }).is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(weight: i32) -> TrackScript {
        TrackScript {
            command: vec!["/bin/true".into()],
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            weight,
            rise: 1,
            fall: 1,
            user: None,
            line: 1,
        }
    }

    #[test]
    fn track_script_weights_move_the_priority_within_bounds() {
        let s = [script(20), script(-30)];
        assert_eq!(effective_priority(100, &s, &[None, None]), 100);
        assert_eq!(effective_priority(100, &s, &[Some(true), Some(true)]), 120);
        assert_eq!(effective_priority(100, &s, &[Some(false), Some(false)]), 70);
        assert_eq!(effective_priority(100, &s, &[Some(true), Some(false)]), 90);
        assert_eq!(effective_priority(250, &s, &[Some(true), Some(true)]), 254);
        assert_eq!(effective_priority(10, &s, &[Some(false), Some(false)]), 1);
        assert_eq!(effective_priority(255, &s, &[Some(false), Some(false)]), 255);
    }

    #[test]
    fn track_script_reports_its_first_result_then_flips_after_rise_or_fall() {
        let mut r = Reported::new(&TrackScript { rise: 2, fall: 3, ..script(0) });
        assert_eq!(r.record(true), Some(true), "the first result is reported at once");
        assert_eq!(r.record(true), None);
        // Two failures, then a success: the run starts again.
        assert_eq!(r.record(false), None);
        assert_eq!(r.record(false), None);
        assert_eq!(r.record(true), None);
        assert_eq!(r.record(false), None);
        assert_eq!(r.record(false), None);
        assert_eq!(r.record(false), Some(false), "the third failure in a row");
        assert_eq!(r.record(true), None);
        assert_eq!(r.record(true), Some(true), "the second success in a row");

        let mut first_fails = Reported::new(&script(0));
        assert_eq!(first_fails.record(false), Some(false), "a first failure is reported at once too");
        assert_eq!(first_fails.record(true), Some(true), "rise 1");
    }
}
