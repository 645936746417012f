use std::{os::unix::process::ExitStatusExt, path::PathBuf, time::Instant};

use super::*;

const T: Duration = Duration::from_millis(300);

fn argv(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

fn script<'a>(argv: &'a [String], on_drop: OnDrop) -> Script<'a> {
    Script { argv, env: &[], timeout: T, user: None, on_drop }
}

async fn exit_code(s: Script<'_>) -> Option<i32> {
    match run(s).await.unwrap() {
        Ended::Exited(status) => status.code(),
        Ended::TimedOut => None,
    }
}

/// Whether process `pid` is gone (or a zombie awaiting its reaper).
fn dead(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

async fn wait_dead(pid: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while !dead(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    dead(pid)
}

/// A scratch directory for one test.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("xlb-script-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn read_pid(path: &std::path::Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        if let Ok(pid) = std::fs::read_to_string(path) {
            if pid.ends_with('\n') {
                return pid.trim().to_owned();
            }
        }
        assert!(Instant::now() < deadline, "no pid in {}", path.display());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn exit_status_environment_and_path_search() {
    let a = argv(&["sh", "-c", "exit 3"]);
    assert_eq!(exit_code(script(&a, OnDrop::Kill)).await, Some(3));
    let a = argv(&["true"]);
    assert!(run(script(&a, OnDrop::Kill)).await.unwrap().success());
    let a = argv(&["sh", "-c", r#"test "$XLB_TEST" = yes"#]);
    let env = [("XLB_TEST", "yes".to_string())];
    assert_eq!(exit_code(Script { env: &env, ..script(&a, OnDrop::Kill) }).await, Some(0));
    let a = argv(&["sh", "-c", "kill -9 $$"]);
    let Ended::Exited(status) = run(script(&a, OnDrop::Kill)).await.unwrap() else { panic!("timed out") };
    assert_eq!(status.signal(), Some(9));
}

#[tokio::test]
async fn a_script_past_its_timeout_is_killed_with_its_children() {
    for on_drop in [OnDrop::Kill, OnDrop::Leave] {
        let dir = scratch(&format!("timeout-{on_drop:?}"));
        let pidfile = dir.join("child.pid");
        let cmd = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        let a = argv(&["sh", "-c", &cmd]);
        let started = Instant::now();
        assert_eq!(run(script(&a, on_drop)).await.unwrap(), Ended::TimedOut);
        assert!(started.elapsed() < T + Duration::from_secs(1), "{:?}", started.elapsed());
        let pid = read_pid(&pidfile).await;
        assert!(wait_dead(&pid, Duration::from_secs(2)).await, "{on_drop:?}: the script's child {pid} survived the timeout");
        std::fs::remove_dir_all(&dir).ok();
    }
}

#[tokio::test]
async fn a_dropped_run_kills_or_leaves_the_script() {
    for on_drop in [OnDrop::Kill, OnDrop::Leave] {
        let dir = scratch(&format!("drop-{on_drop:?}"));
        let pidfile = dir.join("script.pid");
        let cmd = format!("echo $$ > {}; exec sleep 30", pidfile.display());
        let a = argv(&["sh", "-c", &cmd]);
        let s = Script { timeout: Duration::from_secs(60), ..script(&a, on_drop) };
        // Cancelled once the script runs.
        let pidfile2 = pidfile.clone();
        let cancelled = tokio::time::timeout(Duration::from_secs(3), async move {
            tokio::select! {
                _ = run(s) => panic!("the script ended"),
                pid = read_pid(&pidfile2) => pid,
            }
        });
        let pid = cancelled.await.unwrap();
        match on_drop {
            OnDrop::Kill => assert!(wait_dead(&pid, Duration::from_secs(2)).await, "a cancelled check's script {pid} survived"),
            OnDrop::Leave => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                assert!(!dead(&pid), "a notify script {pid} was killed with the agent's task");
                let _ = killpg(Pid::from_raw(pid.parse().unwrap()), Signal::SIGKILL);
            }
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}

#[tokio::test]
async fn a_script_runs_as_its_user_without_root_groups() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: changing user needs root");
        return;
    }
    let nobody = User::from_name("nobody").unwrap().expect("user nobody");
    let test = format!(r#"test "$(id -u)" = {} && test "$(id -g)" = {} && test "$(id -G)" = {}"#, nobody.uid, nobody.gid, nobody.gid);
    let a = argv(&["sh", "-c", &test]);
    assert_eq!(exit_code(Script { user: Some("nobody"), ..script(&a, OnDrop::Kill) }).await, Some(0));
    // Without a user, as the agent.
    let a = argv(&["sh", "-c", r#"test "$(id -u)" = 0"#]);
    assert_eq!(exit_code(script(&a, OnDrop::Kill)).await, Some(0));
}

#[tokio::test]
async fn what_cannot_run_says_why() {
    let a = argv(&["true"]);
    let e = run(Script { user: Some("no-such-user-xlb"), ..script(&a, OnDrop::Kill) }).await.unwrap_err();
    assert_eq!(e.to_string(), "user \"no-such-user-xlb\" does not exist");
    let a = argv(&["/nonexistent/notify.sh"]);
    let e = run(script(&a, OnDrop::Leave)).await.unwrap_err();
    assert!(e.to_string().starts_with("/nonexistent/notify.sh: "), "{e}");
    assert!(matches!(run(script(&[], OnDrop::Kill)).await, Err(ScriptError::Empty)));
}
