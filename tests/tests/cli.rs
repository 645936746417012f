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
