//! Flow-table scans off the agent's loop: a thread of its own, with its own handle on the
//! pinned `FLOWS` map, removes the flows the agent names (those of a backend that went down,
//! those that no longer fit the configuration) in batches, and walks the table over and over:
//! it removes the entries of flows that ended or went idle ([`FlowTimeouts`]) and counts the
//! entries, in all and per backend, for `xlb stats` and `xlb backend drain --wait`, which
//! therefore never wait for a scan of a million entries (the counts they show are at most
//! 100 ms old for a small table, and at most 50 walking times old for a large one).

use std::{
    collections::HashMap,
    path::Path,
    sync::{mpsc, Arc, Mutex},
    time::Duration,
};

use aya::maps::{HashMap as BpfHashMap, Map, MapData, MapError};
use lb_common::{Flow, FlowKey, ServiceKey, FLOW_F_FIN, FLOW_SEEN_GRANULARITY_NS, PROTO_UDP};
use tokio::sync::mpsc as tokio_mpsc;
use tracing::warn;

/// How often the entries are counted: every 100 ms, or less often for a table so large that
/// counting it takes longer than 2% of the time.
const COUNT_EVERY: Duration = Duration::from_millis(100);
const COUNT_SHARE: u32 = 50;
/// Keys removed between two looks at the job queue.
const BATCH: usize = 4096;

/// Which flows fit a configuration: a service id takes its destination, and a backend slot
/// belongs to that service (what `Model::flow_filter` builds).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FlowFilter {
    pub services: HashMap<u32, ServiceKey>,
    pub backends: HashMap<u32, u32>,
}

impl FlowFilter {
    /// Whether the flow entry fits: its service exists and takes its destination (port 0
    /// takes every port), and its backend slot is one of that service's.
    pub fn fits(&self, key: &FlowKey, flow: &Flow) -> bool {
        let (Some(k), Some(&service)) = (self.services.get(&flow.service), self.backends.get(&flow.backend)) else {
            return false;
        };
        k.addr == key.dst
            && k.family == key.family
            && k.proto == key.proto
            && (k.port == key.dport || k.port == 0)
            && service == flow.service
    }
}

/// How long a flow entry outlives its flow's last packet (`[agent] tcp_timeout`,
/// `tcp_fin_timeout`, `udp_timeout`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowTimeouts {
    /// A TCP flow without the client's FIN.
    pub tcp: Duration,
    /// A TCP flow after the client's FIN: the client still ACKs the backend's FIN (and may go
    /// on ACKing data in a half-closed connection, which keeps the entry).
    pub tcp_fin: Duration,
    pub udp: Duration,
}

impl FlowTimeouts {
    /// LVS's TCP and UDP timeouts; a FIN linger long enough for the last ACKs.
    pub const DEFAULT: FlowTimeouts =
        FlowTimeouts { tcp: Duration::from_secs(900), tcp_fin: Duration::from_secs(10), udp: Duration::from_secs(300) };

    /// Whether the entry's flow has been quiet past its timeout at `now` (nanoseconds of
    /// `CLOCK_MONOTONIC_COARSE`). `Flow::seen` may be late by the program's refresh
    /// granularity; the timeout is counted from the latest the last packet may have come.
    pub fn expired(&self, key: &FlowKey, flow: &Flow, now: u64) -> bool {
        let timeout = if key.proto == PROTO_UDP {
            self.udp
        } else if flow.flags & FLOW_F_FIN != 0 {
            self.tcp_fin
        } else {
            self.tcp
        };
        let quiet = now.saturating_sub(flow.seen);
        quiet > (timeout.as_nanos() as u64).saturating_add(FLOW_SEEN_GRANULARITY_NS)
    }
}

/// The program's clock (`bpf_ktime_get_coarse_ns`) as the agent reads it.
pub fn coarse_now() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC_COARSE)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// What the last walk of the table found.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    /// Entries left after the walk.
    pub entries: usize,
    /// Entries left per backend slot.
    pub per_backend: HashMap<u32, usize>,
    /// Entries removed because their flow ended or went idle, since the scanner started.
    pub expired: u64,
}

/// Flows to remove.
#[derive(Clone, Debug)]
pub enum Doomed {
    /// Those of these backend slots (the backends went down or left).
    Backends(Vec<u32>),
    /// Those that do not fit; `freed` are the slots of backends that left, which no new
    /// backend may take until their flows are gone.
    NotFitting { filter: Arc<FlowFilter>, freed: Vec<u32> },
}

/// A finished removal: what was asked, and how many entries went.
#[derive(Debug)]
pub struct Done {
    pub doomed: Doomed,
    pub removed: usize,
}

/// What the scanner thread is asked to do.
enum Job {
    Remove(Doomed),
    Timeouts(FlowTimeouts),
}

pub struct FlowScanner {
    jobs: mpsc::Sender<Job>,
    tally: Arc<Mutex<Tally>>,
}

impl FlowScanner {
    /// Starts the thread on the flow table pinned at `pin`, removing entries past `timeouts`;
    /// finished removals are reported on `done`.
    pub fn start(pin: &Path, timeouts: FlowTimeouts, done: tokio_mpsc::UnboundedSender<Done>) -> Result<FlowScanner, MapError> {
        let data = MapData::from_pin(pin)?;
        let flows: BpfHashMap<MapData, FlowKey, Flow> = BpfHashMap::try_from(Map::LruHashMap(data))?;
        let (jobs, queue) = mpsc::channel::<Job>();
        let mut first = Tally::default();
        walk(&flows, &timeouts, &mut first);
        let tally = Arc::new(Mutex::new(first));
        let shared = tally.clone();
        std::thread::Builder::new()
            .name("xlb-flows".into())
            .spawn(move || scan(flows, queue, timeouts, shared, done))
            .map_err(|e| MapError::SyscallError(aya::sys::SyscallError { call: "spawning the flow scanner", io_error: e }))?;
        Ok(FlowScanner { jobs, tally })
    }

    /// Asks for `doomed` to be removed; returns at once.
    pub fn remove(&self, doomed: Doomed) {
        if self.jobs.send(Job::Remove(doomed)).is_err() {
            warn!("the flow scanner has stopped: flows not removed");
        }
    }

    /// Takes new timeouts from the next walk on (a reload).
    pub fn set_timeouts(&self, timeouts: FlowTimeouts) {
        if self.jobs.send(Job::Timeouts(timeouts)).is_err() {
            warn!("the flow scanner has stopped: flow timeouts not changed");
        }
    }

    /// What the last walk found, as the walks go on.
    pub fn shared(&self) -> Arc<Mutex<Tally>> {
        self.tally.clone()
    }
}

fn scan(
    flows: BpfHashMap<MapData, FlowKey, Flow>,
    queue: mpsc::Receiver<Job>,
    mut timeouts: FlowTimeouts,
    shared: Arc<Mutex<Tally>>,
    done: tokio_mpsc::UnboundedSender<Done>,
) {
    let mut every = COUNT_EVERY;
    let mut tally = shared.lock().map(|t| t.clone()).unwrap_or_default();
    loop {
        match queue.recv_timeout(every) {
            Ok(Job::Remove(doomed)) => {
                let removed = remove(&flows, &doomed);
                if done.send(Done { doomed, removed }).is_err() {
                    return;
                }
            }
            Ok(Job::Timeouts(t)) => timeouts = t,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        let started = std::time::Instant::now();
        walk(&flows, &timeouts, &mut tally);
        if let Ok(mut t) = shared.lock() {
            *t = tally.clone();
        }
        every = COUNT_EVERY.max(started.elapsed() * COUNT_SHARE);
    }
}

/// One walk of the table: removes the entries past their timeout and counts the others. The
/// expired entries of each batch read are deleted together (one system call) as soon as they
/// are read, so that a flow the program refreshes just then is almost never caught.
fn walk(flows: &BpfHashMap<MapData, FlowKey, Flow>, timeouts: &FlowTimeouts, tally: &mut Tally) {
    let now = coarse_now();
    let mut per_backend: HashMap<u32, usize> = HashMap::new();
    let mut stale = Vec::new();
    let read = crate::dataplane::for_each_chunk(flows, crate::dataplane::FLOW_BATCH, |keys: &[FlowKey], values: &[Flow]| {
        stale.clear();
        for (key, flow) in keys.iter().zip(values) {
            if timeouts.expired(key, flow, now) {
                stale.push(*key);
            } else {
                *per_backend.entry(flow.backend).or_default() += 1;
            }
        }
        let (deleted, error) = crate::dataplane::delete_keys(flows, &stale);
        tally.expired += deleted as u64;
        if let Some(e) = error {
            warn!("removing expired flows: {e}");
        }
    });
    if let Err(e) = read {
        // Counted as far as it went; the next walk tries again.
        warn!("reading the flow table: {e}");
    }
    tally.entries = per_backend.values().sum();
    tally.per_backend = per_backend;
}

/// Removes the doomed flows, a batch of keys at a time (the program goes on inserting).
fn remove(flows: &BpfHashMap<MapData, FlowKey, Flow>, doomed: &Doomed) -> usize {
    let is_doomed = |k: &FlowKey, f: &Flow| match doomed {
        Doomed::Backends(slots) => slots.contains(&f.backend),
        Doomed::NotFitting { filter, .. } => !filter.fits(k, f),
    };
    let mut victims: Vec<FlowKey> = Vec::new();
    let read = crate::dataplane::for_each_entry(flows, crate::dataplane::FLOW_BATCH, |k: &FlowKey, f: &Flow| {
        if is_doomed(k, f) {
            victims.push(*k);
        }
    });
    if let Err(e) = read {
        warn!("reading the flow table: {e}");
    }
    let mut removed = 0;
    for batch in victims.chunks(BATCH) {
        let (deleted, error) = crate::dataplane::delete_keys(flows, batch);
        removed += deleted;
        if let Some(e) = error {
            warn!("removing flows: {e}");
        }
        std::thread::yield_now();
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_common::PROTO_TCP;
    use std::net::{IpAddr, Ipv4Addr};

    const S: u64 = 1_000_000_000;

    fn key(proto: u8) -> FlowKey {
        let (client, vip) = (IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)), IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1)));
        FlowKey::new(proto, client, 40000, vip, 80)
    }

    fn flow(seen: u64, flags: u32) -> Flow {
        Flow { backend: 1, service: 0, seen, flags, _pad: 0 }
    }

    #[test]
    fn each_kind_of_flow_expires_after_its_own_timeout_and_never_early() {
        let t = FlowTimeouts { tcp: Duration::from_secs(60), tcp_fin: Duration::from_secs(5), udp: Duration::from_secs(30) };
        let at = 1000 * S;
        // The refresh granularity is added: `seen` may be up to a second late.
        assert!(!t.expired(&key(PROTO_TCP), &flow(at, 0), at + 61 * S));
        assert!(t.expired(&key(PROTO_TCP), &flow(at, 0), at + 61 * S + 1));
        assert!(!t.expired(&key(PROTO_TCP), &flow(at, FLOW_F_FIN), at + 6 * S));
        assert!(t.expired(&key(PROTO_TCP), &flow(at, FLOW_F_FIN), at + 6 * S + 1));
        assert!(!t.expired(&key(PROTO_UDP), &flow(at, 0), at + 31 * S));
        assert!(t.expired(&key(PROTO_UDP), &flow(at, 0), at + 31 * S + 1));
        // A FIN mark does not shorten a UDP flow's life (UDP has no FIN; the mark is ignored).
        assert!(!t.expired(&key(PROTO_UDP), &flow(at, FLOW_F_FIN), at + 6 * S + 1));
        // Refreshed after the walk read the clock: not expired.
        assert!(!t.expired(&key(PROTO_TCP), &flow(at + 5 * S, 0), at));
    }
}
