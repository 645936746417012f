//! The agent's read-only HTTP listener (`[agent] http`) in the lab: the status page in a real
//! browser (Debian's chromium, driven through chromedriver over WebDriver), and `/metrics` and
//! `/status.json` checked against the lab and against `xlb stats --json`.
//!
//! The listener is on 127.0.0.1 inside the node's namespace, so the browser, chromedriver and
//! every request run there too. The browser is kept on that listener: every host name resolves
//! to nothing but 127.0.0.1 and any other address would go through a dead proxy.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _, Result};
use lb_common::status::Status;
use serde_json::{json, Value};
use xlb_tests::{
    in_netns, plan, privileged,
    scenario::{web4_config, Serve, SingleNode},
    traffic::Hammer,
};

/// The listener, inside the node's namespace.
const HTTP: &str = "127.0.0.1:9480";
/// chromedriver's port, inside the node's namespace.
const WEBDRIVER_PORT: u16 = 9515;

const INTERVAL: Duration = Duration::from_millis(300);
const TIMEOUT: Duration = Duration::from_millis(200);
const FALL: u32 = 3;
/// How often the page asks for /status.json (app.js).
const PAGE_POLL: Duration = Duration::from_secs(1);
/// Scheduling on a busy two-core machine, the agent publishing its view (every 250 ms at
/// most) and the listener answering: a /status.json that took 1.2 s was seen while another
/// lab flooded the same machine.
const MARGIN: Duration = Duration::from_millis(1500);

/// The backend the tests stop: b1.
const STOPPED: &str = "203.0.113.11";

/// The longest the agent may take to mark a stopped backend down: interval x fall + timeout.
fn detection_bound() -> Duration {
    INTERVAL * FALL + TIMEOUT
}

/// config/lab.toml's `[agent]` with the listener on, and `web4` over b1..b3 with an HTTP check
/// that notices a stopped server in about a second.
fn config() -> String {
    let text = web4_config(&[(11, 1), (12, 1), (13, 1)]);
    let text = text.replacen("[[service]]", &format!("http = \"{HTTP}\"\n\n[[service]]"), 1);
    format!(
        "{text}[service.check]\ntype = \"http\"\npath = \"/health\"\ninterval = \"{}ms\"\ntimeout = \"{}ms\"\nfall = {FALL}\nrise = 2\n",
        INTERVAL.as_millis(),
        TIMEOUT.as_millis()
    )
}

fn vip() -> SocketAddr {
    format!("{}:80", plan::VIP4).parse().expect("address")
}

/// One HTTP/1.1 request to the listener (call it in the node's namespace): status and body.
fn request(method: &str, path: &str) -> Result<(u16, String)> {
    let mut conn = TcpStream::connect_timeout(&HTTP.parse()?, Duration::from_secs(3)).with_context(|| format!("connecting to {HTTP}"))?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(conn, "{method} {path} HTTP/1.1\r\nHost: {HTTP}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw)?;
    let raw = String::from_utf8(raw).context("response is not UTF-8")?;
    let (head, body) = raw.split_once("\r\n\r\n").with_context(|| format!("no end of headers in {raw:?}"))?;
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).with_context(|| format!("bad status line in {head:?}"))?;
    Ok((code, body.to_owned()))
}

/// `GET path` in namespace `ns`, which must answer 200.
fn get(ns: &str, path: &str) -> Result<String> {
    let (code, body) = in_netns(ns, || request("GET", path))??;
    ensure!(code == 200, "GET {path}: HTTP {code}: {body}");
    Ok(body)
}

/// The lab with [`config`], its backends serving HTTP, once the listener answers (it binds
/// once the agent has pinned its maps).
fn start(tag: &str) -> Result<SingleNode> {
    let node = SingleNode::start_with(tag, &config(), Serve::Http)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match get(&node.lb.ns, "/status.json") {
            Ok(_) => return Ok(node),
            Err(e) if Instant::now() > deadline => bail!("no answer on {HTTP}: {e:#}\n{}", node.lab.log("xlb")),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// /metrics

/// The value of the sample `name{labels}` whose labels include every one of `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
        if metric != name || !labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))) {
            return None;
        }
        value.parse().ok()
    })
}

fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Result<f64> {
    sample(text, name, labels).with_context(|| format!("no {name} with {labels:?} in\n{text}"))
}

/// `promtool check metrics` on `text`: what it says (nothing when the exposition lints clean).
fn promtool(text: &str) -> Result<String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running promtool (Debian package prometheus; cargo xtask test installs it)")?;
    child.stdin.take().expect("piped").write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    ensure!(out.status.success() || !said.trim().is_empty(), "promtool failed ({}) saying nothing", out.status);
    Ok(if out.status.success() { String::new() } else { said })
}

/// Scrapes /metrics in `ns` until `done` holds; fails after `limit` with the last scrape.
fn scrape_until(ns: &str, limit: Duration, what: &str, done: impl Fn(&str) -> bool) -> Result<String> {
    let start = Instant::now();
    loop {
        let text = get(ns, "/metrics")?;
        if done(&text) {
            return Ok(text);
        }
        ensure!(start.elapsed() < limit, "/metrics did not show {what} within {limit:?}:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Counter families of an OpenMetrics exposition: `x` for `# TYPE x counter`, whose samples
/// are `x_total`.
fn counter_families(openmetrics: &str) -> Vec<&str> {
    openmetrics.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter")).collect()
}

/// The same metrics in Prometheus' classic text format (0.0.4), which `promtool check metrics`
/// parses: there a counter is declared under its samples' name (`x_total`), where OpenMetrics
/// declares it under the family's (`x`), and there is no `# EOF`.
fn classic_text(openmetrics: &str) -> String {
    let counters = counter_families(openmetrics);
    let mut out = String::new();
    for line in openmetrics.lines().filter(|l| *l != "# EOF") {
        let declared = ["# HELP ", "# TYPE "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(&name).then(|| format!("{p}{name}_total {tail}"))
        });
        out += &declared.unwrap_or_else(|| line.to_owned());
        out.push('\n');
    }
    out
}

/// Lints `/metrics` with promtool. Fed as it is served (OpenMetrics), promtool, which reads the
/// classic text format, sees each counter's `x_total` samples as a family of their own
/// without help text: that and only that is allowed there. The same metrics in the classic
/// format must lint clean.
fn lint(openmetrics: &str) -> Result<()> {
    let raw = promtool(openmetrics)?;
    let counters = counter_families(openmetrics);
    let unexpected: Vec<&str> = raw
        .lines()
        .filter(|l| !l.strip_suffix(" no help text").and_then(|n| n.strip_suffix("_total")).is_some_and(|n| counters.contains(&n)))
        .collect();
    ensure!(unexpected.is_empty(), "promtool check metrics on /metrics as served:\n{raw}");
    let classic = promtool(&classic_text(openmetrics))?;
    ensure!(classic.is_empty(), "promtool check metrics on /metrics in the classic text format:\n{classic}");
    Ok(())
}

#[test]
fn metrics_are_valid_exposition_and_follow_the_lab() -> Result<()> {
    if !privileged("metrics_are_valid_exposition_and_follow_the_lab") {
        return Ok(());
    }
    let mut node = start("wmetr")?;
    let ns = node.lb.ns.clone();
    let b1 = [("service", "web4"), ("backend", STOPPED), ("role", "member")];

    // The listener reads a view the agent publishes at most every 250 ms: it may trail the
    // control socket (which said every backend is up) by that much.
    let first = scrape_until(&ns, Duration::from_secs(2), "every backend up", |text| {
        ["203.0.113.11", "203.0.113.12", "203.0.113.13"].iter().all(|b| sample(text, "xlb_backend_up", &[("backend", b)]) == Some(1.0))
    })?;
    lint(&first)?;
    assert!(first.trim_end().ends_with("# EOF"), "an OpenMetrics exposition ends with # EOF");
    assert_eq!(sample(&first, "xlb_backend_transitions_total", &[b1[0], b1[1], ("to", "down")]), None, "no down transition yet");
    let packets = |text: &str| metric(text, "xlb_service_packets_total", &[("service", "web4")]);
    let checks = |text: &str| metric(text, "xlb_health_check_duration_seconds_count", &[("service", "web4")]);

    // Traffic through the VIP, then b1's server stops.
    let hammer = Hammer::start(&node.client.ns, vip())?;
    std::thread::sleep(Duration::from_millis(1500));
    let flowing = get(&ns, "/metrics")?;
    node.http[0].stop();
    let stopped = Instant::now();
    let down = scrape_until(&ns, detection_bound() + MARGIN, "xlb_backend_up 0 for b1", |text| sample(text, "xlb_backend_up", &b1) == Some(0.0))?;
    println!("lab_web: xlb_backend_up of b1 went 0 {:?} after its server stopped (detection bound {:?})", stopped.elapsed(), detection_bound());
    std::thread::sleep(Duration::from_millis(1000));
    let log = hammer.finish();
    let last = get(&ns, "/metrics")?;
    lint(&last).context("with a backend down")?;

    assert_eq!(metric(&last, "xlb_backend_up", &b1)?, 0.0);
    assert_eq!(metric(&last, "xlb_backend_healthy", &b1)?, 0.0);
    for other in ["203.0.113.12", "203.0.113.13"] {
        assert_eq!(metric(&last, "xlb_backend_up", &[("backend", other)])?, 1.0, "{other} stays up");
    }
    let down_transitions: f64 = last
        .lines()
        .filter(|l| l.starts_with("xlb_backend_transitions_total{") && l.contains(&format!("backend=\"{STOPPED}\"")) && l.contains("to=\"down\""))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert_eq!(down_transitions, 1.0, "one transition to down for b1:\n{last}");
    let (p0, p1, p2) = (packets(&first)?, packets(&flowing)?, packets(&last)?);
    let answered = log.iter().filter(|(_, r)| r.is_ok()).count();
    println!("lab_web: xlb_service_packets_total web4 {p0} -> {p1} -> {p2} over {} requests ({answered} answered)", log.len());
    assert!(answered > 0, "the hammer got answers");
    assert!(p1 > p0 && p2 > p1, "xlb_service_packets_total grows with traffic: {p0} -> {p1} -> {p2}");
    let (c0, c1) = (checks(&first)?, checks(&last)?);
    println!("lab_web: xlb_health_check_duration_seconds_count web4 {c0} -> {c1}");
    assert!(c1 > c0, "health-check durations are recorded: {c0} -> {c1}");
    assert!(metric(&down, "xlb_dataplane_packets_total", &[("verdict", "tx")])? > 0.0, "the data plane forwarded with XDP_TX");

    // Read-only: anything but GET (and HEAD) is refused.
    for method in ["POST", "PUT", "DELETE"] {
        let (code, _) = in_netns(&ns, || request(method, "/metrics"))??;
        assert_eq!(code, 405, "{method} /metrics");
    }
    let (code, _) = in_netns(&ns, || request("POST", "/status.json"))??;
    assert_eq!(code, 405, "POST /status.json");

    // /status.json is the Status of `xlb stats --json`.
    let web: Status = serde_json::from_str(&get(&ns, "/status.json")?).context("/status.json is a Status")?;
    let cli = node.status()?;
    // "service backend state health", a line for each backend.
    let summary = |s: &Status| -> Vec<String> {
        s.services.iter().flat_map(|v| v.backends.iter().map(|b| format!("{} {} {} {}", v.name, b.address, b.state, b.health))).collect()
    };
    assert_eq!(summary(&web), summary(&cli), "/status.json and xlb stats --json agree on services and backends");
    assert_eq!(summary(&web)[0], format!("web4 {STOPPED} down down"));
    assert_eq!((web.agent.version.as_str(), web.interfaces.clone()), (cli.agent.version.as_str(), cli.interfaces.clone()));
    let history: Value = serde_json::from_str(&get(&ns, "/history.json")?).context("/history.json is JSON")?;
    assert_eq!(history["interval_seconds"], json!(2.0), "{history}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The status page in a browser

/// chromedriver and the chromium it starts, in the node's namespace, killed on drop (the
/// driver's process group, then any chromium process left in that namespace).
struct Browser {
    driver: Child,
    ns: String,
}

impl Browser {
    /// Starts chromedriver in `ns`, with its log and its browser's files in `dir` (the lab's,
    /// removed with it), and waits until it answers.
    fn start(ns: &str, dir: &Path) -> Result<Browser> {
        let log = dir.join("chromedriver.log");
        let out = std::fs::File::create(&log)?;
        let driver = Command::new("ip")
            .args(["netns", "exec", ns, "chromedriver", &format!("--port={WEBDRIVER_PORT}"), "--allowed-ips=127.0.0.1"])
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            // Chromium's scratch directories, which a killed browser leaves behind.
            .env("TMPDIR", dir)
            // Its own process group, so that the browser it starts can be killed with it.
            .process_group(0)
            .spawn()
            .context("starting chromedriver (Debian package chromium-driver; cargo xtask test installs it)")?;
        let browser = Browser { driver, ns: ns.to_owned() };
        let deadline = Instant::now() + Duration::from_secs(10);
        let addr: SocketAddr = format!("127.0.0.1:{WEBDRIVER_PORT}").parse()?;
        while in_netns(ns, || TcpStream::connect_timeout(&addr, Duration::from_millis(200)))?.is_err() {
            ensure!(Instant::now() < deadline, "chromedriver not listening after 10 s: {}", std::fs::read_to_string(&log).unwrap_or_default());
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(browser)
    }

    /// Processes of Debian's chromium (or chromedriver) in this namespace.
    fn leftovers(&self) -> Vec<i32> {
        let Ok(ns) = std::fs::metadata(format!("/run/netns/{}", self.ns)) else { return Vec::new() };
        let ns_inode = std::os::unix::fs::MetadataExt::ino(&ns);
        let Ok(procs) = std::fs::read_dir("/proc") else { return Vec::new() };
        procs
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
                let in_ns = std::fs::metadata(format!("/proc/{pid}/ns/net")).is_ok_and(|m| std::os::unix::fs::MetadataExt::ino(&m) == ns_inode);
                in_ns && (exe.starts_with("/usr/lib/chromium") || exe.ends_with("chromedriver"))
            })
            .collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        use nix::{sys::signal::{kill, killpg, Signal}, unistd::Pid};
        let _ = killpg(Pid::from_raw(self.driver.id() as i32), Signal::SIGKILL);
        let _ = self.driver.wait();
        for pid in self.leftovers() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.leftovers().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// What the page shows now, read from its DOM.
#[derive(Debug, serde::Deserialize)]
struct Page {
    /// `section[data-service]`.
    services: Vec<Card>,
    /// `#node-rates[data-packets-per-second]`.
    node_pps: f64,
    /// Points of the node chart's packets line.
    chart_points: u32,
    /// The footer: "updated ..." or "not updated: why".
    updated: String,
    /// Set by the test after loading: gone if the page was reloaded.
    marker: bool,
    scroll_width: f64,
    inner_width: f64,
}

#[derive(Debug, serde::Deserialize)]
struct Card {
    name: String,
    /// `data-packets-per-second`.
    pps: f64,
    rows: Vec<Row>,
}

/// A `tr[data-backend]`: the address, the `td.state` cell and the row's last cell (health,
/// reason, transitions).
#[derive(Debug, serde::Deserialize)]
struct Row {
    backend: String,
    state: String,
    detail: String,
}

const READ_PAGE: &str = r##"
const num = (v) => Number(v ?? 0);
return {
  services: [...document.querySelectorAll("section[data-service]")].map((s) => ({
    name: s.dataset.service,
    pps: num(s.dataset.packetsPerSecond),
    rows: [...s.querySelectorAll("tr[data-backend]")].map((r) => ({
      backend: r.dataset.backend,
      state: r.querySelector("td.state").textContent,
      detail: r.lastElementChild.textContent,
    })),
  })),
  node_pps: num(document.querySelector("#node-rates").dataset.packetsPerSecond),
  chart_points: document.querySelector("#node-chart polyline.pps")?.points.numberOfItems ?? 0,
  updated: document.querySelector("#updated").textContent,
  marker: window.xlbTestMarker === true,
  scroll_width: document.documentElement.scrollWidth,
  inner_width: window.innerWidth,
};
"##;

impl Page {
    fn card(&self, service: &str) -> Option<&Card> {
        self.services.iter().find(|c| c.name == service)
    }

    fn row(&self, service: &str, backend: &str) -> Option<&Row> {
        self.card(service)?.rows.iter().find(|r| r.backend == backend)
    }

    fn state(&self, service: &str, backend: &str) -> Option<&str> {
        self.row(service, backend).map(|r| r.state.as_str())
    }

    /// Whether the node and `service` both show a rate above 0.
    fn moving(&self, service: &str) -> bool {
        self.node_pps > 0.0 && self.card(service).is_some_and(|c| c.pps > 0.0)
    }
}

/// The outermost elements that reach past the window's right edge (tag.class#id: right edge).
const WIDE_ELEMENTS: &str = r##"
const w = window.innerWidth;
const past = [...document.body.querySelectorAll("*")].filter((e) => e.getBoundingClientRect().right > w + 0.5);
return past
  .filter((e) => !past.includes(e.parentElement))
  .map((e) => `${e.tagName.toLowerCase()}${e.getAttribute("class") ? "." + e.getAttribute("class") : ""}${e.id ? "#" + e.id : ""}: ${e.getBoundingClientRect().right}`);
"##;

async fn read_page(client: &fantoccini::Client) -> Result<Page> {
    let value = client.execute(READ_PAGE, vec![]).await.context("reading the page")?;
    serde_json::from_value(value.clone()).with_context(|| format!("page read as {value}"))
}

/// Polls the page until `done` holds; fails with the last page read after `limit`.
async fn wait_page(client: &fantoccini::Client, limit: Duration, what: &str, done: impl Fn(&Page) -> bool) -> Result<(Page, Duration)> {
    let start = Instant::now();
    loop {
        let page = read_page(client).await?;
        if done(&page) {
            return Ok((page, start.elapsed()));
        }
        if start.elapsed() > limit {
            bail!("the page did not show {what} within {limit:?}: {page:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Makes the page's viewport `width` x `height` CSS pixels (headless chromium's window has
/// room for browser chrome that is not drawn, so the window is sized by what the page sees).
async fn set_viewport(client: &fantoccini::Client, width: u32, height: u32) -> Result<()> {
    client.set_window_size(width, height).await?;
    let inner = client.execute("return [window.innerWidth, window.innerHeight];", vec![]).await?;
    let (w, h) = (inner[0].as_f64().unwrap_or(0.0) as i64, inner[1].as_f64().unwrap_or(0.0) as i64);
    let grow = |want: u32, got: i64| (i64::from(want) * 2 - got).max(i64::from(want)) as u32;
    if (w, h) != (i64::from(width), i64::from(height)) {
        client.set_window_size(grow(width, w), grow(height, h)).await?;
    }
    Ok(())
}

/// Where the screenshot goes: target/screenshots/ of the workspace.
fn screenshot_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is in the workspace").join("target/screenshots")
}

/// The WebDriver session's capabilities: Debian's chromium itself (its /usr/bin wrapper adds
/// flags that reach for the network), headless as root, and nowhere to go but the listener.
fn capabilities(profile: &Path) -> fantoccini::wd::Capabilities {
    let args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--proxy-server=127.0.0.1:9",
        "--proxy-bypass-list=127.0.0.1",
        "--window-size=1280,900",
        &format!("--user-data-dir={}", profile.display()),
    ];
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": { "binary": "/usr/lib/chromium/chromium", "args": args },
    });
    match caps {
        Value::Object(map) => map,
        _ => unreachable!(),
    }
}

#[test]
fn the_status_page_shows_the_lab_live_in_a_browser() -> Result<()> {
    if !privileged("the_status_page_shows_the_lab_live_in_a_browser") {
        return Ok(());
    }
    let mut node = start("wpage")?;
    let ns = node.lb.ns.clone();
    let profile = node.lab.dir.join("chromium-profile");
    // Dropped before the lab: the browser leaves the namespace before it is deleted.
    let _browser = Browser::start(&ns, &node.lab.dir)?;
    let hammer = Hammer::start(&node.client.ns, vip())?;
    let shots = screenshot_dir();
    std::fs::create_dir_all(&shots)?;

    let node_ref = &mut node;
    let result = in_netns(&ns, move || -> Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(async move {
            let client = fantoccini::ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(capabilities(&profile))
                .connect(&format!("http://127.0.0.1:{WEBDRIVER_PORT}"))
                .await
                .context("a WebDriver session with chromium")?;
            let outcome = browse(&client, node_ref, &shots).await;
            let _ = client.close().await;
            outcome
        })
    })?;
    let log = hammer.finish();
    let answered = log.iter().filter(|(_, r)| r.is_ok()).count();
    println!("lab_web: {} requests through the VIP while the page was open, {answered} answered", log.len());
    result.map_err(|e| e.context(format!("chromedriver log:\n{}", node.lab.log("chromedriver"))))
}

/// What a person would check on the page, with the lab running and traffic flowing.
async fn browse(client: &fantoccini::Client, node: &mut SingleNode, shots: &Path) -> Result<()> {
    let opened = Instant::now();
    client.goto(&format!("http://{HTTP}/")).await?;
    let (page, took) = wait_page(client, Duration::from_secs(5), "web4 with its three backends up", |p| {
        ["203.0.113.11", "203.0.113.12", "203.0.113.13"].iter().all(|b| p.state("web4", b) == Some("up"))
    })
    .await?;
    println!("lab_web: the page showed web4 and its three backends up {took:?} after loading");
    ensure!(page.updated.starts_with("updated"), "the page says {:?}", page.updated);
    client.execute("window.xlbTestMarker = true;", vec![]).await?;

    // Rates: the page plots /history.json, which the agent samples every 2 s.
    let (page, took) = wait_page(client, Duration::from_secs(10), "packets per second above 0", |p| p.moving("web4")).await?;
    println!(
        "lab_web: rates above 0 {:?} after loading ({took:?} of waiting): node {:.0} packets/s, web4 {:.0}",
        opened.elapsed(),
        page.node_pps,
        page.card("web4").map_or(0.0, |c| c.pps)
    );

    // b1's server stops: its row turns "down" without a reload, saying why.
    let bound = detection_bound() + PAGE_POLL + MARGIN;
    node.http[0].stop();
    let (page, took) = wait_page(client, bound, "b1 down", |p| p.state("web4", STOPPED) == Some("down")).await?;
    println!(
        "lab_web: b1's row turned down {took:?} after its server stopped (bound: detection {:?} + page poll {PAGE_POLL:?} + margin {MARGIN:?})",
        detection_bound()
    );
    ensure!(page.marker, "the page was reloaded");
    for other in ["203.0.113.12", "203.0.113.13"] {
        ensure!(page.state("web4", other) == Some("up"), "{other} is not shown up: {page:?}");
    }
    let detail = page.row("web4", STOPPED).map(|r| r.detail.as_str()).unwrap_or_default();
    ensure!(detail.starts_with("down (connect refused)"), "b1's row says {detail:?}");
    let status = node.status()?;
    let b1 = status.service("web4").and_then(|s| s.backends.iter().find(|b| b.address == STOPPED)).map(|b| b.state.as_str());
    ensure!(b1 == Some("down"), "xlb stats says b1 is {b1:?} where the page says down");

    // Still moving with b1 down, a few points on the chart: the README's screenshot, the
    // whole page at a desktop width.
    let (page, _) = wait_page(client, Duration::from_secs(12), "rates with b1 down, over 4 points", |p| p.chart_points >= 4 && p.moving("web4")).await?;
    let height = client.execute("return document.documentElement.scrollHeight;", vec![]).await?.as_f64().unwrap_or(900.0) as u32;
    set_viewport(client, 1280, height.clamp(600, 2400)).await?;
    let png = client.screenshot().await?;
    let path = shots.join("status-page.png");
    std::fs::write(&path, &png)?;
    println!("lab_web: screenshot 1280x{height} ({} bytes, node {:.0} packets/s) in {}", png.len(), page.node_pps, path.display());

    // Narrow windows, a phone's and a small one: the page never scrolls sideways.
    for (width, height) in [(390, 844), (800, 600)] {
        set_viewport(client, width, height).await?;
        let (page, _) = wait_page(client, Duration::from_secs(3), "the new width", |p| p.inner_width == f64::from(width)).await?;
        std::fs::write(shots.join(format!("status-page-{width}x{height}.png")), client.screenshot().await?)?;
        if page.scroll_width > page.inner_width {
            let wide = client.execute(WIDE_ELEMENTS, vec![]).await?;
            bail!("at {width}x{height} the page is {} wide in a {} window; past its right edge: {wide}", page.scroll_width, page.inner_width);
        }
        ensure!(page.state("web4", STOPPED) == Some("down"), "the table is gone at {width}px: {page:?}");
        println!("lab_web: {width}x{height}: no sideways scrolling (page {} wide)", page.scroll_width);
    }
    Ok(())
}
