//! `/metrics`: the status in the Prometheus exposition format, written by prometheus-client
//! from a snapshot taken for the scrape (a collector: nothing is kept between scrapes but what
//! the agent and the maps hold).
//!
//! Names follow Prometheus' conventions: an `xlb_` prefix, base units (bytes, seconds),
//! counters ending in `_total`, one series per label set.

use std::{borrow::Cow, fmt};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet},
    metrics::{counter::ConstCounter, gauge::ConstGauge, MetricType},
    registry::Registry,
};

use crate::{control::Status, health::Durations};

/// What one scrape shows: the filled status, and each service's health-check durations (the
/// sum over its backends' checks).
#[derive(Debug)]
pub struct Scrape {
    pub status: Status,
    pub durations: Vec<(String, Durations)>,
}

type Labels<'a> = Vec<(&'static str, Cow<'a, str>)>;

/// One metric family: its name, help and type, and a value per label set.
struct Family<'e, 'a> {
    encoder: &'e mut DescriptorEncoder<'a>,
}

impl Family<'_, '_> {
    fn counter<'l>(&mut self, name: &str, help: &str, series: impl IntoIterator<Item = (Labels<'l>, u64)>) -> fmt::Result {
        let mut m = self.encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        for (labels, v) in series {
            ConstCounter::new(v).encode(m.encode_family(&labels)?)?;
        }
        Ok(())
    }

    fn gauge<'l>(&mut self, name: &str, help: &str, series: impl IntoIterator<Item = (Labels<'l>, f64)>) -> fmt::Result {
        let mut m = self.encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (labels, v) in series {
            ConstGauge::new(v).encode(m.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

fn bool_gauge(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

impl Collector for Scrape {
    fn encode(&self, encoder: DescriptorEncoder) -> fmt::Result {
        self.encode_all(encoder)
    }
}

impl Scrape {
    fn encode_all<'a>(&'a self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let s = &self.status;
        let mut f = Family { encoder: &mut encoder };
        let info: Labels = vec![("version", s.agent.version.as_str().into()), ("hostname", s.agent.hostname.as_str().into())];
        f.gauge("xlb_build_info", "The agent's version (always 1).", [(info, 1.0)])?;
        f.gauge("xlb_start_time_seconds", "When the agent started, seconds since the Unix epoch.", [(vec![], s.agent.started)])?;
        f.gauge("xlb_uptime_seconds", "How long the agent has run.", [(vec![], s.agent.uptime_seconds)])?;

        // Services.
        let service = |svc: &'a crate::control::ServiceStatus| -> Labels<'a> {
            vec![
                ("service", svc.name.as_str().into()),
                ("vip", svc.vip.as_str().into()),
                ("port", svc.port.to_string().into()),
                ("protocol", svc.protocol.as_str().into()),
            ]
        };
        let services = || s.services.iter();
        f.counter("xlb_service_packets", "Packets forwarded for the service.", services().map(|v| (service(v), v.counters.packets)))?;
        f.counter(
            "xlb_service_bytes",
            "Bytes forwarded for the service (IP packet lengths).",
            services().map(|v| (service(v), v.counters.bytes)),
        )?;
        f.counter("xlb_service_new_flows", "New flows recorded for the service.", services().map(|v| (service(v), v.counters.flows)))?;
        f.gauge(
            "xlb_service_below_quorum",
            "1 when the service has fewer usable backends than its quorum.",
            services().map(|v| (service(v), bool_gauge(v.mode != "normal"))),
        )?;

        // Backends (members and the sorry backend).
        let backends = || {
            services().flat_map(|v| {
                v.backends.iter().map(move |b| (v, b, "member")).chain(v.sorry.iter().map(move |b| (v, b, "sorry")))
            })
        };
        let backend = |svc: &'a crate::control::ServiceStatus, b: &'a crate::control::BackendStatus, role: &'static str| -> Labels<'a> {
            vec![("service", svc.name.as_str().into()), ("backend", b.address.as_str().into()), ("role", role.into())]
        };
        f.counter(
            "xlb_backend_packets",
            "Packets forwarded to the backend.",
            backends().map(|(v, b, r)| (backend(v, b, r), b.counters.packets)),
        )?;
        f.counter(
            "xlb_backend_bytes",
            "Bytes forwarded to the backend (IP packet lengths).",
            backends().map(|(v, b, r)| (backend(v, b, r), b.counters.bytes)),
        )?;
        f.counter(
            "xlb_backend_new_flows",
            "New flows recorded to the backend.",
            backends().map(|(v, b, r)| (backend(v, b, r), b.counters.flows)),
        )?;
        f.gauge(
            "xlb_backend_up",
            "1 when the backend takes new flows (MAC known, healthy, not drained).",
            backends().map(|(v, b, r)| (backend(v, b, r), bool_gauge(b.state == "up"))),
        )?;
        f.gauge(
            "xlb_backend_healthy",
            "1 when the backend's health check says up (or it has no check).",
            backends().map(|(v, b, r)| (backend(v, b, r), bool_gauge(b.health != "down"))),
        )?;
        f.gauge(
            "xlb_backend_drained",
            "1 when the backend is drained (weight 0).",
            backends().map(|(v, b, r)| (backend(v, b, r), bool_gauge(b.state == "drained"))),
        )?;
        f.gauge("xlb_backend_weight", "The backend's weight.", backends().map(|(v, b, r)| (backend(v, b, r), f64::from(b.weight))))?;
        f.gauge(
            "xlb_backend_flows",
            "Flow-table entries that send to the backend (as of the flow scanner's last walk).",
            backends().filter_map(|(v, b, r)| Some((backend(v, b, r), b.flows? as f64))),
        )?;
        f.counter("xlb_backend_checks", "Health checks run.", backends().map(|(v, b, r)| (backend(v, b, r), b.checks)))?;
        f.counter(
            "xlb_backend_check_failures",
            "Health checks that failed.",
            backends().map(|(v, b, r)| (backend(v, b, r), b.check_failures)),
        )?;
        f.counter(
            "xlb_backend_transitions",
            "Health transitions, by the state the backend went to and the reason.",
            backends().flat_map(|(v, b, r)| {
                b.transitions_by_reason.iter().map(move |t| {
                    let mut l = backend(v, b, r);
                    l.push(("to", t.to.as_str().into()));
                    l.push(("reason", t.reason.as_str().into()));
                    (l, t.count)
                })
            }),
        )?;
        {
            let mut m = f.encoder.encode_descriptor(
                "xlb_health_check_duration_seconds",
                "How long health checks took, per service, from the probe's start to its outcome.",
                None,
                MetricType::Histogram,
            )?;
            for (name, d) in &self.durations {
                let labels: Labels = vec![("service", name.as_str().into())];
                m.encode_family(&labels)?.encode_histogram::<NoLabelSet>(d.sum, d.count, &d.per_bound(), None)?;
            }
        }

        // The data plane.
        let (verdicts, events) = lb_common::stat::NAMES.split_at(lb_common::stat::EVENT_FLOW_HIT as usize);
        let named = |names: &'static [&'static str], label: &'static str| {
            names.iter().map(move |n| (vec![(label, Cow::Borrowed(*n))], s.counters.get(*n).copied().unwrap_or(0)))
        };
        f.counter(
            "xlb_dataplane_packets",
            "Packets the XDP program saw, by verdict (each packet counts under exactly one).",
            named(verdicts, "verdict"),
        )?;
        f.counter(
            "xlb_dataplane_events",
            "Things that happened on the way (flow_hit, flow_new, flow_unrecorded, ...).",
            named(events, "event"),
        )?;
        f.gauge("xlb_flow_table_entries", "Entries in the flow table.", [(vec![], s.flows as f64)])?;
        f.gauge("xlb_flow_table_capacity", "Entries the flow table holds at most.", [(vec![], f64::from(s.agent.flow_table_size))])?;
        f.counter("xlb_flows_expired", "Flow entries removed because their flow ended or went idle.", [(vec![], s.flows_expired)])?;

        // Faults.
        f.gauge("xlb_out_of_sync", "1 while the maps are not in the desired state.", [(vec![], bool_gauge(s.faults.out_of_sync))])?;
        f.counter("xlb_map_write_failures", "Map writes that failed (retried).", [(vec![], s.faults.map_write_failures)])?;
        f.counter("xlb_netlink_failures", "Netlink calls that failed or overran (retried).", [(vec![], s.faults.netlink_failures)])?;
        f.counter(
            "xlb_check_local_errors",
            "Health checks that failed on this node (no descriptor, buffer or route), not on the backend.",
            [(vec![], s.faults.check_local_errors)],
        )?;

        // VRRP.
        let instance = |i: &'a crate::vrrp::InstanceStatus| -> Labels<'a> {
            vec![("instance", i.name.as_str().into()), ("interface", i.interface.as_str().into()), ("vrid", i.vrid.to_string().into())]
        };
        const STATES: [&str; 5] = ["INIT", "BACKUP", "MASTER", "FAULT", "FAILED"];
        f.gauge(
            "xlb_vrrp_state",
            "1 for the instance's current state.",
            s.vrrp.iter().flat_map(|i| {
                STATES.iter().map(move |st| {
                    let mut l = instance(i);
                    l.push(("state", Cow::Borrowed(*st)));
                    (l, bool_gauge(i.state == *st))
                })
            }),
        )?;
        f.gauge("xlb_vrrp_priority", "Priority advertised now.", s.vrrp.iter().map(|i| (instance(i), f64::from(i.priority))))?;
        f.counter("xlb_vrrp_transitions", "State changes.", s.vrrp.iter().map(|i| (instance(i), i.transitions)))?;
        f.counter("xlb_vrrp_adverts_sent", "Adverts sent.", s.vrrp.iter().map(|i| (instance(i), i.adverts_sent)))?;
        f.counter("xlb_vrrp_adverts_received", "Valid adverts received.", s.vrrp.iter().map(|i| (instance(i), i.adverts_received)))?;
        f.counter(
            "xlb_vrrp_invalid_adverts",
            "Adverts dropped, by reason.",
            s.vrrp.iter().flat_map(|i| {
                i.invalid.iter().map(move |(reason, n)| {
                    let mut l = instance(i);
                    l.push(("reason", reason.as_str().into()));
                    (l, *n)
                })
            }),
        )?;
        Ok(())
    }
}

/// The exposition (OpenMetrics text) of one scrape.
pub fn render(scrape: Scrape) -> Result<String, fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(scrape));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

/// The content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{BackendStatus, ServiceStatus};
    use lb_common::status::{Counters, TransitionCount};

    #[test]
    fn the_exposition_names_every_family_with_its_labels() {
        let backend = BackendStatus {
            address: "203.0.113.11".into(),
            state: "up".into(),
            health: "up".into(),
            weight: 2,
            flows: Some(7),
            counters: Counters { packets: 10, bytes: 1000, flows: 3 },
            transitions_by_reason: vec![TransitionCount { to: "down".into(), reason: "HTTP 503".into(), count: 2 }],
            ..Default::default()
        };
        let svc = ServiceStatus {
            name: "web".into(),
            vip: "203.0.113.100".into(),
            port: 80,
            protocol: "tcp".into(),
            mode: "normal".into(),
            counters: Counters { packets: 10, bytes: 1000, flows: 3 },
            backends: vec![backend],
            ..Default::default()
        };
        let mut status = Status { services: vec![svc], flows: 7, ..Default::default() };
        status.counters = lb_common::stat::NAMES.iter().map(|n| (n.to_string(), 1)).collect();
        let mut d = Durations::default();
        d.record(std::time::Duration::from_millis(3));
        let text = render(Scrape { status, durations: vec![("web".into(), d)] }).unwrap();
        for line in [
            "xlb_service_packets_total{service=\"web\",vip=\"203.0.113.100\",port=\"80\",protocol=\"tcp\"} 10",
            "xlb_backend_new_flows_total{service=\"web\",backend=\"203.0.113.11\",role=\"member\"} 3",
            "xlb_backend_flows{service=\"web\",backend=\"203.0.113.11\",role=\"member\"} 7",
            "xlb_backend_transitions_total{service=\"web\",backend=\"203.0.113.11\",role=\"member\",to=\"down\",reason=\"HTTP 503\"} 2",
            "xlb_health_check_duration_seconds_bucket{le=\"0.005\",service=\"web\"} 1",
            "xlb_dataplane_packets_total{verdict=\"tx\"} 1",
            "xlb_dataplane_events_total{event=\"flow_unrecorded\"} 1",
            "xlb_flow_table_entries 7",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l.starts_with(line)), "missing {line:?} in\n{text}");
        }
    }
}
