//! Flow-table scans off the agent's loop: a thread of its own, with its own handle on the
//! pinned `FLOWS` map, removes the flows the agent names (those of a backend that went down,
//! those that no longer fit the configuration) in batches, and counts the table's entries for
//! `xlb stats`, which therefore never waits for a scan of a million entries (the count it shows
//! is at most 100 ms old for a small table, and at most 50 counting times old for a large one).

use std::{
    collections::HashMap,
    path::Path,
    sync::{
        atomic::{AtomicUsize, Ordering},
        mpsc, Arc,
    },
    time::Duration,
};

use aya::maps::{HashMap as BpfHashMap, Map, MapData, MapError};
use lb_common::{Flow, FlowKey, ServiceKey};
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

pub struct FlowScanner {
    jobs: mpsc::Sender<Doomed>,
    entries: Arc<AtomicUsize>,
}

impl FlowScanner {
    /// Starts the thread on the flow table pinned at `pin`; finished removals are reported on
    /// `done`.
    pub fn start(pin: &Path, done: tokio_mpsc::UnboundedSender<Done>) -> Result<FlowScanner, MapError> {
        let data = MapData::from_pin(pin)?;
        let flows: BpfHashMap<MapData, FlowKey, Flow> = BpfHashMap::try_from(Map::LruHashMap(data))?;
        let (jobs, queue) = mpsc::channel::<Doomed>();
        let entries = Arc::new(AtomicUsize::new(flows.keys().filter(|k| k.is_ok()).count()));
        let count = entries.clone();
        std::thread::Builder::new()
            .name("xlb-flows".into())
            .spawn(move || scan(flows, queue, count, done))
            .map_err(|e| MapError::SyscallError(aya::sys::SyscallError { call: "spawning the flow scanner", io_error: e }))?;
        Ok(FlowScanner { jobs, entries })
    }

    /// Asks for `doomed` to be removed; returns at once.
    pub fn remove(&self, doomed: Doomed) {
        if self.jobs.send(doomed).is_err() {
            warn!("the flow scanner has stopped: flows not removed");
        }
    }

    /// Entries in the flow table at the last count.
    pub fn entries(&self) -> usize {
        self.entries.load(Ordering::Relaxed)
    }
}

fn scan(
    mut flows: BpfHashMap<MapData, FlowKey, Flow>,
    queue: mpsc::Receiver<Doomed>,
    count: Arc<AtomicUsize>,
    done: tokio_mpsc::UnboundedSender<Done>,
) {
    let mut every = COUNT_EVERY;
    loop {
        match queue.recv_timeout(every) {
            Ok(doomed) => {
                let removed = remove(&mut flows, &doomed);
                if done.send(Done { doomed, removed }).is_err() {
                    return;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        let started = std::time::Instant::now();
        count.store(flows.keys().filter(|k| k.is_ok()).count(), Ordering::Relaxed);
        every = COUNT_EVERY.max(started.elapsed() * COUNT_SHARE);
    }
}

/// Removes the doomed flows, a batch of keys at a time (the program goes on inserting).
fn remove(flows: &mut BpfHashMap<MapData, FlowKey, Flow>, doomed: &Doomed) -> usize {
    let is_doomed = |k: &FlowKey, f: &Flow| match doomed {
        Doomed::Backends(slots) => slots.contains(&f.backend),
        Doomed::NotFitting { filter, .. } => !filter.fits(k, f),
    };
    let victims: Vec<FlowKey> = flows.iter().filter_map(|e| e.ok()).filter(|(k, f)| is_doomed(k, f)).map(|(k, _)| k).collect();
    let mut removed = 0;
    for batch in victims.chunks(BATCH) {
        for key in batch {
            match flows.remove(key) {
                Ok(()) => removed += 1,
                Err(MapError::KeyNotFound) => {}
                Err(e) => warn!("removing a flow: {e}"),
            }
        }
        std::thread::yield_now();
    }
    removed
}
