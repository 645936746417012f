//! The control socket: a root-only Unix socket where `xlb stats` (and later drain, weights,
//! reload) talk to the running agent. One JSON request per line, one JSON response per line.
//!
//! The listener only forwards requests to the agent's loop, which owns the maps and answers:
//! the agent stays the single writer.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

pub use lb_common::status::{BackendStatus, CheckerStatus, Counters, ServiceStatus, Status};
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
};

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control socket {path}: {source}")]
    Io { path: PathBuf, #[source] source: std::io::Error },
    #[error("control socket {path}: bad reply: {source}")]
    Reply { path: PathBuf, #[source] source: serde_json::Error },
    #[error("agent at {path} refused the request: {message}")]
    Refused { path: PathBuf, message: String },
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum Request {
    /// Services, backends, counters.
    Status,
    /// A runtime change (`xlb backend ...`, `xlb service ...`); with `save`, written into
    /// the configuration file too.
    Change { change: crate::config::edit::Change, save: bool },
    /// Reads the configuration file again and applies what changed (SIGHUP does the same).
    Reload,
    /// Drains the node (`[announce]`): withdraws every VIP, forwards until the router has moved
    /// the flows away, then stops (as SIGTERM does in that mode).
    DrainNode,
    /// Stops the agent for a successor (`xlb run --takeover`): the program stays attached and
    /// forwards with the pinned maps until the successor adopts them.
    Handover,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Response {
    Status(Status),
    Done { message: String },
    Error { message: String },
}

/// A request waiting for the agent's answer.
pub type Pending = (Request, oneshot::Sender<Response>);

/// Binds the socket (mode 0600, replacing a stale one) and forwards each request to `agent`.
/// Fails when another agent answers on `path`: checked before an agent touches anything, so
/// a second `xlb run` by mistake cannot disturb the one running.
pub fn ensure_free(path: &Path) -> Result<(), ControlError> {
    if path.exists() && std::os::unix::net::UnixStream::connect(path).is_ok() {
        let source = std::io::Error::new(std::io::ErrorKind::AddrInUse, "another agent is answering on it");
        return Err(ControlError::Io { path: path.to_owned(), source });
    }
    Ok(())
}

pub fn serve(path: &Path, agent: mpsc::Sender<Pending>) -> Result<tokio::task::JoinHandle<()>, ControlError> {
    let io = |source| ControlError::Io { path: path.to_owned(), source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    ensure_free(path)?;
    if path.exists() {
        // Only a socket nobody answers on is stale.
        std::fs::remove_file(path).map_err(io)?;
    }
    let listener = UnixListener::bind(path).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    Ok(tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // EMFILE, say: the connection stays queued and the listener ready, so
                    // accepting again at once would spin. Wait a little instead.
                    tracing::warn!("control socket: accepting a connection: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let agent = agent.clone();
            tokio::spawn(async move {
                if let Err(e) = answer(stream, agent).await {
                    tracing::debug!("control connection: {e}");
                }
            });
        }
    }))
}

async fn answer(stream: UnixStream, agent: mpsc::Sender<Pending>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Some(line) = lines.next_line().await? {
        let response = match serde_json::from_str::<Request>(&line) {
            Ok(request) => {
                let (tx, rx) = oneshot::channel();
                if agent.send((request, tx)).await.is_err() {
                    break;
                }
                rx.await.unwrap_or(Response::Error { message: "agent is stopping".into() })
            }
            Err(e) => Response::Error { message: format!("bad request: {e}") },
        };
        let mut out = serde_json::to_vec(&response).expect("serializable");
        out.push(b'\n');
        write.write_all(&out).await?;
    }
    Ok(())
}

/// Sends one request to the agent at `path` and waits for its answer (blocking; for the CLI and
/// tests).
pub fn request(path: &Path, request: &Request) -> Result<Response, ControlError> {
    use std::io::{BufRead as _, Write as _};
    let io = |source| ControlError::Io { path: path.to_owned(), source };
    let mut stream = std::os::unix::net::UnixStream::connect(path).map_err(io)?;
    let mut line = serde_json::to_vec(request).expect("serializable");
    line.push(b'\n');
    stream.write_all(&line).map_err(io)?;
    let mut reply = String::new();
    std::io::BufReader::new(stream).read_line(&mut reply).map_err(io)?;
    serde_json::from_str(&reply).map_err(|source| ControlError::Reply { path: path.to_owned(), source })
}

/// The agent's status, or the agent's error.
pub fn status(path: &Path) -> Result<Status, ControlError> {
    match request(path, &Request::Status)? {
        Response::Status(s) => Ok(s),
        Response::Done { message } | Response::Error { message } => {
            Err(ControlError::Refused { path: path.to_owned(), message })
        }
    }
}

/// Sends a command that changes something; returns the agent's confirmation.
pub fn command(path: &Path, change: &Request) -> Result<String, ControlError> {
    match request(path, change)? {
        Response::Done { message } => Ok(message),
        Response::Status(_) => Ok(String::new()),
        Response::Error { message } => Err(ControlError::Refused { path: path.to_owned(), message }),
    }
}

/// How `xlb stats` shows a [`Status`] to people (the status itself is `lb_common`'s, shared
/// with the agent's clients).
pub trait Render {
    /// An `ipvsadm -ln --stats`-like table.
    fn render(&self) -> String;
}

impl Render for Status {
    fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(out, "xlb on {}  flows: {} (ended or idle, removed: {})", self.interfaces.join(","), self.flows, self.flows_expired);
        let _ = writeln!(out, "{:<5} {:<34} {:<10} {:>8} {:>12} {:>14}", "Prot", "LocalAddress:Port Scheduler", "", "", "Packets", "Bytes");
        let _ = writeln!(out, "  -> {:<31} {:<6} {:<8} {:>8} {:>12} {:>14}", "RemoteAddress", "Weight", "State", "Flows", "Packets", "Bytes");
        for s in &self.services {
            let vip = if s.vip.contains(':') { format!("[{}]", s.vip) } else { s.vip.clone() };
            let _ = writeln!(
                out,
                "{:<5} {:<34} {:<10} {:>8} {:>12} {:>14}",
                s.protocol.to_uppercase(),
                format!("{vip}:{} {}", s.port, s.scheduler),
                s.name,
                "",
                s.counters.packets,
                s.counters.bytes
            );
            for b in s.backends.iter().chain(&s.sorry) {
                let mut state = b.state.clone();
                if Some(b) == s.sorry.as_ref() {
                    state = format!("sorry:{state}");
                }
                let mut reason = match (&b.reason, b.state.as_str()) {
                    (Some(r), "down") => format!("  ({r})"),
                    _ => String::new(),
                };
                if let Some(runtime) = &b.runtime {
                    reason += &format!("  [{runtime}]");
                }
                // ipvsadm's Forward column, for the tunnels.
                if !b.forward.is_empty() && b.forward != "dr" {
                    reason += &format!("  {} via {}", b.forward, b.next_hop.as_deref().unwrap_or("(no route)"));
                }
                let _ = writeln!(
                    out,
                    "  -> {:<31} {:<6} {:<8} {:>8} {:>12} {:>14}{reason}",
                    b.address,
                    b.weight,
                    state,
                    b.flows.map_or_else(|| "-".to_owned(), |n| n.to_string()),
                    b.counters.packets,
                    b.counters.bytes
                );
            }
            if s.mode != "normal" {
                let _ = writeln!(out, "     (below quorum {}: {})", s.quorum, s.mode);
            }
        }
        for v in &self.vrrp {
            let master = v.master.as_deref().unwrap_or("-");
            let _ = writeln!(
                out,
                "vrrp {} ({} vrid {} v{}): {} priority {} master {master}  sent {} received {}",
                v.name, v.interface, v.vrid, v.version, v.state, v.priority, v.adverts_sent, v.adverts_received
            );
            if !v.faults.is_empty() {
                let _ = writeln!(out, "  fault: {}", v.faults.join("; "));
            }
            let invalid: Vec<String> = v.invalid.iter().map(|(k, n)| format!("{k} {n}")).collect();
            if !invalid.is_empty() {
                let _ = writeln!(out, "  invalid adverts: {}", invalid.join(", "));
            }
            if v.answers_sent > 0 || v.answers_suppressed > 0 {
                let _ = writeln!(
                    out,
                    "  answers to lower-priority masters: sent {}, rate-limited {} ({} announcement bursts)",
                    v.answers_sent, v.answers_suppressed, v.announcements_suppressed
                );
            }
        }
        if let Some(a) = &self.announce {
            let _ = writeln!(
                out,
                "announce (routes in table {} through {}){}: announced {}, withdrawn {}",
                a.table,
                a.interface,
                if a.draining { ", DRAINING" } else { "" },
                a.announcements,
                a.withdrawals
            );
            for v in &a.vips {
                let state = if v.announced { "announced" } else { "withheld" };
                let reason = v.reason.as_ref().map(|r| format!(" ({r})")).unwrap_or_default();
                let _ = writeln!(out, "  {:<39} {state}{reason}", v.vip);
            }
        }
        if !self.runtime_changes.is_empty() {
            let _ = writeln!(out, "runtime changes (not in the file):");
            for c in &self.runtime_changes {
                let _ = writeln!(out, "  {c}");
            }
        }
        let _ = writeln!(out, "counters:");
        for (name, value) in &self.counters {
            if *value > 0 {
                let _ = writeln!(out, "  {name:<22} {value}");
            }
        }
        out
    }
}
