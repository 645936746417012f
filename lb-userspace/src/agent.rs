//! The running agent: brings the data plane up from a configuration, keeps each backend's MAC
//! in step with the kernel's neighbour table, answers the control socket, and takes it all
//! down again on shutdown. It is the only writer of the maps.

use std::{
    future::Future,
    net::IpAddr,
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use aya::programs::XdpMode;
use lb_common::{stat, Backend, BACKEND_F_USABLE};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::{
    config::{self, Config, InterfaceInfo, Severity},
    control::{self, BackendStatus, CheckerStatus, Pending, Request, Response, ServiceStatus, Status},
    dataplane::{Dataplane, DataplaneError, Sizes},
    health::{CheckSpec, Health, Intervals, Monitor, MonitorStats, Params, Transition},
    layout::{Layout, TableMode},
    net::{format_mac, Neighbour, NeighbourEvents, Net, NetError},
    vrrp::{LocalMac, Vrrp},
};

/// How often every backend's neighbour entry is re-confirmed (NTF_USE). XDP forwarding
/// bypasses the kernel, so without this the entries would go stale and a changed MAC would
/// never be noticed.
const NEIGHBOUR_REFRESH: Duration = Duration::from_secs(5);
/// Retry interval for backends whose MAC is still unknown.
const NEIGHBOUR_RETRY: Duration = Duration::from_millis(500);
/// How often, with VRRP, the agent confirms that its program is still attached to every
/// interface: a node whose data plane is gone must not stay master.
const DATAPLANE_CHECK: Duration = Duration::from_millis(100);
/// The fault VRRP instances enter while the data plane is not forwarding.
const DATAPLANE_FAULT: &str = "data plane not forwarding";

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Control(#[from] control::ControlError),
    #[error("{0}")]
    Environment(String),
    #[error(transparent)]
    Vrrp(#[from] crate::vrrp::VrrpError),
    #[error("starting the health checker's thread: {0}")]
    HealthThread(#[source] std::io::Error),
    #[error("bpf filesystem for {path}: {message}")]
    Bpffs { path: String, message: String },
}

type Result<T> = std::result::Result<T, AgentError>;

/// What the agent knows of one backend beyond the configuration.
#[derive(Clone, Debug)]
struct BackendState {
    ifindex: u32,
    ifname: String,
    src_mac: [u8; 6],
    mac: Option<[u8; 6]>,
    /// The kernel's neighbour entry is confirmed (REACHABLE, PERMANENT, NOARP): the periodic
    /// re-confirmation can skip it.
    confirmed: bool,
    /// Health as its check last decided (true when it has no check).
    healthy: bool,
    /// Why it went down or came up last.
    reason: Option<String>,
    transitions: u64,
    /// Its index among the health checks, if it is checked.
    check: Option<usize>,
}

pub struct Agent {
    cfg: Config,
    layout: Layout,
    dp: Dataplane,
    net: Net,
    attached: Vec<InterfaceInfo>,
    backends: Vec<BackendState>,
    /// Subscribed before the first resolution so that no answer is missed.
    events: Option<NeighbourEvents>,
    /// The table mode each service is in (logged when it changes).
    modes: Vec<TableMode>,
    /// Health checks: the backend index of each check, and what the checker publishes.
    checked: Vec<u32>,
    check_stats: Arc<Mutex<MonitorStats>>,
    /// The VRRP instances, when configured.
    vrrp: Option<Vrrp>,
    /// Id of our XDP program (what the interfaces must report attached).
    prog_id: u32,
    /// Whether the data plane fault is raised now.
    dataplane_fault: bool,
    /// Virtual MACs VRRP masters hold (use_vmac), for the data plane to take as ours.
    vrrp_macs: Option<mpsc::UnboundedReceiver<LocalMac>>,
}

/// Makes sure `pin_path` lies on a bpf filesystem, mounting one at /sys/fs/bpf if that is
/// where it should be and nothing is mounted there yet.
fn ensure_bpffs(pin_path: &Path) -> Result<()> {
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    let err = |message: String| AgentError::Bpffs { path: pin_path.display().to_string(), message };
    let existing = pin_path.ancestors().find(|p| p.exists()).unwrap_or(Path::new("/"));
    let fs = nix::sys::statfs::statfs(existing).map_err(|e| err(format!("statfs {}: {e}", existing.display())))?;
    if fs.filesystem_type().0 as i64 == BPF_FS_MAGIC {
        return Ok(());
    }
    let bpffs = Path::new("/sys/fs/bpf");
    if !pin_path.starts_with(bpffs) {
        return Err(err(format!("{} is not on a bpf filesystem; mount one (mount -t bpf bpf DIR)", existing.display())));
    }
    std::fs::create_dir_all(bpffs).map_err(|e| err(format!("creating {}: {e}", bpffs.display())))?;
    nix::mount::mount(Some("bpf"), bpffs, Some("bpf"), nix::mount::MsFlags::empty(), None::<&str>)
        .map_err(|e| err(format!("mount -t bpf bpf {}: {e}", bpffs.display())))?;
    info!("mounted bpffs at {}", bpffs.display());
    Ok(())
}

impl Agent {
    /// Loads and attaches the data plane for `cfg`. Interfaces and backends are checked against
    /// this host first; the maps are complete before the program sees its first packet.
    pub async fn start(cfg: Config) -> Result<Agent> {
        control::ensure_free(&cfg.agent.control_socket)?;
        let net = Net::new()?;
        let interfaces = net.interfaces().await?;
        let problems: Vec<String> = config::check_environment(&cfg, &interfaces)
            .into_iter()
            .filter(|d| d.severity == Severity::Error)
            .map(|d| d.to_string())
            .collect();
        if !problems.is_empty() {
            return Err(AgentError::Environment(problems.join("\n")));
        }
        let attached: Vec<InterfaceInfo> = cfg
            .agent
            .interfaces
            .iter()
            .filter_map(|name| interfaces.iter().find(|i| &i.name == name).cloned())
            .collect();
        let layout = Layout::new(&cfg);
        let backends = layout
            .backends
            .iter()
            .map(|b| {
                let iface = config::egress_interface(b.address, &interfaces, &cfg.agent.interfaces)
                    .expect("checked by check_environment");
                BackendState {
                    ifindex: iface.ifindex,
                    ifname: iface.name.clone(),
                    src_mac: iface.mac,
                    mac: None,
                    confirmed: false,
                    healthy: true,
                    reason: None,
                    transitions: 0,
                    check: None,
                }
            })
            .collect();

        ensure_bpffs(&cfg.agent.pin_path)?;
        let sizes = Sizes { flow_table: cfg.agent.flow_table_size, max_services: cfg.agent.max_services };
        let (dp, adoption) = Dataplane::load(sizes, Some(&cfg.agent.pin_path))?;
        if !adoption.adopted.is_empty() {
            info!("adopted pinned maps of an earlier agent: {}", adoption.adopted.join(", "));
        }
        for r in &adoption.replaced {
            warn!("replaced pinned map {r}");
        }
        let events = Some(NeighbourEvents::subscribe()?);
        let modes = vec![TableMode::Normal; layout.services.len()];
        let mut agent = Agent {
            cfg,
            layout,
            dp,
            net,
            attached,
            backends,
            events,
            modes,
            checked: Vec::new(),
            check_stats: Arc::default(),
            vrrp: None,
            vrrp_macs: None,
            prog_id: 0,
            dataplane_fault: false,
        };
        agent.prepare_checks();
        for iface in &agent.attached {
            agent.dp.add_egress(iface.ifindex)?;
            // Before attaching: from its first packet the program balances only frames sent to
            // this node (a flooded or promiscuously received frame for another host passes).
            if iface.mac != [0; 6] {
                agent.dp.set_local_macs(iface.ifindex, &[iface.mac])?;
            }
        }
        for n in agent.net.neighbours().await? {
            agent.learn(&n);
        }
        for index in 0..agent.backends.len() as u32 {
            agent.write_backend(index)?;
        }
        agent.publish_all()?;
        agent.remove_stale_services()?;
        // Adopted flows that no longer fit (a service or backend moved in the configuration)
        // would be forwarded as they are: the program takes a known flow's backend directly.
        let layout = &agent.layout;
        let stale = agent.dp.purge_flows(|k, f| !layout.flow_belongs(k, f))?;
        if stale > 0 {
            info!("removed {stale} adopted flows that no longer fit the configuration");
        }
        let vips = agent.vips();
        agent.dp.set_vips(&vips)?;

        let mode = match agent.cfg.agent.xdp_mode {
            config::XdpMode::Native => XdpMode::Driver,
            config::XdpMode::Generic => {
                warn!("xdp_mode = \"generic\": XDP runs in the kernel's stack, far slower than native mode");
                XdpMode::Skb
            }
        };
        for iface in agent.attached.clone() {
            agent.dp.attach(&iface.name, mode)?;
            info!("attached to {} (index {}, {:?} mode)", iface.name, iface.ifindex, mode);
        }
        if agent.cfg.agent.assign_vips {
            let first = agent.attached[0].ifindex;
            for vip in agent.vips() {
                if agent.net.add_address(first, vip).await? {
                    info!("added VIP {vip} to {}", agent.attached[0].name);
                }
            }
        }
        agent.prog_id = agent.dp.program().info().map_err(DataplaneError::from)?.id();
        if !agent.cfg.vrrp.is_empty() {
            // Only once the data plane forwards: a node must not become master before.
            let (tx, rx) = mpsc::unbounded_channel();
            agent.vrrp = Some(Vrrp::start(&agent.cfg.vrrp, &interfaces, tx)?);
            agent.vrrp_macs = Some(rx);
            info!("VRRP: {} instance(s) started", agent.cfg.vrrp.len());
        }
        agent.resolve_backends(false).await;
        Ok(agent)
    }

    fn vips(&self) -> Vec<IpAddr> {
        let mut vips: Vec<IpAddr> = self.cfg.services.iter().map(|s| s.vip).collect();
        vips.sort();
        vips.dedup();
        vips
    }

    /// Whether a backend may receive packets: its MAC is known and it is healthy.
    fn usable(&self, index: u32) -> bool {
        let b = &self.backends[index as usize];
        b.mac.is_some() && b.healthy
    }

    /// Fills in which backends are checked and their initial health.
    fn prepare_checks(&mut self) {
        let mut index = 0;
        for svc in &self.cfg.services {
            for b in &svc.backends {
                if let Some(check) = &b.check {
                    let state = &mut self.backends[index];
                    state.check = Some(self.checked.len());
                    state.healthy = check.initial == Health::Up;
                    self.checked.push(index as u32);
                }
                index += 1;
            }
            // The sorry backend follows the service's backends and is not checked.
            index += usize::from(svc.sorry.is_some());
        }
    }

    /// The health checks, in the order of `self.checked`.
    fn check_specs(&self) -> Vec<CheckSpec> {
        let configs: Vec<&config::CheckConfig> =
            self.cfg.services.iter().flat_map(|s| s.backends.iter().filter_map(|b| b.check.as_ref())).collect();
        configs
            .into_iter()
            .zip(&self.checked)
            .map(|(c, &index)| CheckSpec {
                kind: c.kind.clone(),
                target: c.target(self.layout.backends[index as usize].address),
                timeout: c.timeout,
                intervals: Intervals::new(c.interval).with_fast(c.fast_interval),
                params: Params { rise: c.rise, fall: c.fall },
                initial: c.initial,
                first_check_decides: c.initial == Health::Up,
            })
            .collect()
    }

    fn write_backend(&mut self, index: u32) -> Result<()> {
        let b = &self.backends[index as usize];
        let entry = Backend {
            dst_mac: b.mac.unwrap_or([0; 6]),
            src_mac: b.src_mac,
            ifindex: b.ifindex,
            flags: if self.usable(index) { BACKEND_F_USABLE } else { 0 },
        };
        Ok(self.dp.set_backend(index, &entry)?)
    }

    /// Writes service `id`'s table and moves its fragment entries along with it.
    fn publish(&mut self, id: u32) -> Result<()> {
        let (mode, members) = self.layout.members(id, |b| self.usable(b));
        let previous = std::mem::replace(&mut self.modes[id as usize], mode);
        if previous != mode {
            let svc = &self.layout.services[id as usize];
            match mode {
                TableMode::Normal => info!("service {}: quorum of {} usable backends restored", svc.name, svc.quorum),
                TableMode::Sorry => warn!("service {}: fewer than {} usable backends, new flows go to the sorry backend", svc.name, svc.quorum),
                TableMode::Degraded if members.is_empty() => {
                    warn!("service {}: no usable backend and no usable sorry backend, its packets are dropped", svc.name)
                }
                TableMode::Degraded => warn!("service {}: fewer than {} usable backends", svc.name, svc.quorum),
            }
        }
        let table = self.layout.table(id, &members);
        let key = self.layout.services[id as usize].key;
        self.dp.publish_service(&key, self.layout.service_value(id), &table)?;
        let live = self.dp.service_entry(&key).expect("just published");
        for frag in self.layout.fragments.iter().filter(|f| f.service == id) {
            self.dp.set_service_entry(&frag.key, self.layout.fragment_value(live))?;
        }
        Ok(())
    }

    fn publish_all(&mut self) -> Result<()> {
        for id in 0..self.layout.services.len() as u32 {
            self.publish(id)?;
        }
        Ok(())
    }

    /// Drops service entries an earlier agent left that this configuration does not have.
    fn remove_stale_services(&mut self) -> Result<()> {
        let wanted: Vec<_> = self
            .layout
            .services
            .iter()
            .map(|s| s.key)
            .chain(self.layout.fragments.iter().map(|f| f.key))
            .collect();
        for key in self.dp.service_keys() {
            if !wanted.contains(&key) {
                self.dp.remove_service(&key)?;
            }
        }
        Ok(())
    }

    /// Takes in a neighbour entry; returns the backends whose MAC changed.
    fn learn(&mut self, n: &Neighbour) -> Vec<u32> {
        let mut changed = Vec::new();
        for (index, slot) in self.layout.backends.iter().enumerate() {
            let state = &mut self.backends[index];
            if slot.address != n.address || state.ifindex != n.ifindex {
                continue;
            }
            state.confirmed = n.confirmed();
            // A deleted or failed entry keeps the last MAC: forwarding goes on, and health
            // checks, not ARP, decide whether a backend is alive.
            if let Some(mac) = n.mac {
                if state.mac != Some(mac) {
                    info!(
                        "backend {} is at {} on {} (was {})",
                        slot.address,
                        format_mac(&mac),
                        state.ifname,
                        state.mac.as_ref().map(format_mac).unwrap_or_else(|| "unknown".into())
                    );
                    state.mac = Some(mac);
                    changed.push(index as u32);
                }
            }
        }
        changed
    }

    fn apply_neighbour(&mut self, n: &Neighbour) -> Result<()> {
        let changed = self.learn(n);
        let mut services: Vec<u32> = Vec::new();
        for index in &changed {
            self.write_backend(*index)?;
            services.push(self.layout.backends[*index as usize].service);
        }
        services.sort();
        services.dedup();
        for id in services {
            self.publish(id)?;
        }
        Ok(())
    }

    /// Reads the neighbour table again and takes in what changed: the safety net under the
    /// event stream for backends still without a MAC.
    async fn reread_neighbours(&mut self) -> Result<()> {
        if self.backends.iter().all(|b| b.mac.is_some()) {
            return Ok(());
        }
        for n in self.net.neighbours().await? {
            self.apply_neighbour(&n)?;
        }
        Ok(())
    }

    /// Follows a MAC change of an attached interface (someone set a new address): the program
    /// must accept frames for the new MAC, and forwarded frames must leave from it.
    async fn refresh_interface_macs(&mut self) -> Result<()> {
        let now = self.net.interfaces().await?;
        for i in 0..self.attached.len() {
            let (ifindex, old) = (self.attached[i].ifindex, self.attached[i].mac);
            let Some(mac) = now.iter().find(|n| n.ifindex == ifindex).map(|n| n.mac) else { continue };
            if mac == old || mac == [0; 6] {
                continue;
            }
            info!("{}: MAC changed from {} to {}", self.attached[i].name, format_mac(&old), format_mac(&mac));
            self.dp.replace_local_mac(ifindex, old, mac)?;
            self.attached[i].mac = mac;
            for index in 0..self.backends.len() {
                if self.backends[index].ifindex == ifindex {
                    self.backends[index].src_mac = mac;
                    self.write_backend(index as u32)?;
                }
            }
        }
        Ok(())
    }

    /// Takes in a health check's verdict: the backend's entry, its service's table, and, when
    /// it went down, its flows (so that their next packets go to a live backend).
    fn apply_health(&mut self, check: usize, t: Transition) -> Result<()> {
        let index = self.checked[check];
        let up = t.to == Health::Up;
        let slot = &self.layout.backends[index as usize];
        let service = slot.service;
        let name = &self.layout.services[service as usize].name;
        if up {
            info!("backend {} of service {name} is up: {}", slot.address, t.reason);
        } else {
            warn!("backend {} of service {name} is down: {}", slot.address, t.reason);
        }
        let state = &mut self.backends[index as usize];
        state.healthy = up;
        state.reason = Some(t.reason);
        state.transitions += 1;
        // Never let a table point at an unusable backend: a new flow would be dropped. Going
        // up, the entry becomes usable before the table names it; going down, the table stops
        // naming it before the entry becomes unusable.
        if up {
            self.write_backend(index)?;
            self.publish(service)?;
        } else {
            self.publish(service)?;
            self.write_backend(index)?;
        }
        if !up {
            let removed = self.dp.purge_flows(|_, f| f.backend == index)?;
            info!("removed {removed} flows of backend {}", self.layout.backends[index as usize].address);
        }
        Ok(())
    }

    /// The operator's weight for a backend (0 drains it: no new flows, flows stay).
    fn set_weight(&mut self, service: &str, backend: IpAddr, weight: u32) -> std::result::Result<String, String> {
        if weight > config::MAX_WEIGHT {
            return Err(format!("weight {weight} is out of range 0..={}", config::MAX_WEIGHT));
        }
        let svc = self.layout.services.iter().find(|s| s.name == service).ok_or_else(|| format!("no service \"{service}\""))?;
        let id = svc.id;
        let index = svc
            .backends
            .iter()
            .copied()
            .find(|&i| self.layout.backends[i as usize].address == backend)
            .ok_or_else(|| format!("service \"{service}\" has no backend {backend}"))?;
        let old = std::mem::replace(&mut self.layout.backends[index as usize].weight, weight);
        self.publish(id).map_err(|e| e.to_string())?;
        info!("backend {backend} of service {service}: weight {old} -> {weight}");
        Ok(format!("{service} {backend}: weight {old} -> {weight}"))
    }

    /// Asks the kernel to resolve backends (all, or only those without a MAC), once per
    /// address and interface however many services share the backend.
    async fn resolve_backends(&self, all: bool) {
        let mut wanted: Vec<(u32, IpAddr)> = self
            .layout
            .backends
            .iter()
            .zip(&self.backends)
            // A confirmed entry needs nothing: the kernel marks it STALE when its timer runs
            // out, which comes as an event, and then it is asked again.
            .filter(|(_, state)| if all { !state.confirmed } else { state.mac.is_none() })
            .map(|(slot, state)| (state.ifindex, slot.address))
            .collect();
        wanted.sort();
        wanted.dedup();
        for (ifindex, address) in wanted {
            if let Err(e) = self.net.resolve(ifindex, address).await {
                warn!("{e}");
            }
        }
    }

    fn backend_status(&self, index: u32, stats: &MonitorStats) -> Result<BackendStatus> {
        let b = &self.layout.backends[index as usize];
        let state = &self.backends[index as usize];
        let counters = state.check.and_then(|c| stats.counters.get(c)).copied().unwrap_or_default();
        Ok(BackendStatus {
            address: b.address.to_string(),
            weight: b.weight,
            mac: state.mac.as_ref().map(format_mac),
            interface: state.ifname.clone(),
            state: if state.mac.is_none() {
                "no-mac"
            } else if !state.healthy {
                "down"
            } else if b.weight == 0 && !b.sorry {
                "drained"
            } else {
                "up"
            }
            .into(),
            health: match (state.check, state.healthy) {
                (None, _) => "unchecked",
                (Some(_), true) => "up",
                (Some(_), false) => "down",
            }
            .into(),
            reason: state.reason.clone(),
            checks: counters.checks,
            check_failures: counters.failures,
            transitions: state.transitions,
            counters: self.dp.backend_counters(index)?.into(),
        })
    }

    fn status(&self) -> Result<Status> {
        let names = stat::NAMES.iter().map(|n| n.to_string());
        let counters = names.zip(self.dp.stats()?).collect();
        let stats = self.check_stats.lock().expect("not poisoned").clone();
        let mut services = Vec::new();
        for (svc, slot) in self.cfg.services.iter().zip(&self.layout.services) {
            let backends = slot.backends.iter().map(|&i| self.backend_status(i, &stats)).collect::<Result<_>>()?;
            services.push(ServiceStatus {
                name: svc.name.clone(),
                vip: svc.vip.to_string(),
                port: svc.port,
                protocol: svc.protocol.to_string(),
                scheduler: svc.scheduler.to_string(),
                mode: match self.modes[slot.id as usize] {
                    TableMode::Normal => "normal",
                    TableMode::Sorry => "sorry",
                    TableMode::Degraded => "degraded",
                }
                .into(),
                quorum: slot.quorum,
                sorry: slot.sorry.map(|i| self.backend_status(i, &stats)).transpose()?,
                counters: self.dp.service_counters(slot.id)?.into(),
                backends,
            });
        }
        Ok(Status {
            interfaces: self.attached.iter().map(|i| i.name.clone()).collect(),
            services,
            counters,
            flows: self.dp.flow_count(),
            vrrp: self.vrrp.as_ref().map(Vrrp::status).unwrap_or_default(),
            checker: CheckerStatus {
                checks: self.checked.len(),
                late_max_ms: stats.lateness.max.as_secs_f64() * 1e3,
                late_mean_ms: stats.lateness.mean().as_secs_f64() * 1e3,
                starts: stats.lateness.starts,
                skipped: stats.skipped,
            },
        })
    }

    fn answer(&mut self, request: Request) -> Response {
        match request {
            Request::Status => match self.status() {
                Ok(s) => Response::Status(s),
                Err(e) => Response::Error { message: e.to_string() },
            },
            Request::SetWeight { service, backend, weight } => match self.set_weight(&service, backend, weight) {
                Ok(message) => Response::Done { message },
                Err(message) => Response::Error { message },
            },
        }
    }

    /// Runs until `shutdown` completes, then detaches and removes what it added.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let mut events = self.events.take().expect("subscribed at start");
        let mut monitor = Monitor::spawn(self.check_specs()).map_err(AgentError::HealthThread)?;
        self.check_stats = monitor.stats.clone();
        let (tx, mut requests) = mpsc::channel::<Pending>(16);
        let socket = self.cfg.agent.control_socket.clone();
        let server = control::serve(&socket, tx)?;
        info!("control socket at {}", socket.display());
        let mut refresh = tokio::time::interval(NEIGHBOUR_REFRESH);
        let mut retry = tokio::time::interval(NEIGHBOUR_RETRY);
        let mut dataplane_check = tokio::time::interval(DATAPLANE_CHECK);
        let mut vrrp_macs = self.vrrp_macs.take();
        tokio::pin!(shutdown);
        let result = loop {
            tokio::select! {
                _ = &mut shutdown => break Ok(()),
                Some(n) = events.next() => {
                    if let Err(e) = self.apply_neighbour(&n) {
                        break Err(e);
                    }
                }
                Some((check, transition)) = monitor.transitions.recv() => {
                    if let Err(e) = self.apply_health(check, transition) {
                        break Err(e);
                    }
                }
                Some((request, reply)) = requests.recv() => {
                    let _ = reply.send(self.answer(request));
                }
                _ = refresh.tick() => {
                    self.resolve_backends(true).await;
                    if let Err(e) = self.refresh_interface_macs().await {
                        warn!("{e}");
                    }
                }
                _ = dataplane_check.tick(), if self.vrrp.is_some() => self.check_dataplane().await,
                Some(m) = async { vrrp_macs.as_mut()?.recv().await }, if vrrp_macs.is_some() => self.apply_local_mac(m),
                _ = retry.tick() => {
                    if let Err(e) = self.reread_neighbours().await {
                        break Err(e);
                    }
                    self.resolve_backends(false).await;
                }
            }
        };
        server.abort();
        drop(monitor);
        let _ = std::fs::remove_file(&socket);
        self.stop().await?;
        result
    }

    /// A VRRP master's virtual MAC comes or goes. A failure is logged: the master then
    /// does not forward what is sent to that MAC, which the data plane counts.
    fn apply_local_mac(&mut self, mut m: LocalMac) {
        let result = if m.add { self.dp.add_local_mac(m.ifindex, m.mac) } else { self.dp.remove_local_mac(m.ifindex, m.mac) };
        if let Some(done) = m.done.take() {
            let _ = done.send(());
        }
        match result {
            Ok(()) => info!("data plane: virtual MAC {} {} interface {}", format_mac(&m.mac), if m.add { "taken on" } else { "released from" }, m.ifindex),
            Err(e) => warn!("{e}"),
        }
    }

    /// With VRRP: raises the data plane fault while the program is not attached to every
    /// interface (someone detached it, an interface went away), clears it when it is back.
    async fn check_dataplane(&mut self) {
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
            match &problem {
                Some(p) => warn!("data plane not forwarding ({p}): VRRP instances go to FAULT"),
                None => info!("data plane forwarding again: VRRP fault cleared"),
            }
            if let Some(v) = &self.vrrp {
                v.set_fault(DATAPLANE_FAULT, faulted);
            }
        }
    }

    /// Resigns VRRP mastership, removes the VIPs, detaches the program and removes every pin.
    async fn stop(mut self) -> Result<()> {
        // VRRP first: the peer takes over (after its skew time) while we still forward.
        if let Some(vrrp) = self.vrrp.take() {
            vrrp.shutdown().await;
        }
        if self.cfg.agent.assign_vips {
            let first = self.attached[0].ifindex;
            for vip in self.vips() {
                if let Err(e) = self.net.del_address(first, vip).await {
                    warn!("{e}");
                }
            }
        }
        self.dp.shutdown()?;
        info!("detached and unpinned; stopped");
        Ok(())
    }
}
