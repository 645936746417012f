//! `/history.json`: the rates of the last minutes, so a page opened now plots them at once.
//! A task samples the counters every [`EVERY`] and keeps [`KEPT`] rates (pure logic in
//! [`History`]; the sampling is the only I/O).

use std::{
    collections::{BTreeMap, VecDeque},
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::Serialize;
use tokio::task::JoinHandle;

use super::Web;
use crate::control::Status;

/// How often the counters are sampled.
pub const EVERY: Duration = Duration::from_secs(2);
/// Rates kept: ten minutes.
pub const KEPT: usize = 300;

/// Per second, over one sampling interval.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Rates {
    pub packets: f64,
    pub bytes: f64,
    pub new_flows: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Point {
    /// End of the interval, seconds since the Unix epoch.
    pub t: f64,
    /// Forwarded packets (tx + redirect) and new flows recorded, over the node.
    pub node: Rates,
    /// New flows forwarded unrecorded (past the new-flow limit).
    pub unrecorded: f64,
    /// Dropped (no backend, redirect failed).
    pub dropped: f64,
    pub services: BTreeMap<String, Rates>,
}

/// Totals at one sample.
#[derive(Clone, Debug, Default)]
struct Totals {
    at: f64,
    forwarded: u64,
    new_flows: u64,
    unrecorded: u64,
    dropped: u64,
    services: BTreeMap<String, lb_common::status::Counters>,
}

impl Totals {
    fn of(status: &Status, at: f64) -> Totals {
        let c = |name: &str| status.counters.get(name).copied().unwrap_or(0);
        Totals {
            at,
            forwarded: c("tx") + c("redirect"),
            new_flows: c("flow_new") + c("flow_rebalanced"),
            unrecorded: c("flow_unrecorded"),
            dropped: c("drop_no_backend") + c("drop_redirect_failed"),
            services: status.services.iter().map(|s| (s.name.clone(), s.counters.clone())).collect(),
        }
    }
}

#[derive(Debug, Default)]
pub struct History {
    last: Option<Totals>,
    points: VecDeque<Point>,
}

impl History {
    /// Takes a sample at `at` (seconds since the epoch). A counter that went back (the maps
    /// were replaced) counts as 0 for that interval; a service seen for the first time starts
    /// at its next sample.
    pub fn record(&mut self, status: &Status, at: f64) {
        let now = Totals::of(status, at);
        if let Some(last) = &self.last {
            let secs = (now.at - last.at).max(1e-3);
            let rate = |a: u64, b: u64| b.saturating_sub(a) as f64 / secs;
            let services: BTreeMap<String, Rates> = now
                .services
                .iter()
                .filter_map(|(name, c)| {
                    let l = last.services.get(name)?;
                    Some((
                        name.clone(),
                        Rates { packets: rate(l.packets, c.packets), bytes: rate(l.bytes, c.bytes), new_flows: rate(l.flows, c.flows) },
                    ))
                })
                .collect();
            self.points.push_back(Point {
                t: at,
                node: Rates {
                    packets: rate(last.forwarded, now.forwarded),
                    // Every forwarded packet counts for a service: the node's bytes are theirs.
                    bytes: services.values().map(|r| r.bytes).sum(),
                    new_flows: rate(last.new_flows, now.new_flows),
                },
                unrecorded: rate(last.unrecorded, now.unrecorded),
                dropped: rate(last.dropped, now.dropped),
                services,
            });
            while self.points.len() > KEPT {
                self.points.pop_front();
            }
        }
        self.last = Some(now);
    }

    pub fn to_json(&self) -> String {
        #[derive(Serialize)]
        struct Out<'a> {
            interval_seconds: f64,
            points: &'a VecDeque<Point>,
        }
        serde_json::to_string(&Out { interval_seconds: EVERY.as_secs_f64(), points: &self.points }).unwrap_or_default()
    }
}

/// Samples every [`EVERY`] until aborted. A failed read skips the sample.
pub(super) fn sample(web: Arc<Web>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(EVERY);
        loop {
            tick.tick().await;
            let w = web.clone();
            let Ok(Ok(status)) = tokio::task::spawn_blocking(move || w.status()).await else { continue };
            let at = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
            if let Ok(mut h) = web.history.lock() {
                h.record(&status, at);
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::ServiceStatus;
    use lb_common::status::Counters;

    fn status(tx: u64, web_packets: u64, web_flows: u64) -> Status {
        let mut s = Status {
            services: vec![ServiceStatus {
                name: "web".into(),
                counters: Counters { packets: web_packets, bytes: web_packets * 100, flows: web_flows },
                ..Default::default()
            }],
            ..Default::default()
        };
        s.counters.insert("tx".into(), tx);
        s.counters.insert("flow_new".into(), web_flows);
        s
    }

    #[test]
    fn rates_come_from_consecutive_samples_and_the_oldest_go() {
        let mut h = History::default();
        h.record(&status(0, 0, 0), 100.0);
        assert!(h.points.is_empty(), "one sample gives no rate");
        h.record(&status(200, 200, 10), 102.0);
        let p = h.points.back().unwrap();
        assert_eq!(p.node.packets, 100.0);
        assert_eq!(p.node.bytes, 10_000.0);
        assert_eq!(p.services["web"], Rates { packets: 100.0, bytes: 10_000.0, new_flows: 5.0 });
        // Counters that went back (maps replaced): no negative rate.
        h.record(&status(50, 50, 1), 104.0);
        assert_eq!(h.points.back().unwrap().node.packets, 0.0);
        for i in 0..KEPT + 10 {
            h.record(&status(0, 0, 0), 106.0 + i as f64);
        }
        assert_eq!(h.points.len(), KEPT);
        assert!(h.to_json().starts_with("{\"interval_seconds\":2.0,\"points\":[{"));
    }
}
