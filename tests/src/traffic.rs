//! Real traffic for the lab: servers that answer with their own name, and clients that count
//! who answered.

use std::{
    collections::BTreeMap,
    io::Write as _,
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use anyhow::{bail, Context as _, Result};
use std::io::Read as _;


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
        let name = name.as_bytes().to_vec();
        self.udp_replying(ns, addrs, move |_| name.clone())
    }

    /// Like [`Servers::udp`], but the answer is the datagram itself followed by `name`: a
    /// client matches answers to requests (see `pair::Prober`) and learns who answered.
    pub fn udp_echo(&mut self, ns: &str, name: &str, addrs: &[SocketAddr]) -> Result<()> {
        let name = name.as_bytes().to_vec();
        self.udp_replying(ns, addrs, move |request| [request, &name].concat())
    }

    fn udp_replying(
        &mut self,
        ns: &str,
        addrs: &[SocketAddr],
        reply: impl Fn(&[u8]) -> Vec<u8> + Clone + Send + 'static,
    ) -> Result<()> {
        for &addr in addrs {
            let stop = self.stop.clone();
            let reply = reply.clone();
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
                    if let Ok((n, peer)) = socket.recv_from(&mut buf) {
                        let _ = socket.send_to(&reply(&buf[..n]), peer);
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

/// A small HTTP/1.1 server on `[::]:port` in a backend's namespace that answers every request
/// with its name (keep-alive unless the client asks to close). It can be stopped and started
/// again (the port then refuses connections) and told to answer with another status.
pub struct HttpServer {
    ns: String,
    name: String,
    port: u16,
    status: Arc<std::sync::atomic::AtomicU16>,
    running: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
}

impl HttpServer {
    pub fn start(ns: &str, name: &str, port: u16) -> Result<HttpServer> {
        let mut s = HttpServer {
            ns: ns.to_owned(),
            name: name.to_owned(),
            port,
            status: Arc::new(std::sync::atomic::AtomicU16::new(200)),
            running: None,
        };
        s.resume()?;
        Ok(s)
    }

    /// The name it answers with (its backend's).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Answers every following request with `status`.
    pub fn set_status(&self, status: u16) {
        self.status.store(status, Ordering::Relaxed);
    }

    /// Closes the listening socket: new connections are refused. Connections already open
    /// keep being served.
    pub fn stop(&mut self) {
        if let Some((stop, thread)) = self.running.take() {
            stop.store(true, Ordering::Relaxed);
            let _ = thread.join();
        }
    }

    /// Listens again after [`HttpServer::stop`].
    pub fn resume(&mut self) -> Result<()> {
        if self.running.is_some() {
            return Ok(());
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (name, port, status, flag) = (self.name.clone(), self.port, self.status.clone(), stop.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = spawn_in_netns(&self.ns, move || {
            let listener = match TcpListener::bind(("::", port)) {
                Ok(l) => l,
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            };
            listener.set_nonblocking(true).expect("nonblocking");
            let _ = tx.send(Ok(()));
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (name, status) = (name.clone(), status.clone());
                        std::thread::spawn(move || serve_http(conn, &name, &status));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        })?;
        rx.recv()?.map_err(|e| anyhow::anyhow!("HTTP server in {}: {e}", self.ns))?;
        self.running = Some((stop, thread));
        Ok(())
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve_http(conn: TcpStream, name: &str, status: &std::sync::atomic::AtomicU16) {
    use std::io::BufRead as _;
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(mut writer) = conn.try_clone() else { return };
    let mut reader = std::io::BufReader::new(conn);
    loop {
        let mut close = false;
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        // Headers up to the blank line.
        loop {
            let mut header = String::new();
            match reader.read_line(&mut header) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if header.trim().is_empty() {
                break;
            }
            if header.to_ascii_lowercase().starts_with("connection:") && header.to_ascii_lowercase().contains("close") {
                close = true;
            }
        }
        let code = status.load(Ordering::Relaxed);
        let body = format!("{name}\n");
        let reply = format!(
            "HTTP/1.1 {code} {}\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n{body}",
            if code == 200 { "OK" } else { "Status" },
            body.len(),
            if close { "close" } else { "keep-alive" }
        );
        if writer.write_all(reply.as_bytes()).is_err() || close {
            return;
        }
    }
}

/// One HTTP/1.1 response: status and body.
fn read_response(reader: &mut impl std::io::BufRead) -> Result<(u16, String)> {
    let mut status_line = String::new();
    if reader.read_line(&mut status_line)? == 0 {
        bail!("connection closed before a response");
    }
    let code: u16 = status_line.split_whitespace().nth(1).and_then(|c| c.parse().ok()).with_context(|| format!("bad status line {status_line:?}"))?;
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 {
            bail!("connection closed in the headers");
        }
        if header.trim().is_empty() {
            break;
        }
        if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse()?;
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    Ok((code, String::from_utf8_lossy(&body).trim().to_owned()))
}

/// A new connection, one `GET /` with `Connection: close`: the answering backend's name, or
/// an error for anything but a 200.
pub fn http_get(target: SocketAddr, timeout: Duration) -> Result<String> {
    let mut conn = TcpStream::connect_timeout(&target, timeout)?;
    conn.set_read_timeout(Some(timeout))?;
    conn.write_all(b"GET / HTTP/1.1\r\nHost: xlb\r\nConnection: close\r\n\r\n")?;
    let (code, body) = read_response(&mut std::io::BufReader::new(conn))?;
    if code != 200 {
        bail!("HTTP {code} from {body}");
    }
    Ok(body)
}

/// A long-lived keep-alive HTTP connection.
pub struct KeepAlive {
    reader: std::io::BufReader<TcpStream>,
    writer: TcpStream,
}

impl KeepAlive {
    /// Connects (call it inside the client's namespace).
    pub fn connect(target: SocketAddr) -> Result<KeepAlive> {
        let conn = TcpStream::connect_timeout(&target, Duration::from_secs(3))?;
        conn.set_read_timeout(Some(Duration::from_secs(3)))?;
        let writer = conn.try_clone()?;
        Ok(KeepAlive { reader: std::io::BufReader::new(conn), writer })
    }

    /// One request on the connection; the answering backend's name.
    pub fn get(&mut self) -> Result<String> {
        self.writer.write_all(b"GET / HTTP/1.1\r\nHost: xlb\r\n\r\n")?;
        let (code, body) = read_response(&mut self.reader)?;
        if code != 200 {
            bail!("HTTP {code} from {body}");
        }
        Ok(body)
    }

    /// Ends the connection with a RST instead of a FIN (SO_LINGER 0, then close); dropping a
    /// `KeepAlive` closes it normally.
    pub fn reset(self) -> Result<()> {
        let linger = libc::linger { l_onoff: 1, l_linger: 0 };
        nix::sys::socket::setsockopt(&self.writer, nix::sys::socket::sockopt::Linger, &linger)?;
        Ok(())
    }
}

/// Long-lived keep-alive connections, each with the backend that answered its first request:
/// what must not move when the load balancer restarts, is edited or fails over.
pub struct HeldConnections {
    conns: Vec<(KeepAlive, String)>,
}

/// What became of [`HeldConnections`] when asked again.
#[derive(Clone, Debug, Default)]
pub struct Held {
    /// Answered by the backend they started on.
    pub kept: usize,
    /// Answered by another backend: (first, now).
    pub moved: Vec<(String, String)>,
    /// Failed (reset, timeout): (first backend, error).
    pub broken: Vec<(String, String)>,
}

impl Held {
    /// Connections that started on `backend` and did not keep it.
    pub fn lost_by(&self, backend: &str) -> usize {
        self.moved.iter().filter(|(first, _)| first == backend).count()
            + self.broken.iter().filter(|(first, _)| first == backend).count()
    }
}

impl HeldConnections {
    /// Opens `count` connections to `target` from namespace `ns` and sends one request on each.
    pub fn open(ns: &str, target: SocketAddr, count: usize) -> Result<HeldConnections> {
        Self::open_from(ns, target, count, None)
    }

    /// [`HeldConnections::open`] from a thread on `cpu`. In the lab a frame is carried through
    /// the veths and the bridge on the CPU that sent it, so the node's XDP program sees these
    /// connections' handshakes on `cpu`, and records their flows in that CPU's LRU list.
    pub fn open_on(ns: &str, target: SocketAddr, count: usize, cpu: usize) -> Result<HeldConnections> {
        Self::open_from(ns, target, count, Some(cpu))
    }

    fn open_from(ns: &str, target: SocketAddr, count: usize, cpu: Option<usize>) -> Result<HeldConnections> {
        let conns = crate::in_netns(ns, || -> Result<Vec<(KeepAlive, String)>> {
            if let Some(cpu) = cpu {
                crate::flood::pin_self(cpu);
            }
            (0..count)
                .map(|i| {
                    let mut c = KeepAlive::connect(target).with_context(|| format!("connection {i} to {target}"))?;
                    let name = c.get().with_context(|| format!("first request on connection {i}"))?;
                    Ok((c, name))
                })
                .collect()
        })??;
        Ok(HeldConnections { conns })
    }

    /// Each connection's own (client) address and the backend that answered it first.
    pub fn flows(&self) -> Result<Vec<(SocketAddr, String)>> {
        Ok(self.local_addrs()?.into_iter().zip(self.conns.iter().map(|(_, name)| name.clone())).collect())
    }

    /// How many connections each backend holds.
    pub fn tally(&self) -> Tally {
        let mut tally = Tally::new();
        for (_, name) in &self.conns {
            *tally.entry(name.clone()).or_default() += 1;
        }
        tally
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// Takes out the connections that started on `backend`.
    pub fn take(&mut self, backend: &str) -> Vec<KeepAlive> {
        let (taken, kept) = std::mem::take(&mut self.conns).into_iter().partition(|(_, first)| first == backend);
        self.conns = kept;
        taken.into_iter().map(|(conn, _)| conn).collect()
    }

    /// Each connection's own (client) address: with the target, its flow's 5-tuple.
    pub fn local_addrs(&self) -> Result<Vec<SocketAddr>> {
        Ok(self.conns.iter().map(|(c, _)| c.writer.local_addr()).collect::<std::io::Result<_>>()?)
    }

    /// How long a request waits for its answer (3 s unless set): longer where the lab is
    /// overloaded on purpose and a slow answer is not what the test looks for.
    pub fn set_read_timeout(&self, timeout: Duration) -> Result<()> {
        for (conn, _) in &self.conns {
            conn.writer.set_read_timeout(Some(timeout))?;
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// One more request on every connection.
    pub fn check(&mut self) -> Held {
        let mut held = Held::default();
        for (conn, first) in &mut self.conns {
            match conn.get() {
                Ok(name) if name == *first => held.kept += 1,
                Ok(name) => held.moved.push((first.clone(), name)),
                Err(e) => held.broken.push((first.clone(), format!("{e:#}"))),
            }
        }
        held
    }
}

/// [`HeldConnections`] talking all the time: every live connection sends a request every
/// `every` (its backend answers with its name) until [`Chatter::finish`]. A connection that
/// fails or is answered by another backend is counted and left alone from then on.
pub struct Chatter {
    stop: Arc<AtomicBool>,
    /// What became of the connections so far, and the exchanges made.
    seen: Arc<std::sync::Mutex<(Held, usize)>>,
    thread: Option<JoinHandle<()>>,
}

impl HeldConnections {
    pub fn chatter(self, every: Duration) -> Chatter {
        self.chatter_from(every, None)
    }

    /// [`HeldConnections::chatter`] from a thread on `cpu` (see [`HeldConnections::open_on`]).
    pub fn chatter_on(self, every: Duration, cpu: usize) -> Chatter {
        self.chatter_from(every, Some(cpu))
    }

    fn chatter_from(mut self, every: Duration, cpu: Option<usize>) -> Chatter {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(std::sync::Mutex::new((Held { kept: self.conns.len(), ..Held::default() }, 0)));
        let (flag, shared) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            if let Some(cpu) = cpu {
                crate::flood::pin_self(cpu);
            }
            let mut live = vec![true; self.conns.len()];
            while !flag.load(Ordering::Relaxed) {
                let round = std::time::Instant::now();
                for ((conn, first), live) in self.conns.iter_mut().zip(&mut live) {
                    if !*live {
                        continue;
                    }
                    let outcome = conn.get();
                    let mut seen = shared.lock().expect("not poisoned");
                    seen.1 += 1;
                    let (held, _) = &mut *seen;
                    match outcome {
                        Ok(name) if name == *first => continue,
                        Ok(name) => held.moved.push((first.clone(), name)),
                        Err(e) => held.broken.push((first.clone(), format!("{e:#}"))),
                    }
                    held.kept -= 1;
                    *live = false;
                }
                std::thread::sleep(every.saturating_sub(round.elapsed()));
            }
        });
        Chatter { stop, seen, thread: Some(thread) }
    }
}

impl Chatter {
    /// What became of the connections so far, and how many exchanges were made.
    pub fn snapshot(&self) -> (Held, usize) {
        self.seen.lock().expect("not poisoned").clone()
    }

    /// Stops; what became of the connections, and how many exchanges were made.
    pub fn finish(mut self) -> (Held, usize) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.snapshot()
    }
}

impl Drop for Chatter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A client that sends HTTP requests to a target without pause, each on a new connection,
/// and records when each one ended and how.
pub struct Hammer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<Outcome>>>,
}

/// When a request ended, and its answer (the backend's name) or what went wrong.
pub type Outcome = (std::time::Instant, Result<String, String>);

impl Hammer {
    pub fn start(ns: &str, target: SocketAddr) -> Result<Hammer> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = spawn_in_netns(ns, move || {
            let mut log = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                let result = http_get(target, Duration::from_millis(500)).map_err(|e| format!("{e:#}"));
                log.push((std::time::Instant::now(), result));
            }
            log
        })?;
        Ok(Hammer { stop, thread: Some(thread) })
    }

    /// Stops and returns every request's end time and result.
    pub fn finish(mut self) -> Vec<(std::time::Instant, Result<String, String>)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().map(|t| t.join().unwrap_or_default()).unwrap_or_default()
    }
}

impl Drop for Hammer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `count` HTTP requests to `target`, each on a new connection; who answered how often.
pub fn http_requests(target: SocketAddr, count: usize) -> Result<Tally> {
    let mut tally = Tally::new();
    for i in 0..count {
        let name = http_get(target, Duration::from_secs(3)).with_context(|| format!("request {i} to {target}"))?;
        *tally.entry(name).or_default() += 1;
    }
    Ok(tally)
}
