//! Installs what building and testing need, each with a line saying what and why:
//! nightly's rust-src, bpf-linker built against nightly's own LLVM, Debian packages.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

use crate::{cmd, root};

fn have(program: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {program}")]).output().is_ok_and(|o| o.status.success())
}

fn nightly_sysroot() -> Result<PathBuf> {
    let out = Command::new("rustc").args(["+nightly", "--print", "sysroot"]).output().context("running rustc +nightly")?;
    if !out.status.success() {
        bail!("the nightly toolchain is missing: `rustup toolchain install nightly` (the XDP program needs it)");
    }
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()))
}

/// nightly + rust-src (build-std=core for bpfel-unknown-none) and bpf-linker.
pub fn toolchain() -> Result<()> {
    let sysroot = nightly_sysroot()?;
    if !sysroot.join("lib/rustlib/src/rust/library/core").exists() {
        println!("xtask: installing rust-src for nightly (the XDP program is built with -Z build-std=core)");
        cmd(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))?;
    }
    if !have("bpf-linker") {
        install_bpf_linker(&sysroot)?;
    }
    Ok(())
}

/// `cargo install bpf-linker` against the nightly toolchain's own libLLVM: the default build
/// wants a newer system LLVM than Debian ships, and looks for `libLLVM.so` under /usr.
fn install_bpf_linker(sysroot: &Path) -> Result<()> {
    let version = Command::new("rustc").args(["+nightly", "-vV"]).output()?;
    let version = String::from_utf8(version.stdout)?;
    let major = version
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .context("rustc +nightly -vV does not name its LLVM version")?
        .to_owned();
    let lib = std::fs::read_dir(sysroot.join("lib"))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&format!("libLLVM.so.{major}"))))
        .or_else(|| {
            std::fs::read_dir(sysroot.join("lib")).ok()?.filter_map(|e| e.ok()).map(|e| e.path()).find(|p| {
                p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&format!("libLLVM-{major}")))
            })
        })
        .with_context(|| format!("no libLLVM {major} under {}/lib", sysroot.display()))?;
    let prefix = root().join("target/llvm-prefix");
    std::fs::create_dir_all(prefix.join("lib"))?;
    let link = prefix.join("lib/libLLVM.so");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&lib, &link)?;
    println!(
        "xtask: installing bpf-linker (links the XDP program) against nightly's LLVM {major} at {} (about 90 s, once)",
        lib.display()
    );
    cmd(Command::new("cargo")
        .args(["install", "bpf-linker", "--no-default-features", "--features", &format!("llvm-{major}")])
        .env("LLVM_PREFIX", &prefix))?;
    Ok(())
}

/// cargo-deb, which `cargo xtask package` (and so `cargo xtask test`) builds the .deb with.
pub fn cargo_deb() -> Result<()> {
    if !have("cargo-deb") {
        println!("xtask: installing cargo-deb (builds xlb's Debian package from lb-userspace's [package.metadata.deb]; about a minute, once)");
        cmd(Command::new("cargo").args(["install", "cargo-deb", "--locked"]))?;
    }
    Ok(())
}

/// cargo-fuzz, which `cargo xtask fuzz` (and so `cargo xtask test`) runs the libFuzzer targets
/// under fuzz/ with.
pub fn cargo_fuzz() -> Result<()> {
    if !have("cargo-fuzz") {
        println!("xtask: installing cargo-fuzz (builds and runs the fuzz targets under fuzz/ with libFuzzer on nightly; about a minute, once)");
        cmd(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))?;
    }
    Ok(())
}

/// Debian packages, as (command that proves it is there, package, why).
pub const LAB_PACKAGES: &[(&str, &str, &str)] = &[
    ("ip", "iproute2", "network namespaces, veth and bridges for the lab"),
    ("sysctl", "procps", "per-namespace settings for the lab"),
    ("ethtool", "ethtool", "interface statistics in the lab"),
    ("ping", "iputils-ping", "reachability checks in the lab"),
];

/// What the BGP scale-out lab (`cargo xtask lab --ecmp`, the lab_bgp tests) needs besides.
pub const ECMP_PACKAGES: &[(&str, &str, &str)] = &[
    ("bird", "bird2", "BGP (BIRD 2) on the ECMP lab's router and on every xlb node"),
    ("nft", "nftables", "cutting a node's link in the ECMP lab"),
];

pub const TEST_PACKAGES: &[(&str, &str, &str)] = &[
    ("nft", "nftables", "packet counters and fault injection in lab tests"),
    ("tcpdump", "tcpdump", "captures when a lab test fails"),
    ("arping", "iputils-arping", "a backend announcing a new MAC in a lab test"),
    ("keepalived", "keepalived", "the VRRP peer xlb must pair with in the interoperability tests"),
    ("tshark", "tshark", "Wireshark's VRRP dissector checking xlb's adverts"),
    ("bpftool", "bpftool", "detaching the XDP program to test the data-plane fault"),
    ("prlimit", "util-linux", "descriptor limits in the fault tests"),
    ("dpkg-deb", "dpkg", "listing and unpacking the .deb in the package test"),
    ("systemd-analyze", "systemd", "`systemd-analyze verify` of the packaged unit in the package test"),
    ("man", "man-db", "rendering the packaged man pages in the package test"),
    ("/usr/lib/chromium/chromium", "chromium", "the headless browser that loads the status page in the web lab test"),
    ("chromedriver", "chromium-driver", "WebDriver for that browser, which the web lab test drives"),
    ("promtool", "prometheus", "`promtool check metrics`, linting the agent's /metrics in the web lab test"),
];

/// What `cargo xtask package` needs besides cargo-deb.
pub const PACKAGE_PACKAGES: &[(&str, &str, &str)] =
    &[("dpkg-shlibdeps", "dpkg-dev", "the .deb's library dependencies, which cargo-deb asks it for")];

/// What `cargo xtask bench` compares xlb with and measures it by. A path instead of a command
/// names a file the package installs.
pub const BENCH_PACKAGES: &[(&str, &str, &str)] = &[
    ("wrk", "wrk", "the HTTP load generator of the end-to-end benchmark"),
    ("haproxy", "haproxy", "HAProxy in TCP mode, a proxy xlb is compared with"),
    ("nginx", "nginx", "the backends' web server, and the nginx stream proxy xlb is compared with"),
    ("/usr/lib/nginx/modules/ngx_stream_module.so", "libnginx-mod-stream", "nginx's stream (TCP proxy) module"),
    ("keepalived", "keepalived", "keepalived's TCP_CHECK, the health-check detection time xlb is compared with"),
    ("gcc", "gcc", "a small LD_PRELOAD shim that lets keepalived's checker run without IPVS"),
    ("bpftool", "bpftool", "the kernel memory of the agent's maps"),
    ("taskset", "util-linux", "pinning the forwarding benchmark's threads to CPUs"),
];

pub fn packages(wanted: &[(&str, &str, &str)]) -> Result<()> {
    let present = |program: &str| if program.starts_with('/') { Path::new(program).exists() } else { have(program) };
    let missing: Vec<_> = wanted.iter().filter(|(program, ..)| !present(program)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    for (_, package, why) in &missing {
        println!("xtask: installing Debian package {package} ({why})");
    }
    let names: Vec<&str> = missing.iter().map(|(_, p, _)| *p).collect();
    let apt = |args: &[&str]| {
        cmd(Command::new("apt-get").args(args).env("DEBIAN_FRONTEND", "noninteractive"))
    };
    let mut install = vec!["install", "-y", "--no-install-recommends"];
    install.extend(&names);
    if apt(&install).is_err() {
        apt(&["update"])?;
        apt(&install)?;
    }
    Ok(())
}
