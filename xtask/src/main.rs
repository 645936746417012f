//! `cargo xtask`: build, run, lab, test, fuzz. Each command installs what it needs first.

mod bench;
mod fuzz;
mod lab;
mod package;
mod setup;

use std::{
    path::PathBuf,
    process::{Command, ExitCode},
    time::Instant,
};

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install the toolchain pieces and Debian packages the other commands need.
    Setup,
    /// Build xlb (the agent with the XDP program embedded).
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Build xlb in release mode and run it with the given arguments, e.g.
    /// `cargo xtask run -- run --config /etc/xlb/xlb.toml`.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The demo: build, create the lab in network namespaces, start xlb with config/lab.toml,
    /// send traffic, print which backend served how much, clean up.
    Lab {
        /// Active-active instead: a router running BIRD spreads the flows over three xlb
        /// nodes by ECMP, each announcing the VIPs through its own BIRD; one node then fails
        /// and the flows carry on.
        #[arg(long, conflicts_with = "tunnel")]
        ecmp: bool,
        /// Backends beyond the segment instead: three backends behind a router reached by
        /// IPIP, 4-in-6, IP6IP6 and GUE, beside one by direct routing.
        #[arg(long)]
        tunnel: bool,
    },
    /// Build the Debian package (target/debian/xlb_*.deb): the agent, its systemd unit, an
    /// example /etc/xlb/xlb.toml, man pages and shell completions.
    Package {
        /// Package the debug binary (into target/debian/debug/), as `cargo xtask test` does.
        #[arg(long)]
        debug: bool,
    },
    /// The whole test suite: unit tests, XDP program tests and lab tests (as root), and the
    /// package's test on a .deb of the debug binary; then every fuzz target for 15 s
    /// (`XLB_FUZZ_SECONDS` changes that, 0 skips them).
    Test {
        /// Extra arguments for `cargo test` (a test name filter, for instance).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the fuzz targets under fuzz/ (cargo-fuzz, nightly), each for a while, keeping what
    /// they find in fuzz/corpus/<target>; a crash fails, its input left in fuzz/artifacts/.
    Fuzz {
        /// How long each target runs.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Only this target (vrrp_decode, config_parse, http_response, config_edit).
        #[arg(long)]
        target: Option<String>,
    },
    /// The benchmarks (as root): the XDP program's cost, the forwarding rate, HTTP end to end
    /// against HAProxy and nginx, the control plane and the health checker. Prints the table
    /// and writes target/bench/*.json.
    Bench {
        /// Short runs that check every part runs and produces numbers (for CI).
        #[arg(long)]
        quick: bool,
        /// Only these parts, comma-separated: program,forwarding,e2e,control,health,failover,scaleout.
        #[arg(long)]
        only: Option<String>,
    },
}

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_owned()
}

/// Runs a command, failing if it fails.
pub fn cmd(c: &mut Command) -> Result<()> {
    let status = c.status().with_context(|| format!("starting {c:?}"))?;
    if !status.success() {
        bail!("{c:?} failed: {status}");
    }
    Ok(())
}

/// Builds the `xlb` binary; returns its path.
pub fn build(release: bool) -> Result<PathBuf> {
    setup::toolchain()?;
    let mut c = Command::new("cargo");
    c.current_dir(root()).args(["build", "--package", "lb-userspace", "--bin", "xlb"]);
    if release {
        c.arg("--release");
    }
    cmd(&mut c)?;
    Ok(root().join("target").join(if release { "release" } else { "debug" }).join("xlb"))
}

fn test(args: &[String]) -> Result<()> {
    setup::toolchain()?;
    let root_user = nix::unistd::geteuid().is_root();
    if root_user {
        setup::packages(setup::LAB_PACKAGES)?;
        setup::packages(setup::ECMP_PACKAGES)?;
        setup::packages(setup::TEST_PACKAGES)?;
        for ns in xlb_tests::remove_stale_namespaces()? {
            println!("xtask: removed namespace {ns} left by an earlier run");
        }
    }
    let bin = build(false)?;
    // The package test (tests/tests/package.rs, privileged) checks a .deb of the debug
    // binary: a release one would take minutes more to build.
    let deb = if root_user { Some(package::package_built(&bin, false)?) } else { None };
    let skip_log = root().join("target/xlb-skipped-tests");
    let _ = std::fs::remove_file(&skip_log);
    let mut cargo_test = Command::new("cargo");
    cargo_test
        .current_dir(root())
        // The default members: everything but lb-ebpf, which only builds for BPF.
        .arg("test")
        .args(args)
        .env("XLB_BIN", &bin)
        .env("XLB_SKIP_LOG", &skip_log);
    if let Some(deb) = &deb {
        cargo_test.env("XLB_DEB", deb);
    }
    let status = cargo_test.status()?;
    let skipped = std::fs::read_to_string(&skip_log).map(|s| s.lines().count()).unwrap_or(0);
    if skipped > 0 {
        println!("xtask: {skipped} privileged tests were SKIPPED (not root, XLB_SKIP_PRIVILEGED=1)");
    }
    // Even after failed tests, so that one run says everything.
    let fuzzed = fuzz_briefly();
    if !status.success() {
        bail!("tests failed{}", fuzzed.err().map(|e| format!("; {e:#}")).unwrap_or_default());
    }
    fuzzed
}

/// Seconds each fuzz target runs in `cargo xtask test`.
const TEST_FUZZ_SECONDS: u64 = 15;

/// `cargo xtask test`'s fuzz stage: every target for `XLB_FUZZ_SECONDS` (default 15; 0 skips).
fn fuzz_briefly() -> Result<()> {
    let seconds = match std::env::var("XLB_FUZZ_SECONDS") {
        Ok(s) => s.parse().with_context(|| format!("XLB_FUZZ_SECONDS={s:?} is not a number of seconds"))?,
        Err(_) => TEST_FUZZ_SECONDS,
    };
    if seconds == 0 {
        println!("xtask: fuzz targets SKIPPED (XLB_FUZZ_SECONDS=0)");
        return Ok(());
    }
    let started = Instant::now();
    let runs = fuzz::fuzz(seconds, fuzz::TARGETS)?;
    let executions: u64 = runs.iter().map(|r| r.executions).sum();
    println!("xtask: fuzz stage: {} targets, {executions} executions, no crash, in {:.0} s", runs.len(), started.elapsed().as_secs_f64());
    Ok(())
}


fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Cmd::Setup => setup::toolchain()
            .and_then(|()| setup::cargo_deb())
            .and_then(|()| setup::cargo_fuzz())
            .and_then(|()| setup::packages(setup::PACKAGE_PACKAGES))
            .and_then(|()| setup::packages(setup::LAB_PACKAGES))
            .and_then(|()| setup::packages(setup::ECMP_PACKAGES))
            .and_then(|()| setup::packages(setup::TEST_PACKAGES))
            .and_then(|()| setup::packages(setup::BENCH_PACKAGES)),
        Cmd::Build { release } => build(release).map(|p| println!("built {}", p.display())),
        Cmd::Run { args } => build(true).and_then(|bin| cmd(Command::new(bin).args(&args))),
        Cmd::Lab { ecmp: true, .. } => lab::ecmp_demo(),
        Cmd::Lab { tunnel: true, .. } => lab::tunnel_demo(),
        Cmd::Lab { .. } => lab::demo(),
        Cmd::Package { debug } => package::package(!debug).map(drop),
        Cmd::Test { args } => test(&args),
        Cmd::Fuzz { seconds, target } => fuzz::command(seconds, target.as_deref()),
        Cmd::Bench { quick, only } => bench::bench(quick, only.as_deref()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}
