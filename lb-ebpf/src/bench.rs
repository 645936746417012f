//! Programs for `cargo xtask bench` only. The agent loads the `xlb` program by name and never
//! these; they live in the same object so that the benchmark times exactly the program the
//! agent runs, with the same maps.
//!
//! - `bench_macswap`: the baseline, swaps the Ethernet addresses and returns XDP_TX.
//! - `bench_empty`: does nothing (XDP_PASS); the calibration target of the wrapper.
//! - `bench_wrap`: BPF_PROG_TEST_RUN with `repeat` does not restore the frame between
//!   iterations, so this wrapper restores it before every iteration (from `BENCH_FRAME`),
//!   optionally writes a per-iteration sequence number into one 4-byte field (a new 5-tuple
//!   every iteration), and tail-calls slot 0 of `BENCH_TARGET`: `xlb`, or `bench_empty` to
//!   measure the wrapper's own cost.
//! - `bench_sink`: attached by the forwarding-rate benchmark to the switch side of the
//!   load-balancer node's veth: drops (and counts) the flood, IPv4 UDP to port 9, and passes
//!   everything else. It stands for the wire: what the node sends is gone without costing the
//!   machine a trip through the bridge and a backend's stack.

use aya_ebpf::{
    bindings::xdp_action,
    helpers::generated::bpf_xdp_store_bytes,
    macros::{map, xdp},
    maps::{Array, PerCpuArray, ProgramArray},
    programs::XdpContext,
};

/// Largest frame `bench_wrap` restores.
pub const FRAME_MAX: usize = 128;

/// What `bench_wrap` writes before each iteration. The benchmark (tests/benches) mirrors this
/// layout.
#[repr(C)]
pub struct BenchFrame {
    /// Bytes of `bytes` copied to the start of the frame, 1..=FRAME_MAX.
    pub len: u32,
    /// Offset of a 4-byte field set to `bump_base + seq` (big-endian) each iteration, `seq`
    /// counting iterations in `BENCH_SEQ`; 0 = no field.
    pub bump_offset: u32,
    pub bump_base: u32,
    pub _pad: u32,
    pub bytes: [u8; FRAME_MAX],
}

#[map]
static BENCH_FRAME: Array<BenchFrame> = Array::with_max_entries(1, 0);
/// Iterations of `bench_wrap` with a bump field, over every run (shared, not per CPU: the
/// sequence must not repeat when the benchmark thread runs on another CPU).
#[map]
static BENCH_SEQ: Array<u32> = Array::with_max_entries(1, 0);
#[map]
static BENCH_TARGET: ProgramArray = ProgramArray::with_max_entries(1, 0);
/// `bench_sink`: [frames dropped (the flood), frames passed].
#[map]
static BENCH_SINK: PerCpuArray<u64> = PerCpuArray::with_max_entries(2, 0);

#[xdp]
pub fn bench_macswap(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    if start + 12 > ctx.data_end() {
        return xdp_action::XDP_ABORTED;
    }
    // dst = bytes 0..6, src = 6..12; both start 2-byte aligned.
    // SAFETY: the 12 bytes were checked against data_end above.
    unsafe {
        let w = start as *mut u16;
        let (d0, d1, d2) = (*w, *w.add(1), *w.add(2));
        *w = *w.add(3);
        *w.add(1) = *w.add(4);
        *w.add(2) = *w.add(5);
        *w.add(3) = d0;
        *w.add(4) = d1;
        *w.add(5) = d2;
    }
    xdp_action::XDP_TX
}

#[xdp]
pub fn bench_empty(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[xdp]
pub fn bench_wrap(ctx: XdpContext) -> u32 {
    if restore(&ctx).is_err() {
        return xdp_action::XDP_ABORTED;
    }
    // SAFETY: a tail call with this program's own context; it does not return on success.
    unsafe { BENCH_TARGET.tail_call(&ctx, 0) };
    // The tail call failed (empty slot).
    xdp_action::XDP_ABORTED
}

#[inline(always)]
fn restore(ctx: &XdpContext) -> Result<(), ()> {
    let frame = BENCH_FRAME.get_ptr(0).ok_or(())?;
    // SAFETY (this and the reads of `frame` below): a pointer the map returned for entry 0.
    let len = unsafe { (*frame).len } as usize;
    if len == 0 || len > FRAME_MAX {
        return Err(());
    }
    // SAFETY: see above.
    let bytes = unsafe { (*frame).bytes.as_ptr() } as *mut core::ffi::c_void;
    // SAFETY: the helper checks the range against the frame; `len` is at most FRAME_MAX.
    if unsafe { bpf_xdp_store_bytes(ctx.ctx, 0, bytes, len as u32) } != 0 {
        return Err(());
    }
    // SAFETY: see above.
    let offset = unsafe { (*frame).bump_offset };
    if offset != 0 {
        let seq = BENCH_SEQ.get_ptr_mut(0).ok_or(())?;
        // SAFETY: a pointer the map returned for entry 0 (a benchmark counter; races are harmless).
        let n = unsafe { *seq };
        // SAFETY: as above.
        unsafe { *seq = n.wrapping_add(1) };
        // SAFETY: see the reads of `frame` above.
        let mut value = unsafe { (*frame).bump_base }.wrapping_add(n).to_be();
        let buf = &mut value as *mut u32 as *mut core::ffi::c_void;
        // SAFETY: the helper checks the range against the frame.
        if unsafe { bpf_xdp_store_bytes(ctx.ctx, offset, buf, 4) } != 0 {
            return Err(());
        }
    }
    Ok(())
}

#[xdp]
pub fn bench_sink(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    // Ethernet (14) + IPv4 without options (20) + UDP ports (4).
    if start + 38 > ctx.data_end() {
        return sink_count(1, xdp_action::XDP_PASS);
    }
    // SAFETY: the 38 bytes were checked against data_end above.
    let flood = unsafe {
        let p = start as *const u8;
        *p.add(12) == 0x08 && *p.add(13) == 0x00 && *p.add(14) == 0x45 && *p.add(23) == 17 && *p.add(36) == 0 && *p.add(37) == 9
    };
    if flood {
        sink_count(0, xdp_action::XDP_DROP)
    } else {
        sink_count(1, xdp_action::XDP_PASS)
    }
}

#[inline(always)]
fn sink_count(index: u32, action: u32) -> u32 {
    if let Some(c) = BENCH_SINK.get_ptr_mut(index) {
        // SAFETY: a per-CPU slot the map returned.
        unsafe { *c += 1 };
    }
    action
}
