//! `cargo xtask bench`: installs the peers the benchmark compares xlb with, builds the release
//! agent and runs the bench target (tests/benches/xlb.rs), which prints the table and writes
//! target/bench/*.json.

use std::process::Command;

use anyhow::{bail, Result};

use crate::{build, root, setup};

pub fn bench(quick: bool, only: Option<&str>) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("cargo xtask bench needs root (network namespaces, XDP programs, BPF_PROG_TEST_RUN)");
    }
    setup::toolchain()?;
    setup::packages(setup::LAB_PACKAGES)?;
    setup::packages(setup::ECMP_PACKAGES)?;
    setup::packages(setup::TEST_PACKAGES)?;
    setup::packages(setup::BENCH_PACKAGES)?;
    for ns in xlb_tests::remove_stale_namespaces()? {
        println!("xtask: removed namespace {ns} left by an earlier run");
    }
    // The release agent: the figures are those of the binary users run.
    let bin = build(true)?;
    let mut c = Command::new("cargo");
    c.current_dir(root())
        .args(["bench", "--package", "xlb-tests", "--bench", "xlb", "--", "--bench"])
        .env("XLB_BIN", &bin);
    if quick {
        c.arg("--quick");
    }
    if let Some(parts) = only {
        c.args(["--only", parts]);
    }
    let status = c.status()?;
    if !status.success() {
        bail!("the benchmark failed (a part produced no numbers; see above)");
    }
    Ok(())
}
