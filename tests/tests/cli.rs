//! The `xlb` command line as an operator meets it: `check-config` like `keepalived -t`.

use std::process::Command;

use anyhow::Result;
use xlb_tests::scenario::{xlb_bin, LAB_CONFIG};

const BAD: &str = r#"[agent]
interfaces = ["eth0"]
flow_table_sise = 1000

[[service]]
name = "web"
vip = "203.0.113.300"
port = 80

[[service]]
name = "web2"
vip = "203.0.113.100"
port = 80
[[service.backend]]
address = "203.0.113.11"
weight = 5000
"#;

fn check(file: &std::path::Path, extra: &[&str]) -> Result<(bool, String)> {
    let out = Command::new(xlb_bin()?).arg("check-config").args(extra).arg(file).output()?;
    Ok((out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned()))
}

#[test]
fn check_config_reports_every_error_with_file_and_line() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("xlb-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("bad.toml");
    std::fs::write(&file, BAD)?;
    let (ok, out) = check(&file, &["--offline"])?;
    std::fs::remove_dir_all(&dir)?;
    assert!(!ok, "exit status must be non-zero:\n{out}");
    let f = file.display().to_string();
    for (line, needle) in [(3, "flow_table_sise"), (7, "203.0.113.300"), (16, "weight")] {
        let prefix = format!("{f}:{line}: ");
        assert!(
            out.lines().any(|l| l.starts_with(&prefix) && l.contains(needle)),
            "expected a line starting {prefix:?} naming {needle:?}:\n{out}"
        );
    }
    Ok(())
}

#[test]
fn check_config_accepts_the_shipped_lab_config() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("xlb-cli-ok-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("lab.toml");
    std::fs::write(&file, LAB_CONFIG)?;
    let (ok, out) = check(&file, &["--offline"])?;
    std::fs::remove_dir_all(&dir)?;
    assert!(ok, "{out}");
    assert!(out.contains("configuration OK (4 services)"), "{out}");
    Ok(())
}

#[test]
fn check_config_checks_the_host_interfaces() -> Result<()> {
    if !xlb_tests::privileged("check_config_checks_the_host_interfaces") {
        return Ok(());
    }
    // In an empty namespace there is no eth0 and no subnet for the backends.
    let dir = std::env::temp_dir().join(format!("xlb-cli-host-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("lab.toml");
    std::fs::write(&file, LAB_CONFIG)?;
    let (ok, out) = xlb_tests::in_private_netns(|| check(&file, &[]))??;
    std::fs::remove_dir_all(&dir)?;
    assert!(!ok, "{out}");
    let f = file.display().to_string();
    assert!(out.lines().any(|l| l.starts_with(&format!("{f}:")) && l.contains("eth0")), "{out}");
    assert!(out.lines().any(|l| l.contains("203.0.113.11") && l.contains("subnet")), "{out}");
    Ok(())
}

/// The same backends and weights in another order, in another process: the same table.
#[test]
fn table_fingerprints_do_not_depend_on_the_file_order() -> Result<()> {
    let service = |name: &str, vip: &str, backends: &[(&str, u32)]| {
        let mut s = format!("[[service]]\nname = \"{name}\"\nvip = \"{vip}\"\nport = 80\n");
        for (address, weight) in backends {
            s += &format!("[[service.backend]]\naddress = \"{address}\"\nweight = {weight}\n");
        }
        s
    };
    let web = [("203.0.113.11", 1), ("203.0.113.12", 2), ("203.0.113.13", 1), ("203.0.113.14", 5)];
    let web6 = [("2001:db8:0:1::11", 1), ("2001:db8:0:1::12", 1), ("2001:db8:0:1::13", 3)];
    let mut shuffled = web;
    shuffled.reverse();
    shuffled.swap(0, 2);
    let mut shuffled6 = web6;
    shuffled6.rotate_left(1);
    let agent = "[agent]\ninterfaces = [\"eth0\"]\n";
    let a = format!("{agent}{}{}", service("web", "203.0.113.100", &web), service("web6", "2001:db8:0:1::100", &web6));
    // Services and backends in other orders.
    let b = format!("{agent}{}{}", service("web6", "2001:db8:0:1::100", &shuffled6), service("web", "203.0.113.100", &shuffled));
    let mut heavier = web;
    heavier[0].1 = 2;
    let c = format!("{agent}{}{}", service("web", "203.0.113.100", &heavier), service("web6", "2001:db8:0:1::100", &web6));

    let dir = std::env::temp_dir().join(format!("xlb-cli-tables-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let tables = |name: &str, text: &str| -> Result<Vec<String>> {
        let file = dir.join(name);
        std::fs::write(&file, text)?;
        let (ok, out) = check(&file, &["--offline", "--tables"])?;
        assert!(ok, "{out}");
        let mut lines: Vec<String> = out.lines().filter(|l| l.starts_with("table ")).map(str::to_owned).collect();
        lines.sort();
        Ok(lines)
    };
    let (ta, tb, tc) = (tables("a.toml", &a), tables("b.toml", &b), tables("c.toml", &c));
    std::fs::remove_dir_all(&dir)?;
    let (ta, tb, tc) = (ta?, tb?, tc?);
    assert_eq!(ta.len(), 2, "{ta:?}");
    assert_eq!(ta, tb, "same set, another order: the same tables");
    // Shares follow the weights (5 of 9).
    assert!(ta.iter().any(|l| l.starts_with("table web:") && l.contains("203.0.113.14 55.5")), "{ta:?}");
    assert_ne!(ta.iter().find(|l| l.starts_with("table web:")), tc.iter().find(|l| l.starts_with("table web:")), "another weight, another table");
    assert_eq!(ta.iter().find(|l| l.starts_with("table web6:")), tc.iter().find(|l| l.starts_with("table web6:")));
    Ok(())
}

/// Under systemd (stderr is the journal stream JOURNAL_STREAM names) each log line carries its
/// syslog priority for journald; elsewhere it does not.
#[test]
fn log_lines_carry_their_priority_when_stderr_is_the_journal() -> Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let dir = std::env::temp_dir().join(format!("xlb-cli-journal-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("generic.toml");
    // A warning (generic mode) at load, then a failure at start (no such interface).
    std::fs::write(&config, "[agent]\ninterfaces = [\"xlb-nosuch0\"]\nxdp_mode = \"generic\"\ncontrol_socket = \"/tmp/xlb-cli-journal.sock\"\n")?;
    let run = |journal: bool| -> Result<String> {
        let log = dir.join(format!("stderr-{journal}"));
        let file = std::fs::File::create(&log)?;
        let meta = file.metadata()?;
        let mut cmd = Command::new(xlb_bin()?);
        cmd.args(["run", "--config"]).arg(&config).stderr(file).env_remove("JOURNAL_STREAM");
        if journal {
            cmd.env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()));
        }
        let status = cmd.status()?;
        assert!(!status.success(), "no such interface: the agent must not start");
        Ok(std::fs::read_to_string(&log)?)
    };
    let (journal, plain) = (run(true), run(false));
    std::fs::remove_dir_all(&dir)?;
    let (journal, plain) = (journal?, plain?);
    let warning = journal.lines().find(|l| l.contains("generic")).unwrap_or_default();
    assert!(warning.starts_with("<4>"), "a warning is priority 4 for journald:\n{journal}");
    assert!(!plain.lines().any(|l| l.starts_with('<')), "no priorities outside the journal:\n{plain}");
    Ok(())
}
