//! Reload: read the file again, check it as `check-config` does, build the model, diff, apply.
//! A file with errors, or one that changes what cannot change live, leaves everything as it is.

use std::collections::HashSet;

use tracing::{info, warn};

use super::{runtime, Agent};
use crate::{
    config::{self, AgentConfig, VrrpConfig},
    health::Monitor,
    model::Model,
    vrrp::Vrrp,
};

impl Agent {
    /// Reloads the configuration file the agent started with. `Ok` says what changed; `Err`
    /// says why nothing did (the file's `file:line: message` diagnostics, say).
    pub(super) async fn reload(&mut self, monitor: &mut Monitor) -> Result<String, String> {
        // systemd (Type=notify) learns that a reload runs, and when it is over.
        super::notify(&[sd_notify::NotifyState::Reloading]);
        let result = self.reload_file(monitor).await;
        super::notify(&[sd_notify::NotifyState::Ready]);
        result
    }

    async fn reload_file(&mut self, monitor: &mut Monitor) -> Result<String, String> {
        let path = self.config_file.clone();
        let file = path.display().to_string();
        // Read as at start (a keepalived.conf is converted again): the TOML is what runs.
        let loaded = config::load_as(&path, &self.read_as).map_err(|e| format!("{file} has errors, nothing changed:\n{e}"))?;
        let (text, warnings) = (loaded.toml, loaded.warnings);
        for w in &warnings {
            warn!("{w}");
        }
        // Runtime changes hold unless the file changed what they are about.
        let (held, dropped) = runtime::still_applying(&text, &self.runtime);
        let cfg = runtime::running_config(&file, &text, &held)
            .map_err(|e| format!("{file} with the runtime changes is not valid, nothing changed:\n{e}"))?;
        let summary = self.take_config(cfg, monitor).await.map_err(|e| format!("{file}: {e}"))?;
        self.file_text = text;
        self.runtime = held;
        for d in &dropped {
            info!("runtime change dropped: {d}");
        }
        if !dropped.is_empty() {
            if let Err(e) = self.store_runtime() {
                warn!("{e}");
            }
        }
        let summary = format!("reloaded {file}: {summary}");
        info!("{summary}");
        Ok(summary)
    }

    /// Makes `cfg` the running configuration: refused (nothing changed) when it does not fit
    /// this host or changes what cannot change live; otherwise the diff is applied. Says what
    /// changed.
    pub(super) async fn take_config(&mut self, cfg: config::Config, monitor: &mut Monitor) -> Result<String, String> {
        let interfaces = self.net.interfaces().await.map_err(|e| format!("reading this host's interfaces: {e}"))?;
        if let Some(problems) = config::environment_errors(&cfg, &interfaces) {
            return Err(format!("does not fit this host, nothing changed:\n{problems}"));
        }
        if let Some(key) = changed_agent_setting(&self.model.agent, &cfg.agent) {
            return Err(format!("[agent] {key} cannot change while the agent runs (restart it for that); nothing changed"));
        }
        self.check_announce_change(cfg.announce.as_ref())?;
        if self.model.vrrp.is_empty() != cfg.vrrp.is_empty() {
            return Err("adding the first or removing the last [[vrrp_instance]] changes who holds the VIPs: restart the agent for that; nothing changed".into());
        }
        // Instances that are new, or changed (stopped and started anew: a changed master hands
        // over), must be able to open here.
        let (vrrp_gone, vrrp_new) = vrrp_changes(&self.model.vrrp, &cfg.vrrp);
        for v in &vrrp_new {
            Vrrp::check(v, &interfaces).map_err(|e| format!("{e}; nothing changed"))?;
        }
        let held = self.model.slots().with_reserved(self.purging.iter().copied());
        let new = Model::new(&cfg, &held).map_err(|e| format!("{e}; nothing changed"))?;
        self.take_announce(cfg.announce.clone());
        let neighbours = self.net.neighbours().await.map_err(|e| format!("reading the neighbour table: {e}"))?;
        let old_vips = self.model.vips();
        let paths = self.tunnel_paths(&new).await;
        let diff = match self.apply(new, &interfaces, &neighbours, &paths) {
            Ok(diff) => diff,
            Err(e) => {
                // The new model stands; the maps get there by the retries.
                self.out_of_sync("applying a change", &e);
                return Err(format!("taken, but writing the maps failed ({e}): retrying until they are in the desired state"));
            }
        };
        if diff.checks_changed {
            // Backends whose check stays as it was keep their health, with no new rise period.
            let unchanged: HashSet<u32> = diff.checks_kept.iter().copied().collect();
            *monitor = Monitor::spawn(self.check_specs(&unchanged)).map_err(|e| format!("restarting the health checker: {e}"))?;
            self.check_stats = monitor.stats.clone();
        }
        if let Some(vrrp) = self.vrrp.as_mut() {
            for name in &vrrp_gone {
                vrrp.remove(name).await;
                info!("vrrp_instance \"{name}\" stopped");
            }
            for v in &vrrp_new {
                vrrp.add(v, &interfaces).await.map_err(|e| format!("{e} (the rest of the change is applied)"))?;
                info!("vrrp_instance \"{}\" started", v.name);
            }
        }
        if diff.vips_changed && self.model.agent.assign_vips {
            self.move_vips(&old_vips).await;
        }
        self.resolve_backends(false).await;
        Ok(format!(
            "services +{} -{} ~{}, backends +{} -{} ~{}",
            diff.services_added.len(),
            diff.services_removed.len(),
            diff.services_changed.len(),
            diff.backends_added.len(),
            diff.backends_removed.len(),
            diff.backends_changed.len()
        ))
    }

    /// With `assign_vips`: adds the model's new VIPs to the first interface and removes those
    /// of `old` it no longer has.
    async fn move_vips(&self, old: &[std::net::IpAddr]) {
        let first = self.attached[0].ifindex;
        let now = self.model.vips();
        for vip in now.iter().filter(|v| !old.contains(v)) {
            match self.net.add_address(first, *vip).await {
                Ok(_) => info!("added VIP {vip} to {}", self.attached[0].name),
                Err(e) => warn!("{e}"),
            }
        }
        for vip in old.iter().filter(|v| !now.contains(v)) {
            match self.net.del_address(first, *vip).await {
                Ok(()) => info!("removed VIP {vip} from {}", self.attached[0].name),
                Err(e) => warn!("{e}"),
            }
        }
    }
}

/// The first `[agent]` key whose change a running agent cannot take (they shape the maps,
/// the attachment or the sockets).
fn changed_agent_setting(old: &AgentConfig, new: &AgentConfig) -> Option<&'static str> {
    [
        ("interfaces", old.interfaces != new.interfaces),
        ("xdp_mode", old.xdp_mode != new.xdp_mode),
        ("pin_path", old.pin_path != new.pin_path),
        ("control_socket", old.control_socket != new.control_socket),
        ("runtime_file", old.runtime_file != new.runtime_file),
        ("flow_table_size", old.flow_table_size != new.flow_table_size),
        ("max_services", old.max_services != new.max_services),
        ("assign_vips", old.assign_vips != new.assign_vips),
        ("http", old.http != new.http),
    ]
    .into_iter()
    .find_map(|(key, changed)| changed.then_some(key))
}

/// The instances to stop (names) and to start (configurations) to go from `old` to `new`: a
/// changed instance is both (compared without line numbers).
fn vrrp_changes(old: &[VrrpConfig], new: &[VrrpConfig]) -> (Vec<String>, Vec<VrrpConfig>) {
    let strip = |v: &VrrpConfig| {
        let mut v = v.clone();
        v.line = 0;
        for t in &mut v.track_scripts {
            t.line = 0;
        }
        v
    };
    let gone = old.iter().filter(|o| !new.iter().any(|n| strip(n) == strip(o))).map(|o| o.name.clone()).collect();
    let started = new.iter().filter(|n| !old.iter().any(|o| strip(o) == strip(n))).cloned().collect();
    (gone, started)
}
