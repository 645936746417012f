//! The keepalived tree as xlb's TOML: `global_defs`, `vrrp_script` and `vrrp_instance` here,
//! `virtual_server` in `lvs.rs`, the document written by [`Doc`] one line at a time, each
//! line with the keepalived line it came from.
//!
//! The TOML is written as text rather than through toml_edit so that the line of every key is
//! known as it is written: an array whose elements came from lines of their own is written
//! one element a line, each with its own origin, and a string is always one line.

use std::{
    collections::{HashMap, HashSet},
    fmt::Write as _,
    net::IpAddr,
    str::FromStr,
    time::Duration,
};

use super::lexer::script_words;
use super::parse::Node;
use super::keywords::{GLOBAL_IGNORED, GLOBAL_REFUSED, INSTANCE_IGNORED, INSTANCE_REFUSED, TOP_IGNORED, TOP_REFUSED};
use super::{lvs, Diags, Pos};

/// The `--agent-config` file: a TOML `[agent]` table, copied as it is.
pub(super) struct AgentFile {
    pub(super) file: usize,
    pub(super) text: String,
}

/// A TOML value as text: one line, or an array written one element a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Value {
    One(String),
    Items(Vec<(String, Pos)>),
}

impl Value {
    pub(super) fn string(s: &str) -> Value {
        Value::One(quoted(s))
    }

    pub(super) fn number(n: impl std::fmt::Display) -> Value {
        Value::One(n.to_string())
    }

    pub(super) fn bool(b: bool) -> Value {
        Value::One(b.to_string())
    }

    pub(super) fn duration(d: Duration) -> Value {
        Value::string(&fmt_duration(d))
    }

    /// An array of strings on one line.
    pub(super) fn strings<S: AsRef<str>>(items: &[S]) -> Value {
        let items: Vec<String> = items.iter().map(|s| quoted(s.as_ref())).collect();
        Value::One(format!("[{}]", items.join(", ")))
    }

    /// An array of strings, each on the line it came from.
    pub(super) fn located<S: AsRef<str>>(items: &[(S, Pos)]) -> Value {
        Value::Items(items.iter().map(|(s, at)| (quoted(s.as_ref()), *at)).collect())
    }
}

/// A TOML basic string on one line.
pub(super) fn quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `text` as a TOML comment may hold it: control characters (which a keepalived word may
/// carry) written as escapes, on one line.
fn comment_text(text: &str) -> String {
    text.chars().map(|c| if c.is_control() && c != '\t' { c.escape_default().to_string() } else { c.to_string() }).collect()
}

/// "2s", "1500ms", "250us": what xlb's duration keys read.
pub(super) fn fmt_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}us", d.as_micros())
    }
}

/// One key of a table, with the keepalived line it came from and the notes (TOML comments)
/// written above it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Entry {
    pub(super) key: &'static str,
    pub(super) value: Value,
    pub(super) at: Pos,
    pub(super) notes: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Table {
    pub(super) entries: Vec<Entry>,
}

impl Table {
    /// Sets `key` (replacing an earlier value, which a later keyword overrides, as keepalived
    /// takes the last).
    pub(super) fn set(&mut self, key: &'static str, value: Value, at: Pos) -> &mut Entry {
        self.entries.retain(|e| e.key != key);
        self.entries.push(Entry { key, value, at, notes: Vec::new() });
        self.entries.last_mut().expect("just pushed")
    }

    pub(super) fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.key == key)
    }
}

/// A TOML table with its header's origin, a label for the header's comment, and notes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Block {
    pub(super) at: Pos,
    pub(super) label: String,
    pub(super) notes: Vec<String>,
    pub(super) table: Table,
}

impl Block {
    pub(super) fn new(at: Pos, label: impl Into<String>) -> Block {
        Block { at, label: label.into(), notes: Vec::new(), table: Table::default() }
    }
}

/// A `[[vrrp_instance]]` and its track scripts.
pub(super) struct Instance {
    block: Block,
    track_scripts: Vec<Block>,
    interface: Option<(String, Pos)>,
}

/// A `[[service]]`, its `[service.check]` and its backends with their own checks.
pub(super) struct Service {
    pub(super) block: Block,
    pub(super) check: Option<Block>,
    pub(super) backends: Vec<(Block, Option<Block>)>,
}

/// The TOML being written, and the origin of each of its lines.
#[derive(Default)]
pub(super) struct Doc {
    text: String,
    origins: Vec<Pos>,
}

impl Doc {
    fn line(&mut self, at: Pos, text: &str) {
        debug_assert!(!text.contains('\n'), "{text:?}");
        self.text.push_str(text);
        self.text.push('\n');
        self.origins.push(at);
    }

    fn comment(&mut self, at: Pos, indent: &str, text: &str) {
        self.line(at, &format!("{indent}# {}", comment_text(text)));
    }

    fn entries(&mut self, indent: &str, table: &Table) {
        for e in &table.entries {
            for note in &e.notes {
                self.comment(e.at, indent, &format!("note: {note}"));
            }
            match &e.value {
                Value::One(v) => self.line(e.at, &format!("{indent}{} = {v}", e.key)),
                Value::Items(items) => {
                    self.line(e.at, &format!("{indent}{} = [", e.key));
                    for (item, at) in items {
                        self.line(*at, &format!("{indent}  {item},"));
                    }
                    self.line(e.at, &format!("{indent}]"));
                }
            }
        }
    }

    fn block(&mut self, indent: &str, header: &str, block: &Block, files: &[String]) {
        self.line(block.at, "");
        let place = format!("{}:{}", files.get(block.at.file).map_or("", String::as_str), block.at.line);
        self.line(block.at, &format!("{indent}{header}  # {place}: {}", comment_text(&block.label)));
        for note in &block.notes {
            self.comment(block.at, indent, &format!("note: {note}"));
        }
        self.entries(indent, &block.table);
    }
}

/// Reads keywords' arguments and reports what is ignored, refused or unknown.
pub(super) struct Cx<'d> {
    pub(super) diags: &'d mut Diags,
    /// Warnings said once for the whole file (by key).
    said: HashSet<&'static str>,
    /// Service names given so far.
    pub(super) service_names: HashSet<String>,
}

/// Keywords with the reason xlb ignores (or refuses) each.
pub(super) type Reasons = &'static [(&'static str, &'static str)];

/// A value and the keepalived line it came from.
pub(super) type At<T> = (T, Pos);

/// A script's argv and the user it runs as.
pub(super) type Script = (Vec<String>, Option<At<String>>);

impl Cx<'_> {
    pub(super) fn warn_once(&mut self, key: &'static str, at: Pos, message: impl Into<String>) -> bool {
        if self.said.insert(key) {
            self.diags.warning(at, message);
            true
        } else {
            false
        }
    }

    /// A keyword xlb maps only approximately: a warning, and the same words as a note.
    pub(super) fn approx(&mut self, n: &Node, why: &str) -> String {
        let note = format!("{}: {why}", n.words.join(" "));
        self.diags.warning(n.at, note.clone());
        note
    }

    /// The `i`-th argument (0: the first after the keyword); an error when missing.
    pub(super) fn arg<'n>(&mut self, n: &'n Node, i: usize) -> Option<&'n str> {
        let a = n.args().get(i).map(String::as_str);
        if a.is_none() {
            self.diags.error(n.at, format!("{} needs a value", n.keyword()));
        }
        a
    }

    /// Warns of words after the first `used` arguments.
    pub(super) fn rest_ignored(&mut self, n: &Node, used: usize) {
        if n.args().len() > used {
            self.diags.warning(n.at, format!("{}: \"{}\" is ignored", n.keyword(), n.args()[used..].join(" ")));
        }
    }

    pub(super) fn number<T: FromStr>(&mut self, n: &Node, i: usize) -> Option<T> {
        let word = self.arg(n, i)?;
        match word.parse() {
            Ok(v) => Some(v),
            Err(_) => {
                self.diags.error(n.at, format!("{}: \"{word}\" is not a valid number here", n.keyword()));
                None
            }
        }
    }

    /// The keyword's one number, with its place.
    pub(super) fn located_number<T: FromStr>(&mut self, n: &Node) -> Option<(T, Pos)> {
        self.rest_ignored(n, 1);
        self.number(n, 0).map(|v| (v, n.at))
    }

    /// keepalived's `<TIMER>`: seconds, fractions allowed.
    pub(super) fn seconds(&mut self, n: &Node) -> Option<(Duration, Pos)> {
        self.rest_ignored(n, 1);
        let word = self.arg(n, 0)?;
        match word.parse::<f64>() {
            Ok(s) if s.is_finite() && (0.0..=86400.0).contains(&s) => Some((Duration::from_secs_f64(s), n.at)),
            _ => {
                self.diags.error(n.at, format!("{}: \"{word}\" is not a number of seconds (0 to 86400)", n.keyword()));
                None
            }
        }
    }

    /// keepalived's optional `<BOOL>`: absent means true.
    pub(super) fn flag(&mut self, n: &Node) -> Option<bool> {
        self.rest_ignored(n, 1);
        match n.args().first().map(String::as_str) {
            None | Some("on" | "true" | "yes") => Some(true),
            Some("off" | "false" | "no") => Some(false),
            Some(other) => {
                self.diags.error(n.at, format!("{}: \"{other}\" is not on, off, true, false, yes or no", n.keyword()));
                None
            }
        }
    }

    pub(super) fn ip(&mut self, at: Pos, what: &str, word: &str) -> Option<IpAddr> {
        match word.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.diags.error(at, format!("{what}: \"{word}\" is not an IP address"));
                None
            }
        }
    }

    /// A script as keepalived writes it (`notify_master "/x.sh arg" user group`): its argv and
    /// the user it runs as.
    pub(super) fn script(&mut self, n: &Node) -> Option<Script> {
        let text = self.arg(n, 0)?;
        let argv = match script_words(text) {
            Ok(argv) if !argv.is_empty() => argv,
            Ok(_) => {
                self.diags.error(n.at, format!("{}: the script is empty", n.keyword()));
                return None;
            }
            Err(e) => {
                self.diags.error(n.at, format!("{}: {e}", n.keyword()));
                return None;
            }
        };
        let user = n.args().get(1).map(|u| (u.trim_start_matches(':').to_string(), n.at));
        if n.args().len() > 2 {
            self.diags.warning(
                n.at,
                format!("{}: group \"{}\" is ignored: xlb runs a script with its user's primary group", n.keyword(), n.args()[2..].join(" ")),
            );
        }
        Some((argv, user))
    }

    /// A keyword the walker does not map: ignored (a warning), refused (an error) or unknown
    /// (an error), each naming the line.
    pub(super) fn other(&mut self, n: &Node, block: &str, ignored: Reasons, refused: Reasons) {
        let kw = n.keyword();
        if let Some((_, why)) = ignored.iter().find(|(k, _)| *k == kw) {
            self.diags.warning(n.at, format!("\"{kw}\" in {block} is ignored: {why}"));
        } else if let Some((_, why)) = refused.iter().find(|(k, _)| *k == kw) {
            self.diags.error(n.at, format!("\"{kw}\" in {block} is not supported: {why}"));
        } else {
            self.diags.error(n.at, format!("unknown keyword \"{kw}\" in {block}"));
        }
    }

    /// A keyword that takes a block and got none (or the reverse) is an error.
    pub(super) fn wants_block(&mut self, n: &Node, block: bool) -> bool {
        if n.block.is_some() != block {
            let message = if block { "needs a { ... } block" } else { "takes no { ... } block" };
            self.diags.error(n.at, format!("{} {message}", n.keyword()));
            return false;
        }
        true
    }
}

// ---------------------------------------------------------------------------------------------
// The document
// ---------------------------------------------------------------------------------------------

pub(super) fn convert(tree: &[Node], agent: Option<AgentFile>, diags: &mut Diags, files: &[String]) -> (String, Vec<Pos>) {
    let mut cx = Cx { diags, said: HashSet::new(), service_names: HashSet::new() };
    let mut global = Global::default();
    let mut scripts: HashMap<String, VrrpScript> = HashMap::new();
    let mut groups = HashMap::new();
    // Definitions first: instances and virtual servers may name them before they stand.
    for n in tree {
        match n.keyword() {
            "global_defs" if cx.wants_block(n, true) => global_defs(&mut cx, n, &mut global),
            "vrrp_script" if cx.wants_block(n, true) => {
                if let Some(s) = vrrp_script(&mut cx, n) {
                    if let Some(first) = scripts.get(&s.name) {
                        cx.diags.error(n.at, format!("vrrp_script {} is defined twice (first at line {})", s.name, first.at.line));
                    } else {
                        scripts.insert(s.name.clone(), s);
                    }
                }
            }
            "virtual_server_group" if cx.wants_block(n, true) => lvs::group(&mut cx, n, &mut groups),
            _ => {}
        }
    }
    let mut instances = Vec::new();
    let mut services = Vec::new();
    let mut used_scripts = HashSet::new();
    for n in tree {
        match n.keyword() {
            "global_defs" | "vrrp_script" | "virtual_server_group" => {}
            "vrrp_instance" if cx.wants_block(n, true) => {
                instances.extend(instance(&mut cx, n, &global, &scripts, &mut used_scripts));
            }
            "virtual_server" if cx.wants_block(n, true) => services.extend(lvs::virtual_server(&mut cx, n, &groups)),
            "vrrp_instance" | "virtual_server" => {}
            _ => cx.other(n, "the top level", TOP_IGNORED, TOP_REFUSED),
        }
    }
    for s in scripts.values().filter(|s| !used_scripts.contains(&s.name)) {
        cx.diags.warning(s.at, format!("vrrp_script {} is tracked by no vrrp_instance: it does not run (nor does it in keepalived)", s.name));
    }

    let main = Pos { file: 0, line: 0 };
    let mut doc = Doc::default();
    doc.comment(main, "", &format!("xlb configuration converted from {} (xlb convert).", files.first().map_or("", String::as_str)));
    doc.comment(main, "", "Each table names the keepalived line it comes from; \"note:\" comments say where");
    doc.comment(main, "", "the mapping is not one to one (xlb check-config shows them as warnings).");
    agent_table(&mut cx, &mut doc, agent, &instances, &global, files);
    for s in &services {
        doc.block("", "[[service]]", &s.block, files);
        if let Some(check) = &s.check {
            doc.block("  ", "[service.check]", check, files);
        }
        for (backend, check) in &s.backends {
            doc.block("  ", "[[service.backend]]", backend, files);
            if let Some(check) = check {
                doc.block("    ", "[service.backend.check]", check, files);
            }
        }
    }
    for i in &instances {
        doc.block("", "[[vrrp_instance]]", &i.block, files);
        for t in &i.track_scripts {
            doc.block("  ", "[[vrrp_instance.track_script]]", t, files);
        }
    }
    (doc.text, doc.origins)
}

// ---------------------------------------------------------------------------------------------
// [agent]
// ---------------------------------------------------------------------------------------------

/// The `[agent]` table: the agent file's text as it is (its lines keep their origins), then
/// what the keepalived.conf gives that the file does not set: `interfaces` (those of the
/// vrrp_instances, in order) and `script_user` (global_defs).
fn agent_table(cx: &mut Cx, doc: &mut Doc, agent: Option<AgentFile>, instances: &[Instance], global: &Global, files: &[String]) {
    let main = Pos { file: 0, line: 0 };
    let mut set_keys: Vec<String> = Vec::new();
    let mut has_header = false;
    if let Some(agent) = &agent {
        let name = files.get(agent.file).map_or("", String::as_str);
        doc.line(main, "");
        doc.comment(main, "", &format!("[agent] from {name}"));
        if let Ok(root) = toml::de::DeTable::parse(&agent.text) {
            for (key, value) in root.get_ref().iter() {
                let line = agent.text[..key.span().start].matches('\n').count() + 1;
                let at = Pos { file: agent.file, line };
                match (key.get_ref().as_ref(), value.get_ref()) {
                    ("agent", toml::de::DeValue::Table(t)) => set_keys.extend(t.iter().map(|(k, _)| k.get_ref().to_string())),
                    (other, _) => cx.diags.error(at, format!("{other}: {name} is for the [agent] table alone (the rest comes from the keepalived.conf)")),
                }
            }
        }
        has_header = agent.text.lines().any(|l| l.trim_start().starts_with("[agent]"));
        for (i, line) in agent.text.lines().enumerate() {
            doc.line(Pos { file: agent.file, line: i + 1 }, line);
        }
    }
    let mut appended = Table::default();
    let mut interfaces: Vec<(String, Pos)> = Vec::new();
    for i in instances {
        if let Some((name, at)) = &i.interface {
            if !interfaces.iter().any(|(n, _)| n == name) {
                interfaces.push((name.clone(), *at));
            }
        }
    }
    if !set_keys.iter().any(|k| k == "interfaces") {
        if interfaces.is_empty() {
            cx.diags.error(
                main,
                "no interface to attach to: a keepalived.conf without vrrp_instance names none; give them in the [agent] table \
                 of an agent file (interfaces = [\"eth0\"]) with --agent-config FILE",
            );
        } else {
            appended.set("interfaces", Value::located(&interfaces), interfaces[0].1).notes.push(
                "the interfaces of the vrrp_instances: XDP is attached to each (set interfaces in --agent-config to choose others)".into(),
            );
        }
    }
    if let Some((user, at)) = &global.script_user {
        if set_keys.iter().any(|k| k == "script_user") {
            cx.diags.warning(*at, "script_user is ignored: the agent file sets it");
        } else {
            appended.set("script_user", Value::string(user), *at);
        }
    }
    if agent.is_none() || !has_header {
        if agent.is_some() && !set_keys.is_empty() && !appended.entries.is_empty() {
            let file = agent.as_ref().map_or(0, |a| a.file);
            cx.diags.error(Pos { file, line: 0 }, "write the agent file's [agent] as a table (an [agent] line, then its keys), so that xlb can add to it");
            return;
        }
        if set_keys.is_empty() {
            doc.line(main, "");
            doc.line(appended.entries.first().map_or(main, |e| e.at), "[agent]");
            if agent.is_none() {
                doc.comment(main, "", "keepalived.conf has no [agent]: the other keys are xlb's defaults (--agent-config FILE sets them)");
            }
        }
    }
    doc.entries("", &appended);
}

// ---------------------------------------------------------------------------------------------
// global_defs
// ---------------------------------------------------------------------------------------------

/// What `global_defs` sets that instances and `[agent]` take.
#[derive(Default)]
struct Global {
    script_user: Option<(String, Pos)>,
    version: Option<(u8, Pos)>,
    garp_delay: Option<(Duration, Pos)>,
    garp_repeat: Option<(u32, Pos)>,
    garp_interval: Option<(Duration, Pos)>,
    gna_interval: Option<(Duration, Pos)>,
    checksum_as_v2: Option<(bool, Pos)>,
}

fn global_defs(cx: &mut Cx, n: &Node, g: &mut Global) {
    for c in n.children() {
        match c.keyword() {
            "router_id" => {
                cx.rest_ignored(c, 1);
                // keepalived names the node with it in e-mails and SNMP; xlb has neither.
            }
            "script_user" => {
                if let Some((argv, group)) = cx.script(c) {
                    g.script_user = Some((argv.join(" "), c.at));
                    if let Some((group, _)) = group {
                        cx.diags.warning(c.at, format!("script_user: group \"{group}\" is ignored: xlb runs scripts with the user's primary group"));
                    }
                }
            }
            // xlb always checks scripts as keepalived's enable_script_security does.
            "enable_script_security" => {}
            "vrrp_version" => {
                if let Some((v, at)) = cx.located_number::<u8>(c) {
                    if v == 2 || v == 3 {
                        g.version = Some((v, at));
                    } else {
                        cx.diags.error(at, format!("vrrp_version {v}: VRRP versions are 2 and 3"));
                    }
                }
            }
            "vrrp_garp_master_delay" => g.garp_delay = cx.seconds(c),
            "vrrp_garp_master_repeat" => g.garp_repeat = cx.located_number(c),
            "vrrp_garp_interval" => g.garp_interval = cx.seconds(c),
            "vrrp_gna_interval" => g.gna_interval = cx.seconds(c),
            "v3_checksum_as_v2" => g.checksum_as_v2 = cx.flag(c).map(|b| (b, c.at)),
            // xlb accepts adverts from its unicast peers alone, and logs an address list that
            // differs without refusing the advert: both always.
            "vrrp_check_unicast_src" | "vrrp_skip_check_adv_addr" => {}
            "vrrp_strict" => {
                cx.diags.warning(
                    c.at,
                    "\"vrrp_strict\" in global_defs is ignored: xlb has no strict mode (it takes traffic for the VIPs, \
                     accepts v2 passwords and unicast peers, and adds no firewall rules)",
                );
            }
            _ => cx.other(c, "global_defs", GLOBAL_IGNORED, GLOBAL_REFUSED),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// vrrp_script
// ---------------------------------------------------------------------------------------------

struct VrrpScript {
    at: Pos,
    name: String,
    command: Option<(Vec<String>, Pos)>,
    interval: Option<(Duration, Pos)>,
    timeout: Option<(Duration, Pos)>,
    weight: Option<(i32, Pos)>,
    rise: Option<(u32, Pos)>,
    fall: Option<(u32, Pos)>,
    user: Option<(String, Pos)>,
}

fn vrrp_script(cx: &mut Cx, n: &Node) -> Option<VrrpScript> {
    let name = cx.arg(n, 0)?.to_string();
    let mut s = VrrpScript { at: n.at, name, command: None, interval: None, timeout: None, weight: None, rise: None, fall: None, user: None };
    for c in n.children() {
        match c.keyword() {
            "script" => {
                if let Some((argv, user)) = cx.script(c) {
                    s.command = Some((argv, c.at));
                    if let Some(user) = user {
                        s.user = Some(user);
                    }
                }
            }
            "interval" => s.interval = cx.seconds(c),
            "timeout" => s.timeout = cx.seconds(c),
            "weight" => s.weight = weight(cx, c),
            "rise" => s.rise = cx.located_number(c),
            "fall" => s.fall = cx.located_number(c),
            "user" => {
                if let Some(u) = cx.arg(c, 0) {
                    s.user = Some((u.to_string(), c.at));
                }
                if c.args().len() > 1 {
                    cx.diags.warning(c.at, "user: the group is ignored: xlb runs a script with its user's primary group");
                }
            }
            _ => cx.other(
                c,
                "vrrp_script",
                &[("init_fail", "xlb counts a track script as neither up nor down until it has run")],
                &[],
            ),
        }
    }
    if s.command.is_none() {
        cx.diags.error(n.at, format!("vrrp_script {} has no script", s.name));
    }
    Some(s)
}

/// `weight N [reverse]`: reverse is refused.
fn weight(cx: &mut Cx, n: &Node) -> Option<(i32, Pos)> {
    let w = cx.number::<i32>(n, 0)?;
    match n.args().get(1).map(String::as_str) {
        None | Some("noreverse") => {}
        Some("reverse") => {
            cx.diags.error(n.at, "weight ... reverse is not supported: xlb adds a positive weight while the script succeeds and a negative one while it fails");
            return None;
        }
        Some(other) => cx.diags.warning(n.at, format!("weight: \"{other}\" is ignored")),
    }
    Some((w, n.at))
}

// ---------------------------------------------------------------------------------------------
// vrrp_instance
// ---------------------------------------------------------------------------------------------

/// An instance as read, before defaults and the rules between keywords.
#[derive(Default)]
struct Read {
    state: Option<(String, Pos)>,
    interface: Option<(String, Pos)>,
    vrid: Option<(u32, Pos)>,
    priority: Option<(u32, Pos)>,
    advert: Option<(Duration, Pos)>,
    version: Option<(u8, Pos)>,
    nopreempt: Option<Pos>,
    preempt_delay: Option<(Duration, Pos)>,
    auth: Option<Auth>,
    addresses: Vec<(IpAddr, Pos)>,
    excluded: Vec<(IpAddr, Pos)>,
    track_interfaces: Vec<(String, Pos)>,
    /// Each tracked script's name, its weight here if any, and the line.
    track_scripts: Vec<(String, Option<At<i32>>, Pos)>,
    peers: Vec<(IpAddr, Pos)>,
    min_ttl: Vec<(u8, Pos)>,
    use_vmac: Option<Pos>,
    garp_delay: Option<(Duration, Pos)>,
    garp_repeat: Option<(u32, Pos)>,
    garp_interval: Option<(Duration, Pos)>,
    gna_interval: Option<(Duration, Pos)>,
    checksum_as_v2: Option<(bool, Pos)>,
    notify: Vec<(&'static str, Vec<String>, Pos)>,
    notify_users: Vec<(String, Pos)>,
    /// Addresses with a `dev`, which must be the instance's interface.
    devs: Vec<(IpAddr, String, Pos)>,
    notes: Vec<String>,
}

struct Auth {
    at: Pos,
    kind: Option<(String, Pos)>,
    pass: Option<(String, Pos)>,
}

fn instance(
    cx: &mut Cx,
    n: &Node,
    global: &Global,
    scripts: &HashMap<String, VrrpScript>,
    used_scripts: &mut HashSet<String>,
) -> Option<Instance> {
    let name = cx.arg(n, 0)?.to_string();
    let mut r = Read::default();
    for c in n.children() {
        read_instance_keyword(cx, c, &mut r);
    }
    let mut block = Block::new(n.at, format!("vrrp_instance {name}"));
    block.notes.append(&mut r.notes);
    let t = &mut block.table;
    t.set("name", Value::string(&name), n.at);
    match &r.interface {
        Some((iface, at)) => {
            t.set("interface", Value::string(iface), *at);
            for (addr, dev, at) in r.devs.iter().filter(|(_, dev, _)| dev != iface) {
                cx.diags.error(
                    *at,
                    format!("{addr} dev {dev}: xlb adds an instance's addresses to its interface ({iface}); an address on another interface needs an instance there"),
                );
            }
        }
        None => cx.diags.error(
            n.at,
            format!("vrrp_instance {name} has no interface: xlb sends the adverts and adds the addresses on the instance's interface"),
        ),
    }
    match r.vrid {
        Some((vrid, at)) => {
            t.set("vrid", Value::number(vrid), at);
        }
        None => cx.diags.error(n.at, format!("vrrp_instance {name} has no virtual_router_id")),
    }
    let master = r.state.as_ref().is_some_and(|(s, _)| s == "MASTER");
    let priority = match (r.priority, &r.state) {
        (Some((p, at)), _) => {
            t.set("priority", Value::number(p), at);
            p
        }
        (None, Some((_, at))) if master => {
            t.set("priority", Value::number(255), *at).notes.push("state MASTER without priority: priority 255, as keepalived derives it".into());
            255
        }
        _ => 100,
    };
    if let Some((state, at)) = &r.state {
        if master && priority != 255 {
            // keepalived waits for the election too unless the priority is 255.
            block.notes.push(format!(
                "state {state} (line {}): every xlb node starts as backup and the election decides, as keepalived does below priority 255",
                at.line
            ));
        }
    }
    let v6 = r.addresses.first().is_some_and(|(a, _)| a.is_ipv6());
    let version = match (r.version, global.version) {
        (Some((v, at)), _) => {
            t.set("version", Value::number(v), at);
            v
        }
        _ if v6 => 3,
        (None, Some((v, at))) => {
            t.set("version", Value::number(v), at).notes.push("global_defs vrrp_version".into());
            v
        }
        (None, None) => {
            t.set("version", Value::number(2), n.at).notes.push("keepalived's default for IPv4 instances (xlb's is 3)".into());
            2
        }
    };
    if let Some((d, at)) = r.advert {
        t.set("advert_interval", Value::duration(d), at);
    }
    let mut nopreempt = r.nopreempt;
    let mut preempt_delay = r.preempt_delay;
    if master {
        if let Some(at) = nopreempt.take() {
            cx.diags.warning(at, "nopreempt is ignored with state MASTER (keepalived clears it too): use state BACKUP");
        }
        if let Some((_, at)) = preempt_delay.take() {
            cx.diags.warning(at, "preempt_delay is ignored with state MASTER (keepalived clears it too): use state BACKUP");
        }
    }
    if priority == 255 {
        if let Some(at) = nopreempt.take() {
            cx.diags.warning(at, "nopreempt is ignored with priority 255 (keepalived clears it too): the address owner always takes over");
        }
    }
    if let (Some(_), Some((_, at))) = (nopreempt, preempt_delay) {
        cx.diags.warning(at, "preempt_delay is ignored with nopreempt (keepalived clears it too)");
        preempt_delay = None;
    }
    if let Some(at) = nopreempt {
        t.set("preempt", Value::bool(false), at);
    }
    if let Some((d, at)) = preempt_delay {
        t.set("preempt_delay", Value::duration(d), at);
    }
    if let Some(auth) = &r.auth {
        auth_pass(cx, auth, version, t);
    }
    if !r.peers.is_empty() {
        let e = t.set("unicast_peers", Value::located(&r.peers.iter().map(|(a, at)| (a.to_string(), *at)).collect::<Vec<_>>()), r.peers[0].1);
        if r.min_ttl.is_empty() {
            // keepalived checks no TTL on unicast adverts unless told; xlb keeps them to the link.
            let note = "unicast_peer: xlb accepts adverts from these addresses alone, with TTL 255 (peers on the link);                         keepalived checks no TTL here: with a router between the nodes, give the peer a min_ttl";
            cx.diags.warning(r.peers[0].1, note);
            e.notes.push(note.into());
        }
        if let Some(&(low, at)) = r.min_ttl.iter().min_by_key(|(ttl, _)| *ttl) {
            t.set("min_ttl", Value::number(low.max(1)), at);
            if r.min_ttl.iter().any(|(ttl, _)| *ttl != low) || r.min_ttl.len() != r.peers.len() {
                cx.diags.warning(at, format!("min_ttl: xlb has one min_ttl for all peers of an instance: {} for every peer", low.max(1)));
            }
        }
    }
    if let Some((b, at)) = r.checksum_as_v2.or(global.checksum_as_v2) {
        if b && !v6 {
            t.set("checksum", Value::string("no-pseudo-header"), at);
        }
    }
    let family = if v6 { "IPv6" } else { "IPv4" };
    let mut addresses = r.addresses.clone();
    for (a, at) in &r.excluded {
        if a.is_ipv6() == v6 {
            addresses.push((*a, *at));
            cx.diags.warning(
                *at,
                format!("virtual_ipaddress_excluded {a}: xlb holds it with the instance and also names it in its adverts (a keepalived peer logs the difference and goes on)"),
            );
        } else {
            cx.diags.error(
                *at,
                format!("virtual_ipaddress_excluded {a}: an xlb instance holds addresses of one family ({family} here): give the {} addresses an instance of their own", if v6 { "IPv4" } else { "IPv6" }),
            );
        }
    }
    let at = r.addresses.first().map_or(n.at, |(_, at)| *at);
    t.set("virtual_addresses", Value::located(&addresses.iter().map(|(a, at)| (a.to_string(), *at)).collect::<Vec<_>>()), at);
    if let Some((count, at)) = r.garp_repeat.or(global.garp_repeat) {
        t.set("garp_count", Value::number(count), at);
    }
    let interval = if v6 { r.gna_interval.or(global.gna_interval) } else { r.garp_interval.or(global.garp_interval) };
    if let Some((d, at)) = interval {
        t.set("garp_interval", Value::duration(d), at);
    }
    if let Some((d, at)) = r.garp_delay.or(global.garp_delay) {
        t.set("garp_repeat_delay", Value::duration(d), at);
    }
    if let Some(at) = r.use_vmac {
        t.set("use_vmac", Value::bool(true), at);
    }
    if !r.track_interfaces.is_empty() {
        t.set("track_interfaces", Value::located(&r.track_interfaces), r.track_interfaces[0].1);
    }
    for (key, argv, at) in &r.notify {
        t.set(key, Value::strings(argv), *at);
    }
    if let Some((user, at)) = r.notify_users.first() {
        if let Some((other, other_at)) = r.notify_users.iter().find(|(u, _)| u != user) {
            cx.diags.error(*other_at, format!("notify scripts of one xlb instance run as one user: {user} (line {}) and {other}", at.line));
        }
        t.set("notify_user", Value::string(user), *at);
    }
    let mut track_scripts = Vec::new();
    for (script_name, weight, at) in &r.track_scripts {
        let Some(s) = scripts.get(script_name) else {
            cx.diags.error(*at, format!("track_script {script_name}: no vrrp_script of that name"));
            continue;
        };
        used_scripts.insert(script_name.clone());
        let mut b = Block::new(*at, format!("track_script {script_name} (vrrp_script at line {})", s.at.line));
        if let Some((argv, at)) = &s.command {
            b.table.set("command", Value::strings(argv), *at);
        }
        let (interval, iat) = s.interval.unwrap_or((Duration::from_secs(1), s.at));
        b.table.set("interval", Value::duration(interval), iat);
        let (timeout, tat) = s.timeout.unwrap_or((interval, iat));
        b.table.set("timeout", Value::duration(timeout), tat);
        if let Some((w, wat)) = weight.or(s.weight) {
            b.table.set("weight", Value::number(w), wat);
        }
        if let Some((rise, at)) = s.rise {
            b.table.set("rise", Value::number(rise), at);
        }
        if let Some((fall, at)) = s.fall {
            b.table.set("fall", Value::number(fall), at);
        }
        if let Some((user, at)) = &s.user {
            b.table.set("user", Value::string(user), *at);
        }
        track_scripts.push(b);
    }
    Some(Instance { block, track_scripts, interface: r.interface })
}

fn auth_pass(cx: &mut Cx, auth: &Auth, version: u8, t: &mut Table) {
    match &auth.kind {
        Some((kind, at)) if kind == "AH" => {
            cx.diags.error(*at, "auth_type AH is not supported: xlb has VRRP v2's simple password (auth_type PASS) alone");
            return;
        }
        Some((kind, at)) if kind != "PASS" => {
            cx.diags.error(*at, format!("auth_type {kind}: expected PASS (or AH)"));
            return;
        }
        _ => {}
    }
    let Some((pass, at)) = &auth.pass else {
        cx.diags.warning(auth.at, "authentication without auth_pass is ignored (so does keepalived)");
        return;
    };
    if version == 3 {
        cx.diags.warning(*at, "authentication is ignored: VRRP version 3 has none (keepalived ignores it too)");
        return;
    }
    let mut pass = pass.clone();
    if pass.len() > 8 {
        cx.diags.warning(*at, "auth_pass: only its first 8 characters are used, as keepalived does");
        pass = pass.chars().take(8).collect();
    }
    t.set("auth_pass", Value::string(&pass), *at);
}

fn read_instance_keyword(cx: &mut Cx, c: &Node, r: &mut Read) {
    let word0 = |cx: &mut Cx| cx.arg(c, 0).map(|w| (w.to_string(), c.at));
    match c.keyword() {
        "state" => {
            cx.rest_ignored(c, 1);
            if let Some((s, at)) = word0(cx) {
                match s.as_str() {
                    "MASTER" | "BACKUP" => r.state = Some((s, at)),
                    _ => cx.diags.error(at, format!("state {s}: expected MASTER or BACKUP")),
                }
            }
        }
        "interface" => {
            cx.rest_ignored(c, 1);
            r.interface = word0(cx);
        }
        "virtual_router_id" => r.vrid = cx.located_number(c),
        "priority" => r.priority = cx.located_number(c),
        "advert_int" => r.advert = cx.seconds(c),
        "version" => {
            if let Some((v, at)) = cx.located_number::<u8>(c) {
                if v == 2 || v == 3 {
                    r.version = Some((v, at));
                } else {
                    cx.diags.error(at, format!("version {v}: VRRP versions are 2 and 3"));
                }
            }
        }
        "nopreempt" => r.nopreempt = Some(c.at),
        // The default, in keepalived and xlb.
        "preempt" => r.nopreempt = None,
        "preempt_delay" => r.preempt_delay = cx.seconds(c),
        "authentication" if cx.wants_block(c, true) => {
            let mut auth = Auth { at: c.at, kind: None, pass: None };
            for a in c.children() {
                match a.keyword() {
                    "auth_type" => auth.kind = cx.arg(a, 0).map(|k| (k.to_string(), a.at)),
                    "auth_pass" => auth.pass = cx.arg(a, 0).map(|k| (k.to_string(), a.at)),
                    _ => cx.other(a, "authentication", &[], &[]),
                }
            }
            r.auth = Some(auth);
        }
        "virtual_ipaddress" | "virtual_ipaddress_excluded" if cx.wants_block(c, true) => {
            let excluded = c.keyword() == "virtual_ipaddress_excluded";
            for a in c.children() {
                if let Some((addr, dev)) = virtual_address(cx, a) {
                    if let Some(dev) = dev {
                        r.devs.push((addr, dev, a.at));
                    }
                    if excluded {
                        r.excluded.push((addr, a.at));
                    } else if r.addresses.first().is_some_and(|(f, _)| f.is_ipv6() != addr.is_ipv6()) {
                        cx.diags.error(a.at, format!("{addr}: the addresses of a virtual_ipaddress block are of one family"));
                    } else {
                        r.addresses.push((addr, a.at));
                    }
                }
            }
        }
        "track_interface" if cx.wants_block(c, true) => {
            for a in c.children() {
                if a.args().first().map(String::as_str) == Some("weight") {
                    if let Some((w, _)) = weight(cx, &Node { at: a.at, words: a.words[1..].to_vec(), block: None }) {
                        if w != 0 {
                            cx.diags.error(
                                a.at,
                                "track_interface with a weight is not supported: an xlb instance enters FAULT when a tracked interface is down; \
                                 track it with a vrrp_script (weight) instead",
                            );
                            continue;
                        }
                    }
                }
                r.track_interfaces.push((a.keyword().to_string(), a.at));
            }
        }
        "track_script" if cx.wants_block(c, true) => {
            for a in c.children() {
                let weight = match a.args() {
                    [] => None,
                    [w, ..] if w == "weight" => weight(cx, &Node { at: a.at, words: a.words[1..].to_vec(), block: None }),
                    _ => {
                        cx.diags.warning(a.at, format!("track_script {}: \"{}\" is ignored", a.keyword(), a.args().join(" ")));
                        None
                    }
                };
                r.track_scripts.push((a.keyword().to_string(), weight, a.at));
            }
        }
        "unicast_src_ip" | "mcast_src_ip" => {
            cx.rest_ignored(c, 1);
            if let Some(addr) = cx.arg(c, 0) {
                let note = cx.approx(
                    c,
                    &format!(
                        "xlb sends its adverts from the interface's primary address{}: make sure that is {addr}, the address the peers expect",
                        if addr.contains(':') { " (IPv6: its link-local address)" } else { "" }
                    ),
                );
                r.notes.push(note);
            }
        }
        "unicast_peer" if cx.wants_block(c, true) => {
            for a in c.children() {
                let Some(addr) = cx.ip(a.at, "unicast_peer", a.keyword()) else { continue };
                r.peers.push((addr, a.at));
                let mut words = a.args().iter();
                while let Some(w) = words.next() {
                    match (w.as_str(), words.next()) {
                        ("min_ttl", Some(v)) => match v.parse::<u8>() {
                            Ok(ttl) => r.min_ttl.push((ttl, a.at)),
                            Err(_) => cx.diags.error(a.at, format!("min_ttl: \"{v}\" is not 0 to 255")),
                        },
                        ("max_ttl", Some(_)) => cx.diags.warning(a.at, "max_ttl is ignored: xlb checks the lowest TTL only (min_ttl)"),
                        (other, _) => cx.diags.warning(a.at, format!("unicast_peer: \"{other}\" is ignored")),
                    }
                }
            }
        }
        // xlb always checks the source of unicast adverts.
        "check_unicast_src" => {}
        "use_vmac" => {
            r.use_vmac = Some(c.at);
            if !c.args().is_empty() {
                cx.diags.warning(c.at, format!("use_vmac: \"{}\" is ignored: xlb's macvlan is vrrp.{{vrid}} with the RFC's virtual MAC", c.args().join(" ")));
            }
        }
        "garp_master_delay" => r.garp_delay = cx.seconds(c),
        "garp_master_repeat" => r.garp_repeat = cx.located_number(c),
        "garp_interval" => r.garp_interval = cx.seconds(c),
        "gna_interval" => r.gna_interval = cx.seconds(c),
        "notify" | "notify_master" | "notify_backup" | "notify_fault" | "notify_stop" => {
            let key: &'static str = match c.keyword() {
                "notify" => "notify",
                "notify_master" => "notify_master",
                "notify_backup" => "notify_backup",
                "notify_fault" => "notify_fault",
                _ => "notify_stop",
            };
            if let Some((argv, user)) = cx.script(c) {
                r.notify.retain(|(k, _, _)| *k != key);
                r.notify.push((key, argv, c.at));
                r.notify_users.extend(user);
            }
        }
        "v3_checksum_as_v2" => r.checksum_as_v2 = cx.flag(c).map(|b| (b, c.at)),
        // xlb's master takes the traffic to its addresses: accept mode always.
        "accept" | "skip_check_adv_addr" | "native_ipv6" => {}
        "dont_track_primary" => {
            let note = cx.approx(c, "an xlb instance enters FAULT when its interface is down, missing or without carrier");
            r.notes.push(note);
        }
        _ => cx.other(c, "vrrp_instance", INSTANCE_IGNORED, INSTANCE_REFUSED),
    }
}

/// One line of `virtual_ipaddress`: `ADDRESS[/PREFIX] [dev NAME] [label L] [brd B] [scope S]
/// ...`: the address and its dev, if it names one.
fn virtual_address(cx: &mut Cx, a: &Node) -> Option<(IpAddr, Option<String>)> {
    let word = a.keyword();
    let (addr, prefix) = match word.split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (word, None),
    };
    let addr = cx.ip(a.at, "virtual_ipaddress", addr)?;
    if let Some(prefix) = prefix {
        let host = if addr.is_ipv4() { "32" } else { "128" };
        if prefix != host {
            cx.diags.warning(a.at, format!("{word}: xlb adds the address as /{host}: the /{prefix} subnet route does not come with it"));
        }
    }
    let mut dev = None;
    let mut words = a.args().iter();
    while let Some(w) = words.next() {
        let value = |words: &mut std::slice::Iter<String>| words.next().cloned().unwrap_or_default();
        match w.as_str() {
            "dev" => dev = Some(value(&mut words)),
            "label" => {
                let label = value(&mut words);
                cx.diags.warning(a.at, format!("{addr} label {label}: the label is ignored (xlb adds the address without one)"));
            }
            "brd" | "scope" | "peer" | "preferred_lft" => {
                let v = value(&mut words);
                cx.diags.warning(a.at, format!("{addr} {w} {v} is ignored: xlb adds the address as /32 (/128) with the defaults"));
            }
            "home" | "-nodad" | "nodad" | "mngtmpaddr" | "noprefixroute" | "autojoin" | "no_track" => {
                cx.diags.warning(a.at, format!("{addr} {w} is ignored"));
            }
            "use_vmac" => {
                cx.diags.error(a.at, format!("{addr} use_vmac: xlb sets use_vmac for the whole instance"));
                return None;
            }
            other => {
                cx.diags.error(a.at, format!("{addr}: unknown option \"{other}\""));
                return None;
            }
        }
    }
    Some((addr, dev))
}
