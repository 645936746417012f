//! Start-up: checks against this host, the bpf filesystem, the maps an earlier agent pinned
//! (adopted with every backend's slot), the first model, attaching, VIPs and VRRP. A start that
//! fails part way leaves nothing it attached.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::{Path, PathBuf},
    sync::Arc,
};

use aya::programs::XdpMode;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::{Agent, AgentError, NeighbourEvents, Result, Stop};
use crate::{
    config::{self, Config, InterfaceInfo},
    control,
    dataplane::{Dataplane, DataplaneError, Sizes},
    model::{Model, Slots},
    net::Net,
    vrrp::Vrrp,
};

/// Raises the soft limit on open descriptors to what `checks` health checks running at once
/// need (two each, with room for the rest), as far as the hard limit allows, and says so: a
/// check that finds no descriptor is this node's problem, not the backend's.
fn raise_descriptor_limit(checks: usize) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let wanted = 2 * checks as u64 + 256;
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else { return };
    let new = wanted.max(soft).min(hard);
    if new != soft {
        match setrlimit(Resource::RLIMIT_NOFILE, new, hard) {
            Ok(()) => info!("descriptor limit raised from {soft} to {new} for {checks} health checks"),
            Err(e) => warn!("raising the descriptor limit to {new}: {e}"),
        }
    }
    if hard < wanted {
        warn!("descriptor hard limit {hard} is below the {wanted} that {checks} health checks want: checks may fail locally (counted apart)");
    }
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
    // mode=0700: only root may open what is pinned there.
    nix::mount::mount(Some("bpf"), bpffs, Some("bpf"), nix::mount::MsFlags::empty(), Some("mode=0700"))
        .map_err(|e| err(format!("mount -t bpf bpf {}: {e}", bpffs.display())))?;
    info!("mounted bpffs at {}", bpffs.display());
    // Under `ip netns exec` (or any private mount namespace) this bpffs lives only as long as
    // the namespace's processes: the pins go with the agent.
    let ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok();
    if ns("self") != ns("1") {
        warn!(
            "{} was mounted in a private mount namespace: the pins die with this agent, so a restart \
             will not be hitless; mount bpffs in the host's namespace (mount -t bpf bpf /sys/fs/bpf) before starting",
            bpffs.display()
        );
    }
    Ok(())
}

impl Agent {
    /// Loads and attaches the data plane for `cfg`. Interfaces and backends are checked against
    /// this host first; the maps are complete before the program sees its first packet.
    pub async fn start(cfg: Config) -> Result<Agent> {
        control::ensure_free(&cfg.agent.control_socket)?;
        let net = Net::new()?;
        let interfaces = net.interfaces().await?;
        if let Some(problems) = config::environment_errors(&cfg, &interfaces) {
            return Err(AgentError::Environment(problems));
        }
        let attached: Vec<InterfaceInfo> = cfg
            .agent
            .interfaces
            .iter()
            .filter_map(|name| interfaces.iter().find(|i| &i.name == name).cloned())
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
        // Who holds which service id and backend slot, as the earlier agent's maps say: every
        // service and backend still configured keeps them, so their flows stay theirs.
        let inherited = dp.assigned_backends()?;
        let held = Slots::from_maps(dp.service_ids(), inherited.iter().copied());
        let model_cfg = cfg.clone();
        if !held.is_empty() {
            info!(
                "took over {} services and {} backends from the pinned maps",
                held.services().count(),
                held.backends().count()
            );
        }
        let events = Some(NeighbourEvents::subscribe()?);
        let mut agent = Agent {
            model: Model::adopted(&cfg.agent, &held),
            config_file: PathBuf::from(&cfg.file),
            file_text: String::new(),
            read_as: cfg.source.read_as.clone(),
            runtime: Vec::new(),
            dp,
            net,
            attached,
            backends: BTreeMap::new(),
            inherited: inherited.into_iter().collect(),
            carried: HashSet::new(),
            stop_requested: None,
            hangup: Some(
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                    .map_err(|e| AgentError::Environment(format!("installing the SIGHUP handler: {e}")))?,
            ),
            events,
            modes: HashMap::new(),
            checked: Vec::new(),
            check_stats: Arc::default(),
            vrrp: None,
            vrrp_macs: None,
            prog_id: 0,
            dataplane_fault: false,
            faults: Default::default(),
            resync: None,
            scanner: None,
            view_tx: None,
            view_dirty: true,
            purging: HashSet::new(),
            announce: None,
        };
        let fresh = adoption.adopted.is_empty();
        if let Err(e) = agent.bring_up(model_cfg, &held, &interfaces).await {
            agent.abandon(fresh).await;
            return Err(e);
        }
        agent.resolve_backends(false).await;
        Ok(agent)
    }

    /// Brings the data plane to `cfg` (with the runtime changes kept), attaches, adds the VIPs
    /// and starts VRRP: the part of a start that can fail with something attached.
    async fn bring_up(&mut self, cfg: Config, held: &Slots, interfaces: &[InterfaceInfo]) -> Result<()> {
        let announce = cfg.announce.clone();
        for iface in &self.attached {
            self.dp.add_egress(iface.ifindex)?;
            // Before attaching: from its first packet the program balances only frames sent to
            // this node (a flooded or promiscuously received frame for another host passes).
            if iface.mac != [0; 6] {
                self.dp.set_local_macs(iface.ifindex, &[iface.mac])?;
            }
        }
        // Runtime changes an earlier agent kept apply on top of the file.
        let text = config::load_as(std::path::Path::new(&cfg.file), &self.read_as).map(|l| l.toml).unwrap_or_default();
        let running = self.adopt_runtime(cfg, text);
        let model = Model::new(&running, held)?;
        raise_descriptor_limit(model.checks().len());
        let neighbours = self.net.neighbours().await?;
        let paths = self.tunnel_paths(&model).await;
        self.apply(model, interfaces, &neighbours, &paths)?;
        // Flows an earlier agent left for what this configuration does not have would be
        // forwarded as they are: the program takes a known flow's backend directly.
        self.sweep_flows(&[])?;
        self.dp.set_vips(&self.model.vips())?;

        let mode = match self.model.agent.xdp_mode {
            config::XdpMode::Native => XdpMode::Driver,
            config::XdpMode::Generic => {
                warn!("xdp_mode = \"generic\": XDP runs in the kernel's stack, far slower than native mode");
                XdpMode::Skb
            }
        };
        for iface in self.attached.clone() {
            self.dp.attach(&iface.name, mode)?;
            info!("attached to {} (index {}, {:?} mode)", iface.name, iface.ifindex, mode);
        }
        if self.model.agent.assign_vips {
            let first = self.attached[0].ifindex;
            for vip in self.model.vips() {
                if self.net.add_address(first, vip).await? {
                    info!("added VIP {vip} to {}", self.attached[0].name);
                }
            }
        }
        self.prog_id = self.dp.program().info().map_err(DataplaneError::from)?.id();
        // Only once the data plane forwards; the loop announces what the node can serve.
        self.open_announcer(announce).await?;
        if !self.model.vrrp.is_empty() {
            // Only once the data plane forwards: a node must not become master before.
            let (tx, rx) = mpsc::unbounded_channel();
            self.vrrp = Some(Vrrp::start(&self.model.vrrp, interfaces, tx).await?);
            self.vrrp_macs = Some(rx);
            info!("VRRP: {} instance(s) started", self.model.vrrp.len());
        }
        Ok(())
    }

    /// A start that failed part way: a fresh start leaves nothing attached or pinned that it
    /// made; a start that adopted an earlier agent's pins leaves them forwarding as they were.
    async fn abandon(mut self, fresh: bool) {
        if let Some(vrrp) = self.vrrp.take() {
            vrrp.shutdown().await;
        }
        if !fresh {
            warn!("start failed: the pinned program and maps of the earlier agent go on forwarding");
            return;
        }
        if let Err(e) = self.stop(Stop::Full).await {
            warn!("cleaning up after the failed start: {e}");
        }
    }
}
