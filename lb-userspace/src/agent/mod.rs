//! The running agent: brings the data plane up from a configuration, keeps each backend's MAC
//! in step with the kernel's neighbour table, answers the control socket, and takes it all
//! down again on shutdown. It is the only writer of the maps.

mod announce;
mod apply;
mod faults;
mod reload;
mod runtime;
mod start;
mod status;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    future::Future,
    net::IpAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use lb_common::Backend;
use sd_notify::{notify as sd_notify, NotifyState};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::{
    config::{Forward, InterfaceInfo},
    control::{self, Pending, Request, Response},
    dataplane::{Dataplane, DataplaneError},
    flowscan::{Doomed, Done, FlowScanner},
    health::{CheckSpec, Health, Intervals, Monitor, MonitorStats, Params, Transition},
    model::{Model, ModelError, TableMode},
    net::{format_mac, NeighbourEvent, NeighbourEvents, Net, NetError},
    vrrp::{LocalMac, Vrrp},
};

/// How often every backend's neighbour entry is re-confirmed (NTF_USE). XDP forwarding
/// bypasses the kernel, so without this the entries would go stale and a changed MAC would
/// never be noticed.
const NEIGHBOUR_REFRESH: Duration = Duration::from_secs(5);
/// Retry interval for backends whose MAC is still unknown.
const NEIGHBOUR_RETRY: Duration = Duration::from_millis(500);
/// How often, with VRRP or `[announce]`, the agent confirms that its program is still attached
/// to every interface: a node whose data plane is gone must not stay master, nor announce.
const DATAPLANE_CHECK: Duration = Duration::from_millis(100);
/// How often the view goes to the HTTP listener, when it changed.
const VIEW_PUBLISH: Duration = Duration::from_millis(250);
/// The fault VRRP instances enter while the data plane is not forwarding.
const DATAPLANE_FAULT: &str = "data plane not forwarding";
/// The fault VRRP instances enter while the maps are not in the desired state.
const SYNC_FAULT: &str = "data plane not in the desired state";
/// First and longest wait before the maps are written again after a failure.
const RESYNC_FIRST: Duration = Duration::from_millis(100);
const RESYNC_MAX: Duration = Duration::from_secs(5);

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
    Model(#[from] ModelError),
    #[error(transparent)]
    Vrrp(#[from] crate::vrrp::VrrpError),
    #[error("starting the health checker's thread: {0}")]
    HealthThread(#[source] std::io::Error),
    #[error("bpf filesystem for {path}: {message}")]
    Bpffs { path: String, message: String },
}

type Result<T> = std::result::Result<T, AgentError>;

/// How the agent stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Stop forwarding (SIGTERM, SIGINT): a VRRP master resigns, the VIPs the agent added go,
    /// the program is detached and every pin removed.
    Full,
    /// Stop the agent only (SIGUSR2, `systemctl restart`, a successor's `xlb run --takeover`):
    /// a VRRP master resigns, but the program stays attached on its pinned link and forwards
    /// with the pinned maps until the next agent adopts them.
    Restart,
}

/// What the agent knows of one backend beyond the model.
#[derive(Clone, Debug)]
struct BackendState {
    /// Where its frames leave (0: a tunnelled backend the kernel has no usable route to).
    ifindex: u32,
    ifname: String,
    src_mac: [u8; 6],
    /// The neighbour whose MAC its frames go to: the backend itself (direct routing), or the
    /// next hop of its route (a tunnel). `None`: no route.
    next_hop: Option<IpAddr>,
    /// The path's MTU (a tunnel's packets must fit it with the outer header); 0 for direct
    /// routing.
    mtu: u32,
    mac: Option<[u8; 6]>,
    /// The kernel's neighbour entry is confirmed (REACHABLE, PERMANENT, NOARP): the periodic
    /// re-confirmation can skip it.
    confirmed: bool,
    /// Health as its check last decided (true when it has no check).
    healthy: bool,
    /// Why it went down or came up last.
    reason: Option<String>,
    transitions: u64,
    /// Transitions by (state it went to, reason).
    transitions_by: std::collections::BTreeMap<(Health, String), u64>,
    /// Its index among the health checks, if it is checked.
    check: Option<usize>,
}

/// Where a backend's frames go: out of an attached interface, to a neighbour's MAC.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Placement {
    ifindex: u32,
    ifname: String,
    src_mac: [u8; 6],
    next_hop: IpAddr,
    mtu: u32,
}

impl Placement {
    /// `next_hop` through `iface`.
    fn new(iface: &InterfaceInfo, next_hop: IpAddr, mtu: u32) -> Self {
        Placement { ifindex: iface.ifindex, ifname: iface.name.clone(), src_mac: iface.mac, next_hop, mtu }
    }
}

impl BackendState {
    /// A backend placed so (or nowhere yet), its MAC not known yet.
    fn new(placement: Option<Placement>, healthy: bool) -> Self {
        let mut state = BackendState {
            ifindex: 0,
            ifname: String::new(),
            src_mac: [0; 6],
            next_hop: None,
            mtu: 0,
            mac: None,
            confirmed: false,
            healthy,
            reason: None,
            transitions: 0,
            transitions_by: Default::default(),
            check: None,
        };
        state.place(placement);
        state
    }

    /// Where the backend is now, as a placement.
    fn placement(&self) -> Option<Placement> {
        let next_hop = self.next_hop?;
        Some(Placement { ifindex: self.ifindex, ifname: self.ifname.clone(), src_mac: self.src_mac, next_hop, mtu: self.mtu })
    }

    /// Moves the backend: its MAC is to be learnt again unless the neighbour stays.
    fn place(&mut self, placement: Option<Placement>) {
        let same_neighbour = placement.as_ref().is_some_and(|p| Some(p.next_hop) == self.next_hop && p.ifindex == self.ifindex);
        if !same_neighbour {
            self.mac = None;
            self.confirmed = false;
        }
        match placement {
            Some(p) => {
                (self.ifindex, self.ifname, self.src_mac, self.next_hop, self.mtu) = (p.ifindex, p.ifname, p.src_mac, Some(p.next_hop), p.mtu)
            }
            None => (self.ifindex, self.ifname, self.src_mac, self.next_hop, self.mtu) = (0, String::new(), [0; 6], None, 0),
        }
    }
}

pub struct Agent {
    /// The desired state: services, backends with their slots, VRRP instances.
    model: Model,
    /// The file the configuration came from (what a reload reads again).
    config_file: PathBuf,
    /// That file's text as last read (runtime changes are edits of it): for a keepalived.conf,
    /// the TOML it converts to.
    file_text: String,
    /// How that file is read (TOML or keepalived.conf, and its agent file).
    read_as: crate::config::ReadAs,
    /// Changes made at run time, on top of the file (kept in `runtime_file`).
    runtime: Vec<runtime::RuntimeChange>,
    dp: Dataplane,
    net: Net,
    attached: Vec<InterfaceInfo>,
    /// What the agent learnt of each backend, by slot.
    backends: BTreeMap<u32, BackendState>,
    /// `BACKENDS` entries an earlier agent left, by slot, until the first model is applied.
    inherited: HashMap<u32, Backend>,
    /// Backends whose health an earlier agent decided (their checks go on from it).
    carried: HashSet<u32>,
    /// A stop asked for over the control socket (a successor taking over).
    stop_requested: Option<Stop>,
    /// SIGHUP (reload), registered at start so that it never ends the agent.
    hangup: Option<tokio::signal::unix::Signal>,
    /// Subscribed before the first resolution so that no answer is missed.
    events: Option<NeighbourEvents>,
    /// The table mode each service is in (logged when it changes), by service id.
    modes: HashMap<u32, TableMode>,
    /// Health checks: the backend slot of each check, and what the checker publishes.
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
    /// Faults met, and when the maps are written again after one.
    faults: lb_common::status::FaultStatus,
    resync: Option<(tokio::time::Instant, Duration)>,
    /// Removes flows and counts them off the loop, once the agent runs.
    scanner: Option<FlowScanner>,
    /// Where the view goes to the HTTP listener (none without `[agent] http`), and whether
    /// what it shows changed since it was last published.
    view_tx: Option<tokio::sync::watch::Sender<Arc<crate::view::View>>>,
    view_dirty: bool,
    /// Slots of backends that left whose flows are still being removed.
    purging: HashSet<u32>,
    /// What this node announces to its router (`[announce]`).
    announce: Option<crate::announce::Announcer>,
}

/// Tells systemd (Type=notify) where the agent stands; a no-op outside systemd.
fn notify(state: &[NotifyState]) {
    if let Err(e) = sd_notify(state) {
        warn!("sd_notify: {e}");
    }
}

impl Agent {

    /// The health checks, in the order of `self.checked`. A backend starts in the state the
    /// agent holds for it (one an earlier agent forwarded to starts up). Those in `carried`
    /// go on from their state as if nothing happened: `fall` failures take an up one down;
    /// for the others, an up backend's first check decides.
    fn check_specs(&self, carried: &HashSet<u32>) -> Vec<CheckSpec> {
        self.model
            .checks()
            .into_iter()
            .map(|(slot, c)| {
                let initial = if self.backends[&slot].healthy { Health::Up } else { Health::Down };
                CheckSpec {
                    kind: c.kind.clone(),
                    target: c.target(self.model.backends[&slot].address()),
                    timeout: c.timeout,
                    intervals: Intervals::new(c.interval).with_fast(c.fast_interval),
                    params: Params { rise: c.rise, fall: c.fall },
                    initial,
                    first_check_decides: initial == Health::Up && !carried.contains(&slot),
                }
            })
            .collect()
    }

    /// Reads the neighbour table again and takes in what changed: the safety net under the
    /// event stream for backends still without a MAC (`all`: after lost events, every one).
    /// A failed read is returned; a failed map write is retried like any other.
    async fn reread_neighbours(&mut self, all: bool) -> std::result::Result<(), NetError> {
        if !all && self.backends.values().all(|b| b.mac.is_some()) {
            return Ok(());
        }
        for n in self.net.neighbours().await? {
            if let Err(e) = self.apply_neighbour(&n) {
                self.out_of_sync("a neighbour change", &e);
            }
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
            let slots: Vec<u32> = self.backends.iter().filter(|(_, b)| b.ifindex == ifindex).map(|(s, _)| *s).collect();
            for slot in slots {
                if let Some(b) = self.backends.get_mut(&slot) {
                    b.src_mac = mac;
                }
                self.write_backend(slot)?;
            }
        }
        Ok(())
    }

    /// Takes in a health check's verdict: the backend's entry, its service's table, and, when
    /// it went down, its flows (so that their next packets go to a live backend).
    fn apply_health(&mut self, check: usize, t: Transition) -> Result<()> {
        let slot = self.checked[check];
        let up = t.to == Health::Up;
        let Some(b) = self.model.backend(slot) else { return Ok(()) };
        let (service, address) = (b.service, b.address());
        let name = self.model.service(service).map(|s| s.name.as_str()).unwrap_or("?");
        if up {
            info!("backend {address} of service {name} is up: {}", t.reason);
        } else {
            warn!("backend {address} of service {name} is down: {}", t.reason);
        }
        if let Some(state) = self.backends.get_mut(&slot) {
            state.healthy = up;
            *state.transitions_by.entry((t.to, t.reason.clone())).or_default() += 1;
            state.reason = Some(t.reason);
            state.transitions += 1;
        }
        // Never let a table point at an unusable backend: a new flow would be dropped. Going
        // up, the entry becomes usable before the table names it; going down, the table stops
        // naming it before the entry becomes unusable.
        if up {
            self.write_backend(slot)?;
            self.publish(service)?;
        } else {
            self.publish(service)?;
            self.write_backend(slot)?;
            // Its flows' next packets find it unusable and move anyway; the entries go off the
            // loop.
            if let Some(scanner) = &self.scanner {
                scanner.remove(Doomed::Backends(vec![slot]));
            }
        }
        Ok(())
    }

    /// The kernel's routes to `model`'s tunnelled backends. A failed lookup leaves the
    /// backend out (unusable until a later lookup finds its route).
    async fn tunnel_paths(&self, model: &Model) -> apply::Paths {
        let mut paths = apply::Paths::new();
        for b in model.backends.values().filter(|b| b.forward != Forward::Dr) {
            match self.net.route_to(b.address()).await {
                Ok(Some(path)) => {
                    paths.insert(b.address(), path);
                }
                Ok(None) => {}
                Err(e) => warn!("{e}"),
            }
        }
        paths
    }

    /// Follows the routes to the tunnelled backends: a backend whose next hop, interface or
    /// MTU changed is placed again, its entry rewritten (and its MAC learnt again when the
    /// next hop changed: until then it is unusable and its service's table goes without it).
    async fn follow_paths(&mut self) -> Result<()> {
        if self.model.backends.values().all(|b| b.forward == Forward::Dr) {
            return Ok(());
        }
        let interfaces = self.net.interfaces().await?;
        let paths = self.tunnel_paths(&self.model).await;
        let tunnelled: Vec<u32> = self.model.backends.values().filter(|b| b.forward != Forward::Dr).map(|b| b.slot).collect();
        let mut moved = Vec::new();
        for slot in tunnelled {
            let placement = self.placement(slot, &interfaces, &paths);
            let Some(state) = self.backends.get_mut(&slot).filter(|s| s.placement() != placement.as_ref().ok().cloned()) else {
                continue;
            };
            match &placement {
                Ok(p) => info!("backend {} (a tunnel): now through {} on {}, MTU {}", self.model.backends[&slot].address(), p.next_hop, p.ifname, p.mtu),
                Err(why) => warn!("{why}"),
            }
            state.place(placement.ok());
            moved.push(slot);
        }
        if moved.is_empty() {
            return Ok(());
        }
        // The new next hops' MACs, if the kernel knows them already (else the resolution
        // that follows asks, and the answer comes as a neighbour event).
        for n in self.net.neighbours().await? {
            moved.extend(self.learn(&n));
        }
        self.rewrite_backends(moved)
    }

    /// Asks the kernel to resolve backends (all, or only those without a MAC), once per
    /// address and interface however many services share the backend.
    async fn resolve_backends(&self, all: bool) {
        let mut wanted: Vec<(u32, IpAddr)> = self
            .model
            .backends
            .iter()
            .filter_map(|(slot, b)| Some((b, self.backends.get(slot)?)))
            // A confirmed entry needs nothing: the kernel marks it STALE when its timer runs
            // out, which comes as an event, and then it is asked again.
            .filter(|(_, state)| if all { !state.confirmed } else { state.mac.is_none() })
            .filter_map(|(_, state)| Some((state.ifindex, state.next_hop?)))
            .collect();
        wanted.sort();
        wanted.dedup();
        for (ifindex, address) in wanted {
            if let Err(e) = self.net.resolve(ifindex, address).await {
                warn!("{e}");
            }
        }
    }

    async fn answer(&mut self, request: Request, monitor: &mut Monitor) -> Response {
        let done = |r: std::result::Result<String, String>| match r {
            Ok(message) => Response::Done { message },
            Err(message) => Response::Error { message },
        };
        match request {
            Request::Status => match self.status() {
                Ok(s) => Response::Status(s),
                Err(e) => Response::Error { message: e.to_string() },
            },
            Request::Change { change, save } => done(self.change(change, save, monitor).await),
            Request::Reload => done(self.reload(monitor).await),
            Request::DrainNode => done(self.start_drain().await),
            Request::Handover => {
                info!("a successor takes over: stopping for a restart");
                self.stop_requested = Some(Stop::Restart);
                Response::Done { message: "handing over: the program stays attached for the next agent".into() }
            }
        }
    }

    /// Runs until `shutdown` completes, then detaches and removes what it added.
    pub async fn run(mut self, shutdown: impl Future<Output = Stop>) -> Result<()> {
        let mut events = self.events.take().expect("subscribed at start");
        let mut monitor = Monitor::spawn(self.check_specs(&self.carried)).map_err(AgentError::HealthThread)?;
        // SIGHUP reloads (keepalived's habit); SIGUSR1 writes the status to the log.
        let mut hangup = self.hangup.take().expect("registered at start");
        let mut usr1 = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
            .map_err(|e| AgentError::Environment(format!("installing the SIGUSR1 handler: {e}")))?;
        self.check_stats = monitor.stats.clone();
        let (tx, mut requests) = mpsc::channel::<Pending>(16);
        let socket = self.model.agent.control_socket.clone();
        let server = control::serve(&socket, tx)?;
        info!("control socket at {}", socket.display());
        // Attached, every map written, the control socket answering: ready (systemd
        // Type=notify; nothing happens without NOTIFY_SOCKET).
        notify(&[NotifyState::Ready]);
        let mut refresh = tokio::time::interval(NEIGHBOUR_REFRESH);
        let mut retry = tokio::time::interval(NEIGHBOUR_RETRY);
        let mut dataplane_check = tokio::time::interval(DATAPLANE_CHECK);
        let mut vrrp_macs = self.vrrp_macs.take();
        let (scanned, mut scans) = mpsc::unbounded_channel();
        match FlowScanner::start(&self.model.agent.pin_path.join(lb_common::maps::FLOWS), self.model.agent.flow_timeouts, scanned) {
            Ok(scanner) => self.scanner = Some(scanner),
            Err(e) => warn!("flow scanner: {e}; flow-table scans run on the agent's loop"),
        }
        // The XDP program's rare events, into this log.
        let program_log = self.dp.take_logger().and_then(|l| match crate::dataplane::forward_program_log(l) {
            Ok(task) => Some(task),
            Err(e) => {
                warn!("the XDP program's log: {e}");
                None
            }
        });
        // The HTTP listener reads the view the loop publishes when it changes.
        let mut publish = tokio::time::interval(VIEW_PUBLISH);
        let web = self.model.agent.http.map(|addr| {
            let (tx, rx) = tokio::sync::watch::channel(Arc::new(self.view()));
            self.view_tx = Some(tx);
            self.view_dirty = false;
            crate::web::start(addr, rx, &self.model.agent.pin_path)
        });
        let mut drain_tick = tokio::time::interval(announce::DRAIN_TICK);
        // systemd's watchdog (WatchdogSec=): pinged from this loop, so that an agent whose
        // loop hangs is killed and restarted (and, with [announce], its VIPs withdrawn by the
        // kill) rather than left holding them without health checks.
        let mut watchdog = sd_notify::watchdog_enabled().map(|every| tokio::time::interval(every / 2));
        // The stop signal resolves once; a drain may follow it.
        let mut signalled = false;
        tokio::pin!(shutdown);
        let result = loop {
            if let Some(stop) = self.stop_requested.take() {
                break Ok(stop);
            }
            tokio::select! {
                stop = &mut shutdown, if !signalled => {
                    signalled = true;
                    // With [announce], a stop withdraws every VIP first and waits for the
                    // router to move the flows away.
                    if stop != Stop::Full || self.start_drain().await.is_err() {
                        break Ok(stop);
                    }
                }
                _ = drain_tick.tick(), if self.announce.as_ref().is_some_and(|a| a.drain.is_some()) => {
                    if let Some(stop) = self.drain_step() {
                        break Ok(stop);
                    }
                }
                Some(event) = events.next() => match event {
                    NeighbourEvent::Changed(n) => {
                        if let Err(e) = self.apply_neighbour(&n) {
                            self.out_of_sync("a neighbour change", &e);
                        }
                    }
                    NeighbourEvent::Overrun => {
                        warn!("neighbour events were lost (netlink overrun): reading the table again");
                        self.faults.netlink_failures += 1;
                        if let Err(e) = self.reread_neighbours(true).await {
                            self.faults.last_error = Some(e.to_string());
                            warn!("{e}");
                        }
                    }
                },
                Some((check, transition)) = monitor.transitions.recv() => {
                    if let Err(e) = self.apply_health(check, transition) {
                        self.out_of_sync("a health transition", &e);
                    }
                }
                _ = tokio::time::sleep_until(self.resync.map_or_else(tokio::time::Instant::now, |(at, _)| at)), if self.resync.is_some() => {
                    self.resync();
                }
                Some((request, reply)) = requests.recv() => {
                    let _ = reply.send(self.answer(request, &mut monitor).await);
                }
                Some(()) = hangup.recv() => {
                    info!("SIGHUP: reloading {}", self.config_file.display());
                    if let Err(e) = self.reload(&mut monitor).await {
                        warn!("reload refused: {e}");
                    }
                }
                Some(()) = usr1.recv() => self.dump_status(),
                _ = publish.tick(), if self.view_tx.is_some() => self.publish_view(),
                Some(done) = scans.recv() => self.scanned(done),
                _ = refresh.tick() => {
                    if let Err(e) = self.follow_paths().await {
                        self.out_of_sync("following the routes to tunnelled backends", &e);
                    }
                    self.resolve_backends(true).await;
                    if let Err(e) = self.refresh_interface_macs().await {
                        warn!("{e}");
                    }
                }
                _ = dataplane_check.tick(), if self.vrrp.is_some() || self.announce.is_some() => self.check_dataplane().await,
                Some(_) = async { Some(watchdog.as_mut()?.tick().await) }, if watchdog.is_some() => notify(&[NotifyState::Watchdog]),
                Some(m) = async { vrrp_macs.as_mut()?.recv().await }, if vrrp_macs.is_some() => self.apply_local_mac(m),
                _ = retry.tick() => {
                    if let Err(e) = self.reread_neighbours(false).await {
                        // The events keep coming; the next dump may work.
                        self.faults.netlink_failures += 1;
                        self.faults.last_error = Some(e.to_string());
                        warn!("{e}");
                    }
                    self.resolve_backends(false).await;
                }
            }
            // Whatever changed, the announcements follow.
            self.sync_announce().await;
        };
        notify(&[NotifyState::Stopping]);
        server.abort();
        for task in [web, program_log].into_iter().flatten() {
            task.abort();
        }
        drop(monitor);
        let stopped = match result {
            Ok(stop) => self.stop(stop).await,
            // A failure is a real stop: nothing must forward with nobody keeping it.
            Err(e) => self.stop(Stop::Full).await.and(Err(e)),
        };
        // Last: a successor (`xlb run --takeover`) starts once the socket is gone.
        let _ = std::fs::remove_file(&socket);
        stopped
    }

    /// A flow removal finished: its freed slots may be handed out again.
    fn scanned(&mut self, done: Done) {
        match done.doomed {
            Doomed::Backends(slots) => {
                let addresses: Vec<String> =
                    slots.iter().filter_map(|s| self.model.backend(*s)).map(|b| b.address().to_string()).collect();
                info!("removed {} flows of backend {}", done.removed, addresses.join(", "));
            }
            Doomed::NotFitting { freed, .. } => {
                for slot in freed {
                    self.purging.remove(&slot);
                }
                if done.removed > 0 {
                    info!("removed {} flows that no longer fit the configuration", done.removed);
                }
            }
        }
    }

    /// Writes the full status to the log (SIGUSR1, keepalived's data dump).
    fn dump_status(&self) {
        use crate::control::Render as _;
        match self.status() {
            Ok(status) => {
                for line in status.render().lines() {
                    info!("status: {line}");
                }
            }
            Err(e) => warn!("status: {e}"),
        }
    }

    /// Resigns VRRP mastership; then, for a full stop, removes the VIPs, detaches the program
    /// and removes every pin. For a restart the program stays attached on its pinned link and
    /// forwards with the pinned maps (and the VIPs stay) until the next agent adopts them.
    async fn stop(mut self, stop: Stop) -> Result<()> {
        // VRRP first: the peer takes over (after its skew time) while we still forward.
        if let Some(vrrp) = self.vrrp.take() {
            vrrp.shutdown().await;
        }
        // Closing the tun device withdraws whatever is still announced, before a successor
        // creates it again.
        self.announce = None;
        if stop == Stop::Restart {
            info!("stopped for a restart: the program stays attached and forwards with the pinned maps");
            return Ok(());
        }
        if self.model.agent.assign_vips {
            let first = self.attached[0].ifindex;
            for vip in self.model.vips() {
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
