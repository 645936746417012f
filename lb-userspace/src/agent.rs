//! The running agent: brings the data plane up from a configuration, keeps each backend's MAC
//! in step with the kernel's neighbour table, answers the control socket, and takes it all
//! down again on shutdown. It is the only writer of the maps.

use std::{future::Future, net::IpAddr, path::Path, time::Duration};

use aya::programs::XdpMode;
use lb_common::{stat, Backend, BACKEND_F_USABLE};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::{
    config::{self, Config, InterfaceInfo, Severity},
    control::{self, BackendStatus, Pending, Request, Response, ServiceStatus, Status},
    dataplane::{Dataplane, DataplaneError, Sizes},
    layout::Layout,
    net::{Neighbour, NeighbourEvents, Net, NetError},
};

/// How often every backend's neighbour entry is re-confirmed (NTF_USE). XDP forwarding
/// bypasses the kernel, so without this the entries would go stale and a changed MAC would
/// never be noticed.
const NEIGHBOUR_REFRESH: Duration = Duration::from_secs(5);
/// Retry interval for backends whose MAC is still unknown.
const NEIGHBOUR_RETRY: Duration = Duration::from_millis(500);

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
}

fn format_mac(m: &[u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
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
                BackendState { ifindex: iface.ifindex, ifname: iface.name.clone(), src_mac: iface.mac, mac: None }
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
        let mut agent = Agent { cfg, layout, dp, net, attached, backends, events };
        for iface in &agent.attached {
            agent.dp.add_egress(iface.ifindex)?;
        }
        for n in agent.net.neighbours().await? {
            agent.learn(&n);
        }
        for index in 0..agent.backends.len() as u32 {
            agent.write_backend(index)?;
        }
        agent.publish_all()?;
        agent.remove_stale_services()?;

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
        agent.resolve_backends(false).await;
        Ok(agent)
    }

    fn vips(&self) -> Vec<IpAddr> {
        let mut vips: Vec<IpAddr> = self.cfg.services.iter().map(|s| s.vip).collect();
        vips.sort();
        vips.dedup();
        vips
    }

    fn usable(&self, index: u32) -> bool {
        self.backends[index as usize].mac.is_some()
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
        let table = self.layout.table(id, |b| self.backends[b as usize].mac.is_some());
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

    /// Asks the kernel to resolve backends (all, or only those without a MAC), once per
    /// address and interface however many services share the backend.
    async fn resolve_backends(&self, all: bool) {
        let mut wanted: Vec<(u32, IpAddr)> = self
            .layout
            .backends
            .iter()
            .zip(&self.backends)
            .filter(|(_, state)| all || state.mac.is_none())
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

    fn status(&self) -> Result<Status> {
        let names = stat::NAMES.iter().map(|n| n.to_string());
        let counters = names.zip(self.dp.stats()?).collect();
        let mut services = Vec::new();
        for (svc, slot) in self.cfg.services.iter().zip(&self.layout.services) {
            let mut backends = Vec::new();
            for &index in &slot.backends {
                let b = &self.layout.backends[index as usize];
                let state = &self.backends[index as usize];
                backends.push(BackendStatus {
                    address: b.address.to_string(),
                    weight: b.weight,
                    mac: state.mac.as_ref().map(format_mac),
                    interface: state.ifname.clone(),
                    state: match (state.mac, b.weight) {
                        (None, _) => "no-mac",
                        (Some(_), 0) => "drained",
                        _ => "up",
                    }
                    .into(),
                    counters: self.dp.backend_counters(index)?.into(),
                });
            }
            services.push(ServiceStatus {
                name: svc.name.clone(),
                vip: svc.vip.to_string(),
                port: svc.port,
                protocol: svc.protocol.to_string(),
                scheduler: match svc.scheduler {
                    config::Scheduler::Maglev => "maglev",
                    config::Scheduler::SourceHash => "sh",
                }
                .into(),
                counters: self.dp.service_counters(slot.id)?.into(),
                backends,
            });
        }
        Ok(Status {
            interfaces: self.attached.iter().map(|i| i.name.clone()).collect(),
            services,
            counters,
            flows: self.dp.flow_count(),
        })
    }

    fn answer(&self, request: Request) -> Response {
        match request {
            Request::Status => match self.status() {
                Ok(s) => Response::Status(s),
                Err(e) => Response::Error { message: e.to_string() },
            },
        }
    }

    /// Runs until `shutdown` completes, then detaches and removes what it added.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let mut events = self.events.take().expect("subscribed at start");
        let (tx, mut requests) = mpsc::channel::<Pending>(16);
        let socket = self.cfg.agent.control_socket.clone();
        let server = control::serve(&socket, tx)?;
        info!("control socket at {}", socket.display());
        let mut refresh = tokio::time::interval(NEIGHBOUR_REFRESH);
        let mut retry = tokio::time::interval(NEIGHBOUR_RETRY);
        tokio::pin!(shutdown);
        let result = loop {
            tokio::select! {
                _ = &mut shutdown => break Ok(()),
                Some(n) = events.next() => {
                    if let Err(e) = self.apply_neighbour(&n) {
                        break Err(e);
                    }
                }
                Some((request, reply)) = requests.recv() => {
                    let _ = reply.send(self.answer(request));
                }
                _ = refresh.tick() => self.resolve_backends(true).await,
                _ = retry.tick() => {
                    if let Err(e) = self.reread_neighbours().await {
                        break Err(e);
                    }
                    self.resolve_backends(false).await;
                }
            }
        };
        server.abort();
        let _ = std::fs::remove_file(&socket);
        self.stop().await?;
        result
    }

    /// Removes the VIPs, detaches the program and removes every pin.
    async fn stop(self) -> Result<()> {
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
