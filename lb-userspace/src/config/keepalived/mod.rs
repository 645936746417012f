//! keepalived.conf as input: `xlb run --config /etc/keepalived/keepalived.conf`, `xlb
//! check-config` and `xlb convert` read it through one path:
//!
//! keepalived.conf (with its includes) -> lines of words (`lexer.rs`) -> a tree of blocks with
//! file:line (`parse.rs`) -> xlb's TOML, with comments where the mapping is not one to one
//! (`convert.rs`, `lvs.rs` for `virtual_server`; `keywords.rs` lists what is ignored or
//! refused, and why) -> the TOML reader -> [`super::Config`].
//!
//! Every line of the generated TOML remembers the keepalived file and line it came from
//! ([`Origins`]), so what the TOML reader finds is reported against the keepalived file and
//! line, and `xlb convert` prints exactly the TOML that `xlb run` runs from the keepalived.conf.
//!
//! A keepalived.conf has no `[agent]`: its `interfaces` are those of the `vrrp_instance`s, and
//! the rest are xlb's defaults, unless an agent file (`--agent-config FILE`, TOML with an
//! `[agent]` table) gives them. A keyword xlb ignores is a warning naming its line; one it
//! refuses (NAT, `vrrp_sync_group`, ...) or does not know is an error naming its line; one it
//! maps approximately is a warning and a comment in the TOML.

use std::{
    collections::BTreeMap,
    io,
    path::{Path, PathBuf},
    sync::Arc,
};

use super::{ConfigError, Diagnostic, Format, Loaded, ReadAs, Severity, Source};

mod convert;
mod keywords;
mod lexer;
mod lvs;
mod parse;
#[cfg(test)]
mod tests;

/// A place in the keepalived configuration: the index of a file in the list of files read (the
/// main file first, then the included ones and the agent file as they are read) and a 1-based
/// line (0: the file as a whole).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pos {
    pub file: usize,
    pub line: usize,
}

/// Where each line of the generated TOML came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origins {
    /// The files read, as diagnostics name them; [`Pos::file`] indexes this.
    pub files: Vec<String>,
    /// For line `n` (1-based) of the TOML, `lines[n - 1]`.
    pub lines: Vec<Pos>,
}

impl Origins {
    /// `d`, a diagnostic about a line of the generated TOML, about the keepalived line that
    /// line came from instead.
    pub fn place(&self, mut d: Diagnostic) -> Diagnostic {
        let pos = d.line.checked_sub(1).and_then(|i| self.lines.get(i)).copied().unwrap_or(Pos { file: 0, line: 0 });
        d.file = self.files.get(pos.file).cloned().unwrap_or(d.file);
        d.line = pos.line;
        d
    }
}

/// The problems found while reading and converting, with their places.
#[derive(Debug, Default)]
pub(super) struct Diags {
    items: Vec<(Pos, Severity, String)>,
}

impl Diags {
    pub(super) fn error(&mut self, at: Pos, message: impl Into<String>) {
        self.items.push((at, Severity::Error, message.into()));
    }

    pub(super) fn warning(&mut self, at: Pos, message: impl Into<String>) {
        self.items.push((at, Severity::Warning, message.into()));
    }
}

/// How the reader reaches files: the disk ([`Disk`]), or a map for tests and fuzzing
/// ([`InMemory`]).
pub trait Files {
    fn read(&self, path: &Path) -> io::Result<String>;
    /// The paths matching glob `pattern` (`*`, `?`, `[...]`), sorted.
    fn glob(&self, pattern: &str) -> io::Result<Vec<PathBuf>>;
}

/// This host's files.
pub struct Disk;

impl Files for Disk {
    fn read(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn glob(&self, pattern: &str) -> io::Result<Vec<PathBuf>> {
        let paths = glob::glob(pattern).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let mut found: Vec<PathBuf> = paths.filter_map(Result::ok).filter(|p| p.is_file()).collect();
        found.sort();
        Ok(found)
    }
}

/// Files held in memory, by path.
#[derive(Debug, Default, Clone)]
pub struct InMemory(pub BTreeMap<PathBuf, String>);

impl Files for InMemory {
    fn read(&self, path: &Path) -> io::Result<String> {
        self.0.get(path).cloned().ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))
    }

    fn glob(&self, pattern: &str) -> io::Result<Vec<PathBuf>> {
        let pattern = glob::Pattern::new(pattern).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        Ok(self.0.keys().filter(|p| pattern.matches_path(p)).cloned().collect())
    }
}

/// Whether `text` reads as a keepalived.conf rather than TOML: its first significant line is
/// neither a TOML table header (`[agent]`) nor a `key = value`. A keepalived.conf starts with a
/// keyword (`global_defs`, `vrrp_instance`, `include`, ...) and has no `=` in it; an empty
/// file is TOML (whose reader says what is missing).
pub fn looks_like_keepalived(text: &str) -> bool {
    let Some(line) = text.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('#')) else {
        return false;
    };
    if line.starts_with('!') {
        return true;
    }
    if line.starts_with('[') {
        return false;
    }
    match line.split_once('=') {
        Some((key, _)) => !key.trim().chars().all(|c| c.is_ascii_alphanumeric() || "_-.\"' ".contains(c)),
        None => true,
    }
}

/// Converts the keepalived.conf at `path`, whose text is `text`, to xlb's TOML, with the
/// `[agent]` table of `agent_config` (a TOML file) if given. Returns the TOML, where its lines
/// came from, and the conversion's own diagnostics.
pub fn convert(files: &dyn Files, path: &Path, text: &str, agent_config: Option<&Path>) -> (String, Origins, Vec<Diagnostic>) {
    let mut diags = Diags::default();
    let mut names = Vec::new();
    let lines = lexer::read(files, path, text, &mut names, &mut diags);
    let tree = parse::tree(lines, &mut diags);
    let agent = agent_config.map(|p| {
        let file = names.len();
        names.push(p.display().to_string());
        match files.read(p) {
            Ok(text) => convert::AgentFile { file, text },
            Err(e) => {
                diags.error(Pos { file, line: 0 }, format!("cannot read {}: {e}", p.display()));
                convert::AgentFile { file, text: String::new() }
            }
        }
    });
    let (toml, lines) = convert::convert(&tree, agent, &mut diags, &names);
    let origins = Origins { files: names, lines };
    let diagnostics = diags.items.iter().map(|(pos, severity, message)| diagnostic(&origins, *pos, *severity, message)).collect();
    (toml, origins, diagnostics)
}

fn diagnostic(origins: &Origins, pos: Pos, severity: Severity, message: &str) -> Diagnostic {
    Diagnostic { file: origins.files[pos.file].clone(), line: pos.line, severity, message: message.to_string() }
}

/// Reads the keepalived.conf at `path` (text `text`) into a [`Config`]: converted, then read
/// by the TOML reader, every diagnostic placed in the keepalived files. Refused when the
/// conversion or the TOML reader found an error.
pub fn read(files: &dyn Files, path: &Path, text: &str, agent_config: Option<&Path>) -> Result<Loaded, ConfigError> {
    let (toml, origins, mut diagnostics) = convert(files, path, text, agent_config);
    let file = path.display().to_string();
    let parsed = super::parse(&file, &toml);
    let (config, toml_diagnostics) = match parsed {
        Ok((config, warnings)) => (Some(config), warnings),
        Err(e) => (None, e.diagnostics),
    };
    // What the conversion said of a line already (in keepalived's words) is not said again.
    let converted_errors: Vec<(String, usize)> =
        diagnostics.iter().filter(|d| d.severity == Severity::Error).map(|d| (d.file.clone(), d.line)).collect();
    for d in toml_diagnostics {
        let d = origins.place(d);
        if !(d.severity == Severity::Error && converted_errors.contains(&(d.file.clone(), d.line))) {
            diagnostics.push(d);
        }
    }
    let order = |d: &Diagnostic| (origins.files.iter().position(|f| *f == d.file).unwrap_or(0), d.line);
    diagnostics.sort_by_key(order);
    let failed = diagnostics.iter().any(|d| d.severity == Severity::Error);
    match config {
        Some(mut config) if !failed => {
            config.source = Source {
                read_as: ReadAs { format: Some(Format::Keepalived), agent_config: agent_config.map(Path::to_path_buf) },
                origins: Some(Arc::new(origins)),
            };
            Ok(Loaded { config, warnings: diagnostics, toml })
        }
        _ => {
            if !failed {
                // The TOML reader refused without an error of its own: should not happen.
                diagnostics.push(Diagnostic { file, line: 0, severity: Severity::Error, message: "the converted configuration was refused".into() });
            }
            Err(ConfigError { diagnostics })
        }
    }
}
