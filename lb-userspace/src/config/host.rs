//! Checks of a configuration against this host: the interfaces it names exist, each backend
//! is on the subnet of an attached interface, the one [`egress_interface`] picks to reach it
//! (pure logic: the caller lists the host's interfaces, [`InterfaceInfo`]), and the scripts it
//! runs are safe to run as root and their users exist ([`check_scripts`], which reads this
//! host's filesystem and user database through a [`ScriptHost`]).

use std::{
    collections::HashSet,
    io,
    net::IpAddr,
    path::{Path, PathBuf},
};

use super::services::family;
use super::{Config, Diagnostic, InterfaceInfo, Severity};
use crate::health::CheckKind;

/// Checks `cfg` against this host's interfaces `ifaces`: every interface of `[agent]
/// interfaces` exists, and every backend is on the subnet of an address of one of them (which
/// is how [`egress_interface`] finds the interface that reaches it). Returns errors only.
/// [`check_environment`]'s errors one per line, or `None` when `cfg` fits this host.
pub fn environment_errors(cfg: &Config, ifaces: &[InterfaceInfo]) -> Option<String> {
    let problems = check_environment(cfg, ifaces);
    (!problems.is_empty()).then(|| problems.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n"))
}

pub fn check_environment(cfg: &Config, ifaces: &[InterfaceInfo]) -> Vec<Diagnostic> {
    let error = |line: usize, message: String| Diagnostic {
        file: cfg.file.clone(),
        line,
        severity: Severity::Error,
        message,
    };
    let mut out = Vec::new();
    for name in &cfg.agent.interfaces {
        if !ifaces.iter().any(|i| &i.name == name) {
            let existing: Vec<&str> = ifaces.iter().map(|i| i.name.as_str()).collect();
            out.push(error(
                cfg.agent.interfaces_line,
                format!("interface \"{name}\" does not exist on this host (it has: {})", existing.join(", ")),
            ));
        }
    }
    for i in &cfg.vrrp {
        for name in std::iter::once(&i.interface).chain(&i.track_interfaces) {
            if !ifaces.iter().any(|f| &f.name == name) {
                out.push(error(i.line, format!("interface \"{name}\" of vrrp_instance \"{}\" does not exist on this host", i.name)));
            }
        }
    }
    for svc in &cfg.services {
        // A tunnelled backend is wherever the routes lead; the agent follows them.
        let backends = svc.backends.iter().filter(|b| b.forward == super::Forward::Dr).map(|b| ("backend", b.address, b.line));
        for (what, address, line) in backends.chain(svc.sorry.map(|a| ("sorry backend", a, svc.line))) {
            if egress_interface(address, ifaces, &cfg.agent.interfaces).is_none() {
                out.push(error(
                    line,
                    format!(
                        "{what} {address} of service \"{}\" is not on the subnet of any attached interface ({})",
                        svc.name,
                        describe_subnets(address, ifaces, &cfg.agent.interfaces)
                    ),
                ));
            }
        }
    }
    out.extend(check_scripts(cfg, &ThisHost));
    // A keepalived.conf's diagnostics name its own lines.
    out.into_iter().map(|d| cfg.source.place(d)).collect()
}

/// What [`check_scripts`] reads of a host: its files and its users.
pub trait ScriptHost {
    /// `stat(2)` of `path`, following symbolic links.
    fn meta(&self, path: &Path) -> io::Result<FileMeta>;
    /// `path` with every symbolic link resolved, absolute.
    fn canonical(&self, path: &Path) -> io::Result<PathBuf>;
    /// The directories of `PATH`, where a program named without a `/` is looked for.
    fn search_path(&self) -> Vec<PathBuf>;
    /// Whether user `name` exists.
    fn user_exists(&self, name: &str) -> io::Result<bool>;
}

/// What [`ScriptHost::meta`] tells of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMeta {
    pub uid: u32,
    pub gid: u32,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    pub dir: bool,
}

/// This machine.
struct ThisHost;

impl ScriptHost for ThisHost {
    fn meta(&self, path: &Path) -> io::Result<FileMeta> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path)?;
        Ok(FileMeta { uid: m.uid(), gid: m.gid(), mode: m.mode() & 0o7777, dir: m.is_dir() })
    }

    fn canonical(&self, path: &Path) -> io::Result<PathBuf> {
        std::fs::canonicalize(path)
    }

    fn search_path(&self) -> Vec<PathBuf> {
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default()
    }

    fn user_exists(&self, name: &str) -> io::Result<bool> {
        nix::unistd::User::from_name(name).map(|u| u.is_some()).map_err(io::Error::from)
    }
}

/// One place the configuration runs a script.
struct ScriptUse<'a> {
    /// How messages name it: `track_script of vrrp_instance "VI_1"`.
    what: String,
    program: &'a str,
    user: Option<&'a str>,
    line: usize,
}

fn script_uses(cfg: &Config) -> Vec<ScriptUse<'_>> {
    let mut uses = Vec::new();
    for svc in &cfg.services {
        for check in svc.backends.iter().filter_map(|b| b.check.as_ref()) {
            if let CheckKind::Script { argv, user } = &check.kind {
                let what = format!("the script check of service \"{}\"", svc.name);
                uses.push(ScriptUse { what, program: &argv[0], user: user.as_deref(), line: check.line });
            }
        }
    }
    for v in &cfg.vrrp {
        for t in &v.track_scripts {
            let what = format!("track_script of vrrp_instance \"{}\"", v.name);
            uses.push(ScriptUse { what, program: &t.command[0], user: t.user.as_deref(), line: t.line });
        }
        let notify = [
            ("notify", &v.notify),
            ("notify_master", &v.notify_master),
            ("notify_backup", &v.notify_backup),
            ("notify_fault", &v.notify_fault),
            ("notify_stop", &v.notify_stop),
        ];
        for (key, argv) in notify {
            if let Some(argv) = argv {
                let what = format!("{key} of vrrp_instance \"{}\"", v.name);
                uses.push(ScriptUse { what, program: &argv[0], user: v.notify_user.as_deref(), line: v.line });
            }
        }
    }
    uses
}

/// keepalived's `enable_script_security`, always on: the agent runs scripts as root (or as
/// `script_user`), so a script anybody but root can change is a way to root. Every script's
/// program (`argv[0]`, looked up in `PATH` when it has no `/`; a symbolic link followed to
/// its target) must be owned by root and writable by nobody else, and every directory above
/// it (of the path as written and of the target) owned by root and writable by neither
/// others nor a group other than root's. A program that cannot be found is refused too. The
/// users scripts run as must exist. Errors only, at the line of the script (notify scripts:
/// of their `[[vrrp_instance]]`).
pub fn check_scripts(cfg: &Config, host: &dyn ScriptHost) -> Vec<Diagnostic> {
    let error = |line: usize, message: String| Diagnostic { file: cfg.file.clone(), line, severity: Severity::Error, message };
    let mut out = Vec::new();
    let default_user = cfg.agent.script_user.as_deref();
    if let Some(user) = default_user {
        if let Some(problem) = missing_user(host, user) {
            out.push(error(cfg.agent.script_user_line, format!("script_user {problem}")));
        }
    }
    let mut seen = HashSet::new();
    for u in script_uses(cfg) {
        if !seen.insert((u.line, u.program, u.user)) {
            continue;
        }
        if let Some(user) = u.user.filter(|&user| Some(user) != default_user) {
            if let Some(problem) = missing_user(host, user) {
                out.push(error(u.line, format!("{}: user {problem}", u.what)));
            }
        }
        if let Err(problem) = script_is_safe(host, u.program) {
            out.push(error(
                u.line,
                format!(
                    "{} runs {problem}: a script must be owned by root and writable by root alone, in directories only root can write to \
                     (keepalived's enable_script_security)",
                    u.what
                ),
            ));
        }
    }
    out.sort_by_key(|d| d.line);
    out
}

fn missing_user(host: &dyn ScriptHost, user: &str) -> Option<String> {
    match host.user_exists(user) {
        Ok(true) => None,
        Ok(false) => Some(format!("\"{user}\" does not exist on this host")),
        Err(e) => Some(format!("\"{user}\" cannot be looked up: {e}")),
    }
}

/// Why `program` is not safe to run as root, as "PATH, which ...".
fn script_is_safe(host: &dyn ScriptHost, program: &str) -> Result<(), String> {
    let written = if program.contains('/') {
        PathBuf::from(program)
    } else {
        let dirs = host.search_path();
        let found = dirs.iter().map(|d| d.join(program)).find(|p| host.meta(p).is_ok_and(|m| !m.dir));
        found.ok_or_else(|| format!("{program}, which is not found in PATH"))?
    };
    let shown = written.display();
    let target = host.canonical(&written).map_err(|e| format!("{shown}, which cannot be checked: {e}"))?;
    let meta = host.meta(&target).map_err(|e| format!("{shown}, which cannot be checked: {e}"))?;
    let via = if target == written { String::new() } else { format!(" (a link to {})", target.display()) };
    if meta.dir {
        return Err(format!("{shown}{via}, which is a directory"));
    }
    if let Some(problem) = writable_by_others(&meta, false) {
        return Err(format!("{shown}{via}, which {problem}"));
    }
    let mut dirs: Vec<&Path> = written.ancestors().skip(1).filter(|d| d.is_absolute()).collect();
    dirs.extend(target.ancestors().skip(1));
    let mut checked = HashSet::new();
    for dir in dirs.into_iter().filter(|d| checked.insert(*d)) {
        let meta = host.meta(dir).map_err(|e| format!("{shown}{via}, whose directory {} cannot be checked: {e}", dir.display()))?;
        if let Some(problem) = writable_by_others(&meta, true) {
            return Err(format!("{shown}{via}, whose directory {} {problem}", dir.display()));
        }
    }
    Ok(())
}

/// Why a script (or, `dir`, a directory above one) lets someone other than root change what
/// runs. A file may not be writable by its group at all; a directory by a group other than
/// root's.
fn writable_by_others(meta: &FileMeta, dir: bool) -> Option<String> {
    if meta.uid != 0 {
        Some(format!("is owned by uid {}, not root", meta.uid))
    } else if meta.mode & 0o002 != 0 {
        Some("is writable by others".to_string())
    } else if meta.mode & 0o020 != 0 && (!dir || meta.gid != 0) {
        Some(format!("is writable by its group (gid {})", meta.gid))
    } else {
        None
    }
}

/// The interface, among those named in `allowed`, that has an address whose subnet contains
/// `addr`; the longest prefix wins, and between equal prefixes the interface listed first in
/// `allowed`.
pub fn egress_interface<'a>(
    addr: IpAddr,
    ifaces: &'a [InterfaceInfo],
    allowed: &[String],
) -> Option<&'a InterfaceInfo> {
    let mut best: Option<(&'a InterfaceInfo, u8)> = None;
    for name in allowed {
        let Some(iface) = ifaces.iter().find(|i| &i.name == name) else {
            continue;
        };
        for &(net, prefix) in &iface.addrs {
            let longer = best.is_none_or(|(_, best_prefix)| prefix > best_prefix);
            if longer && in_subnet(addr, net, prefix) {
                best = Some((iface, prefix));
            }
        }
    }
    best.map(|(iface, _)| iface)
}

/// Whether `addr` is inside `net/prefix` (false across families or for an invalid prefix).
fn in_subnet(addr: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (addr, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) if prefix <= 32 => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) if prefix <= 128 => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// "eth0: 203.0.113.2/24, eth1: no IPv4 address": the addresses of `addr`'s family on the
/// existing interfaces of `allowed`.
fn describe_subnets(addr: IpAddr, ifaces: &[InterfaceInfo], allowed: &[String]) -> String {
    let mut parts = Vec::new();
    for name in allowed {
        let Some(iface) = ifaces.iter().find(|i| &i.name == name) else {
            continue;
        };
        let before = parts.len();
        for (net, prefix) in &iface.addrs {
            if net.is_ipv4() == addr.is_ipv4() {
                parts.push(format!("{name}: {net}/{prefix}"));
            }
        }
        if parts.len() == before {
            parts.push(format!("{name}: no {} address", family(addr)));
        }
    }
    if parts.is_empty() {
        "none of them exists".to_string()
    } else {
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::HashMap,
        net::{Ipv4Addr, Ipv6Addr},
    };

    use super::*;
    use crate::config::parse;

    /// A made-up host: files by path (directories included), symbolic links, PATH, users.
    #[derive(Default)]
    struct Fake {
        files: HashMap<PathBuf, FileMeta>,
        links: HashMap<PathBuf, PathBuf>,
        path: Vec<PathBuf>,
        users: Vec<&'static str>,
    }

    const ROOT_DIR: FileMeta = FileMeta { uid: 0, gid: 0, mode: 0o755, dir: true };
    const ROOT_FILE: FileMeta = FileMeta { uid: 0, gid: 0, mode: 0o755, dir: false };

    impl Fake {
        /// Root's /, /usr, /usr/bin with `true` and `sh` in it, and PATH=/usr/bin.
        fn new() -> Fake {
            let mut f = Fake { path: vec!["/usr/bin".into()], users: vec!["root", "nobody"], ..Fake::default() };
            for d in ["/", "/usr", "/usr/bin", "/etc", "/etc/xlb", "/tmp", "/home", "/home/ann"] {
                f.files.insert(d.into(), ROOT_DIR);
            }
            for p in ["/usr/bin/true", "/usr/bin/sh"] {
                f.files.insert(p.into(), ROOT_FILE);
            }
            f.files.insert("/tmp".into(), FileMeta { mode: 0o1777, ..ROOT_DIR });
            f.files.insert("/home/ann".into(), FileMeta { uid: 1000, gid: 1000, ..ROOT_DIR });
            f
        }

        fn with(mut self, path: &str, meta: FileMeta) -> Fake {
            self.files.insert(path.into(), meta);
            self
        }
    }

    impl ScriptHost for Fake {
        fn meta(&self, path: &Path) -> io::Result<FileMeta> {
            let path = self.links.get(path).map_or(path, |t| t.as_path());
            self.files.get(path).copied().ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
        }

        fn canonical(&self, path: &Path) -> io::Result<PathBuf> {
            let target = self.links.get(path).cloned().unwrap_or_else(|| path.to_owned());
            self.meta(&target).map(|_| target)
        }

        fn search_path(&self) -> Vec<PathBuf> {
            self.path.clone()
        }

        fn user_exists(&self, name: &str) -> io::Result<bool> {
            Ok(self.users.contains(&name))
        }
    }

    /// A configuration running `program` as a notify script, a track script and a health
    /// check script, as `user` if given: its errors against `host`, as `line: message`.
    fn errors(host: &Fake, program: &str, user: Option<&str>) -> Vec<String> {
        let user_line = user.map(|u| format!("script_user = \"{u}\"\n")).unwrap_or_default();
        let text = format!(
            "[agent]\ninterfaces = [\"eth0\"]\n{user_line}\
             [[service]]\nname = \"web\"\nvip = \"203.0.113.100\"\nport = 80\n\
             [service.check]\ntype = \"script\"\ncommand = [\"{program}\", \"--quick\"]\n\
             [[service.backend]]\naddress = \"203.0.113.11\"\n[[service.backend]]\naddress = \"203.0.113.12\"\n\
             [[vrrp_instance]]\nname = \"VI_1\"\ninterface = \"eth0\"\nvrid = 51\nvirtual_addresses = [\"203.0.113.100\"]\n\
             notify_master = [\"{program}\"]\n\
             [[vrrp_instance.track_script]]\ncommand = [\"{program}\"]\n"
        );
        let (cfg, _) = parse("t.toml", &text).unwrap_or_else(|e| panic!("{e}"));
        check_scripts(&cfg, host).iter().map(|d| format!("{}: {}", d.line, d.message)).collect()
    }

    #[test]
    fn root_owned_scripts_in_root_directories_pass() {
        let host = Fake::new().with("/etc/xlb/check.sh", FileMeta { mode: 0o700, ..ROOT_FILE });
        assert_eq!(errors(&host, "/etc/xlb/check.sh", None), Vec::<String>::new());
        // Looked up in PATH; a directory writable by root's group is root's.
        let host = host.with("/usr/bin", FileMeta { mode: 0o775, ..ROOT_DIR });
        assert_eq!(errors(&host, "true", None), Vec::<String>::new());
        assert_eq!(errors(&host, "true", Some("nobody")), Vec::<String>::new());
    }

    #[test]
    fn scripts_others_can_change_are_refused_at_each_line() {
        let cases = [
            ("/etc/xlb/check.sh", FileMeta { uid: 1000, ..ROOT_FILE }, "/etc/xlb/check.sh, which is owned by uid 1000, not root"),
            ("/etc/xlb/check.sh", FileMeta { mode: 0o757, ..ROOT_FILE }, "/etc/xlb/check.sh, which is writable by others"),
            ("/etc/xlb/check.sh", FileMeta { mode: 0o775, ..ROOT_FILE }, "/etc/xlb/check.sh, which is writable by its group (gid 0)"),
            ("/tmp/check.sh", ROOT_FILE, "/tmp/check.sh, whose directory /tmp is writable by others"),
            ("/home/ann/check.sh", ROOT_FILE, "/home/ann/check.sh, whose directory /home/ann is owned by uid 1000, not root"),
        ];
        for (path, meta, problem) in cases {
            let host = Fake::new().with(path, meta);
            let errs = errors(&host, path, None);
            // The check table's line (once, although it applies to two backends), the
            // instance's for its notify script, the track script's.
            let lines: Vec<&str> = errs.iter().map(|e| e.split(':').next().unwrap()).collect();
            assert_eq!(lines, ["7", "14", "20"], "{errs:#?}");
            assert!(errs[0].starts_with(&format!("7: the script check of service \"web\" runs {problem}: a script must be owned by root")), "{errs:#?}");
            assert!(errs[1].starts_with(&format!("14: notify_master of vrrp_instance \"VI_1\" runs {problem}")), "{errs:#?}");
            assert!(errs[2].starts_with(&format!("20: track_script of vrrp_instance \"VI_1\" runs {problem}")), "{errs:#?}");
            assert!(errs[2].ends_with("(keepalived's enable_script_security)"), "{errs:#?}");
        }
        // A directory writable by a group other than root's.
        let host = Fake::new().with("/etc/xlb", FileMeta { gid: 50, mode: 0o775, ..ROOT_DIR }).with("/etc/xlb/c", ROOT_FILE);
        assert!(errors(&host, "/etc/xlb/c", None)[0].contains("whose directory /etc/xlb is writable by its group (gid 50)"));
    }

    #[test]
    fn links_missing_programs_and_users() {
        // A safe link to a script others can write: the target counts.
        let mut host = Fake::new().with("/etc/xlb/real.sh", FileMeta { mode: 0o777, ..ROOT_FILE });
        host.links.insert("/usr/bin/check".into(), "/etc/xlb/real.sh".into());
        let errs = errors(&host, "/usr/bin/check", None);
        assert!(errs[0].contains("/usr/bin/check (a link to /etc/xlb/real.sh), which is writable by others"), "{errs:#?}");
        // A link to a safe program, in a directory others can write (they could change it).
        let mut host = Fake::new();
        host.links.insert("/tmp/sh".into(), "/usr/bin/sh".into());
        let errs = errors(&host, "/tmp/sh", None);
        assert!(errs[0].contains("/tmp/sh (a link to /usr/bin/sh), whose directory /tmp is writable by others"), "{errs:#?}");
        // Not in PATH, not there at all.
        let errs = errors(&Fake::new(), "pidof", None);
        assert!(errs[0].contains("runs pidof, which is not found in PATH"), "{errs:#?}");
        let errs = errors(&Fake::new(), "/etc/xlb/gone.sh", None);
        assert!(errs[0].contains("runs /etc/xlb/gone.sh, which cannot be checked"), "{errs:#?}");
        // A script_user that does not exist: once, at its line.
        let errs = errors(&Fake::new(), "true", Some("xlb-nobody"));
        assert_eq!(errs, ["3: script_user \"xlb-nobody\" does not exist on this host"]);
    }

    #[test]
    fn this_hosts_shell_passes_and_a_world_writable_script_does_not() {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("skipped: the files made here must be root's");
            return;
        }
        assert_eq!(errors(&Fake::new(), "sh", None), Vec::<String>::new(), "the fake first");
        let text = "[agent]\ninterfaces = [\"eth0\"]\n[[vrrp_instance]]\nname = \"a\"\ninterface = \"eth0\"\nvrid = 1\n\
                    virtual_addresses = [\"203.0.113.100\"]\nnotify = [\"/bin/sh\", \"-c\", \"true\"]\n";
        let (cfg, _) = parse("t.toml", text).unwrap();
        assert_eq!(check_scripts(&cfg, &ThisHost), []);
        let dir = std::env::temp_dir().join(format!("xlb-host-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("notify.sh");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        let (cfg, _) = parse("t.toml", &text.replace("/bin/sh", &script.display().to_string())).unwrap();
        let errs = check_scripts(&cfg, &ThisHost);
        std::fs::remove_dir_all(&dir).ok();
        assert_eq!(errs.len(), 1, "{errs:?}");
        let shown = errs[0].to_string();
        assert!(shown.starts_with("t.toml:3: notify of vrrp_instance \"a\" runs "), "{shown}");
        assert!(shown.contains("is writable by others"), "{shown}");
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn subnet_edges() {
        let any4 = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        assert!(in_subnet(ip("192.0.2.1"), any4, 0));
        assert!(in_subnet(ip("192.0.2.1"), ip("192.0.2.1"), 32));
        assert!(!in_subnet(ip("192.0.2.2"), ip("192.0.2.1"), 32));
        assert!(!in_subnet(ip("192.0.2.1"), ip("192.0.2.1"), 33), "invalid prefix");
        assert!(in_subnet(ip("2001:db8::1"), IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0));
        assert!(in_subnet(ip("2001:db8::1"), ip("2001:db8::1"), 128));
        assert!(!in_subnet(ip("2001:db8::1"), any4, 0), "families differ");
    }
}
