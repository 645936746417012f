//! Real traffic for the lab: servers that answer with their own name, and clients that count
//! who answered.

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use anyhow::{bail, Context as _, Result};

use crate::spawn_in_netns;

/// Servers running on threads inside backend namespaces; stopped on drop.
#[derive(Default)]
pub struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Servers {
    /// A TCP server on `[::]:port` (both families) in `ns` that writes `name\n` to every
    /// connection and closes it.
    pub fn tcp(&mut self, ns: &str, name: &str, port: u16) -> Result<()> {
        let stop = self.stop.clone();
        let name = name.to_owned();
        let (tx, rx) = std::sync::mpsc::channel();
        let handle = spawn_in_netns(ns, move || {
            let listener = match TcpListener::bind(("::", port)) {
                Ok(l) => l,
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            };
            listener.set_nonblocking(true).expect("nonblocking");
            let _ = tx.send(Ok(()));
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        let _ = conn.set_nonblocking(false);
                        let _ = conn.write_all(format!("{name}\n").as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        })?;
        rx.recv()?.map_err(|e| anyhow::anyhow!("TCP server in {ns}: {e}"))?;
        self.threads.push(handle);
        Ok(())
    }

    /// A UDP server bound to each of `addrs` (the VIPs, so replies leave from the VIP) in `ns`
    /// that answers every datagram with `name`.
    pub fn udp(&mut self, ns: &str, name: &str, addrs: &[SocketAddr]) -> Result<()> {
        for &addr in addrs {
            let stop = self.stop.clone();
            let name = name.to_owned();
            let (tx, rx) = std::sync::mpsc::channel();
            let handle = spawn_in_netns(ns, move || {
                let socket = match UdpSocket::bind(addr) {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                };
                socket.set_read_timeout(Some(Duration::from_millis(20))).expect("timeout");
                let _ = tx.send(Ok(()));
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((_, peer)) = socket.recv_from(&mut buf) {
                        let _ = socket.send_to(name.as_bytes(), peer);
                    }
                }
            })?;
            rx.recv()?.map_err(|e| anyhow::anyhow!("UDP server {addr} in {ns}: {e}"))?;
            self.threads.push(handle);
        }
        Ok(())
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Which server answered how often.
pub type Tally = BTreeMap<String, usize>;

/// Opens `count` TCP connections to `target` one after the other (each from a new source
/// port) and reads the name each server sends. Run it inside the client's namespace. Fails on
/// the first connection that does not complete, or if a source port repeats.
pub fn tcp_connections(target: SocketAddr, count: usize) -> Result<Tally> {
    let mut tally = Tally::new();
    let mut ports = std::collections::HashSet::new();
    for i in 0..count {
        let mut conn = TcpStream::connect_timeout(&target, Duration::from_secs(3))
            .with_context(|| format!("connection {i} to {target}"))?;
        conn.set_read_timeout(Some(Duration::from_secs(3)))?;
        let port = conn.local_addr()?.port();
        if !ports.insert(port) {
            bail!("source port {port} used twice");
        }
        let mut reply = String::new();
        conn.read_to_string(&mut reply).with_context(|| format!("reading reply {i} from {target}"))?;
        let name = reply.trim();
        if name.is_empty() {
            bail!("connection {i} to {target}: empty reply");
        }
        *tally.entry(name.to_owned()).or_default() += 1;
    }
    Ok(tally)
}

/// Sends one datagram from each of `count` fresh sockets (new source port each) to `target`
/// and counts who answered. A datagram without an answer in time is retried twice, then the
/// exchange fails.
pub fn udp_exchanges(target: SocketAddr, count: usize) -> Result<Tally> {
    let mut tally = Tally::new();
    let bind: SocketAddr = if target.is_ipv4() { "0.0.0.0:0".parse()? } else { "[::]:0".parse()? };
    for i in 0..count {
        let socket = UdpSocket::bind(bind)?;
        socket.connect(target)?;
        socket.set_read_timeout(Some(Duration::from_millis(500)))?;
        let mut buf = [0u8; 256];
        let mut answer = None;
        for _ in 0..3 {
            socket.send(b"who")?;
            if let Ok(n) = socket.recv(&mut buf) {
                answer = Some(String::from_utf8_lossy(&buf[..n]).into_owned());
                break;
            }
        }
        let Some(name) = answer else { bail!("datagram {i} to {target}: no answer") };
        *tally.entry(name).or_default() += 1;
    }
    Ok(tally)
}

/// Asserts each of `names` got `1/n` of `total` within `tolerance` (absolute share, 0.10 = 10
/// points) and that nobody else answered.
pub fn assert_even(tally: &Tally, names: &[&str], total: usize, tolerance: f64) -> Result<()> {
    let expected = 1.0 / names.len() as f64;
    for name in names {
        let got = *tally.get(*name).unwrap_or(&0) as f64 / total as f64;
        if (got - expected).abs() > tolerance {
            bail!("{name} got {:.1}% of {total}, expected {:.1}% ± {:.0}: {tally:?}", got * 100.0, expected * 100.0, tolerance * 100.0);
        }
    }
    let sum: usize = tally.values().sum();
    if sum != total || tally.keys().any(|k| !names.contains(&k.as_str())) {
        bail!("unexpected answers: {tally:?}");
    }
    Ok(())
}
