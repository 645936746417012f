//! Per-CPU counters: one add per counter, no atomics needed.

use lb_common::Counters;

use crate::maps::{BACKEND_STATS, SERVICE_STATS, STATS};

#[inline(always)]
pub fn count(index: u32) {
    if let Some(c) = STATS.get_ptr_mut(index) {
        // SAFETY: a per-CPU slot the map returned; nothing else on this CPU runs meanwhile.
        unsafe { *c += 1 };
    }
}

#[inline(always)]
fn add(counters: Option<*mut Counters>, bytes: u32, recorded: bool) {
    if let Some(c) = counters {
        // SAFETY: a per-CPU slot the map returned; nothing else on this CPU runs meanwhile.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes as u64;
            if recorded {
                (*c).flows += 1;
            }
        }
    }
}

/// A packet forwarded for `service` to `backend`; `recorded`: its flow was recorded with it.
#[inline(always)]
pub fn count_forwarded(service: u32, backend: u32, bytes: u32, recorded: bool) {
    add(SERVICE_STATS.get_ptr_mut(service), bytes, recorded);
    add(BACKEND_STATS.get_ptr_mut(backend), bytes, recorded);
}
