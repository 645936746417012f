//! What the control socket reports of each instance ([`InstanceStatus`], shown by
//! `xlb stats`), and the one place it is written: the instance's task updates a
//! [`SharedStatus`] as it goes, and the handle reads a copy when asked.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex, MutexGuard},
};

use super::{
    machine::{Machine, State},
    packet::Invalid,
};
use crate::config::VrrpConfig;
pub use lb_common::status::InstanceStatus;

/// One instance's status, written by its task and read by the handle.
#[derive(Clone)]
pub struct SharedStatus(Arc<Mutex<InstanceStatus>>);

impl SharedStatus {
    /// An instance not started yet: INIT at its configured priority.
    pub(super) fn new(cfg: &VrrpConfig) -> SharedStatus {
        SharedStatus(Arc::new(Mutex::new(InstanceStatus {
            name: cfg.name.clone(),
            interface: cfg.interface.clone(),
            vrid: cfg.vrid,
            version: cfg.version,
            state: State::Initialize.as_str().into(),
            priority: cfg.priority,
            ..Default::default()
        })))
    }

    pub fn snapshot(&self) -> InstanceStatus {
        self.lock().clone()
    }

    /// Shows that the instance's task ended other than by shutdown. It may have panicked
    /// holding the lock: the status is written all the same.
    pub(super) fn failed(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).state = "FAILED".into();
    }

    /// The machine's state, priority and master, and the faults that hold it in FAULT.
    pub(super) fn publish(&self, machine: &Machine, faults: &BTreeSet<String>) {
        let mut st = self.lock();
        st.state = machine.state().as_str().into();
        st.priority = machine.priority();
        st.master = machine.master().map(|a| a.to_string());
        st.master_interval_ms = machine.master_interval().as_secs_f64() * 1e3;
        st.faults = faults.iter().cloned().collect();
        let answers = machine.answers();
        st.answers_sent = answers.sent;
        st.answers_suppressed = answers.suppressed;
        st.announcements_suppressed = answers.announcements_suppressed;
    }

    pub(super) fn advert_sent(&self) {
        self.lock().adverts_sent += 1;
    }

    /// A valid advert from another node; `mismatch` when its addresses differ from ours.
    pub(super) fn advert_received(&self, mismatch: bool) {
        let mut st = self.lock();
        st.adverts_received += 1;
        if mismatch {
            st.address_mismatch += 1;
        }
    }

    pub(super) fn invalid(&self, reason: Invalid) {
        *self.lock().invalid.entry(reason.as_str().to_owned()).or_default() += 1;
    }

    /// A change of state to `to`, shown as `shown` ("BACKUP -> MASTER: ...").
    pub(super) fn transition(&self, to: State, shown: String) {
        let mut st = self.lock();
        st.transitions += 1;
        if to == State::Master {
            st.became_master += 1;
        }
        st.last_transition = Some(shown);
    }

    fn lock(&self) -> MutexGuard<'_, InstanceStatus> {
        self.0.lock().expect("not poisoned")
    }
}
