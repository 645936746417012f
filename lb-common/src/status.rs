//! The status the agent's control socket reports (`xlb stats`, `xlb stats --json`): written
//! by the agent, read by its clients (the CLI, the tests). Rendering it for people is the
//! agent's business and stays there.

use alloc::{collections::BTreeMap, string::String, vec::Vec};

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Counters {
    pub packets: u64,
    pub bytes: u64,
    /// New flows recorded to it.
    #[serde(default)]
    pub flows: u64,
}

impl From<crate::Counters> for Counters {
    fn from(c: crate::Counters) -> Self {
        Counters { packets: c.packets, bytes: c.bytes, flows: c.flows }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Status {
    /// The agent itself.
    #[serde(default)]
    pub agent: AgentInfo,
    pub interfaces: Vec<String>,
    pub services: Vec<ServiceStatus>,
    /// Faults the agent met, and whether the maps are in the desired state.
    #[serde(default)]
    pub faults: FaultStatus,
    /// The changes made at run time that the file does not have (`xlb backend ...`,
    /// `xlb service ...` without `--save`), in the order they were made.
    #[serde(default)]
    pub runtime_changes: Vec<String>,
    /// Global verdict and event counters by name (`lb_common::stat::NAMES`).
    pub counters: BTreeMap<String, u64>,
    /// Entries in the flow table.
    pub flows: usize,
    /// Flow entries removed because their flow ended (FIN, then quiet) or went idle.
    #[serde(default)]
    pub flows_expired: u64,
    pub checker: CheckerStatus,
    /// VRRP instances (empty without `[[vrrp_instance]]`).
    #[serde(default)]
    pub vrrp: Vec<InstanceStatus>,
    /// What this node announces to its router (`[announce]`; none without it).
    #[serde(default)]
    pub announce: Option<AnnounceStatus>,
}

/// `[announce]`: the VIPs this node announces over BGP (through BIRD), and why not the others.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct AnnounceStatus {
    /// The tun device the VIP routes go through, and their routing table (BIRD imports it).
    pub interface: String,
    pub table: u32,
    /// Each VIP of `[announce]`: announced, or why not.
    pub vips: Vec<VipAnnouncement>,
    /// The node is draining (`xlb drain-node`, SIGTERM): everything is withdrawn, and it
    /// stops once the router has moved its flows.
    pub draining: bool,
    /// Routes added and removed since the agent started.
    pub announcements: u64,
    pub withdrawals: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct VipAnnouncement {
    pub vip: String,
    pub announced: bool,
    /// Why it is not announced (`draining`, `data plane not forwarding`, `service web4 below
    /// quorum`, ...).
    pub reason: Option<String>,
}

impl Status {
    /// The service named `name`, if the agent has one.
    pub fn service(&self, name: &str) -> Option<&ServiceStatus> {
        self.services.iter().find(|s| s.name == name)
    }

    /// Every service's backends, service by service (not their sorry backends).
    pub fn backends(&self) -> impl Iterator<Item = &BackendStatus> {
        self.services.iter().flat_map(|s| &s.backends)
    }
}

/// How the health checker keeps its timetable.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct CheckerStatus {
    /// Backends checked.
    pub checks: usize,
    /// Checks started since the agent started.
    pub starts: u64,
    /// How late a check started against its schedule, worst and mean.
    pub late_max_ms: f64,
    pub late_mean_ms: f64,
    /// Rounds skipped because the previous check of the backend was still running.
    pub skipped: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct AgentInfo {
    /// xlb's version.
    pub version: String,
    /// This node's host name.
    pub hostname: String,
    /// When the agent started (seconds since the Unix epoch) and how long ago.
    pub started: f64,
    pub uptime_seconds: f64,
    /// Entries the flow table holds at most (`[agent] flow_table_size`).
    pub flow_table_size: u32,
}

/// Faults the agent met. A failed map write or netlink call never stops forwarding: the agent
/// retries with backoff until the maps are in the desired state again.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct FaultStatus {
    /// The maps are not in the desired state now (a write failed; a VRRP master steps down
    /// until a retry succeeds).
    pub out_of_sync: bool,
    pub map_write_failures: u64,
    pub netlink_failures: u64,
    /// Health checks that failed on this node (no descriptor, no buffer, no route), not on
    /// the backend: the backend's state did not change.
    #[serde(default)]
    pub check_local_errors: u64,
    pub last_error: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ServiceStatus {
    pub name: String,
    /// Its stable id: the same for as long as its (vip, port, protocol) is configured.
    #[serde(default)]
    pub id: u32,
    pub vip: String,
    pub port: u16,
    pub protocol: String,
    pub scheduler: String,
    /// "normal", "sorry" (below quorum: everything to the sorry backend) or "degraded"
    /// (below quorum without a usable sorry backend).
    pub mode: String,
    pub quorum: u32,
    pub sorry: Option<BackendStatus>,
    pub counters: Counters,
    pub backends: Vec<BackendStatus>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct BackendStatus {
    pub address: String,
    /// How it differs from the file by runtime changes ("weight 5", "drained", "added").
    #[serde(default)]
    pub runtime: Option<String>,
    /// Its stable slot in the data plane: the same for as long as the backend (service,
    /// address, role) is configured, whatever else changes.
    #[serde(default)]
    pub slot: u32,
    pub weight: u32,
    /// The MAC its frames go to (its own, or a tunnel's next hop's), once learnt from the
    /// neighbour table.
    pub mac: Option<String>,
    pub interface: String,
    /// How frames reach it: "dr", "ipip" or "gue:PORT".
    #[serde(default)]
    pub forward: String,
    /// A tunnelled backend: the next hop of its route (none without a route).
    #[serde(default)]
    pub next_hop: Option<String>,
    /// "up", or why it receives no new flows ("no-route", "no-mac", "down", "drained").
    pub state: String,
    /// "up", "down", or "unchecked" (no health check configured).
    pub health: String,
    /// The reason of its last health transition ("connect refused", "HTTP 503", ...).
    pub reason: Option<String>,
    pub checks: u64,
    pub check_failures: u64,
    pub transitions: u64,
    /// Transitions by the state it went to and the reason.
    #[serde(default)]
    pub transitions_by_reason: Vec<TransitionCount>,
    pub counters: Counters,
    /// Flow entries that send to it (counted by the flow scanner, so up to its walking time
    /// old); `None` when no scanner runs.
    #[serde(default)]
    pub flows: Option<usize>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TransitionCount {
    /// "up" or "down".
    pub to: String,
    pub reason: String,
    pub count: u64,
}

/// What `xlb stats` shows of an instance.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct InstanceStatus {
    pub name: String,
    pub interface: String,
    pub vrid: u8,
    pub version: u8,
    /// "INIT", "BACKUP", "MASTER" or "FAULT"; "FAILED" once its task has ended in error.
    pub state: String,
    /// Priority advertised now (after track_script weights).
    pub priority: u8,
    /// The master: our own address when MASTER, the last one heard when BACKUP.
    pub master: Option<String>,
    /// Master_Adver_Interval in milliseconds (the master's, as heard in v3).
    pub master_interval_ms: f64,
    /// Why the instance is in FAULT, if it is.
    pub faults: Vec<String>,
    pub last_transition: Option<String>,
    pub transitions: u64,
    pub became_master: u64,
    pub adverts_sent: u64,
    pub adverts_received: u64,
    /// Adverts dropped, by reason (`packet::Invalid::as_str`).
    pub invalid: BTreeMap<String, u64>,
    /// Valid adverts whose address list differs from ours (logged, not dropped).
    pub address_mismatch: u64,
    /// Adverts a master sent at once in answer to a lower-priority master's (or a resigning
    /// one's), out of its timetable: at most one per advert interval.
    #[serde(default)]
    pub answers_sent: u64,
    /// Answers left out because one went out less than an advert interval before.
    #[serde(default)]
    pub answers_suppressed: u64,
    /// Of those, the ones that would have sent a gratuitous ARP / NA burst.
    #[serde(default)]
    pub announcements_suppressed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::{borrow::ToOwned as _, vec};

    #[test]
    fn map_counters_convert() {
        let c = Counters::from(crate::Counters { packets: 3, bytes: 180, flows: 1 });
        assert_eq!(c, Counters { packets: 3, bytes: 180, flows: 1 });
    }

    #[test]
    fn a_status_survives_json_and_older_agents_parse() {
        let backend = BackendStatus { address: "203.0.113.11".to_owned(), slot: 7, state: "up".to_owned(), ..Default::default() };
        let status = Status {
            services: vec![ServiceStatus { name: "web4".to_owned(), id: 2, backends: vec![backend], ..Default::default() }],
            counters: [("tx".to_owned(), 5)].into_iter().collect(),
            vrrp: vec![InstanceStatus { name: "VI_1".to_owned(), state: "MASTER".to_owned(), ..Default::default() }],
            ..Default::default()
        };
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(serde_json::from_value::<Status>(json.clone()).unwrap(), status);
        assert_eq!(status.service("web4").map(|s| s.id), Some(2));
        assert!(status.service("web6").is_none());
        assert_eq!(status.backends().map(|b| b.slot).collect::<Vec<_>>(), [7]);

        // Before ids, slots and VRRP, an agent sent none of them: they default.
        let mut old = json;
        old.as_object_mut().unwrap().remove("vrrp");
        let svc = &mut old["services"][0];
        svc.as_object_mut().unwrap().remove("id");
        svc["backends"][0].as_object_mut().unwrap().remove("slot");
        let old: Status = serde_json::from_value(old).unwrap();
        assert!(old.vrrp.is_empty());
        assert_eq!((old.services[0].id, old.services[0].backends[0].slot), (0, 0));
        assert_eq!(old.services[0].backends[0].state, "up");
    }
}
