//! VRRP (RFC 5798 v3, RFC 3768 v2): which node of a pair holds the VIPs.
//!
//! [`Vrrp`] runs the `[[vrrp_instance]]`s: one thread of their own, real-time scheduled, with
//! a small tokio runtime, so that adverts keep their timing when the node is busy.
//!
//! Why a thread of its own: keepalived's users know the failure where a starved process
//! misses its adverts and the backup takes over. Adverts, the receive path and the timers run
//! here on a `SCHED_FIFO` thread (children reset to normal scheduling on fork), apart from the
//! agent's runtime, whose health checks and map writes can be busy. Nothing on this thread
//! blocks: scripts run as child processes awaited asynchronously.
//!
//! - `packet`: the advert codec and receive-side validation (pure).
//! - `machine`: the RFC state machine with keepalived's FAULT (pure).
//! - `instance`: one instance's task, which feeds the machine and carries out its actions.
//! - `track`: tracked interfaces and track scripts: faults and priority.
//! - `vmac`: the `use_vmac` macvlan with the virtual MAC, and arp_ignore on its interface.
//! - `status`: what `xlb stats` shows of each instance.
//! - `io`: raw protocol-112 sockets and AF_PACKET frames.
//! - `announce`: gratuitous ARP and unsolicited neighbour advertisement frames.

pub mod announce;
mod instance;
pub mod io;
pub mod machine;
pub mod packet;
pub mod status;
pub mod track;
pub mod vmac;

use std::collections::HashMap;

use tokio::sync::{mpsc, oneshot};
use tracing::{error, warn};

use crate::config::{InterfaceInfo, VrrpConfig};
use instance::{host_of, Command, Instance};
use status::SharedStatus;
use vmac::ArpIgnore;

pub use status::InstanceStatus;
pub use vmac::LocalMac;

#[derive(Debug, thiserror::Error)]
pub enum VrrpError {
    #[error("vrrp_instance \"{instance}\": interface {interface} does not exist")]
    NoInterface { instance: String, interface: String },
    #[error("vrrp_instance \"{instance}\": interface {interface} has no {what} address to send adverts from")]
    NoAddress { instance: String, interface: String, what: &'static str },
    #[error("vrrp_instance \"{instance}\": {what}: {source}")]
    Io { instance: String, what: String, #[source] source: std::io::Error },
    #[error("vrrp: {0}")]
    Net(#[from] crate::net::NetError),
    #[error("vrrp: starting its thread: {0}")]
    Thread(std::io::Error),
}

/// The VRRP thread and a handle to each instance.
pub struct Vrrp {
    /// Each running instance: its name, its command channel, its status.
    instances: Vec<(String, mpsc::UnboundedSender<Command>, SharedStatus)>,
    /// Asks the VRRP thread to open and run one more instance.
    opens: Option<mpsc::UnboundedSender<Open>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// An instance for the VRRP thread to open and run; the result goes back on `done`.
struct Open {
    cfg: VrrpConfig,
    host: instance::Host,
    tx: mpsc::UnboundedSender<Command>,
    rx: mpsc::UnboundedReceiver<Command>,
    status: SharedStatus,
    done: oneshot::Sender<Result<(), VrrpError>>,
}

fn realtime() {
    let param = libc::sched_param { sched_priority: 10 };
    // SAFETY: plain syscall on the calling thread with a valid parameter block.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK, &param) };
    if rc != 0 {
        warn!("vrrp: cannot use SCHED_FIFO ({}): adverts may be late when the node is busy", std::io::Error::last_os_error());
    }
}

impl Vrrp {
    /// Starts the VRRP thread and opens every instance's sockets; instances begin in BACKUP
    /// (or MASTER as address owner) with their virtual addresses removed. Fails, with nothing
    /// left running, if any instance cannot be opened.
    ///
    /// `local_macs` receives the virtual MACs the data plane must take as the node's own.
    pub async fn start(
        configs: &[VrrpConfig],
        interfaces: &[InterfaceInfo],
        local_macs: mpsc::UnboundedSender<LocalMac>,
    ) -> Result<Vrrp, VrrpError> {
        let (opens, mut requests) = mpsc::unbounded_channel::<Open>();
        let thread = std::thread::Builder::new()
            .name("xlb-vrrp".into())
            .spawn(move || {
                realtime();
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        error!("vrrp: cannot start its runtime: {e}");
                        return;
                    }
                };
                rt.block_on(async move {
                    let mut tasks = tokio::task::JoinSet::new();
                    let arp_ignore = ArpIgnore::default();
                    let mut names = HashMap::new();
                    loop {
                        tokio::select! {
                            open = requests.recv() => {
                                // The handle is gone once every instance has shut down.
                                let Some(Open { cfg, host, tx, rx, status, done }) = open else { break };
                                let (name, shown) = (cfg.name.clone(), status.clone());
                                match Instance::open(cfg, host, status, local_macs.clone(), arp_ignore.clone()).await {
                                    Ok(inst) => {
                                        let id = tasks.spawn(inst.run(rx, tx)).id();
                                        names.insert(id, (name, shown));
                                        let _ = done.send(Ok(()));
                                    }
                                    Err(e) => {
                                        let _ = done.send(Err(e));
                                    }
                                }
                            }
                            // An instance that ends other than by shutdown has failed: say so
                            // loudly and show it (the peer takes over once its adverts stop).
                            Some(ended) = tasks.join_next_with_id() => {
                                if let Err(e) = ended {
                                    if let Some((name, shown)) = names.get(&e.id()) {
                                        error!("vrrp_instance \"{name}\" failed: {e}; it sends no adverts any more");
                                        shown.failed();
                                    }
                                }
                            }
                        }
                    }
                });
            })
            .map_err(VrrpError::Thread)?;
        let mut vrrp = Vrrp { instances: Vec::new(), opens: Some(opens), thread: Some(thread) };
        for cfg in configs {
            if let Err(e) = vrrp.add(cfg, interfaces).await {
                vrrp.shutdown().await;
                return Err(e);
            }
        }
        Ok(vrrp)
    }

    /// Opens and runs one more instance (it begins as [`Vrrp::start`] says).
    pub async fn add(&mut self, cfg: &VrrpConfig, interfaces: &[InterfaceInfo]) -> Result<(), VrrpError> {
        let host = host_of(cfg, interfaces)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let status = SharedStatus::new(cfg);
        let (done, result) = oneshot::channel();
        let open = Open { cfg: cfg.clone(), host, tx: tx.clone(), rx, status: status.clone(), done };
        let gone = || VrrpError::Thread(std::io::Error::other("the VRRP thread has ended"));
        self.opens.as_ref().ok_or_else(gone)?.send(open).map_err(|_| gone())?;
        result.await.map_err(|_| gone())??;
        self.instances.push((cfg.name.clone(), tx, status));
        Ok(())
    }

    /// Whether `cfg` could be opened on this host (its interface and an address to send from).
    pub fn check(cfg: &VrrpConfig, interfaces: &[InterfaceInfo]) -> Result<(), VrrpError> {
        host_of(cfg, interfaces).map(|_| ())
    }

    /// Stops the instance called `name` as a shutdown does (a master resigns and removes its
    /// addresses).
    pub async fn remove(&mut self, name: &str) {
        if let Some(i) = self.instances.iter().position(|(n, ..)| n == name) {
            let (_, tx, _) = self.instances.remove(i);
            let (done, wait) = oneshot::channel();
            if tx.send(Command::Shutdown(done)).is_ok() {
                let _ = wait.await;
            }
        }
    }

    /// Sets or clears a fault that applies to every instance (the node's data plane).
    pub fn set_fault(&self, source: &str, on: bool) {
        for (_, tx, _) in &self.instances {
            let _ = tx.send(Command::Fault { source: source.to_owned(), on });
        }
    }

    /// Handles on each instance's status, read when asked (the HTTP listener's view).
    pub fn shared(&self) -> Vec<status::SharedStatus> {
        self.instances.iter().map(|(.., s)| s.clone()).collect()
    }

    /// Every master resigns (priority-0 advert) and removes its addresses; then the thread
    /// ends.
    pub async fn shutdown(mut self) {
        let mut waits = Vec::new();
        for (_, tx, _) in &self.instances {
            let (done, wait) = oneshot::channel();
            if tx.send(Command::Shutdown(done)).is_ok() {
                waits.push(wait);
            }
        }
        for w in waits {
            let _ = w.await;
        }
        // No more instances: the thread's loop ends.
        self.opens = None;
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}
