//! Runtime changes (`xlb backend add|remove|weight|drain|enable`, `xlb service add|remove`):
//! they take effect at once, are kept in `runtime_file` so that a restart keeps them, and hold
//! across reloads until the file changes what they are about. With `--save` the change is
//! written into the configuration file instead (its comments and layout kept).
//!
//! The running configuration is always the file's text with the runtime changes made to it
//! (`config::edit`), parsed and checked like any file: one path for the file, reloads and
//! runtime changes.

use std::path::Path;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::Agent;
use crate::{
    config::{
        self,
        edit::{self, Change},
        Config, ConfigError,
    },
    health::Monitor,
};

/// A runtime change and what the file said of its subject when it was made.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct RuntimeChange {
    pub change: Change,
    pub subject: Option<String>,
}

/// The changes kept at `path` (none when the file does not exist).
pub(super) fn load(path: &Path) -> Result<Vec<RuntimeChange>, String> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Writes `contents` to `path` whole or not at all (a temporary file renamed over it).
pub(super) fn write_atomically(path: &Path, contents: &[u8]) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("writing {}: {e}", path.display());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)
}

/// The changes of `held` that still apply to the file `text`: those whose subject the file
/// has not changed since they were made, and that still fit it; and what was dropped, said.
pub(super) fn still_applying(text: &str, held: &[RuntimeChange]) -> (Vec<RuntimeChange>, Vec<String>) {
    let (mut kept, mut dropped): (Vec<RuntimeChange>, Vec<String>) = (Vec::new(), Vec::new());
    for r in held {
        if r.change.subject_in(text) != r.subject {
            dropped.push(format!("{} (the file changed it)", r.change));
            continue;
        }
        let mut trial: Vec<Change> = kept.iter().map(|k| k.change.clone()).collect();
        trial.push(r.change.clone());
        match edit::apply(text, &trial) {
            Ok(_) => kept.push(r.clone()),
            Err(e) => dropped.push(format!("{} (no longer fits: {e})", r.change)),
        }
    }
    (kept, dropped)
}

/// `text` with `held` made to it, parsed and checked as `file`. Diagnostics of the edited text
/// carry no line (its lines are not the file's).
pub(super) fn running_config(file: &str, text: &str, held: &[RuntimeChange]) -> Result<Config, String> {
    let changes: Vec<Change> = held.iter().map(|r| r.change.clone()).collect();
    let edited = edit::apply(text, &changes)?;
    match config::parse(file, &edited) {
        Ok((cfg, _)) => Ok(cfg),
        Err(ConfigError { diagnostics }) => {
            Err(diagnostics.iter().map(|d| d.message.clone()).collect::<Vec<_>>().join("\n"))
        }
    }
}

impl Agent {
    /// Makes `change` now; with `save`, also in the configuration file.
    pub(super) async fn change(&mut self, change: Change, save: bool, monitor: &mut Monitor) -> Result<String, String> {
        let file = self.config_file.display().to_string();
        let refused = |e: String| format!("{change}: refused, nothing changed:\n{e}");
        let (text, held) = if save {
            if self.read_as.format == Some(config::Format::Keepalived) {
                return Err(refused(format!(
                    "--save would write TOML into {file}, a keepalived.conf: make the change without --save (it is kept in runtime_file), or move to the TOML of xlb convert"
                )));
            }
            let saved = edit::apply(&self.file_text, std::slice::from_ref(&change)).map_err(refused)?;
            // The file alone must be valid; the runtime changes it now covers drop out.
            config::parse(&file, &saved).map_err(|e| refused(e.to_string()))?;
            let (kept, _) = still_applying(&saved, &self.runtime);
            (saved, kept)
        } else {
            let mut held = self.runtime.clone();
            held.push(RuntimeChange { subject: change.subject_in(&self.file_text), change: change.clone() });
            (self.file_text.clone(), held)
        };
        let cfg = running_config(&file, &text, &held).map_err(refused)?;
        let summary = self.take_config(cfg, monitor).await.map_err(refused)?;
        let stored = if save {
            write_atomically(&self.config_file, text.as_bytes()).map(|()| format!("saved in {file}"))
        } else {
            Ok(format!("kept in {} until the file changes it", self.model.agent.runtime_file.display()))
        };
        self.file_text = text;
        self.runtime = held;
        let stored = stored.and_then(|s| self.store_runtime().map(|()| s));
        info!("runtime change: {change} ({summary})");
        match stored {
            Ok(where_) => Ok(format!("{change}; {where_}")),
            Err(e) => Err(format!("{change}: applied, but not stored: {e}")),
        }
    }

    /// Writes the runtime changes to `runtime_file`.
    pub(super) fn store_runtime(&self) -> Result<(), String> {
        let json = serde_json::to_vec_pretty(&self.runtime).expect("serializable");
        write_atomically(&self.model.agent.runtime_file, &json)
    }

    /// Takes the runtime changes an earlier agent kept into `cfg`, read from the file's `text`:
    /// those that still apply. Problems are logged; the file's configuration then runs alone.
    pub(super) fn adopt_runtime(&mut self, cfg: Config, text: String) -> Config {
        self.file_text = text;
        let held = match load(&cfg.agent.runtime_file) {
            Ok(held) => held,
            Err(e) => {
                warn!("runtime changes not taken: {e}");
                return cfg;
            }
        };
        let (kept, dropped) = still_applying(&self.file_text, &held);
        for d in &dropped {
            warn!("runtime change dropped: {d}");
        }
        if kept.is_empty() {
            return cfg;
        }
        match running_config(&cfg.file, &self.file_text, &kept) {
            Ok(running) => {
                info!("{} runtime changes taken over from {}", kept.len(), cfg.agent.runtime_file.display());
                self.runtime = kept;
                running
            }
            Err(e) => {
                warn!("runtime changes dropped, the configuration with them is not valid: {e}");
                cfg
            }
        }
    }

    /// How the backend `address` of service `service` differs from the file by runtime
    /// changes.
    pub(super) fn runtime_note(&self, service: &str, address: std::net::IpAddr) -> Option<String> {
        let notes: Vec<String> = self
            .effective_changes()
            .filter(|c| c.service() == service && c.backend() == Some(address))
            .map(|c| match c {
                Change::BackendAdd { weight, .. } => format!("added at run time, weight {weight}"),
                Change::BackendWeight { weight, .. } => format!("weight {weight} at run time"),
                _ => "drained at run time".to_owned(),
            })
            .collect();
        (!notes.is_empty()).then(|| notes.join(", "))
    }

    /// The runtime changes that act (drains undone by an enable left out).
    pub(super) fn effective_changes(&self) -> impl Iterator<Item = &Change> {
        edit::effective(self.runtime.iter().map(|r| &r.change)).into_iter()
    }
}
