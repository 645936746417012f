//! The Debian package `cargo xtask package` builds: it lists every file it must install, and
//! each works where it lands: the binary checks the example configuration, the unit verifies,
//! the man pages render, the completions know the commands. `cargo xtask test` builds a .deb
//! of the debug binary (as `cargo xtask package --debug`) and names it in XLB_DEB.
//!
//! systemd is not PID 1 where these tests run, so the unit is verified, not started; the lab
//! tests run its commands through `xlb_tests::unit`.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use anyhow::{bail, Context as _, Result};
use xlb_tests::{run, unit};

/// Every file the package installs, as `dpkg-deb --contents` names them.
const FILES: &[&str] = &[
    "./usr/sbin/xlb",
    "./lib/systemd/system/xlb.service",
    "./etc/xlb/xlb.toml",
    "./usr/share/man/man8/xlb.8.gz",
    "./usr/share/man/man8/xlb-run.8.gz",
    "./usr/share/man/man8/xlb-check-config.8.gz",
    "./usr/share/man/man8/xlb-reload.8.gz",
    "./usr/share/bash-completion/completions/xlb",
    "./usr/share/zsh/vendor-completions/_xlb",
    "./usr/share/fish/vendor_completions.d/xlb.fish",
];

/// The .deb under test, or None when the test is skipped (not root).
fn deb(test: &str) -> Result<Option<PathBuf>> {
    if !xlb_tests::privileged(test) {
        return Ok(None);
    }
    let deb = std::env::var_os("XLB_DEB")
        .context("XLB_DEB is not set: run the suite with `cargo xtask test`, which builds the .deb first")?;
    let deb = PathBuf::from(deb);
    if !deb.is_file() {
        bail!("XLB_DEB={} is not a file", deb.display());
    }
    Ok(Some(deb))
}

/// The package unpacked with `dpkg-deb -x` into a directory removed on drop.
struct Unpacked {
    root: PathBuf,
}

impl Unpacked {
    fn new(deb: &Path, test: &str) -> Result<Unpacked> {
        let root = std::env::temp_dir().join(format!("xlb-deb-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root)?;
        let unpacked = Unpacked { root };
        run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&unpacked.root))?;
        Ok(unpacked)
    }

    /// A path of the package ("/usr/sbin/xlb") where it was unpacked.
    fn path(&self, installed: &str) -> PathBuf {
        self.root.join(installed.trim_start_matches('/'))
    }

    fn read(&self, installed: &str) -> Result<String> {
        let path = self.path(installed);
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    }
}

/// The .deb under test unpacked, or None when the test is skipped (not root).
fn unpacked(test: &str) -> Result<Option<Unpacked>> {
    deb(test)?.map(|deb| Unpacked::new(&deb, test)).transpose()
}

impl Drop for Unpacked {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The commands `xlb --help` lists, but clap's `help`.
fn commands(xlb: &Path) -> Result<Vec<String>> {
    let help = stdout(&run(Command::new(xlb).arg("--help"))?);
    let list = help.split("Commands:").nth(1).context("xlb --help lists no commands")?;
    let list = list.split("\n\n").next().unwrap_or_default();
    Ok(list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_owned)
        .collect())
}

#[test]
fn package_lists_every_file_with_its_mode_and_its_control_data() -> Result<()> {
    let Some(deb) = deb("package_lists_every_file_with_its_mode_and_its_control_data")? else {
        return Ok(());
    };
    let info = stdout(&run(Command::new("dpkg-deb").arg("--info").arg(&deb))?);
    for needle in ["Package: xlb", "Section: net", " conffiles", " postinst"] {
        assert!(info.contains(needle), "dpkg-deb --info lacks {needle:?}:\n{info}");
    }
    let depends = info.lines().find_map(|l| l.trim().strip_prefix("Depends: ")).context("no Depends")?;
    assert!(depends.split(", ").any(|d| d == "iproute2" || d.starts_with("iproute2 ")), "Depends: {depends}");

    let contents = stdout(&run(Command::new("dpkg-deb").arg("--contents").arg(&deb))?);
    // "-rwxr-xr-x root/root 123 2024-01-01 00:00 ./usr/sbin/xlb" -> (mode, path)
    let listed: Vec<(&str, &str)> =
        contents.lines().filter_map(|l| Some((l.split_whitespace().next()?, l.split_whitespace().last()?))).collect();
    let mode = |file: &str| listed.iter().find(|(_, p)| *p == file).map(|(m, _)| *m);
    for file in FILES {
        assert!(mode(file).is_some(), "{file} is not in the package:\n{contents}");
    }
    assert_eq!(mode("./usr/sbin/xlb"), Some("-rwxr-xr-x"));
    assert_eq!(mode("./etc/xlb/xlb.toml"), Some("-rw-r-----"), "it may hold a VRRP auth_pass");
    // The generator of the man pages is not for the operator.
    assert!(!contents.contains("xlb-docs"), "{contents}");

    let unpacked = Unpacked::new(&deb, "control")?;
    run(Command::new("dpkg-deb").arg("--control").arg(&deb).arg(unpacked.path("DEBIAN")))?;
    let conffiles = unpacked.read("DEBIAN/conffiles")?;
    assert_eq!(conffiles.lines().collect::<Vec<_>>(), ["/etc/xlb/xlb.toml"]);
    // The maintainer script only tells systemd the unit changed, and only where systemd runs.
    let postinst = unpacked.read("DEBIAN/postinst")?;
    let commands: Vec<&str> = postinst.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    assert_eq!(
        commands,
        ["set -e", "if [ -d /run/systemd/system ]; then", "systemctl daemon-reload >/dev/null || true", "fi"],
        "{postinst}"
    );
    Ok(())
}

#[test]
fn packaged_binary_accepts_the_packaged_configuration() -> Result<()> {
    let Some(unpacked) = unpacked("packaged_binary_accepts_the_packaged_configuration")? else {
        return Ok(());
    };
    let config = unpacked.path("/etc/xlb/xlb.toml");
    let out = Command::new(unpacked.path("/usr/sbin/xlb")).arg("check-config").arg("--offline").arg(&config).output()?;
    let text = stdout(&out) + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("configuration OK"), "{text}");
    assert!(!text.contains("warning"), "the example should be clean:\n{text}");
    // Documentation addresses only: the example must not point at anyone's network.
    let example = unpacked.read("/etc/xlb/xlb.toml")?;
    for line in example.lines().filter(|l| l.contains("address") || l.contains("vip") || l.contains("sorry")) {
        for quoted in line.split('"').skip(1).step_by(2) {
            if let Ok(ip) = quoted.parse::<std::net::IpAddr>() {
                let doc = match ip {
                    std::net::IpAddr::V4(v4) => v4.octets()[..3] == [192, 0, 2],
                    std::net::IpAddr::V6(v6) => v6.segments()[..2] == [0x2001, 0xdb8],
                };
                assert!(doc, "{ip} is not a documentation address: {line}");
            }
        }
    }
    Ok(())
}

#[test]
fn packaged_unit_verifies_and_names_the_packaged_commands() -> Result<()> {
    let Some(unpacked) = unpacked("packaged_unit_verifies_and_names_the_packaged_commands")? else {
        return Ok(());
    };
    let text = unpacked.read("/lib/systemd/system/xlb.service")?;
    assert_eq!(text, unit::SHIPPED, "the package must ship packaging/xlb.service as it is");
    let parsed = unit::parse(&text)?;
    for (key, value) in [
        ("Type", "notify"),
        ("KillSignal", "SIGTERM"),
        ("RestartKillSignal", "SIGUSR2"),
        ("Restart", "on-failure"),
        ("WatchdogSec", "10s"),
        ("RuntimeDirectory", "xlb"),
        ("LimitMEMLOCK", "infinity"),
        ("ProtectSystem", "true"),
        ("NoNewPrivileges", "yes"),
        ("PrivateTmp", "yes"),
        ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6 AF_NETLINK AF_PACKET"),
    ] {
        assert_eq!(parsed.value("Service", key), Some(value), "{key}");
    }
    for key in ["TimeoutStopSec", "LimitNOFILE", "ProtectHome"] {
        assert!(parsed.value("Service", key).is_some(), "{key} is not set");
    }
    let caps = parsed.value("Service", "CapabilityBoundingSet").context("no CapabilityBoundingSet")?;
    for cap in ["NET_ADMIN", "NET_RAW", "BPF", "PERFMON", "SYS_ADMIN", "SYS_RESOURCE", "SYS_NICE", "SETUID", "SETGID"] {
        assert!(caps.split_whitespace().any(|c| c == format!("CAP_{cap}")), "CAP_{cap} missing: {caps}");
    }

    // systemd-analyze verify needs no running systemd. It checks every key and value, that
    // each Exec command exists and is executable (hence the unpacked binary in place of
    // /usr/sbin/xlb) and, with MANPATH, that the man pages of Documentation= exist.
    let xlb = unpacked.path("/usr/sbin/xlb");
    let config = unpacked.path("/etc/xlb/xlb.toml");
    let (xlb_s, config_s) = (xlb.to_str().context("path")?, config.to_str().context("path")?);
    let rewritten = text.replace(unit::UNIT_BIN, xlb_s).replace(unit::UNIT_CONFIG, config_s);
    let dir = unpacked.path("verify");
    std::fs::create_dir_all(&dir)?;
    let unit_file = dir.join("xlb.service");
    std::fs::write(&unit_file, &rewritten)?;
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit_file)
        .env("MANPATH", unpacked.path("/usr/share/man"))
        .output()
        .context("running systemd-analyze (Debian package systemd)")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "systemd-analyze verify {}:\n{stderr}", unit_file.display());

    // The lab runs these through xlb_tests::unit: each names a command of the packaged binary.
    assert_eq!(unit::parse(&rewritten)?.exec_start.0[0], xlb_s);
    let commands = commands(&xlb)?;
    for exec in [&parsed.exec_start, &parsed.exec_reload].into_iter().chain(&parsed.exec_start_pre) {
        assert!(commands.contains(&exec.0[1]), "the unit runs `xlb {}`, which the binary lacks", exec.0[1]);
    }
    let mut pre = parsed.exec_start_pre[0].command(&xlb, &config);
    // The host check would look for eth0; the lab runs it against its own interfaces.
    let pre = pre.arg("--offline").output()?;
    assert!(pre.status.success(), "ExecStartPre on the packaged config: {}", stdout(&pre));
    Ok(())
}

/// `man -l`: the page formatted as man-db shows it, as plain text.
fn man(file: &Path) -> Result<Output> {
    Command::new("man")
        .arg("-l")
        .arg(file)
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "80")
        .env("TERM", "dumb")
        .output()
        .context("running man (Debian package man-db)")
}

#[test]
fn packaged_man_pages_render_one_per_command() -> Result<()> {
    let Some(unpacked) = unpacked("packaged_man_pages_render_one_per_command")? else {
        return Ok(());
    };
    let man8 = unpacked.path("/usr/share/man/man8");
    let mut pages = vec!["xlb".to_owned()];
    pages.extend(commands(&unpacked.path("/usr/sbin/xlb"))?.iter().map(|c| format!("xlb-{c}")));
    for page in &pages {
        let file = man8.join(format!("{page}.8.gz"));
        assert!(file.is_file(), "no man page for {page}: {}", file.display());
        let out = man(&file)?;
        let text = stdout(&out);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && stderr.trim().is_empty(), "man -l {}: {stderr}", file.display());
        let upper = page.to_uppercase();
        assert!(text.lines().next().is_some_and(|l| l.starts_with(&format!("{upper}(8)"))), "{page}:\n{text}");
        for section in ["NAME", "SYNOPSIS", "DESCRIPTION", "SEE ALSO"] {
            assert!(text.lines().any(|l| l == section), "{page} has no {section}:\n{text}");
        }
    }
    let xlb = stdout(&man(&man8.join("xlb.8.gz"))?);
    for needle in ["FILES", "SIGNALS", "SIGUSR2", "/etc/xlb/xlb.toml", "xlb-run(8)"] {
        assert!(xlb.contains(needle), "xlb(8) lacks {needle:?}:\n{xlb}");
    }
    Ok(())
}

#[test]
fn packaged_completions_know_the_commands() -> Result<()> {
    let Some(unpacked) = unpacked("packaged_completions_know_the_commands")? else {
        return Ok(());
    };
    let commands = commands(&unpacked.path("/usr/sbin/xlb"))?;
    assert!(commands.iter().any(|c| c == "reload"), "{commands:?}");
    for file in
        ["/usr/share/bash-completion/completions/xlb", "/usr/share/zsh/vendor-completions/_xlb", "/usr/share/fish/vendor_completions.d/xlb.fish"]
    {
        let text = unpacked.read(file)?;
        for command in &commands {
            assert!(text.contains(command.as_str()), "{file} does not complete `xlb {command}`");
        }
    }
    // bash parses it.
    let bash = unpacked.path("/usr/share/bash-completion/completions/xlb");
    run(Command::new("bash").arg("-n").arg(&bash))?;
    Ok(())
}
