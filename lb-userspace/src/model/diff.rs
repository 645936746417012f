//! What changes between two models: the work the agent does on the maps, and no more.

use lb_common::ServiceKey;

use super::{Model, ServiceModel};
use crate::config::CheckConfig;

/// The difference from an old model to a new one, by identity (ids and slots are stable, so an
/// id or slot present in both names the same service or backend).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Diff {
    /// Services of the new model only (ids).
    pub services_added: Vec<u32>,
    /// Services of the old model only: (id, key).
    pub services_removed: Vec<(u32, ServiceKey)>,
    /// Services in both whose table or map value must be written again (ids).
    pub services_changed: Vec<u32>,
    /// Services in both whose table and value stay (a rename, say): ids.
    pub services_kept: Vec<u32>,
    /// Backends of the new model only (slots).
    pub backends_added: Vec<u32>,
    /// Backends of the old model only (slots).
    pub backends_removed: Vec<u32>,
    /// Backends in both with another weight or health check (slots).
    pub backends_changed: Vec<u32>,
    /// The fragment entries differ.
    pub fragments_changed: bool,
    /// The set of VIPs differs.
    pub vips_changed: bool,
    /// The health checks differ (one added, removed or changed, or their order): the checker
    /// must be given the new list.
    pub checks_changed: bool,
    /// Backends checked in both with the same check (slots): their health carries over.
    pub checks_kept: Vec<u32>,
}

impl Diff {
    pub fn between(old: &Model, new: &Model) -> Diff {
        let mut diff = Diff::default();
        for svc in &new.services {
            match old.service(svc.id) {
                None => diff.services_added.push(svc.id),
                Some(before) if table_inputs(old, before) != table_inputs(new, svc) => diff.services_changed.push(svc.id),
                Some(_) => diff.services_kept.push(svc.id),
            }
        }
        diff.services_removed =
            old.services.iter().filter(|s| new.service(s.id).is_none()).map(|s| (s.id, s.key)).collect();
        for (slot, b) in &new.backends {
            match old.backends.get(slot) {
                None => diff.backends_added.push(*slot),
                Some(before)
                    if before.weight != b.weight
                        || before.forward != b.forward
                        || !same_check(before.check.as_ref(), b.check.as_ref()) =>
                {
                    diff.backends_changed.push(*slot)
                }
                Some(_) => {}
            }
        }
        diff.backends_removed = old.backends.keys().filter(|s| !new.backends.contains_key(s)).copied().collect();
        diff.fragments_changed = old.fragments != new.fragments;
        diff.vips_changed = old.vips() != new.vips();
        let (old_checks, new_checks) = (old.checks(), new.checks());
        diff.checks_kept = new_checks
            .iter()
            .filter(|(slot, c)| old_checks.iter().any(|(s, o)| s == slot && same_check(Some(o), Some(c))))
            .map(|(slot, _)| *slot)
            .collect();
        diff.checks_changed = old_checks.len() != new_checks.len()
            || old_checks.iter().zip(&new_checks).any(|((a, ca), (b, cb))| a != b || !same_check(Some(ca), Some(cb)));
        diff
    }

    /// Nothing to do on the maps.
    pub fn is_empty(&self) -> bool {
        self.services_added.is_empty()
            && self.services_removed.is_empty()
            && self.services_changed.is_empty()
            && self.backends_added.is_empty()
            && self.backends_removed.is_empty()
            && self.backends_changed.is_empty()
            && !self.fragments_changed
            && !self.vips_changed
            && !self.checks_changed
    }

    /// Whether flows may no longer fit (a backend or service left): the flow table must be
    /// swept.
    pub fn removes_anything(&self) -> bool {
        !self.services_removed.is_empty() || !self.backends_removed.is_empty()
    }
}

/// Everything a service's published table and map value depend on, apart from which backends
/// are usable at the moment: scheduler, size, quorum, and its backends with their weights.
fn table_inputs(model: &Model, svc: &ServiceModel) -> (u32, u32, u32, Vec<(u32, u32)>, Option<u32>) {
    let mut members: Vec<(u32, u32)> =
        svc.members.iter().map(|slot| (*slot, model.backends.get(slot).map_or(0, |b| b.weight))).collect();
    members.sort_unstable();
    (svc.flags(), svc.table_size, svc.quorum, members, svc.sorry)
}

/// The same check, wherever in the file it is written (its line aside).
fn same_check(a: Option<&CheckConfig>, b: Option<&CheckConfig>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => CheckConfig { line: 0, ..a.clone() } == CheckConfig { line: 0, ..b.clone() },
        (a, b) => a.is_none() && b.is_none(),
    }
}
