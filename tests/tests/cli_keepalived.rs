//! `xlb convert` and `xlb check-config` on keepalived.conf files, run as an operator runs them.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use anyhow::Result;
use xlb_tests::scenario::xlb_bin;

/// keepalived.conf samples kept with the reader's unit tests.
fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../lb-userspace/src/config/keepalived/samples").join(name)
}

fn xlb(args: &[&str]) -> Result<Output> {
    Ok(Command::new(xlb_bin()?).args(args).output()?)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Result<TempDir> {
        let dir = std::env::temp_dir().join(format!("xlb-cli-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The `table ...` lines of `check-config --offline --tables`, sorted.
fn tables(file: &str, extra: &[&str]) -> Result<Vec<String>> {
    let mut args = vec!["check-config", "--offline", "--tables"];
    args.extend(extra);
    args.push(file);
    let out = xlb(&args)?;
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    let mut lines: Vec<String> = text(&out.stdout).lines().filter(|l| l.starts_with("table ")).map(str::to_owned).collect();
    lines.sort();
    Ok(lines)
}

#[test]
fn convert_prints_toml_that_check_config_accepts_with_the_same_tables() -> Result<()> {
    let dir = TempDir::new("convert")?;
    for name in ["lvs-dr-master.conf", "http-get-digest.conf", "vs-group.conf", "include/keepalived.conf"] {
        let conf = sample(name).display().to_string();
        let out = xlb(&["convert", &conf])?;
        let stderr = text(&out.stderr);
        assert!(out.status.success(), "{name}: {stderr}");
        // Warnings name the keepalived file and line.
        for line in stderr.lines() {
            assert!(line.contains(".conf:") && line.contains(": warning: "), "{name}: {line}");
        }
        let toml = dir.0.join(format!("{}.toml", name.replace('/', "-")));
        std::fs::write(&toml, &out.stdout)?;
        let toml = toml.display().to_string();
        let check = xlb(&["check-config", "--offline", &toml])?;
        assert!(check.status.success(), "{name}: the converted TOML is refused:\n{}", text(&check.stdout));
        assert_eq!(tables(&conf, &[])?, tables(&toml, &[])?, "{name}: the keepalived.conf and its TOML build the same tables");
    }
    let stderr = text(&xlb(&["convert", &sample("http-get-digest.conf").display().to_string()])?.stderr);
    assert!(stderr.lines().any(|l| l.contains("http-get-digest.conf:37: warning: digest")), "{stderr}");
    Ok(())
}

#[test]
fn check_config_and_convert_refuse_a_keepalived_conf_naming_its_lines() -> Result<()> {
    let dir = TempDir::new("kconf-bad")?;
    let conf = dir.0.join("keepalived.conf");
    std::fs::write(
        &conf,
        "vrrp_instance VI_1 {\n    interface eth0\n    virtual_router_id 51\n    virtual_ipaddress {\n        192.0.2.100\n    }\n}\n\
         vrrp_sync_group G {\n    group {\n        VI_1\n    }\n}\n\
         virtual_server 192.0.2.100 80 {\n    lb_kind NAT\n    frobnicate\n    real_server 192.0.2.11 80 {\n    }\n}\n",
    )?;
    let f = conf.display().to_string();
    let check = xlb(&["check-config", "--offline", &f])?;
    assert!(!check.status.success());
    let out = text(&check.stdout);
    for (line, needle) in [(8, "vrrp_sync_group"), (14, "lb_kind NAT"), (15, "frobnicate")] {
        let prefix = format!("{f}:{line}: ");
        assert!(out.lines().any(|l| l.starts_with(&prefix) && l.contains(needle)), "expected {prefix}... {needle}:\n{out}");
    }
    let convert = xlb(&["convert", &f])?;
    assert!(!convert.status.success());
    assert!(convert.stdout.is_empty(), "no TOML after an error: {}", text(&convert.stdout));
    assert!(text(&convert.stderr).contains(&format!("{f}:14: ")), "{}", text(&convert.stderr));
    Ok(())
}

#[test]
fn format_is_detected_and_can_be_forced() -> Result<()> {
    let dir = TempDir::new("kconf-format")?;
    let master = sample("lvs-dr-master.conf").display().to_string();
    // Forced to TOML, a keepalived.conf is a TOML syntax error.
    let out = xlb(&["check-config", "--offline", "--format", "toml", &master])?;
    assert!(!out.status.success() && text(&out.stdout).contains("syntax error"), "{}", text(&out.stdout));
    // Forced to keepalived, a TOML file is unknown keywords.
    let toml = dir.0.join("x.toml");
    std::fs::write(&toml, "[agent]\ninterfaces = [\"eth0\"]\n")?;
    let out = xlb(&["check-config", "--offline", "--format", "keepalived", &toml.display().to_string()])?;
    assert!(!out.status.success() && text(&out.stdout).contains("unknown keyword"), "{}", text(&out.stdout));
    // An agent file gives a keepalived.conf its [agent].
    let agent = dir.0.join("agent.toml");
    std::fs::write(&agent, "[agent]\nxdp_mode = \"generic\"\nmax_services = 4\n")?;
    let out = xlb(&["convert", "--agent-config", &agent.display().to_string(), &master])?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let toml = text(&out.stdout);
    let (agent_key, derived) = (toml.find("max_services = 4").unwrap_or(usize::MAX), toml.find("interfaces = [\n  \"eth0\",\n]"));
    assert!(derived.is_some_and(|d| d > agent_key), "the file's [agent], then the derived interfaces:\n{toml}");
    assert!(text(&out.stderr).contains("agent.toml:2: warning: xdp_mode = \"generic\" is slow"), "{}", text(&out.stderr));
    Ok(())
}
