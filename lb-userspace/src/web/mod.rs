//! The read-only HTTP listener (`[agent] http`): `/metrics` (Prometheus), `/status.json` (what
//! `xlb stats --json` prints), `/history.json` (rates of the last minutes) and the status page
//! (`/`, with its script and style, served from the binary: it needs nothing from outside).
//!
//! Nothing here changes anything: every route is a GET. Requests run on the agent's runtime
//! but never on its loop: they fill the last [`View`] the agent published with counters read
//! through their own handles on the pinned maps, on a blocking thread.

pub mod history;
pub mod metrics;

use std::{
    convert::Infallible,
    net::SocketAddr,
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use http_body_util::Full;
use hyper::{
    body::{Bytes, Incoming},
    header, Method, Request, Response, StatusCode,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use tracing::{info, warn};

use crate::{
    control::Status,
    dataplane::{DataplaneError, PinnedCounters},
    health::Durations,
    view::View,
};
use history::History;

/// How long a client may take to send its request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

const PAGE: &str = include_str!("page/index.html");
const SCRIPT: &str = include_str!("page/app.js");
const STYLE: &str = include_str!("page/style.css");

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("http listener on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("http listener: {0}")]
    Maps(#[from] DataplaneError),
}

/// What the routes read.
pub struct Web {
    view: watch::Receiver<Arc<View>>,
    counters: PinnedCounters,
    history: Mutex<History>,
}

impl Web {
    /// The status now: the published view, filled.
    pub fn status(&self) -> Result<Status, DataplaneError> {
        self.filled().map(|(_, status)| status)
    }

    /// The last published view, and the status it fills to now.
    fn filled(&self) -> Result<(Arc<View>, Status), DataplaneError> {
        let view = self.view.borrow().clone();
        let status = view.fill(&self.counters)?;
        Ok((view, status))
    }

    /// The status and each service's health-check durations, for a scrape.
    fn scrape(&self) -> Result<metrics::Scrape, DataplaneError> {
        let (view, status) = self.filled()?;
        let monitor = view.monitor.lock().map(|m| m.durations.clone()).unwrap_or_default();
        let durations = status
            .services
            .iter()
            .zip(&view.checks)
            .map(|(svc, checks)| {
                let mut d = Durations::default();
                for c in checks.iter().flatten() {
                    if let Some(one) = monitor.get(*c) {
                        d.merge(one);
                    }
                }
                (svc.name.clone(), d)
            })
            .collect();
        Ok(metrics::Scrape { status, durations })
    }
}

/// Serves on `addr` until the task is aborted; `pin_dir` holds the agent's pinned maps. The
/// listener is not forwarding: a failure to bind (the address in use, say) is logged and
/// tried again every 5 s, and a failed accept (no descriptor left) is logged and the
/// listener goes on.
pub fn start(addr: SocketAddr, view: watch::Receiver<Arc<View>>, pin_dir: &Path) -> JoinHandle<()> {
    let pin_dir = pin_dir.to_owned();
    tokio::spawn(async move {
        let mut last_error = String::new();
        let (listener, counters) = loop {
            let opened = async {
                let counters = PinnedCounters::open(&pin_dir)?;
                let listener = TcpListener::bind(addr).await.map_err(|source| WebError::Bind { addr, source })?;
                Ok::<_, WebError>((listener, counters))
            };
            match opened.await {
                Ok(ok) => break ok,
                Err(e) => {
                    if e.to_string() != last_error {
                        warn!("{e}; trying again every 5 s");
                        last_error = e.to_string();
                    }
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
        };
        let web = Arc::new(Web { view, counters, history: Mutex::new(History::default()) });
        info!("http listener on http://{addr}/ (status page, /metrics, /status.json)");
        let _sampler = AbortOnDrop(history::sample(web.clone()));
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    warn!("http listener: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let web = web.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| respond(web.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

/// Aborts the task when dropped (the sampler ends with the listener).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    let headers = r.headers_mut();
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    headers.insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, header::HeaderValue::from_static("nosniff"));
    r
}

/// Runs `f` on a blocking thread (it reads maps), as a response.
async fn blocking(web: Arc<Web>, f: fn(&Web) -> Result<(String, &'static str), String>) -> Response<Full<Bytes>> {
    match tokio::task::spawn_blocking(move || f(&web)).await {
        Ok(Ok((body, content_type))) => reply(StatusCode::OK, content_type, body),
        Ok(Err(e)) => reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain; charset=utf-8", e),
        Err(e) => reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain; charset=utf-8", e.to_string()),
    }
}

async fn respond(web: Arc<Web>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain; charset=utf-8", "read-only: GET only\n");
        r.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return Ok(r);
    }
    Ok(match req.uri().path() {
        "/" | "/index.html" => reply(StatusCode::OK, "text/html; charset=utf-8", PAGE),
        "/app.js" => reply(StatusCode::OK, "text/javascript; charset=utf-8", SCRIPT),
        "/style.css" => reply(StatusCode::OK, "text/css; charset=utf-8", STYLE),
        "/metrics" => {
            blocking(web, |w| {
                let scrape = w.scrape().map_err(|e| e.to_string())?;
                Ok((metrics::render(scrape).map_err(|e| e.to_string())?, metrics::CONTENT_TYPE))
            })
            .await
        }
        "/status.json" => {
            blocking(web, |w| {
                let status = w.status().map_err(|e| e.to_string())?;
                Ok((serde_json::to_string(&status).map_err(|e| e.to_string())?, "application/json"))
            })
            .await
        }
        "/history.json" => {
            let history = web.history.lock().map(|h| h.to_json()).unwrap_or_default();
            reply(StatusCode::OK, "application/json", history)
        }
        _ => reply(StatusCode::NOT_FOUND, "text/plain; charset=utf-8", "not found\n"),
    })
}
