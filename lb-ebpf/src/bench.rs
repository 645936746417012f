//! Programs for `cargo xtask bench` only. The agent loads the `xlb` program by name and never
//! these; they live in the same object so that the benchmark times exactly the program the
//! agent runs, with the same maps.
//!
//! - `bench_macswap`: the baseline, swaps the Ethernet addresses and returns XDP_TX.
//! - `bench_empty`: does nothing (XDP_PASS); the calibration target of the wrapper.
//! - `bench_wrap`: BPF_PROG_TEST_RUN with `repeat` does not restore the frame between
//!   iterations, so this wrapper restores it before every iteration (from `BENCH_FRAME`, after
//!   undoing a tunnel's growth of the frame's front), optionally writes a per-iteration
//!   sequence number into one 4-byte field (a new 5-tuple every iteration), and tail-calls slot 0 of `BENCH_TARGET`: `xlb`, or `bench_empty` to
//!   measure the wrapper's own cost. With `alternate`, every other iteration restores a second
//!   frame (`alt_bytes`, not bumped) instead: a flood of new 5-tuples interleaved 1:1 with an
//!   established flow's packets.
//! - `bench_sink`: attached by the forwarding-rate benchmark to the switch side of the
//!   load-balancer node's veth: drops (and counts) the flood, IPv4 UDP to port 9 (or, in IPIP,
//!   to port 10), and passes
//!   everything else. It stands for the wire: what the node sends is gone without costing the
//!   machine a trip through the bridge and a backend's stack.
//! - `bench_hit_*`: the flow-table hit path of `xlb` built up step by step from the same
//!   functions `xlb` calls, so that part 1 of the benchmark shows where a hit's nanoseconds go:
//!   `parse` (headers and the VIP bitmap, then XDP_TX with the frame untouched), `lookup` (+ the
//!   flow-table lookup, still XDP_TX untouched), `rewrite` (+ the backend's entry and the MAC
//!   rewrite), `checked` (+ the own-MAC check), `refresh` (+ the entry's FIN mark and last-seen time), and `norefresh` (all of
//!   `xlb`'s hit path but the refresh). `xlb` itself is the last step (+ the counters).
//! - `bench_minimal`: the forwarding-path limit of part 3, a minimal XDP forwarder. IPv4 TCP and
//!   UDP to any destination go to one of three backends, a hash of the 5-tuple mod 3, with the
//!   Ethernet addresses rewritten from `BENCH_MINIMAL` (written by the benchmark) and XDP_TX;
//!   everything else passes. No other map, no counter.

use aya_ebpf::{
    bindings::xdp_action,
    helpers::generated::{bpf_xdp_adjust_head, bpf_xdp_store_bytes},
    macros::{map, xdp},
    maps::{Array, PerCpuArray, ProgramArray},
    programs::XdpContext,
};

use crate::{forward::forward, parse, select, stats, track};

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
    /// Non-zero (with a bump field): odd iterations restore `alt_bytes` (also `len` long) and
    /// bump nothing.
    pub alternate: u32,
    pub bytes: [u8; FRAME_MAX],
    pub alt_bytes: [u8; FRAME_MAX],
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
    let (len, offset, alternate) = unsafe { ((*frame).len as usize, (*frame).bump_offset, (*frame).alternate) };
    if len == 0 || len > FRAME_MAX {
        return Err(());
    }
    // A tunnel grew the frame at its front in the iteration before: take that back.
    let grown = (ctx.data_end() - ctx.data()).saturating_sub(len);
    // SAFETY: the helper checks the new start against the frame itself.
    if grown > 0 && unsafe { bpf_xdp_adjust_head(ctx.ctx, grown as i32) } != 0 {
        return Err(());
    }
    let mut seq = 0;
    if offset != 0 {
        let counter = BENCH_SEQ.get_ptr_mut(0).ok_or(())?;
        // SAFETY: a pointer the map returned for entry 0 (a benchmark counter; races are harmless).
        seq = unsafe { *counter };
        // SAFETY: as above.
        unsafe { *counter = seq.wrapping_add(1) };
    }
    let alt = offset != 0 && alternate != 0 && seq & 1 == 1;
    // SAFETY: see above.
    let bytes = unsafe { if alt { (*frame).alt_bytes.as_ptr() } else { (*frame).bytes.as_ptr() } } as *mut core::ffi::c_void;
    // SAFETY: the helper checks the range against the frame; `len` is at most FRAME_MAX.
    if unsafe { bpf_xdp_store_bytes(ctx.ctx, 0, bytes, len as u32) } != 0 {
        return Err(());
    }
    if offset != 0 && !alt {
        // SAFETY: see the reads of `frame` above.
        let mut value = unsafe { (*frame).bump_base }.wrapping_add(seq).to_be();
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
    let (flood, ipip) = unsafe {
        let p = start as *const u8;
        let ipv4 = *p.add(12) == 0x08 && *p.add(13) == 0x00 && *p.add(14) == 0x45;
        (ipv4 && *p.add(23) == 17 && *p.add(36) == 0 && *p.add(37) == 9, ipv4 && *p.add(23) == 4)
    };
    // The flood in IPIP (to the tunnelled service's port 10): outer IPv4 (20), inner IPv4 (20),
    // UDP ports (4).
    let flood = flood || (ipip && start + 58 <= ctx.data_end() && {
        // SAFETY: the 58 bytes were checked against data_end just before.
        unsafe {
            let p = start as *const u8;
            *p.add(34) == 0x45 && *p.add(43) == 17 && *p.add(56) == 0 && *p.add(57) == 10
        }
    });
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

/// `xlb`'s hit path with steps left out (see the module's documentation). Frames that are not
/// a hit pass (XDP_PASS), uncounted.
#[inline(always)]
fn hit<const LOOKUP: bool, const REWRITE: bool, const CHECK: bool, const REFRESH: bool, const COUNT: bool>(ctx: &XdpContext) -> u32 {
    let Ok(packet) = parse::parse(ctx) else {
        return xdp_action::XDP_PASS;
    };
    if !select::maybe_vip(&packet.key) {
        return xdp_action::XDP_PASS;
    }
    if !LOOKUP {
        return xdp_action::XDP_TX;
    }
    let Some((flow, entry)) = track::lookup(&packet.key) else {
        return xdp_action::XDP_PASS;
    };
    if !REWRITE {
        return xdp_action::XDP_TX;
    }
    let Some(backend) = select::usable(flow.backend) else {
        return xdp_action::XDP_PASS;
    };
    if CHECK && select::addressed_here(ctx).is_err() {
        return xdp_action::XDP_PASS;
    }
    if COUNT {
        stats::count(lb_common::stat::EVENT_FLOW_HIT);
    }
    if REFRESH {
        track::refresh(&packet.key, entry, packet.tcp_flags);
    }
    if COUNT {
        let verdict = crate::send(ctx, &packet, flow.service, flow.backend, &backend, false);
        stats::count(verdict.stat);
        verdict.action
    } else {
        forward(ctx, &packet, &backend).action
    }
}

#[xdp]
pub fn bench_hit_parse(ctx: XdpContext) -> u32 {
    hit::<false, false, false, false, false>(&ctx)
}

#[xdp]
pub fn bench_hit_lookup(ctx: XdpContext) -> u32 {
    hit::<true, false, false, false, false>(&ctx)
}

#[xdp]
pub fn bench_hit_rewrite(ctx: XdpContext) -> u32 {
    hit::<true, true, false, false, false>(&ctx)
}

#[xdp]
pub fn bench_hit_checked(ctx: XdpContext) -> u32 {
    hit::<true, true, true, false, false>(&ctx)
}

#[xdp]
pub fn bench_hit_refresh(ctx: XdpContext) -> u32 {
    hit::<true, true, true, true, false>(&ctx)
}

#[xdp]
pub fn bench_hit_norefresh(ctx: XdpContext) -> u32 {
    hit::<true, true, true, false, true>(&ctx)
}

/// What `bench_minimal` writes: the node's MAC (source) and the three backends' (destination).
/// The benchmark (tests/benches) mirrors this layout.
#[repr(C)]
pub struct MinimalMacs {
    pub src: [u8; 6],
    pub backends: [[u8; 6]; 3],
}

#[map]
static BENCH_MINIMAL: Array<MinimalMacs> = Array::with_max_entries(1, 0);

#[xdp]
pub fn bench_minimal(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    let end = ctx.data_end();
    // Ethernet (14) + IPv4 without options (20).
    if start + 34 > end {
        return xdp_action::XDP_PASS;
    }
    let p = start as *mut u8;
    // SAFETY: the 34 bytes were checked against data_end above.
    let (ipv4, ihl, proto) = unsafe { (*p.add(12) == 0x08 && *p.add(13) == 0x00 && *p.add(14) >> 4 == 4, ((*p.add(14) & 0x0f) as usize) * 4, *p.add(23)) };
    if !ipv4 || ihl < 20 || (proto != 6 && proto != 17) {
        return xdp_action::XDP_PASS;
    }
    let ports_at = start + 14 + ihl;
    if ports_at + 4 > end {
        return xdp_action::XDP_PASS;
    }
    // SAFETY: the addresses lie in the 34 bytes checked above, the ports were checked against
    // data_end just now; unaligned reads.
    let (src, dst, ports) = unsafe {
        (
            (p.add(26) as *const u32).read_unaligned(),
            (p.add(30) as *const u32).read_unaligned(),
            (ports_at as *const u32).read_unaligned(),
        )
    };
    // MurmurHash3's finalizer: consecutive source ports (as a client's connections take
    // them) spread over the three like random ones, as xlb's Maglev spreads them; a single
    // multiply left runs of 60 ports 17/33/10.
    let mut h = src ^ dst.rotate_left(8) ^ ports ^ proto as u32;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    let Some(macs) = BENCH_MINIMAL.get(0) else {
        return xdp_action::XDP_PASS;
    };
    // Branches, not an index: LLVM turns `h % 3` into a multiply whose bound the verifier
    // does not follow.
    let dst_mac = match h % 3 {
        0 => &macs.backends[0],
        1 => &macs.backends[1],
        _ => &macs.backends[2],
    };
    // SAFETY: the 12 address bytes lie in the 34 checked above.
    unsafe {
        for i in 0..6 {
            *p.add(i) = dst_mac[i];
            *p.add(6 + i) = macs.src[i];
        }
    }
    xdp_action::XDP_TX
}
