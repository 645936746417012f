//! Per-CPU budgets of events per second (new flows recorded, ICMP errors sent): a window that
//! restarts every `RATE_WINDOW_NS`, counted in a `RateWindow` of a per-CPU map.

use lb_common::{RateWindow, RATE_WINDOW_NS};

/// What taking one more from a budget came to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Spent {
    /// Within the budget: go on.
    Yes,
    /// The window's first refusal (worth one log line).
    FirstRefusal,
    /// Refused again.
    No,
}

/// Takes one from this CPU's budget of `limit` a window at `now`.
#[inline(always)]
pub fn spend(window: *mut RateWindow, limit: u64, now: u64) -> Spent {
    // SAFETY: a per-CPU slot a map returned; nothing else on this CPU runs meanwhile.
    unsafe {
        if now.wrapping_sub((*window).start) >= RATE_WINDOW_NS {
            (*window).start = now;
            (*window).recorded = 0;
        }
        if (*window).recorded >= limit {
            if (*window).recorded == limit {
                // Past the limit from now on: marked, so that the window refuses "first" once.
                (*window).recorded += 1;
                return Spent::FirstRefusal;
            }
            return Spent::No;
        }
        (*window).recorded += 1;
    }
    Spent::Yes
}
