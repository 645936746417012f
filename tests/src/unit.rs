//! The systemd unit the package installs, packaging/xlb.service, read so that lab tests run
//! exactly what systemd would run: systemd is not PID 1 where the tests run, so nothing can
//! start the unit itself. A test takes [`shipped`], runs its `exec_start` through
//! [`Exec::command`] with the lab's binary and configuration, stops it with `kill_signal` or
//! restarts it with `restart_kill_signal` and the same `exec_start`, and reloads with
//! `exec_reload`.

use std::{path::Path, process::Command, str::FromStr as _};

use anyhow::{bail, Context as _, Result};
use nix::sys::signal::Signal;

/// packaging/xlb.service as this build of the tests ships it.
pub const SHIPPED: &str = include_str!("../../packaging/xlb.service");

/// The binary the unit runs; [`Exec::command`] puts the lab's in its place.
pub const UNIT_BIN: &str = "/usr/sbin/xlb";
/// The configuration the unit names; [`Exec::command`] puts the lab's in its place.
pub const UNIT_CONFIG: &str = "/etc/xlb/xlb.toml";

/// What the lab needs of the unit: the commands systemd runs and the signals it sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unit {
    /// Run in order before `exec_start`; each must succeed.
    pub exec_start_pre: Vec<Exec>,
    pub exec_start: Exec,
    /// `systemctl reload`.
    pub exec_reload: Exec,
    /// `systemctl stop` (systemd's default: SIGTERM).
    pub kill_signal: Signal,
    /// `systemctl restart` (systemd's default: `kill_signal`).
    pub restart_kill_signal: Signal,
    /// Every `Key=value` of the file in order, as (section, key, value), for other checks.
    pub entries: Vec<(String, String, String)>,
}

/// One command line of the unit, split into its arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exec(pub Vec<String>);

impl Exec {
    /// The command with the unit's binary and configuration file replaced by `bin` and
    /// `config`.
    pub fn command(&self, bin: &Path, config: &Path) -> Command {
        let mut args = self.0.iter().map(|a| match a.as_str() {
            UNIT_BIN => bin.as_os_str().to_owned(),
            UNIT_CONFIG => config.as_os_str().to_owned(),
            other => other.into(),
        });
        let mut cmd = Command::new(args.next().expect("an Exec has a program"));
        cmd.args(args);
        cmd
    }
}

impl Exec {
    /// The arguments after the program, with the unit's configuration file replaced by
    /// `config` (for [`crate::Lab::spawn`], which takes the program apart).
    pub fn args(&self, config: &Path) -> Vec<String> {
        self.0[1..].iter().map(|a| if a == UNIT_CONFIG { config.display().to_string() } else { a.clone() }).collect()
    }
}

/// The shipped unit, parsed.
pub fn shipped() -> Result<Unit> {
    parse(SHIPPED).context("packaging/xlb.service")
}

/// Parses a unit file: `[Section]` headers, `Key=value` lines, `#` and `;` comments, and a
/// trailing `\` continuing a line. Exec lines must be plain words: no quotes, `$` variables,
/// `%` specifiers or `-@:+!` prefixes, which systemd would interpret and this does not.
pub fn parse(text: &str) -> Result<Unit> {
    let mut entries = Vec::new();
    let mut section = String::new();
    let mut pending = String::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if pending.is_empty() && (line.is_empty() || line.starts_with('#') || line.starts_with(';')) {
            continue;
        }
        if let Some(continued) = line.strip_suffix('\\') {
            pending.push_str(continued);
            pending.push(' ');
            continue;
        }
        let line = std::mem::take(&mut pending) + line;
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            bail!("line {}: neither [Section] nor Key=value: {raw}", n + 1);
        };
        if section.is_empty() {
            bail!("line {}: {key} before any [Section]", n + 1);
        }
        entries.push((section.clone(), key.trim().to_owned(), value.trim().to_owned()));
    }
    let service = |key: &str| -> Vec<&str> {
        entries.iter().filter(|(s, k, _)| s == "Service" && k == key).map(|(.., v)| v.as_str()).collect()
    };
    // An empty assignment resets a list, as systemd reads it.
    let execs = |key: &str| -> Result<Vec<Exec>> {
        let mut list = Vec::new();
        for value in service(key) {
            if value.is_empty() {
                list.clear();
            } else {
                list.push(exec(key, value)?);
            }
        }
        Ok(list)
    };
    let one = |key: &str| -> Result<Exec> {
        let mut list = execs(key)?;
        match list.len() {
            1 => Ok(list.remove(0)),
            n => bail!("{key}: {n} commands, the lab runs exactly one"),
        }
    };
    let signal = |key: &str| service(key).last().map(|v| parse_signal(key, v)).transpose();
    let kill_signal = signal("KillSignal")?.unwrap_or(Signal::SIGTERM);
    Ok(Unit {
        exec_start_pre: execs("ExecStartPre")?,
        exec_start: one("ExecStart")?,
        exec_reload: one("ExecReload")?,
        kill_signal,
        restart_kill_signal: signal("RestartKillSignal")?.unwrap_or(kill_signal),
        entries,
    })
}

impl Unit {
    /// The value systemd takes for `key` in `section`: the last one set.
    pub fn value(&self, section: &str, key: &str) -> Option<&str> {
        self.entries.iter().rev().find(|(s, k, _)| s == section && k == key).map(|(.., v)| v.as_str())
    }
}

fn exec(key: &str, value: &str) -> Result<Exec> {
    if value.starts_with(['-', '@', ':', '+', '!']) || value.contains(['"', '\'', '$', '%', ';']) {
        bail!("{key}={value}: prefixes, quotes, variables and specifiers are not read here");
    }
    Ok(Exec(value.split_whitespace().map(str::to_owned).collect()))
}

/// `SIGTERM`, `TERM` or a number, as systemd accepts them.
fn parse_signal(key: &str, value: &str) -> Result<Signal> {
    let parsed = match value.parse::<i32>() {
        Ok(n) => Signal::try_from(n).ok(),
        Err(_) if value.starts_with("SIG") => Signal::from_str(value).ok(),
        Err(_) => Signal::from_str(&format!("SIG{value}")).ok(),
    };
    parsed.with_context(|| format!("{key}={value}: not a signal"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Exec {
        Exec(s.split(' ').map(str::to_owned).collect())
    }

    #[test]
    fn the_shipped_unit_runs_the_agent_and_restarts_it_with_sigusr2() {
        let unit = shipped().unwrap();
        assert_eq!(unit.exec_start_pre, vec![words("/usr/sbin/xlb check-config /etc/xlb/xlb.toml")]);
        assert_eq!(unit.exec_start, words("/usr/sbin/xlb run --config /etc/xlb/xlb.toml"));
        assert_eq!(unit.exec_reload, words("/usr/sbin/xlb reload --config /etc/xlb/xlb.toml"));
        assert_eq!(unit.kill_signal, Signal::SIGTERM);
        assert_eq!(unit.restart_kill_signal, Signal::SIGUSR2);
        assert_eq!(unit.value("Service", "Type"), Some("notify"));
        // ExecStop would run on restart too, undoing what SIGUSR2 keeps.
        assert_eq!(unit.value("Service", "ExecStop"), None);
        let cmd = unit.exec_start.command(Path::new("/lab/xlb"), Path::new("/lab/xlb.toml"));
        assert_eq!(cmd.get_program(), "/lab/xlb");
        assert_eq!(cmd.get_args().collect::<Vec<_>>(), ["run", "--config", "/lab/xlb.toml"]);
    }

    #[test]
    fn parse_follows_systemd_defaults_resets_and_continuations() {
        let unit = parse(
            "# comment\n[Service]\nExecStartPre=/bin/a\nExecStartPre=\nExecStartPre=/bin/b \\\n  x\n\
             ExecStart=/bin/c\nExecReload=/bin/d\nKillSignal=INT\n",
        )
        .unwrap();
        assert_eq!(unit.exec_start_pre, vec![words("/bin/b x")]);
        assert_eq!(unit.kill_signal, Signal::SIGINT);
        assert_eq!(unit.restart_kill_signal, Signal::SIGINT);
        let err = |text: &str| parse(text).unwrap_err().to_string();
        assert!(err("[Service]\nExecStart=-/bin/c\nExecReload=/bin/d\n").contains("prefixes"));
        assert!(err("[Service]\nExecStart=/bin/c \"a b\"\nExecReload=/bin/d\n").contains("quotes"));
        assert!(err("[Service]\nExecReload=/bin/d\n").contains("ExecStart: 0 commands"));
        assert!(err("[Service]\nExecStart=/bin/c\nExecReload=/bin/d\nKillSignal=SIGNOPE\n").contains("not a signal"));
    }
}
