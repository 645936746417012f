//! `cargo xtask package`: xlb's Debian package. Builds the agent, writes its man pages and
//! shell completions into target/package/ with the `xlb-docs` binary, and has cargo-deb pack
//! them with packaging/ as lb-userspace's `[package.metadata.deb]` lists.
//!
//! `--debug` packages the debug binary instead, for `cargo xtask test`: the same package,
//! without the release build's minutes.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

use crate::{build, cmd, root, setup};

/// Builds the agent (release or debug), then the .deb; returns its path.
pub fn package(release: bool) -> Result<PathBuf> {
    let bin = build(release)?;
    package_built(&bin, release)
}

/// The .deb of `bin`, the agent just built (release or debug).
pub fn package_built(bin: &Path, release: bool) -> Result<PathBuf> {
    setup::packages(setup::PACKAGE_PACKAGES)?;
    let target = root().join("target");
    let epoch = source_date_epoch();

    // Same profile as the agent: the library they share is built once.
    let mut docs = Command::new("cargo");
    docs.current_dir(root()).args(["build", "--package", "lb-userspace", "--bin", "xlb-docs"]);
    if release {
        docs.arg("--release");
    }
    cmd(&mut docs)?;
    let out = target.join("package");
    // Stale pages of a command that is gone would be packed by the manifest's glob.
    for dir in ["man", "completions"] {
        let dir = out.join(dir);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
    }
    let mut docs = Command::new(bin.with_file_name("xlb-docs"));
    docs.arg(&out);
    if let Some(epoch) = &epoch {
        docs.env("SOURCE_DATE_EPOCH", epoch);
    }
    cmd(&mut docs)?;

    setup::cargo_deb()?;
    let mut deb = Command::new("cargo");
    deb.current_dir(root()).args(["deb", "--package", "lb-userspace", "--no-build", "--output"]);
    if release {
        deb.arg(target.join("debian"));
    } else {
        // cargo-deb packs `target/release/xlb` and refuses development profiles, so the debug
        // binary is linked into a staging target directory's release/ for it. It strips the
        // binary (the release profile has no debug info); --fast: gzip, not xz.
        let stage = out.join("stage");
        std::fs::create_dir_all(stage.join("release"))?;
        let staged = stage.join("release/xlb");
        let _ = std::fs::remove_file(&staged);
        std::fs::hard_link(bin, &staged).or_else(|_| std::fs::copy(bin, &staged).map(drop))?;
        deb.arg(target.join("debian/debug")).arg("--fast").env("CARGO_TARGET_DIR", &stage);
    }
    if let Some(epoch) = &epoch {
        // The files' dates in the package: the same commit gives the same .deb.
        deb.env("SOURCE_DATE_EPOCH", epoch);
    }
    let path = run_cargo_deb(&mut deb)?;
    println!("xtask: built {}", path.display());
    Ok(path)
}

/// Runs cargo-deb; returns the .deb it wrote (the last line it prints). Its warning that
/// `../target/package/...` sources "will not be built" is dropped: they are xlb-docs' output,
/// written just before, and nothing else may name target/ from lb-userspace/.
fn run_cargo_deb(deb: &mut Command) -> Result<PathBuf> {
    let out = deb.output().with_context(|| format!("starting {deb:?}"))?;
    for line in String::from_utf8_lossy(&out.stderr).lines() {
        if !(line.contains("'../target/package/") && line.contains("will not be built")) {
            eprintln!("{line}");
        }
    }
    if !out.status.success() {
        bail!("{deb:?} failed: {}", out.status);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let path = stdout.lines().last().map(str::trim).unwrap_or_default();
    if !path.ends_with(".deb") || !Path::new(path).is_file() {
        bail!("cargo deb printed no .deb path:\n{stdout}");
    }
    Ok(PathBuf::from(path))
}

/// The last commit's time, for reproducible dates in the man pages and the package.
fn source_date_epoch() -> Option<String> {
    let out = Command::new("git").current_dir(root()).args(["log", "-1", "--format=%ct"]).output().ok()?;
    let epoch = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !epoch.is_empty()).then_some(epoch)
}
