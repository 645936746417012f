//! `cargo xtask bench`: xlb against the limit, and against HAProxy and nginx, side by side.
//!
//! Seven parts, each printing rows of one table and writing target/bench/<part>.json:
//!
//! 1. `program`: the XDP program's cost per packet under BPF_PROG_TEST_RUN, next to a
//!    baseline that only swaps the MACs (xlb/program.rs).
//! 2. `forwarding`: packets per second the load-balancer node forwards in the lab under a
//!    trafgen flood, xlb against the MAC-swap baseline (xlb/forwarding.rs).
//! 3. `e2e`: HTTP through xlb, HAProxy and nginx `stream` against the client talking straight
//!    to the backends, with wrk, keep-alive and `Connection: close` (xlb/e2e.rs).
//! 4. `control`: Maglev build time, disruption, and the agent's resident memory
//!    (xlb/control.rs).
//! 5. `health`: the agent's CPU while checking 1000 backends every second, and the time to
//!    detect a dead backend beside keepalived's TCP_CHECK (xlb/health.rs).
//! 6. `failover`: VRRP failover blackouts beside keepalived's, and under load
//!    (xlb/failover.rs).
//! 7. `scaleout`: aggregate forwarding of three xlb nodes behind a router's ECMP (BGP through
//!    BIRD) against one node (xlb/ecmp.rs).
//!
//! Run it with `cargo xtask bench [--quick]` (as root), which installs the tools, builds the
//! release agent and runs `cargo bench -p xlb-tests --bench xlb -- [--quick]`. Arguments:
//! `--quick` (short runs, every part), `--only program,forwarding,e2e,control,health`.
//!
//! Nothing here runs under `cargo test`: this target is a bench (`harness = false`), and it
//! only measures when cargo bench passes `--bench`.

#[path = "xlb/control.rs"]
mod control;
#[path = "xlb/e2e.rs"]
mod e2e;
#[path = "xlb/ecmp.rs"]
mod ecmp;
#[path = "xlb/failover.rs"]
mod failover;
#[path = "xlb/forwarding.rs"]
mod forwarding;
#[path = "xlb/health.rs"]
mod health;
#[path = "xlb/lab.rs"]
mod lab;
#[path = "xlb/program.rs"]
mod program;
#[path = "xlb/report.rs"]
mod report;

use std::{process::ExitCode, time::Instant};

use report::Row;

pub struct Settings {
    pub quick: bool,
    pub parts: Vec<String>,
}

const PARTS: [&str; 7] = ["program", "forwarding", "e2e", "control", "health", "failover", "scaleout"];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("xlb bench: nothing to do without --bench; run `cargo xtask bench [--quick]` (as root)");
        return ExitCode::SUCCESS;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let parts: Vec<String> = match args.iter().position(|a| a == "--only") {
        Some(i) => args.get(i + 1).map(|s| s.split(',').map(str::to_owned).collect()).unwrap_or_default(),
        None => PARTS.iter().map(|s| s.to_string()).collect(),
    };
    if let Some(bad) = parts.iter().find(|p| !PARTS.contains(&p.as_str())) {
        eprintln!("xlb bench: unknown part {bad:?} (parts: {})", PARTS.join(", "));
        return ExitCode::FAILURE;
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("xlb bench: needs root (network namespaces, XDP programs, BPF_PROG_TEST_RUN)");
        return ExitCode::FAILURE;
    }
    let settings = Settings { quick, parts };
    let started = Instant::now();
    match xlb_tests::remove_stale_namespaces() {
        Ok(removed) => {
            for ns in removed {
                say!("removed namespace {ns} left by an earlier run");
            }
        }
        Err(e) => say!("could not list namespaces: {e:#}"),
    }
    let mut rows: Vec<Row> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let mut failed = false;
    for part in &settings.parts {
        let t = Instant::now();
        say!("part {part}: starting ({} mode)", if quick { "quick" } else { "full" });
        let result = match part.as_str() {
            "program" => program::run(&if quick {
                program::Options { repeat: 100_000, runs: 3 }
            } else {
                program::Options { repeat: 1_000_000, runs: 9 }
            }),
            "forwarding" => forwarding::run(&settings, &mut notes),
            "e2e" => e2e::run(&settings, &mut notes),
            "control" => control::run(&settings, &mut notes),
            "health" => health::run(&settings, &mut notes),
            "failover" => failover::run(&settings, &mut notes),
            "scaleout" => ecmp::run(&settings, &mut notes),
            _ => unreachable!(),
        };
        match result {
            Ok(r) => rows.extend(r),
            Err(e) => {
                failed = true;
                eprintln!("bench: part {part} FAILED: {e:#}");
                rows.push(Row::failed(leak(part), &e));
            }
        }
        say!("part {part}: done in {:.0} s", t.elapsed().as_secs_f64());
    }
    let table = report::render(&rows);
    println!();
    println!("xlb benchmark ({}), {:.0} s", if quick { "--quick: smoke run, short durations" } else { "full run" }, started.elapsed().as_secs_f64());
    println!();
    print!("{table}");
    if !notes.is_empty() {
        println!();
        for n in &notes {
            println!("note: {n}");
        }
    }
    println!();
    println!("JSON: {}/{{program,forwarding,e2e,control,health,failover,scaleout,summary}}.json", report::out_dir().display());
    let summary = serde_json::json!({
        "quick": quick,
        "seconds": started.elapsed().as_secs_f64(),
        "rows": rows.iter().map(Row::to_json).collect::<Vec<_>>(),
        "notes": notes,
        "table": table,
    });
    if let Err(e) = report::write_json("summary", &summary) {
        eprintln!("bench: {e:#}");
        failed = true;
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_owned().into_boxed_str())
}
