use super::*;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;

const T: Duration = Duration::from_millis(200);

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A port on 127.0.0.1 where nothing listens.
async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind(localhost()).await.unwrap();
    l.local_addr().unwrap()
}

/// A listener that accepts and holds every connection without a word.
async fn silent_listener() -> SocketAddr {
    let l = TcpListener::bind(localhost()).await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    addr
}

/// An HTTP server answering every request with `response` (sent in pieces of `piece`
/// bytes, to exercise reassembly) and then closing; records the requests it read.
async fn http_server(response: &'static [u8], piece: usize) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind(localhost()).await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                log.lock().unwrap().push(String::from_utf8_lossy(&req).into_owned());
                for part in response.chunks(piece) {
                    if s.write_all(part).await.is_err() {
                        return;
                    }
                    s.flush().await.ok();
                    tokio::task::yield_now().await;
                }
                let _ = s.shutdown().await;
            });
        }
    });
    (addr, seen)
}

fn expect_body(text: &str) -> HttpCheck {
    HttpCheck { expect_body: Some(text.into()), ..HttpCheck::new("/health") }
}

fn failed(r: Reason) -> Outcome {
    Outcome::Failed(r)
}

// --- TCP ---

#[tokio::test]
async fn tcp_connect_passes_when_something_listens() {
    let addr = silent_listener().await;
    assert_eq!(tcp_connect(addr, T).await, Outcome::Ok);
}

#[tokio::test]
async fn tcp_connect_to_a_closed_port_is_refused() {
    let outcome = tcp_connect(closed_port().await, T).await;
    assert_eq!(outcome, failed(Reason::ConnectRefused));
    assert_eq!(outcome.to_string(), "connect refused");
}

#[tokio::test]
async fn tcp_connect_times_out_when_syns_go_unanswered() {
    // A listener that never accepts, with a backlog of 1: once its accept queue is full
    // the kernel drops further SYNs, and the handshake never completes.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(localhost()).unwrap();
    let addr = socket.local_addr().unwrap();
    let _listener = socket.listen(1).unwrap();
    let mut outcomes = Vec::new();
    for _ in 0..8 {
        let o = tcp_connect(addr, T).await;
        if o == failed(Reason::Timeout(T)) {
            assert_eq!(o.to_string(), "timeout after 200 ms");
            return;
        }
        outcomes.push(o);
    }
    panic!("no timeout: {outcomes:?}");
}

// --- HTTP ---

#[test]
fn http_check_accepts_statuses_and_validates() {
    let c = HttpCheck::new("/");
    assert!(c.accepts(200) && c.accepts(204) && !c.accepts(302) && !c.accepts(503));
    let c = HttpCheck { expect_status: vec![(200, 200), (300, 399)], ..HttpCheck::new("/") };
    assert!(c.accepts(200) && c.accepts(302) && !c.accepts(204));
    assert!(HttpCheck::new("/healthz?full=1").validate().is_ok());
    assert!(HttpCheck::new("healthz").validate().is_err());
    assert!(HttpCheck::new("/a b").validate().is_err());
    assert!(HttpCheck::new("/a\r\nX: y").validate().is_err());
    assert!(HttpCheck { host: Some("a b".into()), ..HttpCheck::new("/") }.validate().is_err());
    assert!(HttpCheck { expect_status: vec![(300, 200)], ..HttpCheck::new("/") }.validate().is_err());
}

#[test]
fn status_lines_parse() {
    assert_eq!(parse_status_line(b"HTTP/1.1 200 OK").unwrap(), 200);
    assert_eq!(parse_status_line(b"HTTP/1.0 503 Service Unavailable").unwrap(), 503);
    assert_eq!(parse_status_line(b"HTTP/1.1 204").unwrap(), 204);
    assert!(parse_status_line(b"SSH-2.0-OpenSSH_9.2").is_err());
    assert!(parse_status_line(b"HTTP/1.1 2000 OK").is_err());
    assert!(parse_status_line(b"HTTP/1.1 099 x").is_err());
}

#[tokio::test]
async fn http_200_passes_and_the_request_is_minimal_http_1_1() {
    let (addr, seen) = http_server(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 1024).await;
    assert_eq!(http_get(addr, &HttpCheck::new("/health"), T).await, Outcome::Ok);
    let req = seen.lock().unwrap()[0].clone();
    assert!(req.starts_with("GET /health HTTP/1.1\r\n"), "{req}");
    assert!(req.contains(&format!("\r\nHost: 127.0.0.1:{}\r\n", addr.port())), "{req}");
    assert!(req.contains("\r\nConnection: close\r\n"), "{req}");
    assert!(req.contains("\r\nUser-Agent: xlb-health-check\r\n"), "{req}");
}

#[tokio::test]
async fn http_host_header_is_the_configured_one() {
    let (addr, seen) = http_server(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 1024).await;
    let check = HttpCheck { host: Some("www.example.com".into()), ..HttpCheck::new("/") };
    assert_eq!(http_get(addr, &check, T).await, Outcome::Ok);
    assert!(seen.lock().unwrap()[0].contains("\r\nHost: www.example.com\r\n"));
}

#[test]
fn http_host_header_of_an_ipv6_target_is_bracketed() {
    let addr: SocketAddr = "[2001:db8::7]:8080".parse().unwrap();
    assert!(HttpCheck::new("/").request(addr).contains("\r\nHost: [2001:db8::7]:8080\r\n"));
}

#[tokio::test]
async fn http_503_fails_with_the_status() {
    let (addr, _) = http_server(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n", 1024).await;
    let outcome = http_get(addr, &HttpCheck::new("/"), T).await;
    assert_eq!(outcome, failed(Reason::HttpStatus(503)));
    assert_eq!(outcome.to_string(), "HTTP 503");
}

#[tokio::test]
async fn http_status_ranges_are_honoured() {
    let (addr, _) = http_server(b"HTTP/1.1 302 Found\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n", 1024).await;
    assert_eq!(http_get(addr, &HttpCheck::new("/"), T).await, failed(Reason::HttpStatus(302)));
    let check = HttpCheck { expect_status: vec![(200, 399)], ..HttpCheck::new("/") };
    assert_eq!(http_get(addr, &check, T).await, Outcome::Ok);
}

#[tokio::test]
async fn http_body_with_the_text_passes_without_it_fails() {
    let (addr, _) = http_server(b"HTTP/1.1 200 OK\r\nContent-Length: 16\r\n\r\n{\"status\":\"ok\"}\n", 5).await;
    assert_eq!(http_get(addr, &expect_body("\"ok\""), T).await, Outcome::Ok);
    let outcome = http_get(addr, &expect_body("ready"), T).await;
    assert_eq!(outcome, failed(Reason::BodyMissing("ready".into())));
    assert_eq!(outcome.to_string(), "body does not contain \"ready\"");
}

#[tokio::test]
async fn http_body_without_length_is_read_to_the_end() {
    let (addr, _) = http_server(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nall systems ok\n", 3).await;
    assert_eq!(http_get(addr, &expect_body("ok"), T).await, Outcome::Ok);
    assert_eq!(http_get(addr, &expect_body("fail"), T).await, failed(Reason::BodyMissing("fail".into())));
}

#[tokio::test]
async fn http_chunked_body_is_decoded() {
    // "healthy" is split across two chunks; the chunk sizes must not be taken for data.
    let response = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\nheal\r\n3\r\nthy\r\n0\r\n\r\n";
    let (addr, _) = http_server(response, 2).await;
    assert_eq!(http_get(addr, &expect_body("healthy"), T).await, Outcome::Ok);
    assert_eq!(http_get(addr, &expect_body("4\r\nheal"), T).await, failed(Reason::BodyMissing("4\r\nheal".into())));
}

#[tokio::test]
async fn http_body_beyond_the_cap_is_not_searched() {
    let mut response = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", HTTP_BODY_CAP + 10).into_bytes();
    response.extend(std::iter::repeat_n(b'x', HTTP_BODY_CAP - 2));
    response.extend_from_slice(b"NEEDLE====");
    let response: &'static [u8] = Box::leak(response.into_boxed_slice());
    let (addr, _) = http_server(response, 4096).await;
    assert_eq!(http_get(addr, &expect_body("NE"), T).await, Outcome::Ok);
    assert_eq!(http_get(addr, &expect_body("NEEDLE"), T).await, failed(Reason::BodyMissing("NEEDLE".into())));
}

/// `bytes` as a stream that hands out `piece` bytes a read.
fn in_pieces(bytes: &'static [u8], piece: usize) -> Box<dyn AsyncRead + Unpin + Send> {
    bytes.chunks(piece).fold(Box::new(tokio::io::empty()), |stream, p| Box::new(stream.chain(p)))
}

#[tokio::test]
async fn http_verdict_does_not_depend_on_how_reads_cut_the_response() {
    // Found by fuzz/fuzz_targets/http_response.rs: a line longer than its cap passed when its
    // end came in the same read (a chunk's data followed by more than its CRLF; a status line
    // past HTTP_HEAD_CAP) and failed when it did not.
    let chunk_overrun: &'static [u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nthy=1\r\n0\r\n\r\n";
    let long_status = format!("HTTP/1.1 200 {}\r\n\r\n", "x".repeat(HTTP_HEAD_CAP)).into_bytes();
    let long_status: &'static [u8] = Box::leak(long_status.into_boxed_slice());
    for (response, check, piece) in [(chunk_overrun, expect_body("thy"), 1), (long_status, HttpCheck::new("/"), 1000)] {
        let whole = read_response(response, &check).await;
        assert_eq!(whole, read_response(in_pieces(response, piece), &check).await);
        assert_eq!(whole, Err(bad("line too long")));
    }
}

#[tokio::test]
async fn http_interim_responses_are_skipped() {
    let response =
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 503 No\r\nContent-Length: 0\r\n\r\n";
    let (addr, _) = http_server(response, 1024).await;
    assert_eq!(http_get(addr, &HttpCheck::new("/"), T).await, failed(Reason::HttpStatus(503)));
}

#[tokio::test]
async fn http_without_an_answer_times_out() {
    let addr = silent_listener().await;
    let started = std::time::Instant::now();
    let outcome = http_get(addr, &HttpCheck::new("/"), T).await;
    assert_eq!(outcome, failed(Reason::Timeout(T)));
    assert_eq!(outcome.to_string(), "timeout after 200 ms");
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn http_refused_and_garbage_and_empty_replies_fail_readably() {
    assert_eq!(http_get(closed_port().await, &HttpCheck::new("/"), T).await, failed(Reason::ConnectRefused));
    let (addr, _) = http_server(b"SSH-2.0-OpenSSH_9.2\r\n", 1024).await;
    assert_eq!(
        http_get(addr, &HttpCheck::new("/"), T).await.to_string(),
        "bad HTTP response: status line \"SSH-2.0-OpenSSH_9.2\""
    );
    let (addr, _) = http_server(b"", 1024).await;
    assert_eq!(
        http_get(addr, &HttpCheck::new("/"), T).await.to_string(),
        "bad HTTP response: connection closed without a response"
    );
    let (addr, _) = http_server(b"HTTP/1.1 200 OK\r\nServer: x", 1024).await;
    assert_eq!(
        http_get(addr, &HttpCheck::new("/"), T).await.to_string(),
        "bad HTTP response: connection closed in the response header"
    );
}

#[tokio::test]
async fn http_invalid_check_is_refused_without_connecting() {
    let outcome = http_get(closed_port().await, &HttpCheck::new("no-slash"), T).await;
    assert!(matches!(outcome, Outcome::Failed(Reason::InvalidCheck(_))), "{outcome:?}");
}

// --- UDP ---

/// A UDP socket that answers every datagram with `prefix` + the datagram.
async fn udp_echo(prefix: &'static [u8]) -> SocketAddr {
    let s = UdpSocket::bind(localhost()).await.unwrap();
    let addr = s.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = s.recv_from(&mut buf).await {
            let reply = [prefix, &buf[..n]].concat();
            let _ = s.send_to(&reply, from).await;
        }
    });
    addr
}

#[tokio::test]
async fn udp_reply_passes_and_expectation_is_a_substring() {
    let addr = udp_echo(b"PONG ").await;
    assert_eq!(udp_exchange(addr, b"ping", None, T).await, Outcome::Ok);
    assert_eq!(udp_exchange(addr, b"ping", Some(b"PONG"), T).await, Outcome::Ok);
    assert_eq!(udp_exchange(addr, b"ping", Some(b"ping"), T).await, Outcome::Ok, "contained, not a prefix");
    let outcome = udp_exchange(addr, b"ping", Some(b"READY"), T).await;
    assert_eq!(outcome, failed(Reason::UnexpectedUdpReply));
}

#[tokio::test]
async fn udp_to_a_closed_port_is_unreachable() {
    let s = UdpSocket::bind(localhost()).await.unwrap();
    let addr = s.local_addr().unwrap();
    drop(s);
    let outcome = udp_exchange(addr, b"ping", None, T).await;
    assert_eq!(outcome, failed(Reason::UdpUnreachable));
    assert_eq!(outcome.to_string(), "UDP port unreachable");
}

#[tokio::test]
async fn udp_without_a_reply_fails_at_the_timeout() {
    let silent = UdpSocket::bind(localhost()).await.unwrap();
    let started = std::time::Instant::now();
    let outcome = udp_exchange(silent.local_addr().unwrap(), b"ping", None, T).await;
    assert_eq!(outcome, failed(Reason::NoUdpReply));
    assert_eq!(outcome.to_string(), "no UDP reply");
    assert!(started.elapsed() >= T && started.elapsed() < Duration::from_secs(1));
}

// --- Scripts ---

fn argv(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

fn target() -> SocketAddr {
    "127.0.0.1:8080".parse().unwrap()
}

#[tokio::test]
async fn script_exit_status_decides() {
    assert_eq!(script(&argv(&["true"]), target(), T).await, Outcome::Ok);
    let outcome = script(&argv(&["false"]), target(), T).await;
    assert_eq!(outcome, failed(Reason::ScriptExit(1)));
    assert_eq!(outcome.to_string(), "script exit 1");
    let outcome = script(&argv(&["sh", "-c", "exit 2"]), target(), T).await;
    assert_eq!(outcome.to_string(), "script exit 2");
}

#[tokio::test]
async fn script_killed_by_a_signal_says_which() {
    let outcome = script(&argv(&["sh", "-c", "kill -9 $$"]), target(), T).await;
    assert_eq!(outcome, failed(Reason::ScriptSignal(9)));
    assert_eq!(outcome.to_string(), "script killed by signal 9");
}

#[tokio::test]
async fn script_gets_the_backend_in_its_environment() {
    let test = r#"test "$XLB_BACKEND_ADDRESS" = 127.0.0.1 && test "$XLB_BACKEND_PORT" = 8080"#;
    assert_eq!(script(&argv(&["sh", "-c", test]), target(), T).await, Outcome::Ok);
    let v6: SocketAddr = "[2001:db8::1]:53".parse().unwrap();
    let test = r#"test "$XLB_BACKEND_ADDRESS" = 2001:db8::1 && test "$XLB_BACKEND_PORT" = 53"#;
    assert_eq!(script(&argv(&["sh", "-c", test]), v6, T).await, Outcome::Ok);
}

#[tokio::test]
async fn script_past_its_timeout_is_killed() {
    let started = std::time::Instant::now();
    let outcome = script(&argv(&["sleep", "5"]), target(), T).await;
    assert_eq!(outcome, failed(Reason::Timeout(T)));
    assert_eq!(outcome.to_string(), "timeout after 200 ms");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
}

/// Whether process `pid` is gone (or a zombie awaiting its reaper).
fn dead(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

#[tokio::test]
async fn script_timeout_kills_the_scripts_children_too() {
    let dir = std::env::temp_dir().join(format!("xlb-health-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pidfile = dir.join("child.pid");
    let cmd = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
    let outcome = script(&argv(&["sh", "-c", &cmd]), target(), T).await;
    assert_eq!(outcome, failed(Reason::Timeout(T)));
    let pid = std::fs::read_to_string(&pidfile).unwrap();
    let pid = pid.trim();
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while !dead(pid) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(dead(pid), "the script's child {pid} survived the timeout");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn script_that_cannot_start_says_why() {
    let outcome = script(&argv(&["/nonexistent/check.sh"]), target(), T).await;
    let text = outcome.to_string();
    assert!(text.starts_with("cannot run /nonexistent/check.sh: "), "{text}");
    assert_eq!(script(&[], target(), T).await, failed(Reason::InvalidCheck("empty command".into())));
}
