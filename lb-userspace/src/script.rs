//! Running the agent's scripts: health-check scripts (`type = "script"`), VRRP track scripts
//! and VRRP notify scripts all start through [`run`], so that all three are bounded the same
//! way:
//!
//! - no shell: `argv[0]` is the program (searched in `PATH` when it has no `/`);
//! - stdin, stdout and stderr on /dev/null;
//! - a process group of its own, killed whole (SIGKILL) when the script outlives its
//!   timeout, so that nothing it started survives it either;
//! - optionally as another user (`script_user`, keepalived's name): the child takes that
//!   user's uid and primary gid and drops the supplementary groups before `exec`.
//!
//! Which scripts may run at all (owned by root, writable by nobody else) is checked with the
//! configuration, before the agent starts or reloads (`config::host`).

use std::{
    io,
    process::{ExitStatus, Stdio},
    time::Duration,
};

use nix::{
    sys::signal::{killpg, Signal},
    unistd::{Pid, User},
};
use tokio::process::Command;

/// A script to run.
#[derive(Debug, Clone, Copy)]
pub struct Script<'a> {
    /// The program and its arguments.
    pub argv: &'a [String],
    /// Variables added to the agent's environment.
    pub env: &'a [(&'a str, String)],
    /// Past this the script's process group is killed.
    pub timeout: Duration,
    /// Run as this user instead of the agent's (root).
    pub user: Option<&'a str>,
    /// What becomes of a script still running when the future running it is dropped.
    pub on_drop: OnDrop,
}

/// See [`Script::on_drop`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDrop {
    /// Kill its process group: a check or track script cancelled with its task.
    Kill,
    /// Leave it running: a notify script, which the agent's exit must not cut short (its
    /// timeout no longer applies then).
    Leave,
}

/// How a script that ran ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Exited(ExitStatus),
    /// It ran past its timeout and was killed, with its process group.
    TimedOut,
}

impl Ended {
    /// Exit status 0.
    pub fn success(self) -> bool {
        matches!(self, Ended::Exited(s) if s.success())
    }
}

/// Why a script did not run to an end.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    #[error("empty command")]
    Empty,
    #[error("user \"{0}\" does not exist")]
    NoUser(String),
    #[error("looking up user \"{user}\": {reason}")]
    Lookup { user: String, reason: String },
    #[error("{program}: {source}")]
    Start { program: String, source: io::Error },
    #[error("waiting for {program}: {source}")]
    Wait { program: String, source: io::Error },
}

/// Kills a process group when dropped while armed.
struct GroupKiller(Option<Pid>);

impl GroupKiller {
    fn kill_now(&mut self) {
        if let Some(pgid) = self.0.take() {
            // The group leader is not reaped yet (it is our unwaited child), so its pid, the
            // group's id, cannot have been reused.
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }
}

impl Drop for GroupKiller {
    fn drop(&mut self) {
        self.kill_now();
    }
}

/// The uid and gid of `name`. The user database may be slow (NSS): looked up off the calling
/// thread, which may be the VRRP thread.
async fn lookup(name: &str) -> Result<(u32, u32), ScriptError> {
    let owned = name.to_owned();
    let failed = |reason: String| ScriptError::Lookup { user: name.to_owned(), reason };
    let found = tokio::task::spawn_blocking(move || User::from_name(&owned)).await.map_err(|e| failed(e.to_string()))?;
    match found.map_err(|e| failed(e.to_string()))? {
        Some(u) => Ok((u.uid.as_raw(), u.gid.as_raw())),
        None => Err(ScriptError::NoUser(name.to_owned())),
    }
}

/// Runs `script` to its end or its timeout (see the module documentation).
pub async fn run(script: Script<'_>) -> Result<Ended, ScriptError> {
    let Some((program, args)) = script.argv.split_first() else {
        return Err(ScriptError::Empty);
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .envs(script.env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(script.on_drop == OnDrop::Kill);
    if let Some(name) = script.user {
        // Run as root, std drops the supplementary groups (setgroups(0)) when it sets the uid.
        let (uid, gid) = lookup(name).await?;
        cmd.uid(uid).gid(gid);
    }
    let mut child = cmd.spawn().map_err(|source| ScriptError::Start { program: program.clone(), source })?;
    let pgid = child.id().map(|p| Pid::from_raw(p as i32));
    // Declared after `child`, so dropped (and the group killed) before `child` is; armed only
    // where a drop must kill.
    let mut group = GroupKiller(pgid.filter(|_| script.on_drop == OnDrop::Kill));
    match tokio::time::timeout(script.timeout, child.wait()).await {
        Ok(Ok(status)) => {
            // The leader is reaped: its pid may be reused, so the group is left alone now.
            group.0 = None;
            Ok(Ended::Exited(status))
        }
        Ok(Err(source)) => Err(ScriptError::Wait { program: program.clone(), source }),
        Err(_) => {
            group.0 = None;
            GroupKiller(pgid).kill_now();
            let _ = child.wait().await;
            Ok(Ended::TimedOut)
        }
    }
}

#[cfg(test)]
mod tests;
