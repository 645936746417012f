//! The edge to the kernel: loads the XDP program, attaches it, pins it, and reads and writes
//! its maps. No policy lives here; the agent decides what to write.

use std::{
    fs,
    io,
    path::{Path, PathBuf},
};

use aya::{
    maps::{Array, DevMapHash, HashMap, MapData, MapError, MapInfo, PerCpuArray, PerCpuValues},
    programs::{links::FdLink, links::PinnedLink, ProgramError, Xdp, XdpMode},
    Ebpf, EbpfLoader,
};
use lb_common::{
    maps, stat, Backend, Counters, Flow, FlowKey, LocalMacs, RateWindow, Ring, Service, ServiceKey, Settings, VipFilter, BACKEND_F_ASSIGNED,
    LOCAL_MAC_SLOTS, MAX_BACKENDS, MAX_LOCAL_MACS, MAX_RING_SIZE, PROGRAM_NAME, RING_EMPTY, RING_SLOTS_PER_SERVICE,
    SERVICE_F_FRAGMENTS_ONLY,
};

/// The compiled XDP program, built from `lb-ebpf` by build.rs.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xlb-ebpf"));

/// Most interfaces a node redirects to (size of the `EGRESS` devmap).
pub const MAX_INTERFACES: u32 = 64;

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("loading the XDP program: {0}")]
    Load(#[source] Box<aya::EbpfError>),
    #[error("program {PROGRAM_NAME} is missing from the object")]
    MissingProgram,
    #[error("map {0} is missing from the object")]
    MissingMap(&'static str),
    #[error("map {name}: {source}")]
    Map { name: &'static str, #[source] source: MapError },
    #[error("map EGRESS, interface index {ifindex}: {message}")]
    Egress { ifindex: u32, message: String },
    #[error("map LOCAL_MACS, interface {ifname} (index {ifindex}): {message}")]
    LocalMacs { ifindex: u32, ifname: String, message: String },
    #[error("program: {0}")]
    Program(#[from] ProgramError),
    #[error("interface {ifname}: {message}")]
    Interface { ifname: String, message: String },
    #[error("pin path {path}: {source}")]
    Pin { path: PathBuf, #[source] source: io::Error },
    #[error("service {0:?} has no ring slot (service id beyond max_services)")]
    NoRingSlot(ServiceKey),
    #[error("table of {0} entries is larger than {MAX_RING_SIZE}")]
    TableTooLarge(usize),
    #[error("map write: {0}")]
    Injected(std::io::Error),
}

/// Fails like a map write would when the lab injects `map-write` faults (see `faults`).
fn writable() -> Result<()> {
    if crate::faults::injected("map-write") {
        return Err(DataplaneError::Injected(crate::faults::error("map-write")));
    }
    Ok(())
}

type Result<T> = std::result::Result<T, DataplaneError>;

fn map_err(name: &'static str) -> impl FnOnce(MapError) -> DataplaneError {
    move |source| DataplaneError::Map { name, source }
}

/// Map sizes chosen by the configuration.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    pub flow_table: u32,
    pub max_services: u32,
}

impl Sizes {
    /// (map, max_entries, key size, value size) of every map whose shape depends on the sizes or
    /// on the layout of lb-common: what a pinned map must match to be adopted.
    fn shapes(&self) -> [(&'static str, u32, usize, usize); 13] {
        use std::mem::size_of;
        [
            (maps::SERVICES, self.max_services * 2, size_of::<ServiceKey>(), size_of::<Service>()),
            (maps::RINGS, self.max_services * RING_SLOTS_PER_SERVICE, 4, size_of::<Ring>()),
            (maps::BACKENDS, MAX_BACKENDS, 4, size_of::<Backend>()),
            (maps::FLOWS, self.flow_table, size_of::<FlowKey>(), size_of::<Flow>()),
            (maps::EGRESS, MAX_INTERFACES, 4, 0),
            (maps::SERVICE_STATS, self.max_services, 4, size_of::<Counters>()),
            (maps::BACKEND_STATS, MAX_BACKENDS, 4, size_of::<Counters>()),
            (maps::STATS, stat::COUNT, 4, 8),
            (maps::LOCAL_MACS, LOCAL_MAC_SLOTS, 4, size_of::<LocalMacs>()),
            (maps::VIP_FILTER, 1, 4, size_of::<VipFilter>()),
            (maps::SETTINGS, 1, 4, size_of::<Settings>()),
            (maps::NEW_FLOW_RATE, 1, 4, size_of::<RateWindow>()),
            (maps::TOO_BIG_RATE, 1, 4, size_of::<RateWindow>()),
        ]
    }
}

/// What `Dataplane::load` found under the pin path.
#[derive(Debug, Default)]
pub struct Adoption {
    /// Maps reused from an earlier agent (flows and counters kept).
    pub adopted: Vec<&'static str>,
    /// Pinned maps dropped because their shape changed (named, with the reason).
    pub replaced: Vec<String>,
}

pub struct Dataplane {
    ebpf: Ebpf,
    logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    services: HashMap<MapData, ServiceKey, Service>,
    rings: Array<MapData, Ring>,
    backends: Array<MapData, Backend>,
    flows: HashMap<MapData, FlowKey, Flow>,
    egress: DevMapHash<MapData>,
    service_stats: PerCpuArray<MapData, Counters>,
    backend_stats: PerCpuArray<MapData, Counters>,
    stats: PerCpuArray<MapData, u64>,
    local_macs: Array<MapData, LocalMacs>,
    vip_filter: Array<MapData, VipFilter>,
    settings: Array<MapData, Settings>,
    sizes: Sizes,
    pin_dir: Option<PathBuf>,
    /// Interfaces attached, with their link pin path (when pinning).
    attached: Vec<(String, Option<PathBuf>)>,
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T>
where
    T: TryFrom<aya::maps::Map, Error = MapError>,
{
    let map = ebpf.take_map(name).ok_or(DataplaneError::MissingMap(name))?;
    T::try_from(map).map_err(map_err(name))
}

fn pin_error(path: &Path) -> impl FnOnce(io::Error) -> DataplaneError + '_ {
    move |source| DataplaneError::Pin { path: path.to_owned(), source }
}

impl Dataplane {
    /// Loads the program and creates its maps. With `pin_dir`, maps are pinned there, and maps
    /// already pinned there by an earlier agent are adopted when their shape still matches.
    pub fn load(sizes: Sizes, pin_dir: Option<&Path>) -> Result<(Self, Adoption)> {
        let mut adoption = Adoption::default();
        let mut loader = EbpfLoader::new();
        for (name, entries, _, _) in sizes.shapes() {
            if name != maps::STATS {
                loader.map_max_entries(name, entries);
            }
        }
        let pin_paths: Vec<(&'static str, PathBuf)> = match pin_dir {
            Some(dir) => {
                fs::create_dir_all(dir).map_err(pin_error(dir))?;
                // Root only: whoever can open a pin can rewrite the maps.
                fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).map_err(pin_error(dir))?;
                sizes.shapes().iter().map(|(name, ..)| (*name, dir.join(name))).collect()
            }
            None => Vec::new(),
        };
        for ((name, entries, key, value), (_, path)) in sizes.shapes().iter().zip(&pin_paths) {
            if !path.exists() {
                continue;
            }
            match MapInfo::from_pin(path) {
                Ok(info)
                    if info.max_entries() == *entries
                        && info.key_size() as usize == *key
                        && (*value == 0 || info.value_size() as usize == *value) =>
                {
                    adoption.adopted.push(name)
                }
                Ok(info) => {
                    adoption.replaced.push(format!(
                        "{name}: pinned map has {} entries of {}+{} bytes, configuration needs {entries} of {key}+{value}",
                        info.max_entries(),
                        info.key_size(),
                        info.value_size()
                    ));
                    fs::remove_file(path).map_err(pin_error(path))?;
                }
                Err(e) => {
                    adoption.replaced.push(format!("{name}: unreadable pinned map ({e})"));
                    fs::remove_file(path).map_err(pin_error(path))?;
                }
            }
        }
        for (name, path) in &pin_paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(OBJECT).map_err(|e| DataplaneError::Load(Box::new(e)))?;
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or(DataplaneError::MissingProgram)?
            .try_into()?;
        program.load()?;
        if let Some(dir) = pin_dir {
            let path = dir.join("prog");
            if path.exists() {
                fs::remove_file(&path).map_err(pin_error(&path))?;
            }
            program.pin(&path).map_err(|e| DataplaneError::Pin {
                path: path.clone(),
                source: io::Error::other(e.to_string()),
            })?;
        }
        // The program's rare events (aya-log); without a reader they are only lost.
        let logger = match aya_log::EbpfLogger::init(&mut ebpf) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!("the XDP program's log: {e}");
                None
            }
        };
        let dataplane = Self {
            logger,
            services: take(&mut ebpf, maps::SERVICES)?,
            rings: take(&mut ebpf, maps::RINGS)?,
            backends: take(&mut ebpf, maps::BACKENDS)?,
            flows: take(&mut ebpf, maps::FLOWS)?,
            egress: take(&mut ebpf, maps::EGRESS)?,
            service_stats: take(&mut ebpf, maps::SERVICE_STATS)?,
            backend_stats: take(&mut ebpf, maps::BACKEND_STATS)?,
            stats: take(&mut ebpf, maps::STATS)?,
            local_macs: take(&mut ebpf, maps::LOCAL_MACS)?,
            vip_filter: take(&mut ebpf, maps::VIP_FILTER)?,
            settings: take(&mut ebpf, maps::SETTINGS)?,
            ebpf,
            sizes,
            pin_dir: pin_dir.map(Path::to_owned),
            attached: Vec::new(),
        };
        Ok((dataplane, adoption))
    }

    /// The reader of the program's log records, to be polled where the agent runs (see
    /// [`forward_program_log`]).
    pub fn take_logger(&mut self) -> Option<aya_log::EbpfLogger<&'static dyn log::Log>> {
        self.logger.take()
    }

    pub fn program(&mut self) -> &mut Xdp {
        self.ebpf
            .program_mut(PROGRAM_NAME)
            .and_then(|p| p.try_into().ok())
            .expect("program checked at load")
    }

    pub fn sizes(&self) -> Sizes {
        self.sizes
    }

    /// Attaches to `ifname`. When pinning and a link of an earlier agent is pinned for this
    /// interface, the new program replaces the old one atomically in that link (no packet sees
    /// a detached interface); otherwise a new link is created and pinned.
    pub fn attach(&mut self, ifname: &str, mode: XdpMode) -> Result<()> {
        let link_pin = self.pin_dir.as_ref().map(|d| d.join(format!("link_{ifname}")));
        let iface_err = |message: String| DataplaneError::Interface { ifname: ifname.to_owned(), message };
        let program = self.program();
        let link_id = match link_pin.as_ref().filter(|p| p.exists()) {
            Some(path) => {
                let pinned = PinnedLink::from_pin(path).map_err(|e| iface_err(format!("reading pinned link {}: {e}", path.display())))?;
                let link = aya::programs::xdp::XdpLink::try_from(FdLink::from(pinned))
                    .map_err(|e| iface_err(format!("pinned link {} is not an XDP link: {e}", path.display())))?;
                program.attach_to_link(link).map_err(|e| iface_err(format!("replacing the program in the pinned link: {e}")))?
            }
            None => program.attach(ifname, mode).map_err(|e| iface_err(format!("attaching XDP ({mode:?} mode): {e}")))?,
        };
        if let Some(path) = &link_pin {
            if !path.exists() {
                let link = program.take_link(link_id)?;
                let fd_link = FdLink::try_from(link).map_err(|e| iface_err(format!("link cannot be pinned: {e}")))?;
                let pinned = fd_link.pin(path).map_err(|e| iface_err(format!("pinning link at {}: {e}", path.display())))?;
                // Keep the link owned by the program again so that dropping it detaches.
                let link = aya::programs::xdp::XdpLink::try_from(FdLink::from(pinned))
                    .map_err(|e| iface_err(format!("re-opening pinned link: {e}")))?;
                program.attach_to_link(link)?;
            }
        }
        self.attached.push((ifname.to_owned(), link_pin));
        Ok(())
    }

    /// Detaches from every interface and removes every pin: a clean stop.
    pub fn shutdown(mut self) -> Result<()> {
        for (_, pin) in self.attached.drain(..) {
            if let Some(path) = pin {
                fs::remove_file(&path).map_err(pin_error(&path))?;
            }
        }
        if let Some(dir) = self.pin_dir.take() {
            for name in self.sizes.shapes().iter().map(|s| s.0).chain(["prog"]) {
                let path = dir.join(name);
                if path.exists() {
                    fs::remove_file(&path).map_err(pin_error(&path))?;
                }
            }
            let _ = fs::remove_dir(&dir);
        }
        // Dropping `ebpf` drops the links, which detaches the program.
        drop(self);
        Ok(())
    }

    /// Lets the backends behind `ifindex` be reached by XDP_REDIRECT.
    pub fn add_egress(&mut self, ifindex: u32) -> Result<()> {
        self.egress
            .insert(ifindex, ifindex, None, 0)
            .map_err(|e| DataplaneError::Egress { ifindex, message: e.to_string() })
    }

    /// Writes the bitmap of `vips` the program reads first: a packet to any other address
    /// passes without a service lookup. Every VIP of every service must be in it.
    pub fn set_vips(&mut self, vips: &[std::net::IpAddr]) -> Result<()> {
        writable()?;
        let keys: Vec<[u8; 16]> = vips.iter().map(|&v| ServiceKey::new(v, 0, 0).addr).collect();
        self.vip_filter.set(0, VipFilter::new(&keys), 0).map_err(map_err(maps::VIP_FILTER))
    }

    /// Makes the program balance only frames arriving on `ifindex` whose destination is one of
    /// `macs` (the interface's own MAC first, then extra ones such as a VRRP virtual MAC); other
    /// frames pass to the kernel. Replaces the interface's entry in one map update.
    pub fn set_local_macs(&mut self, ifindex: u32, macs: &[[u8; 6]]) -> Result<()> {
        let entry = LocalMacs::new(ifindex, macs).ok_or_else(|| {
            local_macs_error(ifindex, format!("{} MACs given, at most {MAX_LOCAL_MACS} fit", macs.len()))
        })?;
        let slot = ifindex % LOCAL_MAC_SLOTS;
        let held = self.local_macs.get(&slot, 0).map_err(|e| local_macs_error(ifindex, e.to_string()))?;
        if held.ifindex != 0 && held.ifindex != ifindex {
            let other = held.ifindex;
            return Err(local_macs_error(
                ifindex,
                format!("its slot {slot} is taken by interface index {other} (indices equal modulo {LOCAL_MAC_SLOTS}); attach one of them only"),
            ));
        }
        self.local_macs.set(slot, entry, 0).map_err(|e| local_macs_error(ifindex, e.to_string()))
    }

    /// The MACs frames on `ifindex` must be addressed to; `None` when the interface has no
    /// entry (every destination accepted).
    pub fn local_macs(&self, ifindex: u32) -> Result<Option<Vec<[u8; 6]>>> {
        match self.local_macs.get(&(ifindex % LOCAL_MAC_SLOTS), 0) {
            Ok(entry) if entry.ifindex == ifindex => Ok(Some(entry.macs().to_vec())),
            Ok(_) => Ok(None),
            Err(e) => Err(local_macs_error(ifindex, e.to_string())),
        }
    }

    /// Adds `mac` (e.g. a VRRP virtual MAC on a macvlan over `ifindex`) to the interface's
    /// entry, which `set_local_macs` must have written first: an entry made of the extra MAC
    /// alone would turn away frames for the interface's own address.
    pub fn add_local_mac(&mut self, ifindex: u32, mac: [u8; 6]) -> Result<()> {
        let mut macs = self.existing_local_macs(ifindex)?;
        if !macs.contains(&mac) {
            macs.push(mac);
            self.set_local_macs(ifindex, &macs)?;
        }
        Ok(())
    }

    /// Removes `mac` from the interface's entry (nothing to do when it is not there). The last
    /// MAC stays: an empty entry would turn away every frame.
    pub fn remove_local_mac(&mut self, ifindex: u32, mac: [u8; 6]) -> Result<()> {
        let mut macs = self.existing_local_macs(ifindex)?;
        if !macs.contains(&mac) {
            return Ok(());
        }
        macs.retain(|m| *m != mac);
        if macs.is_empty() {
            return Err(local_macs_error(ifindex, "refusing to remove the last MAC".into()));
        }
        self.set_local_macs(ifindex, &macs)
    }

    /// Puts `new` in place of `old` in the interface's entry, keeping the other MACs (the
    /// interface's address changed). Writes a fresh entry of `new` when there is none.
    pub fn replace_local_mac(&mut self, ifindex: u32, old: [u8; 6], new: [u8; 6]) -> Result<()> {
        let mut macs = self.local_macs(ifindex)?.unwrap_or_default();
        match macs.iter_mut().find(|m| **m == old) {
            Some(m) => *m = new,
            None => macs.insert(0, new),
        }
        self.set_local_macs(ifindex, &macs)
    }

    fn existing_local_macs(&self, ifindex: u32) -> Result<Vec<[u8; 6]>> {
        self.local_macs(ifindex)?
            .ok_or_else(|| local_macs_error(ifindex, "no entry for the interface (set its own MAC first)".into()))
    }

    pub fn set_backend(&mut self, index: u32, backend: &Backend) -> Result<()> {
        writable()?;
        self.backends.set(index, backend, 0).map_err(map_err(maps::BACKENDS))
    }

    pub fn backend(&self, index: u32) -> Result<Backend> {
        self.backends.get(&index, 0).map_err(map_err(maps::BACKENDS))
    }

    /// The `BACKENDS` entries that name their owner (slot, entry): what an earlier agent left.
    pub fn assigned_backends(&self) -> Result<Vec<(u32, Backend)>> {
        let mut held = Vec::new();
        for slot in 0..MAX_BACKENDS {
            let b = self.backend(slot)?;
            if b.flags & BACKEND_F_ASSIGNED != 0 {
                held.push((slot, b));
            }
        }
        Ok(held)
    }

    /// The services in `SERVICES` (key, id), fragment entries left out.
    pub fn service_ids(&self) -> Vec<(ServiceKey, u32)> {
        self.services
            .iter()
            .filter_map(|e| e.ok())
            .filter(|(_, s)| s.flags & SERVICE_F_FRAGMENTS_ONLY == 0)
            .map(|(k, s)| (k, s.id))
            .collect()
    }

    /// Zeroes the counters of service `id` (a new service took the id).
    pub fn clear_service_counters(&mut self, id: u32) -> Result<()> {
        clear(&mut self.service_stats, id).map_err(map_err(maps::SERVICE_STATS))
    }

    /// Zeroes the counters of backend slot `index` (a new backend took the slot).
    pub fn clear_backend_counters(&mut self, index: u32) -> Result<()> {
        clear(&mut self.backend_stats, index).map_err(map_err(maps::BACKEND_STATS))
    }

    /// Publishes `svc` with Maglev table `table` without exposing a half-written table: the
    /// table goes into the service's idle ring slot, then one map update flips the service to
    /// it. `svc.ring_slot` is chosen here.
    pub fn publish_service(&mut self, key: &ServiceKey, mut svc: Service, table: &[u32]) -> Result<()> {
        writable()?;
        if table.len() > MAX_RING_SIZE {
            return Err(DataplaneError::TableTooLarge(table.len()));
        }
        if svc.id >= self.sizes.max_services {
            return Err(DataplaneError::NoRingSlot(*key));
        }
        let first = svc.id * RING_SLOTS_PER_SERVICE;
        let live = self.services.get(key, 0).ok().map(|s| s.ring_slot);
        let slot = if live == Some(first) { first + 1 } else { first };
        let mut ring: Box<Ring> = vec![RING_EMPTY; MAX_RING_SIZE].into_boxed_slice().try_into().expect("length");
        ring[..table.len()].copy_from_slice(table);
        self.rings.set(slot, *ring, 0).map_err(map_err(maps::RINGS))?;
        svc.ring_slot = slot;
        svc.ring_size = table.len() as u32;
        self.services.insert(key, svc, 0).map_err(map_err(maps::SERVICES))
    }

    /// Points `key` at another service's live table (the fragment entries).
    pub fn set_service_entry(&mut self, key: &ServiceKey, svc: Service) -> Result<()> {
        writable()?;
        self.services.insert(key, svc, 0).map_err(map_err(maps::SERVICES))
    }

    pub fn service_entry(&self, key: &ServiceKey) -> Option<Service> {
        self.services.get(key, 0).ok()
    }

    pub fn remove_service(&mut self, key: &ServiceKey) -> Result<()> {
        writable()?;
        match self.services.remove(key) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(map_err(maps::SERVICES)(e)),
        }
    }

    pub fn service_keys(&self) -> Vec<ServiceKey> {
        self.services.keys().filter_map(|k| k.ok()).collect()
    }

    /// Reads back a ring slot (tests and diagnostics).
    pub fn ring(&self, slot: u32) -> Result<Box<Ring>> {
        self.rings.get(&slot, 0).map(Box::new).map_err(map_err(maps::RINGS))
    }

    /// Writes the program's settings (the new-flow limit).
    pub fn set_settings(&mut self, settings: Settings) -> Result<()> {
        writable()?;
        self.settings.set(0, settings, 0).map_err(map_err(maps::SETTINGS))
    }

    pub fn settings(&self) -> Result<Settings> {
        self.settings.get(&0, 0).map_err(map_err(maps::SETTINGS))
    }

    pub fn flow(&self, key: &FlowKey) -> Option<Flow> {
        self.flows.get(key, 0).ok()
    }

    pub fn insert_flow(&mut self, key: &FlowKey, flow: Flow) -> Result<()> {
        self.flows.insert(key, flow, 0).map_err(map_err(maps::FLOWS))
    }

    /// Removes every flow `doomed` selects; returns how many went.
    pub fn purge_flows(&mut self, mut doomed: impl FnMut(&FlowKey, &Flow) -> bool) -> Result<usize> {
        writable()?;
        let victims: Vec<FlowKey> =
            self.flow_entries(FLOW_BATCH).into_iter().filter(|(k, f)| doomed(k, f)).map(|(k, _)| k).collect();
        match delete_keys(&self.flows, &victims) {
            (_, Some(io_error)) => Err(map_err(maps::FLOWS)(MapError::SyscallError(aya::sys::SyscallError { call: "bpf_map_delete_batch", io_error }))),
            (deleted, None) => Ok(deleted),
        }
    }

    pub fn flow_count(&self) -> usize {
        let mut n = 0;
        self.each_flow(FLOW_BATCH, |_, _| n += 1);
        n
    }

    /// Every entry of the flow table, each once (read `batch` entries a call at first).
    pub fn flow_entries(&self, batch: usize) -> Vec<(FlowKey, Flow)> {
        let mut all = Vec::new();
        self.each_flow(batch, |k, f| all.push((*k, *f)));
        all
    }

    /// Hands every entry of the flow table to `each`, once; a failed read is logged (counted
    /// as far as it went).
    fn each_flow(&self, batch: usize, each: impl FnMut(&FlowKey, &Flow)) {
        if let Err(e) = for_each_entry(&self.flows, batch, each) {
            tracing::warn!("reading the flow table: {e}");
        }
    }

    pub fn service_counters(&self, id: u32) -> Result<Counters> {
        sum_counters(&self.service_stats, id).map_err(map_err(maps::SERVICE_STATS))
    }

    pub fn backend_counters(&self, index: u32) -> Result<Counters> {
        sum_counters(&self.backend_stats, index).map_err(map_err(maps::BACKEND_STATS))
    }

    /// The global counters, indexed by `lb_common::stat`.
    pub fn stats(&self) -> Result<Vec<u64>> {
        read_stats(&self.stats)
    }
}

impl crate::view::CounterSource for Dataplane {
    fn service_counters(&self, id: u32) -> Result<Counters> {
        Dataplane::service_counters(self, id)
    }

    fn backend_counters(&self, slot: u32) -> Result<Counters> {
        Dataplane::backend_counters(self, slot)
    }

    fn stats(&self) -> Result<Vec<u64>> {
        Dataplane::stats(self)
    }
}

/// The counter maps of an agent, opened from its pins: what the HTTP listener reads, on its
/// own threads, while the agent goes on.
pub struct PinnedCounters {
    service_stats: PerCpuArray<MapData, Counters>,
    backend_stats: PerCpuArray<MapData, Counters>,
    stats: PerCpuArray<MapData, u64>,
}

impl PinnedCounters {
    pub fn open(pin_dir: &Path) -> Result<PinnedCounters> {
        fn open<T: aya::Pod>(dir: &Path, name: &'static str) -> Result<PerCpuArray<MapData, T>> {
            let data = MapData::from_pin(dir.join(name)).map_err(map_err(name))?;
            PerCpuArray::try_from(aya::maps::Map::PerCpuArray(data)).map_err(map_err(name))
        }
        Ok(PinnedCounters {
            service_stats: open(pin_dir, maps::SERVICE_STATS)?,
            backend_stats: open(pin_dir, maps::BACKEND_STATS)?,
            stats: open(pin_dir, maps::STATS)?,
        })
    }
}

impl crate::view::CounterSource for PinnedCounters {
    fn service_counters(&self, id: u32) -> Result<Counters> {
        sum_counters(&self.service_stats, id).map_err(map_err(maps::SERVICE_STATS))
    }

    fn backend_counters(&self, slot: u32) -> Result<Counters> {
        sum_counters(&self.backend_stats, slot).map_err(map_err(maps::BACKEND_STATS))
    }

    fn stats(&self) -> Result<Vec<u64>> {
        read_stats(&self.stats)
    }
}

fn read_stats(map: &PerCpuArray<MapData, u64>) -> Result<Vec<u64>> {
    (0..stat::COUNT)
        .map(|i| map.get(&i, 0).map(|v| v.iter().sum()))
        .collect::<std::result::Result<_, _>>()
        .map_err(map_err(maps::STATS))
}

/// `bpf_attr` for the BPF_MAP_*_BATCH commands (include/uapi/linux/bpf.h).
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;
/// Flow entries read in one BPF_MAP_LOOKUP_BATCH call.
pub const FLOW_BATCH: usize = 4096;

/// Reads every entry of a hash map (LRU included) with BPF_MAP_LOOKUP_BATCH, a bucket range
/// per call, handing each to `each`. Unlike a walk key by key, which starts again from the
/// first key when the current one is evicted meanwhile (and so counts entries twice while a
/// flood churns the table), each bucket is read once.
/// `batch` is the entries asked for in one call; a bucket with more makes it grow.
pub fn for_each_entry<K: aya::Pod + Default, V: aya::Pod + Default>(
    map: &HashMap<MapData, K, V>,
    batch: usize,
    mut each: impl FnMut(&K, &V),
) -> io::Result<()> {
    for_each_chunk(map, batch, |keys: &[K], values: &[V]| keys.iter().zip(values).for_each(|(k, v)| each(k, v)))
}

/// [`for_each_entry`], handing over the entries of each call together, as soon as it returns
/// (so that what `each` does with them follows their reading by microseconds).
pub fn for_each_chunk<K: aya::Pod + Default, V: aya::Pod + Default>(
    map: &HashMap<MapData, K, V>,
    batch: usize,
    mut each: impl FnMut(&[K], &[V]),
) -> io::Result<()> {
    use aya::maps::IterableMap as _;
    use std::os::fd::{AsFd as _, AsRawFd as _};
    let fd = map.map().fd().as_fd().as_raw_fd();
    let mut chunk = batch.max(1);
    let mut keys = vec![K::default(); chunk];
    let mut values = vec![V::default(); chunk];
    // Hash maps take a bucket index as their batch position.
    let (mut position, mut next) = (0u32, 0u32);
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { &position as *const u32 as u64 },
            out_batch: &mut next as *mut u32 as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: chunk as u32,
            map_fd: fd as u32,
            ..Default::default()
        };
        // SAFETY: the attribute points at `position`, `next` and at buffers of `chunk` keys and
        // values of the map's key and value types (aya's HashMap checked their sizes when it
        // was made), all alive across the call; the kernel writes at most `count` of each.
        let r = unsafe { libc::syscall(libc::SYS_bpf, BPF_MAP_LOOKUP_BATCH, &mut attr as *mut BatchAttr, std::mem::size_of::<BatchAttr>()) };
        let error = (r < 0).then(io::Error::last_os_error);
        match error.as_ref().and_then(io::Error::raw_os_error) {
            // A bucket holds more entries than the buffers: larger ones, the same position.
            Some(libc::ENOSPC) if chunk < (1 << 20) => {
                chunk = (chunk * 4).min(1 << 20);
                keys.resize(chunk, K::default());
                values.resize(chunk, V::default());
                continue;
            }
            None | Some(libc::ENOENT) => {}
            Some(_) => return Err(error.unwrap_or_else(|| io::Error::other("BPF_MAP_LOOKUP_BATCH"))),
        }
        let n = attr.count as usize;
        each(&keys[..n], &values[..n]);
        if error.is_some() {
            // ENOENT: no bucket left.
            return Ok(());
        }
        position = next;
        first = false;
    }
}

/// Deletes `keys` from a hash map with BPF_MAP_DELETE_BATCH: one system call for them all
/// rather than one each. Keys already gone (evicted, or removed by the program) are skipped;
/// a key that fails otherwise is skipped too, and the first such error is returned with the
/// number of keys deleted.
pub fn delete_keys<K: aya::Pod, V: aya::Pod>(map: &HashMap<MapData, K, V>, keys: &[K]) -> (usize, Option<io::Error>) {
    use aya::maps::IterableMap as _;
    use std::os::fd::{AsFd as _, AsRawFd as _};
    let fd = map.map().fd().as_fd().as_raw_fd();
    let (mut start, mut deleted, mut first_error) = (0, 0, None);
    while start < keys.len() {
        let rest = &keys[start..];
        let mut attr = BatchAttr { keys: rest.as_ptr() as u64, count: rest.len() as u32, map_fd: fd as u32, ..Default::default() };
        // SAFETY: the attribute points at `rest.len()` keys of the map's key type (aya's HashMap
        // checked its size when it was made), alive across the call; the kernel only reads
        // them (and writes `count` in the attribute).
        let r = unsafe { libc::syscall(libc::SYS_bpf, BPF_MAP_DELETE_BATCH, &mut attr as *mut BatchAttr, std::mem::size_of::<BatchAttr>()) };
        // The kernel stops at the first key it could not delete; `count` says how many went.
        deleted += attr.count as usize;
        if r == 0 {
            break;
        }
        let error = io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::ENOENT) && first_error.is_none() {
            first_error = Some(error);
        }
        start += attr.count as usize + 1;
    }
    (deleted, first_error)
}

/// Writes the XDP program's log records (aya-log: rare events such as the new-flow limit
/// being reached) to the agent's log as they come, until the task is aborted.
pub fn forward_program_log(logger: aya_log::EbpfLogger<&'static dyn log::Log>) -> io::Result<tokio::task::JoinHandle<()>> {
    // SAFETY: the logger owns its ring buffer's descriptor, which stays open and the same for
    // as long as the logger lives, and the AsyncFd owns the logger.
    let mut fd = unsafe { tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) }
        .map_err(|e| io::Error::other(e.to_string()))?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok(mut guard) = fd.readable_mut().await else { return };
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    }))
}

/// A `LOCAL_MACS` error naming the interface (its name as the kernel knows it now, if any).
fn local_macs_error(ifindex: u32, message: String) -> DataplaneError {
    let ifname = nix::net::if_::if_indextoname(ifindex)
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "?".into());
    DataplaneError::LocalMacs { ifindex, ifname, message }
}

fn clear(map: &mut PerCpuArray<MapData, Counters>, index: u32) -> std::result::Result<(), MapError> {
    let no_cpus = |io_error| MapError::SyscallError(aya::sys::SyscallError { call: "nr_cpus", io_error });
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| no_cpus(e))?;
    let zeros = PerCpuValues::try_from(vec![Counters::default(); cpus]).map_err(no_cpus)?;
    map.set(index, zeros, 0)
}

fn sum_counters(map: &PerCpuArray<MapData, Counters>, index: u32) -> std::result::Result<Counters, MapError> {
    let values = map.get(&index, 0)?;
    Ok(values.iter().fold(Counters::default(), |acc, c| Counters {
        packets: acc.packets + c.packets,
        bytes: acc.bytes + c.bytes,
        flows: acc.flows + c.flows,
    }))
}
