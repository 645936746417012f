//! The checks themselves: async probes from this node to a backend's own address.
//!
//! Each probe takes the target and a timeout that bounds the whole check (connect, request,
//! reply, or the script's run), and returns an [`Outcome`]; it never returns an error, since
//! every failure is a reason for the backend to be down. The probes bind nothing special
//! (an ephemeral port on the address the kernel picks): the caller aims them at the backend's
//! own address, never at a VIP, so neither they nor the replies go through the XDP program's
//! forwarding.
//!
//! | Probe | Passes when | keepalived / HAProxy |
//! |---|---|---|
//! | [`tcp_connect`] | the TCP handshake completes (the connection is then reset) | `TCP_CHECK` / `check` |
//! | [`http_get`] | `GET path` answers an accepted status (and the body contains the text) | `HTTP_GET` / `option httpchk` |
//! | [`udp_exchange`] | a datagram comes back (containing the expected bytes) | `UDP_CHECK` |
//! | [`script`] | the command exits 0 | `MISC_CHECK` |

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::unix::process::ExitStatusExt,
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, UdpSocket},
    time::{timeout as within, Instant},
};

use super::state::{Outcome, Reason};
use crate::script::{Ended, OnDrop, Script, ScriptError};

/// How much of an HTTP body [`http_get`] reads and searches.
pub const HTTP_BODY_CAP: usize = 64 * 1024;
/// The longest HTTP response header (status line and header fields) [`http_get`] accepts.
pub const HTTP_HEAD_CAP: usize = 16 * 1024;
/// The `User-Agent` of HTTP checks, so that backends can tell them from clients in their logs.
pub const HTTP_USER_AGENT: &str = "xlb-health-check";
/// Environment variables a script check receives: the backend's address and port.
pub const ENV_ADDRESS: &str = "XLB_BACKEND_ADDRESS";
pub const ENV_PORT: &str = "XLB_BACKEND_PORT";

/// Connects over TCP and closes at once with a reset (linger 0), as HAProxy's checks do: no
/// FIN exchange and no TIME_WAIT socket per check, which at 1000 checks a second would leave
/// some 60000 of them behind. Passes when the handshake completes.
pub async fn tcp_connect(addr: SocketAddr, timeout: Duration) -> Outcome {
    match within(timeout, TcpStream::connect(addr)).await {
        Err(_) => Outcome::Failed(Reason::Timeout(timeout)),
        Ok(Err(e)) => Outcome::Failed(Reason::from_io(&e, "connect")),
        Ok(Ok(stream)) => {
            // If the option cannot be set the close is an ordinary FIN: still a pass.
            let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
            Outcome::Ok
        }
    }
}

/// What an HTTP check asks for and accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpCheck {
    /// The request target: an absolute path, with query if any (`/healthz?full=1`).
    pub path: String,
    /// The `Host` header; `None` sends the target's `address:port` (`[v6]:port` for IPv6).
    pub host: Option<String>,
    /// Accepted statuses, as inclusive ranges (`(200, 200)`, `(200, 399)`); empty accepts any
    /// 2xx, as keepalived's `HTTP_GET` does without `status_code`.
    pub expect_status: Vec<(u16, u16)>,
    /// Text the body must contain, searched as bytes in its first [`HTTP_BODY_CAP`] bytes.
    pub expect_body: Option<String>,
}

impl HttpCheck {
    /// `GET path`, any 2xx, no body check.
    pub fn new(path: impl Into<String>) -> HttpCheck {
        HttpCheck { path: path.into(), host: None, expect_status: Vec::new(), expect_body: None }
    }

    /// Whether `status` is accepted.
    pub fn accepts(&self, status: u16) -> bool {
        if self.expect_status.is_empty() {
            return (200..=299).contains(&status);
        }
        self.expect_status.iter().any(|&(lo, hi)| (lo..=hi).contains(&status))
    }

    /// Whether the check can be sent as it is: a path starting with `/`, and no spaces or
    /// control characters in the path or host (they would break the request). For
    /// configuration validation; [`http_get`] fails a check that breaks this.
    pub fn validate(&self) -> Result<(), String> {
        let bad = |s: &str| s.chars().any(|c| c.is_whitespace() || c.is_control());
        if !self.path.starts_with('/') {
            return Err(format!("HTTP path {:?} does not start with /", self.path));
        }
        if bad(&self.path) {
            return Err(format!("HTTP path {:?} contains a space or control character", self.path));
        }
        if let Some(host) = &self.host {
            if host.is_empty() || bad(host) {
                return Err(format!("HTTP host {host:?} is empty or contains a space or control character"));
            }
        }
        for &(lo, hi) in &self.expect_status {
            if lo > hi || !(100..=599).contains(&lo) || !(100..=599).contains(&hi) {
                return Err(format!("HTTP status range {lo}-{hi} is not within 100-599 or is reversed"));
            }
        }
        Ok(())
    }

    /// The request bytes for target `addr`.
    fn request(&self, addr: SocketAddr) -> String {
        let host = self.host.clone().unwrap_or_else(|| addr.to_string());
        format!(
            "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {HTTP_USER_AGENT}\r\nAccept: */*\r\nConnection: close\r\n\r\n",
            self.path
        )
    }
}

/// Sends `GET check.path` over HTTP/1.1 (`Connection: close`) and judges the status, then
/// (only if `expect_body` is set) the body. The body is framed by `Content-Length`, chunked
/// transfer coding, or the end of the connection, and read up to [`HTTP_BODY_CAP`] bytes.
/// Interim 1xx responses are skipped.
pub async fn http_get(addr: SocketAddr, check: &HttpCheck, timeout: Duration) -> Outcome {
    if let Err(e) = check.validate() {
        return Outcome::Failed(Reason::InvalidCheck(e));
    }
    match within(timeout, http_exchange(addr, check)).await {
        Err(_) => Outcome::Failed(Reason::Timeout(timeout)),
        Ok(Ok(())) => Outcome::Ok,
        Ok(Err(reason)) => Outcome::Failed(reason),
    }
}

async fn http_exchange(addr: SocketAddr, check: &HttpCheck) -> Result<(), Reason> {
    let mut stream = TcpStream::connect(addr).await.map_err(|e| Reason::from_io(&e, "connect"))?;
    stream.write_all(check.request(addr).as_bytes()).await.map_err(|e| Reason::from_io(&e, "sending HTTP request"))?;
    read_response(stream, check).await
}

/// Reads a backend's HTTP response from `stream` and judges it as [`http_get`] does: the
/// status line and header fields (interim 1xx responses skipped), the status, then the body
/// if `expect_body` is set. The verdict depends only on the bytes, never on how the reads cut
/// them. Public for the fuzz target (fuzz/fuzz_targets/http_response.rs).
pub async fn read_response<S: AsyncRead + Unpin>(stream: S, check: &HttpCheck) -> Result<(), Reason> {
    let mut r = Reader { stream, buf: Vec::with_capacity(4096), start: 0, eof: false };
    let head = loop {
        let head = r.head().await?;
        // 1xx (100 Continue, 103 Early Hints) precede the real response; 101 would switch
        // protocols, which a GET without Upgrade never asks for.
        if !(100..=199).contains(&head.status) || head.status == 101 {
            break head;
        }
    };
    if !check.accepts(head.status) {
        return Err(Reason::HttpStatus(head.status));
    }
    // The body is read (up to the cap) even when not checked, so that the server, asked to
    // close, normally closes first: no reset for unread data, and its TIME_WAIT, not ours.
    let body = match head.framing {
        Framing::Chunked => r.chunked_body().await,
        Framing::Length(n) => r.body(Some(n)).await,
        Framing::UntilClose => r.body(None).await,
    };
    let Some(text) = &check.expect_body else { return Ok(()) };
    if contains(&body?, text.as_bytes()) {
        Ok(())
    } else {
        Err(Reason::BodyMissing(text.clone()))
    }
}

/// Whether `needle` occurs in `haystack` (an empty needle always does).
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

#[derive(Debug, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

#[derive(Debug)]
struct Head {
    status: u16,
    framing: Framing,
}

/// A buffered reader over the response: `buf[start..]` is read but not yet consumed.
struct Reader<S> {
    stream: S,
    buf: Vec<u8>,
    start: usize,
    eof: bool,
}

fn bad(msg: impl Into<String>) -> Reason {
    Reason::BadHttp(msg.into())
}

/// A short, printable excerpt of `bytes` for a reason.
fn excerpt(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(&bytes[..bytes.len().min(60)]);
    format!("{:?}", s.trim_end())
}

impl<S: AsyncRead + Unpin> Reader<S> {
    fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Reads more into the buffer; false at the end of the connection.
    async fn fill(&mut self) -> Result<bool, Reason> {
        if self.eof {
            return Ok(false);
        }
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).await.map_err(|e| Reason::from_io(&e, "reading HTTP response"))?;
        if n == 0 {
            self.eof = true;
            return Ok(false);
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(true)
    }

    /// Consumes one line (up to and including its `\n`) and returns it without `\r\n`; `None`
    /// at the end of the connection before a complete line. A line of more than `cap` bytes
    /// before its `\n` fails, whether its end came in the same read or not.
    async fn line(&mut self, cap: usize) -> Result<Option<Vec<u8>>, Reason> {
        loop {
            if let Some(i) = self.pending().iter().position(|&b| b == b'\n') {
                if i > cap {
                    return Err(bad("line too long"));
                }
                let mut line = self.pending()[..i].to_vec();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                self.start += i + 1;
                return Ok(Some(line));
            }
            if self.pending().len() > cap {
                return Err(bad("line too long"));
            }
            if !self.fill().await? {
                return Ok(None);
            }
        }
    }

    /// Reads a status line and header fields, up to the empty line.
    async fn head(&mut self) -> Result<Head, Reason> {
        let status_line = match self.line(HTTP_HEAD_CAP).await? {
            Some(l) => l,
            None if self.pending().is_empty() => return Err(bad("connection closed without a response")),
            None => return Err(bad(format!("no status line in {}", excerpt(self.pending())))),
        };
        let status = parse_status_line(&status_line)?;
        let mut length = None;
        let mut chunked = false;
        let mut size = status_line.len();
        loop {
            let Some(line) = self.line(HTTP_HEAD_CAP).await? else {
                return Err(bad("connection closed in the response header"));
            };
            if line.is_empty() {
                break;
            }
            size += line.len();
            if size > HTTP_HEAD_CAP {
                return Err(bad("response header too large"));
            }
            let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
            let name = String::from_utf8_lossy(&line[..colon]).trim().to_ascii_lowercase();
            let value = String::from_utf8_lossy(&line[colon + 1..]).trim().to_ascii_lowercase();
            match name.as_str() {
                "content-length" => {
                    let n = value.parse::<usize>().map_err(|_| bad(format!("Content-Length {value:?}")))?;
                    length = Some(n);
                }
                "transfer-encoding" => chunked = value.split(',').any(|c| c.trim() == "chunked"),
                _ => {}
            }
        }
        // Without a body by definition (RFC 9110): 1xx, 204, 304.
        let framing = if (100..=199).contains(&status) || status == 204 || status == 304 {
            Framing::Length(0)
        } else if chunked {
            Framing::Chunked
        } else if let Some(n) = length {
            Framing::Length(n)
        } else {
            Framing::UntilClose
        };
        Ok(Head { status, framing })
    }

    /// Reads up to `length` bytes (or to the end of the connection), at most
    /// [`HTTP_BODY_CAP`]. A body cut short is returned as it is.
    async fn body(&mut self, length: Option<usize>) -> Result<Vec<u8>, Reason> {
        let want = length.unwrap_or(usize::MAX).min(HTTP_BODY_CAP);
        while self.pending().len() < want && self.fill().await? {}
        let n = self.pending().len().min(want);
        Ok(self.pending()[..n].to_vec())
    }

    /// Decodes a chunked body, up to [`HTTP_BODY_CAP`] bytes of data. A body cut short is
    /// returned as far as it came.
    async fn chunked_body(&mut self) -> Result<Vec<u8>, Reason> {
        let mut body = Vec::new();
        while body.len() < HTTP_BODY_CAP {
            let Some(line) = self.line(1024).await? else { break };
            let text = String::from_utf8_lossy(&line);
            let digits = text.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(digits, 16).map_err(|_| bad(format!("chunk size {}", excerpt(&line))))?;
            if size == 0 {
                break;
            }
            let take = size.min(HTTP_BODY_CAP - body.len());
            while self.pending().len() < take && self.fill().await? {}
            let got = self.pending().len().min(take);
            body.extend_from_slice(&self.pending()[..got]);
            self.start += got;
            if got < size {
                break; // capped, or cut short
            }
            // The CRLF after the chunk's data.
            if self.line(2).await?.is_none() {
                break;
            }
        }
        Ok(body)
    }
}

/// `HTTP/1.1 200 OK` -> 200.
fn parse_status_line(line: &[u8]) -> Result<u16, Reason> {
    let text = String::from_utf8_lossy(line);
    let mut parts = text.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    let code = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/") || code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(format!("status line {}", excerpt(line))));
    }
    let status: u16 = code.parse().expect("three digits");
    if !(100..=599).contains(&status) {
        return Err(bad(format!("status line {}", excerpt(line))));
    }
    Ok(status)
}

/// Sends `payload` in one datagram from a connected UDP socket and waits for a reply until
/// the timeout.
///
/// With `expect` = `None` any datagram from the target passes (an empty one too). With
/// `Some(bytes)`, a datagram passes if it *contains* `bytes` anywhere (a prefix or the whole
/// reply are special cases); datagrams that do not are ignored and the wait goes on, so a
/// stray datagram does not fail the check. At the timeout the reason is
/// [`Reason::UnexpectedUdpReply`] if non-matching replies came, [`Reason::NoUdpReply`] if none
/// did. An ICMP port unreachable, which a connected socket reports as a refused connection,
/// fails at once with [`Reason::UdpUnreachable`].
///
/// A service that never answers (syslog, say) cannot be checked this way: every check would
/// end in "no UDP reply". Only an ICMP error tells such a backend is down.
pub async fn udp_exchange(addr: SocketAddr, payload: &[u8], expect: Option<&[u8]>, timeout: Duration) -> Outcome {
    let deadline = Instant::now() + timeout;
    let socket = match tokio::time::timeout_at(deadline, udp_send(addr, payload)).await {
        Err(_) => return Outcome::Failed(Reason::Timeout(timeout)),
        Ok(Err(reason)) => return Outcome::Failed(reason),
        Ok(Ok(socket)) => socket,
    };
    let mut buf = vec![0u8; 65536];
    let mut mismatched = false;
    loop {
        match tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await {
            Err(_) if mismatched => return Outcome::Failed(Reason::UnexpectedUdpReply),
            Err(_) => return Outcome::Failed(Reason::NoUdpReply),
            Ok(Err(e)) => return Outcome::Failed(udp_error(&e, "receiving UDP reply")),
            Ok(Ok(n)) => match expect {
                Some(want) if !contains(&buf[..n], want) => mismatched = true,
                _ => return Outcome::Ok,
            },
        }
    }
}

fn udp_error(e: &std::io::Error, doing: &str) -> Reason {
    match Reason::from_io(e, doing) {
        Reason::ConnectRefused => Reason::UdpUnreachable,
        other => other,
    }
}

async fn udp_send(addr: SocketAddr, payload: &[u8]) -> Result<UdpSocket, Reason> {
    let any: IpAddr = match addr {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = UdpSocket::bind((any, 0)).await.map_err(|e| Reason::from_io(&e, "binding UDP socket"))?;
    socket.connect(addr).await.map_err(|e| udp_error(&e, "connect"))?;
    socket.send(payload).await.map_err(|e| udp_error(&e, "sending UDP datagram"))?;
    Ok(socket)
}

/// Runs `argv` (no shell: pass `["sh", "-c", "..."]` for one) with the backend's address and
/// port in the environment as `XLB_BACKEND_ADDRESS` and `XLB_BACKEND_PORT`. Exit status 0
/// passes, as in keepalived's `MISC_CHECK`; any other fails with "script exit N", a death by
/// signal with "script killed by signal N".
///
/// The script runs as [`crate::script::run`] runs every script: in a process group of its own,
/// with stdin, stdout and stderr on /dev/null. At the timeout, or if the check is cancelled,
/// the whole group is killed (SIGKILL), children of the script included.
pub async fn script(argv: &[String], target: SocketAddr, timeout: Duration) -> Outcome {
    script_as(argv, None, target, timeout).await
}

/// [`script`] as `user` (the `script_user`), or as the agent when None.
pub async fn script_as(argv: &[String], user: Option<&str>, target: SocketAddr, timeout: Duration) -> Outcome {
    let env = [(ENV_ADDRESS, target.ip().to_string()), (ENV_PORT, target.port().to_string())];
    let run = crate::script::run(Script { argv, env: &env, timeout, user, on_drop: OnDrop::Kill }).await;
    let status = match run {
        Ok(Ended::Exited(status)) => status,
        Ok(Ended::TimedOut) => return Outcome::Failed(Reason::Timeout(timeout)),
        Err(ScriptError::Empty) => return Outcome::Failed(Reason::InvalidCheck("empty command".into())),
        Err(e @ ScriptError::Wait { .. }) => return Outcome::Failed(Reason::Io(e.to_string())),
        Err(e) => return Outcome::Failed(Reason::ScriptStart(e.to_string())),
    };
    match (status.code(), status.signal()) {
        (Some(0), _) => Outcome::Ok,
        (Some(code), _) => Outcome::Failed(Reason::ScriptExit(code)),
        (None, Some(sig)) => Outcome::Failed(Reason::ScriptSignal(sig)),
        (None, None) => Outcome::Failed(Reason::Io(format!("{}: {status}", argv[0]))),
    }
}

#[cfg(test)]
mod tests;
