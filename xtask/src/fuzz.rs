//! `cargo xtask fuzz`: the libFuzzer targets under fuzz/ (cargo-fuzz, nightly), each for a
//! while, with its corpus in fuzz/corpus/<target> (the committed seeds are named seed-*; what
//! the fuzzer adds stays out of git). `cargo xtask test` runs every target briefly after the
//! tests. A crash fails the run and leaves its input in fuzz/artifacts/<target>/.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use crate::{cmd, root, setup};

/// The targets, as fuzz/Cargo.toml names them.
pub const TARGETS: &[&str] = &["vrrp_decode", "config_parse", "http_response", "config_edit", "keepalived_parse"];

/// Keywords of the configuration, for the targets that read it.
const CONFIG_DICT: &str = "fuzz/config.dict";
/// keepalived.conf's keywords, for the target that reads it.
const KEEPALIVED_DICT: &str = "fuzz/keepalived.dict";

/// The cargo-fuzz arguments every build and run shares. No sanitizer: the targets are safe
/// Rust, where AddressSanitizer finds nothing the bounds checks miss, and it halves the
/// executions; debug assertions and overflow checks stay on (cargo-fuzz's default).
fn cargo_fuzz(subcommand: &str) -> Command {
    let mut c = Command::new("cargo");
    c.current_dir(root())
        .args(["+nightly", "fuzz", subcommand, "--sanitizer", "none", "--fuzz-dir", "fuzz", "--target-dir", "target/fuzz"]);
    c
}

/// Builds the targets (and with them the XDP program, which lb-userspace embeds).
fn build() -> Result<()> {
    setup::toolchain()?;
    setup::cargo_fuzz()?;
    cmd(&mut cargo_fuzz("build"))
}

/// How one target's run went.
pub struct Run {
    pub target: &'static str,
    pub executions: u64,
    pub took: Duration,
}

/// Runs `target` for `seconds`; fails on a crash, printing the end of libFuzzer's report.
fn run(target: &'static str, seconds: u64) -> Result<Run> {
    let started = Instant::now();
    let mut c = cargo_fuzz("run");
    c.arg(target).args(["--", &format!("-max_total_time={seconds}"), "-print_final_stats=1", "-timeout=10"]);
    if target.starts_with("config_") {
        c.arg(format!("-dict={CONFIG_DICT}"));
    } else if target == "keepalived_parse" {
        c.arg(format!("-dict={KEEPALIVED_DICT}"));
    }
    let out = c.output().with_context(|| format!("starting {c:?}"))?;
    let report = String::from_utf8_lossy(&out.stderr);
    let log = root().join("target/fuzz").join(format!("{target}.log"));
    std::fs::write(&log, report.as_bytes()).with_context(|| format!("writing {}", log.display()))?;
    if !out.status.success() {
        let tail: Vec<&str> = report.lines().filter(|l| !l.starts_with("warning: lb-userspace@")).collect();
        eprintln!("{}", tail[tail.len().saturating_sub(40)..].join("\n"));
        bail!("fuzz target {target} failed ({}): the input is in fuzz/artifacts/{target}/, the whole report in {}", out.status, log.display());
    }
    let executions = report
        .lines()
        .find_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
        .and_then(|n| n.trim().parse().ok())
        .with_context(|| format!("{target}: libFuzzer printed no stat::number_of_executed_units (see {})", log.display()))?;
    Ok(Run { target, executions, took: started.elapsed() })
}

/// Builds, then runs each of `targets` for `seconds`, printing its executions.
pub fn fuzz(seconds: u64, targets: &[&'static str]) -> Result<Vec<Run>> {
    build()?;
    let mut runs = Vec::new();
    for target in targets {
        let r = run(target, seconds)?;
        println!("xtask: fuzz {:<14} {:>11} executions in {:.0} s, no crash", r.target, r.executions, r.took.as_secs_f64());
        runs.push(r);
    }
    Ok(runs)
}

/// `cargo xtask fuzz [--seconds N] [--target NAME]`.
pub fn command(seconds: u64, target: Option<&str>) -> Result<()> {
    let targets: Vec<&'static str> = match target {
        None => TARGETS.to_vec(),
        Some(name) => match TARGETS.iter().find(|t| **t == name) {
            Some(t) => vec![*t],
            None => bail!("no fuzz target {name}: the targets are {}", TARGETS.join(", ")),
        },
    };
    fuzz(seconds, &targets).map(drop)
}
