//! Floods of raw frames from a lab host: an AF_PACKET sender looping over prebuilt frames as
//! fast as it can (or paced), for the benchmarks' forwarding load and the tests' SYN floods.

use std::{
    net::IpAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Result};

use crate::frames::{self, Rng};

/// What the sender does to a frame after each time it went out (a new flow each round, say).
pub type Vary = fn(&mut [u8]);

/// The generator: an AF_PACKET socket in a host's namespace sending the frames out of its
/// `eth0` in batches with sendmmsg(2), bypassing the qdisc, on a thread pinned to one CPU. Its
/// send buffer is raised with SO_SNDBUFFORCE so that frames in flight in the veth and bridge
/// do not make it fail (trafgen gives up on the first EAGAIN, and inside a namespace it cannot
/// raise the host's default socket buffer); a full buffer blocks it instead.
pub struct Flood {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    handle: Option<thread::JoinHandle<Result<()>>>,
}

impl Flood {
    /// Sends `frames` over and over, flat out, from a thread on `cpu`.
    pub fn start(ns: &str, frames: Vec<Vec<u8>>, cpu: usize) -> Result<Flood> {
        Flood::spawn(ns, frames, Sender { cpu, ..Sender::default() })
    }

    /// As [`Flood::start`], at most `pps` frames a second when given (each batch of frames
    /// is followed by a sleep to the batch's due time).
    pub fn start_paced(ns: &str, frames: Vec<Vec<u8>>, cpu: usize, pps: Option<f64>) -> Result<Flood> {
        Flood::spawn(ns, frames, Sender { cpu, pps, ..Sender::default() })
    }

    /// A flood that takes only the CPU time nothing else wants (SCHED_IDLE): the lab's own
    /// clients, servers and agent run first, and the flood gets the rest, flat out. After
    /// every round each frame is changed by `vary`, so that a few thousand prebuilt frames make
    /// a flood of frames that all differ.
    pub fn start_background(ns: &str, frames: Vec<Vec<u8>>, cpu: usize, vary: Vary) -> Result<Flood> {
        Flood::spawn(ns, frames, Sender { cpu, vary: Some(vary), idle: true, ..Sender::default() })
    }

    fn spawn(ns: &str, mut frames: Vec<Vec<u8>>, sender: Sender) -> Result<Flood> {
        let Sender { cpu, pps, vary, idle } = sender;
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (flag, count) = (stop.clone(), sent.clone());
        let (tx, rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let handle = crate::spawn_in_netns(ns, move || -> Result<()> {
            let fd = match packet_socket(cpu, idle) {
                Ok(fd) => {
                    let _ = tx.send(Ok(()));
                    fd
                }
                Err(e) => {
                    let _ = tx.send(Err(format!("{e:#}")));
                    return Err(e);
                }
            };
            // The frames are only reached through these pointers from here on (`vary` too).
            let mut iovs: Vec<libc::iovec> =
                frames.iter_mut().map(|f| libc::iovec { iov_base: f.as_mut_ptr().cast(), iov_len: f.len() }).collect();
            let mut msgs: Vec<libc::mmsghdr> = iovs
                .iter_mut()
                .map(|iov| {
                    // SAFETY: mmsghdr is plain data; zero is its empty value.
                    let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                    m.msg_hdr.msg_iov = iov as *mut libc::iovec;
                    m.msg_hdr.msg_iovlen = 1;
                    m
                })
                .collect();
            let mut result = Ok(());
            let started = Instant::now();
            let mut total = 0u64;
            let mut next = 0;
            while !flag.load(Ordering::Relaxed) {
                if let Some(pps) = pps {
                    let due = started + Duration::from_secs_f64(total as f64 / pps);
                    let now = Instant::now();
                    if due > now {
                        thread::sleep(due - now);
                    }
                }
                // SAFETY: every message points at an iovec of a frame, all alive here.
                let n = unsafe { libc::sendmmsg(fd, msgs[next..].as_mut_ptr(), (msgs.len() - next) as u32, 0) };
                if n < 0 {
                    let e = std::io::Error::last_os_error();
                    if matches!(e.raw_os_error(), Some(libc::ENOBUFS) | Some(libc::EAGAIN) | Some(libc::EINTR)) {
                        continue;
                    }
                    result = Err(anyhow::anyhow!("sendmmsg: {e}"));
                    break;
                }
                next += n as usize;
                total += n as u64;
                count.fetch_add(n as u64, Ordering::Relaxed);
                if next == msgs.len() {
                    next = 0;
                    if let Some(vary) = vary {
                        for iov in &iovs {
                            // SAFETY: the iovec describes a whole frame, not borrowed elsewhere.
                            vary(unsafe { std::slice::from_raw_parts_mut(iov.iov_base.cast::<u8>(), iov.iov_len) });
                        }
                    }
                }
            }
            // SAFETY: the descriptor is ours and closed once.
            unsafe { libc::close(fd) };
            result
        })?;
        rx.recv()?.map_err(|e| anyhow::anyhow!("flood generator: {e}"))?;
        Ok(Flood { stop, sent, handle: Some(handle) })
    }

    /// Frames sent so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Stops; the frames sent.
    pub fn stop(mut self) -> Result<u64> {
        self.stop.store(true, Ordering::Relaxed);
        match self.handle.take().map(|h| h.join()) {
            Some(Ok(r)) => r.map(|()| self.sent()),
            Some(Err(_)) => bail!("flood generator panicked"),
            None => Ok(self.sent()),
        }
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// How a flood's thread sends: on which CPU, at most how fast, changing the frames how, and
/// whether at idle priority.
#[derive(Default)]
struct Sender {
    cpu: usize,
    pps: Option<f64>,
    vary: Option<Vary>,
    idle: bool,
}

/// The sender's socket on `eth0` of the calling thread's namespace, the thread pinned to `cpu`
/// (and at SCHED_IDLE if `idle`).
fn packet_socket(cpu: usize, idle: bool) -> Result<i32> {
    pin_self(cpu);
    if idle {
        // SAFETY: sched_param is plain data; priority 0 is the only one SCHED_IDLE takes.
        let param: libc::sched_param = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
        ensure!(r == 0, "sched_setscheduler(SCHED_IDLE): {}", std::io::Error::last_os_error());
    }
    // SAFETY: plain system calls on a descriptor this function owns.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    ensure!(fd >= 0, "socket(AF_PACKET): {}", std::io::Error::last_os_error());
    let set = |level: i32, opt: i32, value: i32| -> Result<()> {
        // SAFETY: a system call on a descriptor this code owns; every pointer passed points at a live local of the size given.
        let r = unsafe { libc::setsockopt(fd, level, opt, (&value as *const i32).cast(), std::mem::size_of::<i32>() as u32) };
        ensure!(r == 0, "setsockopt({level}, {opt}): {}", std::io::Error::last_os_error());
        Ok(())
    };
    let bound = (|| -> Result<()> {
        set(libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, 1)?;
        set(libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, 16 << 20)?;
        // SAFETY: sockaddr_ll is plain data.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = crate::ifindex("eth0")? as i32;
        // SAFETY: a system call on a descriptor this code owns; every pointer passed points at a live local of the size given.
        let r = unsafe {
            libc::bind(fd, (&sll as *const libc::sockaddr_ll).cast(), std::mem::size_of::<libc::sockaddr_ll>() as u32)
        };
        ensure!(r == 0, "bind(AF_PACKET, eth0): {}", std::io::Error::last_os_error());
        Ok(())
    })();
    if let Err(e) = bound {
        // SAFETY: a system call on a descriptor this code owns; every pointer passed points at a live local of the size given.
        unsafe { libc::close(fd) };
        return Err(e);
    }
    Ok(fd)
}

/// The kernel's count of possible CPUs (/sys/devices/system/cpu/possible, "0-1" say): a
/// per-CPU LRU map gives each of them an equal share of its entries.
pub fn possible_cpus() -> Result<usize> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
    let mut count = 0;
    for range in text.trim().split(',') {
        let (first, last) = range.split_once('-').unwrap_or((range, range));
        count += last.parse::<usize>()? + 1 - first.parse::<usize>()?;
    }
    Ok(count)
}

/// Pins the calling thread to `cpu`.
pub fn pin_self(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; sched_setaffinity reads it for the call only.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Spoofed TCP segments with `flags` (a SYN flood: `frames::TCP_SYN`), Ethernet `src_mac` ->
/// `dst_mac`, to `dst`:`dport` from random addresses of 198.51.100.0/24 (or
/// 2001:db8:ffff::/64 for an IPv6 `dst`) and random ports: `count` different 5-tuples from
/// `seed`. With [`next_source_port`] as the flood's [`Vary`], every frame sent is a new flow.
pub fn spoofed_segments(flags: u8, dst_mac: [u8; 6], src_mac: [u8; 6], dst: IpAddr, dport: u16, count: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = Rng(seed);
    (0..count)
        .map(|_| {
            let src = match dst {
                IpAddr::V4(_) => IpAddr::from([198, 51, 100, 1 + rng.below(254) as u8]),
                IpAddr::V6(_) => IpAddr::from([0x2001, 0xdb8, 0xffff, 0, 0, 0, rng.next_u64() as u16, 1 + rng.below(0xfffe) as u16]),
            };
            let sport = 1024 + rng.below(65536 - 1024) as u16;
            let mut frame = frames::tcp_frame(flags, src, sport, dst, dport, &[]);
            frame[..6].copy_from_slice(&dst_mac);
            frame[6..12].copy_from_slice(&src_mac);
            frame
        })
        .collect()
}

/// Moves the source port of a TCP frame built by [`spoofed_segments`] (IPv4 or IPv6 without
/// extension headers) on by 7919 (odd: every port comes round once in 65536 rounds, 0
/// skipped), the checksum updated to match (RFC 1624).
pub fn next_source_port(frame: &mut [u8]) {
    let l4 = match u16::from_be_bytes([frame[12], frame[13]]) {
        0x0800 => frames::ETH_LEN + usize::from(frame[frames::ETH_LEN] & 0x0f) * 4,
        0x86dd => frames::ETH_LEN + 40,
        _ => return,
    };
    let old = u16::from_be_bytes([frame[l4], frame[l4 + 1]]);
    let mut new = old.wrapping_add(7919);
    if new == 0 {
        new = new.wrapping_add(7919);
    }
    frame[l4..l4 + 2].copy_from_slice(&new.to_be_bytes());
    let sum = u16::from_be_bytes([frame[l4 + 16], frame[l4 + 17]]);
    // HC' = ~(~HC + ~m + m')
    let mut acc = u32::from(!sum) + u32::from(!old) + u32::from(new);
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    frame[l4 + 16..l4 + 18].copy_from_slice(&(!(acc as u16)).to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_varied_syn_keeps_a_valid_checksum() {
        for dst in [IpAddr::from([203, 0, 113, 100]), "2001:db8:0:1::100".parse().unwrap()] {
            for mut frame in spoofed_segments(frames::TCP_SYN, [2; 6], [4; 6], dst, 80, 50, 7) {
                for _ in 0..9000 {
                    next_source_port(&mut frame);
                }
                let l4 = if dst.is_ipv4() { 34 } else { 54 };
                let sport = u16::from_be_bytes([frame[l4], frame[l4 + 1]]);
                let src = match dst {
                    IpAddr::V4(_) => IpAddr::from(<[u8; 4]>::try_from(&frame[26..30]).unwrap()),
                    IpAddr::V6(_) => IpAddr::from(<[u8; 16]>::try_from(&frame[22..38]).unwrap()),
                };
                let rebuilt = frames::tcp_frame(frames::TCP_SYN, src, sport, dst, 80, &[]);
                assert_ne!(sport, 0);
                assert_eq!(frame[14..], rebuilt[14..], "{dst} port {sport}");
            }
        }
    }
}
