//! The XDP program through BPF_PROG_TEST_RUN: a frame in, the exact frame out, and the verdict.
//!
//! Each test loads the program with small maps in a private network namespace (the program
//! needs real interface indices for XDP_TX and XDP_REDIRECT), writes services, backends and
//! Maglev tables by hand, and runs frames through it. A test run's ingress interface is the
//! namespace's `lo` (index 1) unless the context (`ctx_in`, a `struct xdp_md`) names another;
//! the fixture writes no `LOCAL_MACS` entry, so every destination MAC is accepted unless a test
//! writes one. Without ports in the frame, or with a
//! header cut short, the program must leave the frame alone.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::programs::{TestRun, TestRunOptions};
use lb_common::{
    hash::{flow_hash, source_hash},
    stat, Backend, Flow, FlowKey, Service, ServiceKey, Settings, VipFilter, BACKEND_F_USABLE, FLOW_F_FIN, PROTO_TCP, PROTO_UDP, RING_EMPTY, SERVICE_F_FRAGMENTS_ONLY, SERVICE_F_HASH_SOURCE,
};
use lb_userspace::dataplane::{Dataplane, Sizes};
use xlb_tests::frames::{self, flow_frame, V4, CLIENT_MAC, NODE_MAC, PROTO_ICMP, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const XDP_REDIRECT: u32 = 4;

const RING: u32 = 13;
const CLIENT4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const VIP4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 100);
/// All TCP ports.
const VIP4_ANY_PORT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 101);
/// Source persistence.
const VIP4_SH: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 102);
/// Backend behind another interface.
const VIP4_REDIRECT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 103);
/// No usable backend.
const VIP4_EMPTY: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 104);
const OTHER4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 50);
/// Every VIP of the fixture (its VIP bitmap).
const FIXTURE_VIPS: [IpAddr; 6] = [
    IpAddr::V4(VIP4),
    IpAddr::V4(VIP4_ANY_PORT),
    IpAddr::V4(VIP4_SH),
    IpAddr::V4(VIP4_REDIRECT),
    IpAddr::V4(VIP4_EMPTY),
    IpAddr::V6(VIP6),
];
const ROUTER4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 0x10);
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 0x100);
const ROUTER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 2, 0, 0, 0, 1);

/// Service ids of the fixture.
const S_TCP4: u32 = 0;
const S_UDP4: u32 = 1;
const S_TCP6: u32 = 2;
const S_UDP6: u32 = 3;
const S_ANY: u32 = 4;
const S_SH: u32 = 5;
const S_REDIRECT: u32 = 6;
const S_EMPTY: u32 = 7;

fn mac(n: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 1, n]
}
const REDIRECT_SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 9, 9];
/// Backend 3 is reached through the veth `xb` (XDP_REDIRECT); 0-2 through `lo` (XDP_TX).
const REDIRECT_BACKEND: u32 = 3;

fn service_key(vip: IpAddr, port: u16, proto: u8) -> ServiceKey {
    ServiceKey::new(vip, port, proto)
}

fn flow_key(proto: u8, src: IpAddr, sport: u16, dst: IpAddr, dport: u16) -> FlowKey {
    FlowKey::new(proto, src, sport, dst, dport)
}

struct Fixture {
    dp: Dataplane,
    /// Maglev table of each service as written.
    rings: Vec<Vec<u32>>,
}

/// Tables of 13 entries cycling over the given backends.
fn cycle(backends: &[u32]) -> Vec<u32> {
    (0..RING as usize).map(|i| backends[i % backends.len()]).collect()
}

impl Fixture {
    fn new() -> Fixture {
        let (mut dp, _) = Dataplane::load(Sizes { flow_table: 1024, max_services: 8 }, None).expect("load XDP program");
        let xb = xlb_tests::ifindex("xb").expect("veth xb");
        for i in 0..3u32 {
            dp.set_backend(i, &Backend { dst_mac: mac(i as u8 + 1), src_mac: NODE_MAC, ifindex: 1, flags: BACKEND_F_USABLE, ..Default::default() }).unwrap();
        }
        dp.set_backend(
            REDIRECT_BACKEND,
            &Backend { dst_mac: mac(4), src_mac: REDIRECT_SRC_MAC, ifindex: xb, flags: BACKEND_F_USABLE, ..Default::default() },
        )
        .unwrap();
        dp.add_egress(xb).unwrap();
        let mut fx = Fixture { dp, rings: vec![Vec::new(); 8] };
        let v4 = IpAddr::V4(VIP4);
        let v6 = IpAddr::V6(VIP6);
        fx.publish(S_TCP4, service_key(v4, 80, PROTO_TCP), 0, cycle(&[0, 1, 2]));
        fx.publish(S_UDP4, service_key(v4, 53, PROTO_UDP), 0, cycle(&[0, 1, 2]));
        fx.publish(S_TCP6, service_key(v6, 80, PROTO_TCP), 0, cycle(&[0, 1, 2]));
        fx.publish(S_UDP6, service_key(v6, 53, PROTO_UDP), 0, cycle(&[2, 1, 0]));
        fx.publish(S_ANY, service_key(IpAddr::V4(VIP4_ANY_PORT), 0, PROTO_TCP), 0, cycle(&[0, 1, 2]));
        fx.publish(S_SH, service_key(IpAddr::V4(VIP4_SH), 80, PROTO_TCP), SERVICE_F_HASH_SOURCE, cycle(&[0, 1, 2]));
        fx.publish(S_REDIRECT, service_key(IpAddr::V4(VIP4_REDIRECT), 80, PROTO_TCP), 0, cycle(&[REDIRECT_BACKEND]));
        fx.publish(S_EMPTY, service_key(IpAddr::V4(VIP4_EMPTY), 80, PROTO_TCP), 0, vec![RING_EMPTY; RING as usize]);
        // Fragment entries, as the agent installs them: VIP4/UDP and VIP6/UDP fragments follow
        // the UDP services' tables.
        for (vip, id) in [(v4, S_UDP4), (v6, S_UDP6)] {
            let key = if vip.is_ipv4() { service_key(v4, 53, PROTO_UDP) } else { service_key(v6, 53, PROTO_UDP) };
            let live = fx.dp.service_entry(&key).unwrap();
            fx.dp
                .set_service_entry(&service_key(vip, 0, PROTO_UDP), Service { flags: live.flags | SERVICE_F_FRAGMENTS_ONLY, ..live })
                .unwrap();
            assert_eq!(live.id, id);
        }
        // The VIP bitmap, as the agent writes it.
        fx.dp.set_vips(&FIXTURE_VIPS.map(|v| v)).unwrap();
        fx
    }

    fn publish(&mut self, id: u32, key: ServiceKey, flags: u32, table: Vec<u32>) {
        self.dp.publish_service(&key, Service { id, flags, ..Default::default() }, &table).unwrap();
        self.rings[id as usize] = table;
    }

    /// Rewrites one service's table (same key as before).
    fn republish(&mut self, id: u32, key: ServiceKey, table: Vec<u32>) {
        let flags = self.dp.service_entry(&key).unwrap().flags;
        self.publish(id, key, flags, table);
    }

    /// The backend the table says for `hash`.
    fn ring_choice(&self, id: u32, hash: u32) -> u32 {
        self.rings[id as usize][(hash % RING) as usize]
    }

    fn run(&mut self, frame: &[u8]) -> (u32, Vec<u8>) {
        self.run_with_ctx(frame, None)
    }

    /// Runs `frame` as received on interface `ifindex` (queue 0).
    fn run_on(&mut self, ifindex: u32, frame: &[u8]) -> (u32, Vec<u8>) {
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
        // egress_ifindex. The kernel wants data_end equal to the frame length and egress 0.
        let md: Vec<u8> = [0, frame.len() as u32, 0, ifindex, 0, 0].iter().flat_map(|v| v.to_ne_bytes()).collect();
        self.run_with_ctx(frame, Some(&md))
    }

    fn run_with_ctx(&mut self, frame: &[u8], ctx: Option<&[u8]>) -> (u32, Vec<u8>) {
        let mut out = vec![0u8; frame.len() + 512];
        let result = self
            .dp
            .program()
            .test_run(TestRunOptions { data_in: Some(frame), data_out: Some(&mut out), ctx_in: ctx, repeat: 1, ..Default::default() })
            .expect("BPF_PROG_TEST_RUN");
        out.truncate(result.data_size_out as usize);
        (result.return_value, out)
    }

    fn stat(&self, index: u32) -> u64 {
        self.dp.stats().unwrap()[index as usize]
    }

    /// Runs `frame`, expects it forwarded to `backend` with `action`, only the MACs changed.
    fn expect_forwarded(&mut self, frame: &[u8], backend: u32, action: u32) {
        let (verdict, out) = self.run(frame);
        assert_eq!(verdict, action, "verdict");
        let b = self.dp.backend(backend).unwrap();
        let mut expected = frame.to_vec();
        expected[..6].copy_from_slice(&b.dst_mac);
        expected[6..12].copy_from_slice(&b.src_mac);
        assert_eq!(out, expected, "frame out differs from frame in beyond the MACs (backend {backend})");
    }

    /// Runs `frame`, expects it untouched with `action`, counted under `reason`.
    fn expect_untouched(&mut self, frame: &[u8], action: u32, reason: u32) {
        let before = self.stat(reason);
        let (verdict, out) = self.run(frame);
        assert_eq!(verdict, action, "verdict");
        assert_eq!(out, frame, "frame must not change");
        assert_eq!(self.stat(reason), before + 1, "counter {}", stat::NAMES[reason as usize]);
    }
}

/// Runs `f` with a fresh fixture in a private network namespace holding veth `xa`/`xb`.
fn with_fixture(test: &str, f: impl FnOnce(&mut Fixture) + Send) {
    if !xlb_tests::privileged(test) {
        return;
    }
    let _ = log::set_logger(&CAPTURE);
    log::set_max_level(log::LevelFilter::Trace);
    xlb_tests::in_private_netns(|| {
        xlb_tests::ip(&["link", "add", "xa", "type", "veth", "peer", "name", "xb"]).unwrap();
        xlb_tests::ip(&["link", "set", "lo", "up"]).unwrap();
        let mut fx = Fixture::new();
        f(&mut fx);
    })
    .unwrap();
}

fn tcp4(sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    flow_frame(PROTO_TCP, IpAddr::V4(CLIENT4), sport, IpAddr::V4(dst), dport, b"")
}

fn expected_flow_backend(fx: &Fixture, id: u32, proto: u8, src: IpAddr, sport: u16, dst: IpAddr, dport: u16) -> u32 {
    fx.ring_choice(id, flow_hash(&flow_key(proto, src, sport, dst, dport)))
}

// ---- forwarding -------------------------------------------------------------------------

#[test]
fn tcp_v4_to_vip_only_macs_change() {
    with_fixture("tcp_v4_to_vip_only_macs_change", |fx| {
        let frame = flow_frame(PROTO_TCP, CLIENT4.into(), 40000, VIP4.into(), 80, b"GET / HTTP/1.0\r\n\r\n");
        let b = expected_flow_backend(fx, S_TCP4, PROTO_TCP, CLIENT4.into(), 40000, VIP4.into(), 80);
        fx.expect_forwarded(&frame, b, XDP_TX);
        assert_eq!(fx.stat(stat::VERDICT_TX), 1);
        assert_eq!(fx.stat(stat::EVENT_FLOW_NEW), 1);
    });
}

#[test]
fn udp_v4_to_vip_only_macs_change() {
    with_fixture("udp_v4_to_vip_only_macs_change", |fx| {
        let frame = flow_frame(PROTO_UDP, CLIENT4.into(), 5353, VIP4.into(), 53, b"query");
        let b = expected_flow_backend(fx, S_UDP4, PROTO_UDP, CLIENT4.into(), 5353, VIP4.into(), 53);
        fx.expect_forwarded(&frame, b, XDP_TX);
    });
}

#[test]
fn tcp_v6_to_vip_only_macs_change() {
    with_fixture("tcp_v6_to_vip_only_macs_change", |fx| {
        let frame = flow_frame(PROTO_TCP, CLIENT6.into(), 40000, VIP6.into(), 80, b"x");
        let b = expected_flow_backend(fx, S_TCP6, PROTO_TCP, CLIENT6.into(), 40000, VIP6.into(), 80);
        fx.expect_forwarded(&frame, b, XDP_TX);
    });
}

#[test]
fn udp_v6_to_vip_only_macs_change() {
    with_fixture("udp_v6_to_vip_only_macs_change", |fx| {
        let frame = flow_frame(PROTO_UDP, CLIENT6.into(), 5353, VIP6.into(), 53, b"query");
        let b = expected_flow_backend(fx, S_UDP6, PROTO_UDP, CLIENT6.into(), 5353, VIP6.into(), 53);
        fx.expect_forwarded(&frame, b, XDP_TX);
    });
}

#[test]
fn new_flows_spread_over_every_backend_by_the_table() {
    with_fixture("new_flows_spread_over_every_backend_by_the_table", |fx| {
        let mut seen = [0usize; 3];
        for sport in 30000..30060 {
            let b = expected_flow_backend(fx, S_TCP4, PROTO_TCP, CLIENT4.into(), sport, VIP4.into(), 80);
            fx.expect_forwarded(&tcp4(sport, VIP4, 80), b, XDP_TX);
            seen[b as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 0), "every backend gets flows: {seen:?}");
        assert_eq!(fx.stat(stat::EVENT_FLOW_NEW), 60);
    });
}

#[test]
fn flow_table_records_the_backend() {
    with_fixture("flow_table_records_the_backend", |fx| {
        let b = expected_flow_backend(fx, S_TCP4, PROTO_TCP, CLIENT4.into(), 41000, VIP4.into(), 80);
        fx.expect_forwarded(&tcp4(41000, VIP4, 80), b, XDP_TX);
        let flow = fx.dp.flow(&flow_key(PROTO_TCP, CLIENT4.into(), 41000, VIP4.into(), 80)).expect("flow recorded");
        assert_eq!((flow.backend, flow.service), (b, S_TCP4));
    });
}

#[test]
fn established_flow_stays_when_its_table_entry_moves() {
    with_fixture("established_flow_stays_when_its_table_entry_moves", |fx| {
        let first = expected_flow_backend(fx, S_TCP4, PROTO_TCP, CLIENT4.into(), 42000, VIP4.into(), 80);
        fx.expect_forwarded(&tcp4(42000, VIP4, 80), first, XDP_TX);
        // Every entry now names another backend.
        let other = (first + 1) % 3;
        fx.republish(S_TCP4, service_key(VIP4.into(), 80, PROTO_TCP), vec![other; RING as usize]);
        fx.expect_forwarded(&tcp4(42000, VIP4, 80), first, XDP_TX);
        assert_eq!(fx.stat(stat::EVENT_FLOW_HIT), 1);
        // A new flow follows the new table.
        fx.expect_forwarded(&tcp4(42001, VIP4, 80), other, XDP_TX);
    });
}

#[test]
fn established_v6_flow_stays_when_its_table_entry_moves() {
    with_fixture("established_v6_flow_stays_when_its_table_entry_moves", |fx| {
        let frame = flow_frame(PROTO_UDP, CLIENT6.into(), 6000, VIP6.into(), 53, b"q");
        let first = expected_flow_backend(fx, S_UDP6, PROTO_UDP, CLIENT6.into(), 6000, VIP6.into(), 53);
        fx.expect_forwarded(&frame, first, XDP_TX);
        let other = (first + 2) % 3;
        fx.republish(S_UDP6, service_key(VIP6.into(), 53, PROTO_UDP), vec![other; RING as usize]);
        fx.expect_forwarded(&frame, first, XDP_TX);
    });
}

#[test]
fn flow_of_an_unusable_backend_is_rebalanced() {
    with_fixture("flow_of_an_unusable_backend_is_rebalanced", |fx| {
        let first = expected_flow_backend(fx, S_TCP4, PROTO_TCP, CLIENT4.into(), 43000, VIP4.into(), 80);
        fx.expect_forwarded(&tcp4(43000, VIP4, 80), first, XDP_TX);
        let mut b = fx.dp.backend(first).unwrap();
        b.flags = 0;
        fx.dp.set_backend(first, &b).unwrap();
        let other = (first + 1) % 3;
        fx.republish(S_TCP4, service_key(VIP4.into(), 80, PROTO_TCP), vec![other; RING as usize]);
        fx.expect_forwarded(&tcp4(43000, VIP4, 80), other, XDP_TX);
        assert_eq!(fx.stat(stat::EVENT_FLOW_REBALANCED), 1);
        let flow = fx.dp.flow(&flow_key(PROTO_TCP, CLIENT4.into(), 43000, VIP4.into(), 80)).unwrap();
        assert_eq!(flow.backend, other, "flow table follows the move");
    });
}

/// Keeps the log records the program sends through aya-log (the test binary's logger).
struct Capture(std::sync::Mutex<Vec<String>>);

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }

    fn log(&self, record: &log::Record) {
        self.0.lock().unwrap().push(format!("{} {}", record.level(), record.args()));
    }

    fn flush(&self) {}
}

static CAPTURE: Capture = Capture(std::sync::Mutex::new(Vec::new()));

/// The program's log records since the fixture loaded it (the log reader writes to the
/// logger installed when the program was loaded: [`with_fixture`] installs this one).
fn program_log(fx: &mut Fixture) -> Vec<String> {
    CAPTURE.0.lock().unwrap().clear();
    let mut logger = fx.dp.take_logger().expect("the program's log");
    logger.flush();
    std::mem::take(&mut *CAPTURE.0.lock().unwrap())
}

/// A TCP segment to VIP4:80 from client port `sport` with the flags byte `flags`.
fn tcp4_flags(sport: u16, flags: u8) -> Vec<u8> {
    frames::tcp_frame(flags, CLIENT4.into(), sport, VIP4.into(), 80, b"")
}

const FIN_ACK: u8 = TCP_FIN | TCP_ACK;

#[test]
fn a_syn_goes_by_the_table_unrecorded_and_the_handshakes_ack_records_the_flow() {
    with_fixture("a_syn_goes_by_the_table_unrecorded_and_the_handshakes_ack_records_the_flow", |fx| {
        let key = flow_key(PROTO_TCP, CLIENT4.into(), 44900, VIP4.into(), 80);
        let b = expected_flow_backend(fx, S_TCP4, PROTO_TCP, CLIENT4.into(), 44900, VIP4.into(), 80);
        // The SYN (and its retransmission) reaches the table's backend and takes no entry.
        fx.expect_forwarded(&tcp4_flags(44900, TCP_SYN), b, XDP_TX);
        fx.expect_forwarded(&tcp4_flags(44900, TCP_SYN), b, XDP_TX);
        assert_eq!(fx.dp.flow(&key), None);
        assert_eq!((fx.stat(stat::EVENT_FLOW_NEW), fx.dp.backend_counters(b).unwrap().flows), (0, 0));
        // The handshake's ACK goes to the same backend and records the flow.
        fx.expect_forwarded(&tcp4_flags(44900, TCP_ACK), b, XDP_TX);
        assert_eq!(fx.dp.flow(&key).map(|f| f.backend), Some(b));
        assert_eq!((fx.stat(stat::EVENT_FLOW_NEW), fx.dp.backend_counters(b).unwrap().flows), (1, 1));
        // A SYN flood takes nothing from the table.
        for sport in 50000..50500 {
            let syn = tcp4_flags(sport, TCP_SYN);
            let (verdict, _) = fx.run(&syn);
            assert_eq!(verdict, XDP_TX);
        }
        assert_eq!(fx.dp.flow_count(), 1);
    });
}

#[test]
fn a_client_reset_removes_the_flow_and_records_nothing() {
    with_fixture("a_client_reset_removes_the_flow_and_records_nothing", |fx| {
        let key = flow_key(PROTO_TCP, CLIENT4.into(), 45000, VIP4.into(), 80);
        let b = expected_flow_backend(fx, S_TCP4, PROTO_TCP, CLIENT4.into(), 45000, VIP4.into(), 80);
        fx.expect_forwarded(&tcp4_flags(45000, TCP_ACK), b, XDP_TX);
        assert!(fx.dp.flow(&key).is_some());
        // The RST still reaches the backend, and the entry goes.
        fx.expect_forwarded(&tcp4_flags(45000, TCP_RST | TCP_ACK), b, XDP_TX);
        assert_eq!(fx.dp.flow(&key), None);
        assert_eq!(fx.stat(stat::EVENT_FLOW_RESET), 1);
        // A RST of an unknown flow goes by the table and records nothing.
        fx.expect_forwarded(&tcp4_flags(45000, TCP_RST), b, XDP_TX);
        assert_eq!(fx.dp.flow(&key), None);
        assert_eq!((fx.stat(stat::EVENT_FLOW_RESET), fx.stat(stat::EVENT_FLOW_NEW)), (1, 1));
    });
}

#[test]
fn a_client_fin_marks_the_flow_and_a_new_syn_unmarks_it() {
    with_fixture("a_client_fin_marks_the_flow_and_a_new_syn_unmarks_it", |fx| {
        let key = flow_key(PROTO_TCP, CLIENT4.into(), 45100, VIP4.into(), 80);
        let b = expected_flow_backend(fx, S_TCP4, PROTO_TCP, CLIENT4.into(), 45100, VIP4.into(), 80);
        let before = lb_userspace::flowscan::coarse_now();
        fx.expect_forwarded(&tcp4_flags(45100, TCP_ACK), b, XDP_TX);
        let flow = fx.dp.flow(&key).unwrap();
        assert_eq!(flow.flags, 0);
        assert!(flow.seen >= before && flow.seen <= lb_userspace::flowscan::coarse_now(), "seen is the coarse clock: {flow:?}");
        fx.expect_forwarded(&tcp4_flags(45100, FIN_ACK), b, XDP_TX);
        assert_eq!(fx.dp.flow(&key).unwrap().flags, FLOW_F_FIN);
        // The last ACKs keep the mark; a new connection on the same 5-tuple takes it off.
        fx.expect_forwarded(&tcp4_flags(45100, TCP_ACK), b, XDP_TX);
        assert_eq!(fx.dp.flow(&key).unwrap().flags, FLOW_F_FIN);
        fx.expect_forwarded(&tcp4_flags(45100, TCP_SYN), b, XDP_TX);
        assert_eq!(fx.dp.flow(&key).unwrap().flags, 0);
        // A FIN that starts a flow (the table lost it) records it marked.
        let other = flow_key(PROTO_TCP, CLIENT4.into(), 45101, VIP4.into(), 80);
        let b2 = expected_flow_backend(fx, S_TCP4, PROTO_TCP, CLIENT4.into(), 45101, VIP4.into(), 80);
        fx.expect_forwarded(&tcp4_flags(45101, FIN_ACK), b2, XDP_TX);
        assert_eq!(fx.dp.flow(&other).unwrap().flags, FLOW_F_FIN);
    });
}

#[test]
fn a_hit_rewrites_seen_once_it_is_a_second_old_and_not_before() {
    with_fixture("a_hit_rewrites_seen_once_it_is_a_second_old_and_not_before", |fx| {
        let key = flow_key(PROTO_TCP, CLIENT4.into(), 45200, VIP4.into(), 80);
        let b = expected_flow_backend(fx, S_TCP4, PROTO_TCP, CLIENT4.into(), 45200, VIP4.into(), 80);
        fx.expect_forwarded(&tcp4_flags(45200, TCP_ACK), b, XDP_TX);
        let flow = fx.dp.flow(&key).unwrap();
        // Seen 0.9 s ago (inside the granularity, and nearer a second than the program's
        // clock reading may trail): a hit leaves the entry alone.
        let recent = lb_userspace::flowscan::coarse_now() - 900_000_000;
        fx.dp.insert_flow(&key, Flow { seen: recent, ..flow }).unwrap();
        fx.expect_forwarded(&tcp4_flags(45200, TCP_ACK), b, XDP_TX);
        assert_eq!(fx.dp.flow(&key).unwrap().seen, recent, "seen rewritten before a second passed");
        // Seen in the future of this CPU's reading (written from the clock itself): untouched.
        let ahead = lb_userspace::flowscan::coarse_now() + 20_000_000;
        fx.dp.insert_flow(&key, Flow { seen: ahead, ..flow }).unwrap();
        fx.expect_forwarded(&tcp4_flags(45200, TCP_ACK), b, XDP_TX);
        assert_eq!(fx.dp.flow(&key).unwrap().seen, ahead);
        // Seen 1.01 s and 5 s ago: the next hit writes the coarse clock.
        for ago in [1_010_000_000, 5_000_000_000] {
            let old = lb_userspace::flowscan::coarse_now() - ago;
            fx.dp.insert_flow(&key, Flow { seen: old, ..flow }).unwrap();
            let before = lb_userspace::flowscan::coarse_now();
            fx.expect_forwarded(&tcp4_flags(45200, TCP_ACK), b, XDP_TX);
            let seen = fx.dp.flow(&key).unwrap().seen;
            assert!(seen >= before && seen <= lb_userspace::flowscan::coarse_now(), "seen {ago} ns old is not refreshed to the clock: {seen} (now {before})");
        }
        // A FIN writes at once, whatever the age.
        fx.dp.insert_flow(&key, Flow { seen: recent, ..flow }).unwrap();
        fx.expect_forwarded(&tcp4_flags(45200, FIN_ACK), b, XDP_TX);
        let marked = fx.dp.flow(&key).unwrap();
        assert_eq!(marked.flags, FLOW_F_FIN);
        assert!(marked.seen > recent, "a FIN refreshes seen");
    });
}

#[test]
fn past_the_new_flow_limit_flows_are_forwarded_by_the_table_unrecorded() {
    with_fixture("past_the_new_flow_limit_flows_are_forwarded_by_the_table_unrecorded", |fx| {
        // An established flow, recorded before the limit.
        let established = flow_key(PROTO_TCP, CLIENT4.into(), 46999, VIP4.into(), 80);
        let first = expected_flow_backend(fx, S_TCP4, PROTO_TCP, CLIENT4.into(), 46999, VIP4.into(), 80);
        fx.expect_forwarded(&tcp4_flags(46999, TCP_ACK), first, XDP_TX);
        fx.dp.set_settings(Settings { new_flows_per_cpu: 10, ..Default::default() }).unwrap();
        let started = std::time::Instant::now();
        for sport in 47000..48000 {
            let b = expected_flow_backend(fx, S_TCP4, PROTO_TCP, CLIENT4.into(), sport, VIP4.into(), 80);
            fx.expect_forwarded(&tcp4_flags(sport, TCP_ACK), b, XDP_TX);
        }
        // One-second windows per CPU: 10 flows in each window the run touched (it may span two
        // or three, on each CPU the thread ran on).
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
        let windows = (started.elapsed().as_secs() + 2) * cpus;
        let recorded = fx.stat(stat::EVENT_FLOW_NEW) - 1;
        let unrecorded = fx.stat(stat::EVENT_FLOW_UNRECORDED);
        assert!(recorded >= 10 && recorded <= 10 * windows, "recorded {recorded} in at most {windows} CPU windows");
        assert_eq!(recorded + unrecorded, 1000);
        assert_eq!(fx.dp.flow_count() as u64, recorded + 1);
        // The established flow keeps its backend when the table moves, and packets of known
        // flows are not limited.
        let other = (first + 1) % 3;
        fx.republish(S_TCP4, service_key(VIP4.into(), 80, PROTO_TCP), vec![other; RING as usize]);
        fx.expect_forwarded(&tcp4_flags(46999, TCP_ACK), first, XDP_TX);
        assert!(fx.dp.flow(&established).is_some());
        // The program said so in its log (aya-log), once per window, not once per packet.
        let records = program_log(fx);
        let said: Vec<&String> = records.iter().filter(|r| r.contains("new-flow limit of 10 a second reached")).collect();
        assert!(!said.is_empty() && said.len() as u64 <= windows, "log records: {records:?}");
        // No limit: every new flow is recorded again.
        fx.dp.set_settings(Settings { new_flows_per_cpu: 0, ..Default::default() }).unwrap();
        let before = fx.stat(stat::EVENT_FLOW_NEW);
        for sport in 48000..48100 {
            fx.expect_forwarded(&tcp4_flags(sport, TCP_ACK), other, XDP_TX);
        }
        assert_eq!(fx.stat(stat::EVENT_FLOW_NEW), before + 100);
    });
}

#[test]
fn the_flow_table_reads_back_every_entry_once_in_batches() {
    with_fixture("the_flow_table_reads_back_every_entry_once_in_batches", |fx| {
        // The fixture's table holds 1024 entries, an equal share for each possible CPU (entries
        // written from here come from this CPU's share): 90% of a share, read 7 at a time.
        let n = (1024 / xlb_tests::flood::possible_cpus().unwrap() * 9 / 10) as u16;
        let flows: Vec<(FlowKey, Flow)> = (0..n)
            .map(|i| (flow_key(PROTO_TCP, CLIENT4.into(), 20000 + i, VIP4.into(), 80), Flow { backend: u32::from(i % 3), ..Flow::default() }))
            .collect();
        for (k, f) in &flows {
            fx.dp.insert_flow(k, *f).unwrap();
        }
        let mut read = fx.dp.flow_entries(7);
        read.sort_by_key(|(k, _)| k.sport);
        let mut want = flows.clone();
        want.sort_by_key(|(k, _)| k.sport);
        assert_eq!(read.len(), usize::from(n));
        assert_eq!(read, want);
    });
}

#[test]
fn port_zero_service_takes_every_port() {
    with_fixture("port_zero_service_takes_every_port", |fx| {
        for port in [22u16, 80, 443, 8080, 65535] {
            let b = expected_flow_backend(fx, S_ANY, PROTO_TCP, CLIENT4.into(), 44000, VIP4_ANY_PORT.into(), port);
            fx.expect_forwarded(&tcp4(44000, VIP4_ANY_PORT, port), b, XDP_TX);
        }
        // Only for its protocol.
        let udp = flow_frame(PROTO_UDP, CLIENT4.into(), 44000, VIP4_ANY_PORT.into(), 80, b"");
        fx.expect_untouched(&udp, XDP_PASS, stat::PASS_NOT_SERVICE);
    });
}

#[test]
fn source_persistence_ignores_ports() {
    with_fixture("source_persistence_ignores_ports", |fx| {
        let key = flow_key(PROTO_TCP, CLIENT4.into(), 0, VIP4_SH.into(), 80);
        let b = fx.ring_choice(S_SH, source_hash(&key));
        for sport in [1024u16, 2000, 33333, 50000, 65000] {
            fx.expect_forwarded(&tcp4(sport, VIP4_SH, 80), b, XDP_TX);
        }
    });
}

#[test]
fn source_persistence_spreads_sources() {
    with_fixture("source_persistence_spreads_sources", |fx| {
        let mut seen = std::collections::BTreeSet::new();
        for host in 1..=40u8 {
            let src = Ipv4Addr::new(198, 51, 100, host);
            let b = fx.ring_choice(S_SH, source_hash(&flow_key(PROTO_TCP, src.into(), 0, VIP4_SH.into(), 80)));
            let frame = flow_frame(PROTO_TCP, src.into(), 40000 + host as u16, VIP4_SH.into(), 80, b"");
            fx.expect_forwarded(&frame, b, XDP_TX);
            seen.insert(b);
        }
        assert_eq!(seen.len(), 3, "40 sources reach all three backends");
    });
}

#[test]
fn backend_behind_another_interface_is_redirected() {
    with_fixture("backend_behind_another_interface_is_redirected", |fx| {
        let frame = tcp4(45000, VIP4_REDIRECT, 80);
        fx.expect_forwarded(&frame, REDIRECT_BACKEND, XDP_REDIRECT);
        assert_eq!(fx.stat(stat::VERDICT_REDIRECT), 1);
        let (_, out) = fx.run(&frame);
        assert_eq!(&out[6..12], &REDIRECT_SRC_MAC, "source MAC is the egress interface's");
    });
}

#[test]
fn service_without_backend_drops_and_counts() {
    with_fixture("service_without_backend_drops_and_counts", |fx| {
        let frame = tcp4(46000, VIP4_EMPTY, 80);
        fx.expect_untouched(&frame, XDP_DROP, stat::DROP_NO_BACKEND);
        assert_eq!(fx.dp.flow_count(), 0);
    });
}

#[test]
fn service_and_backend_counters_count_ip_bytes() {
    with_fixture("service_and_backend_counters_count_ip_bytes", |fx| {
        let frame = flow_frame(PROTO_UDP, CLIENT4.into(), 7000, VIP4.into(), 53, &[7u8; 100]);
        let b = expected_flow_backend(fx, S_UDP4, PROTO_UDP, CLIENT4.into(), 7000, VIP4.into(), 53);
        for _ in 0..5 {
            fx.expect_forwarded(&frame, b, XDP_TX);
        }
        let ip_len = (frame.len() - frames::ETH_LEN) as u64;
        let svc = fx.dp.service_counters(S_UDP4).unwrap();
        assert_eq!((svc.packets, svc.bytes), (5, 5 * ip_len));
        let be = fx.dp.backend_counters(b).unwrap();
        assert_eq!((be.packets, be.bytes), (5, 5 * ip_len));
        assert_eq!(fx.dp.service_counters(S_TCP4).unwrap().packets, 0);
    });
}

// ---- left to the kernel -----------------------------------------------------------------

#[test]
fn non_vip_traffic_passes_untouched() {
    with_fixture("non_vip_traffic_passes_untouched", |fx| {
        fx.expect_untouched(&tcp4(47000, OTHER4, 22), XDP_PASS, stat::PASS_NOT_SERVICE);
        let v6 = flow_frame(PROTO_TCP, CLIENT6.into(), 47000, IpAddr::V6(ROUTER6), 22, b"");
        fx.expect_untouched(&v6, XDP_PASS, stat::PASS_NOT_SERVICE);
    });
}

#[test]
fn the_vip_bitmap_is_read_first_and_the_lookup_decides() {
    with_fixture("the_vip_bitmap_is_read_first_and_the_lookup_decides", |fx| {
        // An address that shares VIP4's bit is looked up, and passes as no service.
        let bit = VipFilter::bit(&service_key(VIP4.into(), 0, 0).addr);
        let twin = (1..=u32::MAX)
            .map(|i| Ipv4Addr::from(0xc633_6400u32.wrapping_add(i)))
            .find(|a| VipFilter::bit(&service_key((*a).into(), 0, 0).addr) == bit)
            .unwrap();
        fx.expect_untouched(&tcp4(47002, twin, 80), XDP_PASS, stat::PASS_NOT_SERVICE);
        fx.expect_forwarded(&tcp4(47002, VIP4, 80), expected_flow_backend(fx, S_TCP4, PROTO_TCP, CLIENT4.into(), 47002, VIP4.into(), 80), XDP_TX);
        // A bitmap without VIP4 (an agent that forgot it): VIP4's traffic passes unlooked-up,
        // which shows the bitmap is what the program reads first.
        let others: Vec<IpAddr> = FIXTURE_VIPS.iter().copied().filter(|v| *v != IpAddr::V4(VIP4)).collect();
        fx.dp.set_vips(&others).unwrap();
        fx.expect_untouched(&tcp4(47003, VIP4, 80), XDP_PASS, stat::PASS_NOT_SERVICE);
        let sh = fx.ring_choice(S_SH, source_hash(&flow_key(PROTO_TCP, CLIENT4.into(), 0, VIP4_SH.into(), 80)));
        fx.expect_forwarded(&tcp4(47003, VIP4_SH, 80), sh, XDP_TX);
    });
}

#[test]
fn vip_on_unconfigured_port_passes() {
    with_fixture("vip_on_unconfigured_port_passes", |fx| {
        fx.expect_untouched(&tcp4(47001, VIP4, 22), XDP_PASS, stat::PASS_NOT_SERVICE);
        let udp = flow_frame(PROTO_UDP, CLIENT4.into(), 47001, VIP4.into(), 80, b"");
        fx.expect_untouched(&udp, XDP_PASS, stat::PASS_NOT_SERVICE);
    });
}

#[test]
fn arp_passes() {
    with_fixture("arp_passes", |fx| {
        fx.expect_untouched(&frames::arp_request(CLIENT4, VIP4), XDP_PASS, stat::PASS_NOT_IP);
    });
}

/// 802.1Q and 802.1ad tagged frames, even to a service, pass untouched and are counted apart.
#[test]
fn vlan_tagged_frames_pass_and_are_counted() {
    with_fixture("vlan_tagged_frames_pass_and_are_counted", |fx| {
        let plain = tcp4(47002, VIP4, 80);
        for tpid in [[0x81, 0x00], [0x88, 0xa8]] {
            // The tag (TPID, VLAN 100) goes between the MACs and the EtherType.
            let mut tagged = plain[..12].to_vec();
            tagged.extend_from_slice(&tpid);
            tagged.extend_from_slice(&[0x00, 0x64]);
            tagged.extend_from_slice(&plain[12..]);
            fx.expect_untouched(&tagged, XDP_PASS, stat::PASS_VLAN);
        }
    });
}

#[test]
fn vrrp_passes() {
    with_fixture("vrrp_passes", |fx| {
        let advert = frames::vrrp3_advert(Ipv4Addr::new(203, 0, 113, 2), 51, 100, &[VIP4]);
        fx.expect_untouched(&advert, XDP_PASS, stat::PASS_NOT_SERVICE);
    });
}

#[test]
fn icmp_echo_to_vip_passes() {
    with_fixture("icmp_echo_to_vip_passes", |fx| {
        let echo = V4::new(CLIENT4, VIP4, PROTO_ICMP).frame(&[8, 0, 0xf7, 0xff, 0, 0, 0, 0]);
        fx.expect_untouched(&echo, XDP_PASS, stat::PASS_ICMP);
    });
}

#[test]
fn ipv6_extension_header_passes() {
    with_fixture("ipv6_extension_header_passes", |fx| {
        // Hop-by-hop options (PadN) in front of TCP.
        let mut payload = vec![PROTO_TCP, 0, 1, 4, 0, 0, 0, 0];
        payload.extend_from_slice(&frames::transport(PROTO_TCP, 48000, 80, b""));
        let frame = frames::ipv6_frame(CLIENT6, VIP6, 0, &payload);
        fx.expect_untouched(&frame, XDP_PASS, stat::PASS_IPV6_EXT);
    });
}

// ---- destination MAC ---------------------------------------------------------------------

/// Where BPF_PROG_TEST_RUN receives frames without a context: the namespace's loopback.
const LO: u32 = 1;
/// Another host on the segment (the VRRP master, when we are its backup).
const OTHER_HOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x03];
/// A VRRP virtual MAC (00-00-5E-00-01-{vrid}) held on a macvlan over the interface.
const VMAC: [u8; 6] = [0x00, 0x00, 0x5e, 0x00, 0x01, 51];

fn to_mac(mut frame: Vec<u8>, mac: [u8; 6]) -> Vec<u8> {
    frame[..6].copy_from_slice(&mac);
    frame
}

#[test]
fn frame_to_our_mac_is_forwarded() {
    with_fixture("frame_to_our_mac_is_forwarded", |fx| {
        fx.dp.set_local_macs(LO, &[NODE_MAC]).unwrap();
        let frame = tcp4(41000, VIP4, 80);
        let b = expected_flow_backend(fx, S_TCP4, PROTO_TCP, CLIENT4.into(), 41000, VIP4.into(), 80);
        fx.expect_forwarded(&frame, b, XDP_TX);
        assert_eq!((fx.stat(stat::VERDICT_TX), fx.stat(stat::PASS_OTHER_HOST)), (1, 0));
    });
}

#[test]
fn frame_to_another_hosts_mac_passes_untouched() {
    with_fixture("frame_to_another_hosts_mac_passes_untouched", |fx| {
        fx.dp.set_local_macs(LO, &[NODE_MAC]).unwrap();
        let v4 = to_mac(tcp4(41001, VIP4, 80), OTHER_HOST_MAC);
        fx.expect_untouched(&v4, XDP_PASS, stat::PASS_OTHER_HOST);
        let v6 = to_mac(flow_frame(PROTO_UDP, CLIENT6.into(), 41001, VIP6.into(), 53, b"q"), OTHER_HOST_MAC);
        fx.expect_untouched(&v6, XDP_PASS, stat::PASS_OTHER_HOST);
        // Not balanced at all: no flow recorded, nothing forwarded.
        assert!(fx.dp.flow(&flow_key(PROTO_TCP, CLIENT4.into(), 41001, VIP4.into(), 80)).is_none());
        assert_eq!(fx.stat(stat::VERDICT_TX) + fx.stat(stat::EVENT_FLOW_NEW), 0);
    });
}

#[test]
fn broadcast_and_multicast_frames_to_the_vip_pass() {
    with_fixture("broadcast_and_multicast_frames_to_the_vip_pass", |fx| {
        fx.dp.set_local_macs(LO, &[NODE_MAC]).unwrap();
        let broadcast = to_mac(tcp4(41002, VIP4, 80), [0xff; 6]);
        fx.expect_untouched(&broadcast, XDP_PASS, stat::PASS_NOT_SERVICE);
        let multicast = to_mac(tcp4(41002, VIP4, 80), [0x01, 0x00, 0x5e, 0x00, 0x00, 0x12]);
        fx.expect_untouched(&multicast, XDP_PASS, stat::PASS_NOT_SERVICE);
        assert_eq!(fx.stat(stat::PASS_OTHER_HOST), 0, "group addresses are not another host's");
        assert_eq!(fx.stat(stat::VERDICT_TX), 0);
    });
}

#[test]
fn frame_to_a_registered_virtual_mac_is_forwarded() {
    with_fixture("frame_to_a_registered_virtual_mac_is_forwarded", |fx| {
        fx.dp.set_local_macs(LO, &[NODE_MAC]).unwrap();
        let frame = to_mac(tcp4(41003, VIP4, 80), VMAC);
        fx.expect_untouched(&frame, XDP_PASS, stat::PASS_OTHER_HOST);
        fx.dp.add_local_mac(LO, VMAC).unwrap();
        assert_eq!(fx.dp.local_macs(LO).unwrap(), Some(vec![NODE_MAC, VMAC]));
        let b = expected_flow_backend(fx, S_TCP4, PROTO_TCP, CLIENT4.into(), 41003, VIP4.into(), 80);
        fx.expect_forwarded(&frame, b, XDP_TX);
        // The interface's own MAC still works beside it.
        fx.expect_forwarded(&tcp4(41003, VIP4, 80), b, XDP_TX);
        fx.dp.remove_local_mac(LO, VMAC).unwrap();
        fx.expect_untouched(&frame, XDP_PASS, stat::PASS_OTHER_HOST);
    });
}

#[test]
fn local_macs_are_per_ingress_interface() {
    with_fixture("local_macs_are_per_ingress_interface", |fx| {
        let xb = xlb_tests::ifindex("xb").unwrap();
        fx.dp.set_local_macs(LO, &[NODE_MAC]).unwrap();
        let frame = to_mac(tcp4(41004, VIP4_REDIRECT, 80), OTHER_HOST_MAC);
        // On lo the destination is another host's.
        let before = fx.stat(stat::PASS_OTHER_HOST);
        assert_eq!(fx.run_on(LO, &frame), (XDP_PASS, frame.clone()));
        assert_eq!(fx.stat(stat::PASS_OTHER_HOST), before + 1);
        // xb has no entry: every destination is accepted (the backend sits behind xb: XDP_TX).
        let (verdict, out) = fx.run_on(xb, &frame);
        assert_eq!(verdict, XDP_TX);
        assert_eq!(out[..6], mac(4));
        // With xb's own entry, the frame is turned away there too.
        fx.dp.set_local_macs(xb, &[REDIRECT_SRC_MAC]).unwrap();
        assert_eq!(fx.run_on(xb, &frame), (XDP_PASS, frame.clone()));
        assert_eq!(fx.stat(stat::PASS_OTHER_HOST), before + 2);
    });
}

#[test]
fn local_macs_writes_name_the_interface_and_keep_the_own_mac() {
    with_fixture("local_macs_writes_name_the_interface_and_keep_the_own_mac", |fx| {
        let err = fx.dp.add_local_mac(LO, VMAC).unwrap_err().to_string();
        assert!(err.contains("interface lo (index 1)") && err.contains("no entry"), "{err}");
        let five: Vec<[u8; 6]> = (1..=5).map(mac).collect();
        let err = fx.dp.set_local_macs(LO, &five).unwrap_err().to_string();
        assert!(err.contains("interface lo") && err.contains("at most 4"), "{err}");
        fx.dp.set_local_macs(LO, &five[..4]).unwrap();
        assert!(fx.dp.add_local_mac(LO, VMAC).is_err(), "a fifth MAC does not fit");
        fx.dp.set_local_macs(LO, &[NODE_MAC]).unwrap();
        assert!(fx.dp.remove_local_mac(LO, NODE_MAC).is_err(), "the last MAC stays");
        fx.dp.replace_local_mac(LO, NODE_MAC, OTHER_HOST_MAC).unwrap();
        assert_eq!(fx.dp.local_macs(LO).unwrap(), Some(vec![OTHER_HOST_MAC]));
    });
}

// ---- malformed and truncated ------------------------------------------------------------

#[test]
fn v4_frame_cut_at_every_header_boundary_passes() {
    with_fixture("v4_frame_cut_at_every_header_boundary_passes", |fx| {
        let full = tcp4(49000, VIP4, 80);
        // Ethernet only, inside IPv4, IPv4 without TCP, inside TCP, TCP without its last byte.
        for cut in [14, 14 + 10, 14 + 20, 14 + 20 + 4, full.len() - 1] {
            fx.expect_untouched(&full[..cut], XDP_PASS, stat::PASS_MALFORMED);
        }
        assert_eq!(fx.dp.flow_count(), 0);
    });
}

#[test]
fn v6_frame_cut_at_every_header_boundary_passes() {
    with_fixture("v6_frame_cut_at_every_header_boundary_passes", |fx| {
        let full = flow_frame(PROTO_UDP, CLIENT6.into(), 49000, VIP6.into(), 53, b"");
        for cut in [14, 14 + 20, 14 + 40, 14 + 40 + 4, full.len() - 1] {
            fx.expect_untouched(&full[..cut], XDP_PASS, stat::PASS_MALFORMED);
        }
    });
}

#[test]
fn ipv4_ethertype_without_ip_header_passes() {
    with_fixture("ipv4_ethertype_without_ip_header_passes", |fx| {
        // The kernel refuses test input shorter than an Ethernet header (EINVAL), so the
        // shortest frame is 14 bytes: its type says IPv4 but no IP header follows.
        let frame = frames::ethernet(0x0800);
        fx.expect_untouched(&frame, XDP_PASS, stat::PASS_MALFORMED);
    });
}

#[test]
fn transport_header_beyond_ip_length_passes() {
    with_fixture("transport_header_beyond_ip_length_passes", |fx| {
        // The frame carries a whole TCP header but the IP length stops 10 bytes into it.
        let mut frame = tcp4(49500, VIP4, 80);
        frame[16..18].copy_from_slice(&30u16.to_be_bytes());
        fx.expect_untouched(&frame, XDP_PASS, stat::PASS_MALFORMED);
    });
}

#[test]
fn bad_ipv4_header_passes() {
    with_fixture("bad_ipv4_header_passes", |fx| {
        let good = tcp4(50000, VIP4, 80);
        let mut ihl_too_small = good.clone();
        ihl_too_small[14] = 0x44;
        fx.expect_untouched(&ihl_too_small, XDP_PASS, stat::PASS_MALFORMED);
        let mut wrong_version = good.clone();
        wrong_version[14] = 0x65;
        fx.expect_untouched(&wrong_version, XDP_PASS, stat::PASS_MALFORMED);
        let mut length_beyond_frame = good;
        length_beyond_frame[16..18].copy_from_slice(&1500u16.to_be_bytes());
        fx.expect_untouched(&length_beyond_frame, XDP_PASS, stat::PASS_MALFORMED);
    });
}

#[test]
fn bad_ipv6_header_passes() {
    with_fixture("bad_ipv6_header_passes", |fx| {
        let good = flow_frame(PROTO_TCP, CLIENT6.into(), 50000, VIP6.into(), 80, b"");
        let mut wrong_version = good.clone();
        wrong_version[14] = 0x40;
        fx.expect_untouched(&wrong_version, XDP_PASS, stat::PASS_MALFORMED);
        let mut payload_beyond_frame = good;
        payload_beyond_frame[18..20].copy_from_slice(&1000u16.to_be_bytes());
        fx.expect_untouched(&payload_beyond_frame, XDP_PASS, stat::PASS_MALFORMED);
    });
}

#[test]
fn trailing_ethernet_padding_is_forwarded_unchanged() {
    with_fixture("trailing_ethernet_padding_is_forwarded_unchanged", |fx| {
        // A short frame padded to the Ethernet minimum: the IP length rules, padding stays.
        let mut frame = flow_frame(PROTO_UDP, CLIENT4.into(), 7100, VIP4.into(), 53, b"");
        frame.resize(60, 0);
        let b = expected_flow_backend(fx, S_UDP4, PROTO_UDP, CLIENT4.into(), 7100, VIP4.into(), 53);
        fx.expect_forwarded(&frame, b, XDP_TX);
    });
}

// ---- IPv4 options and fragments ---------------------------------------------------------

#[test]
fn ipv4_options_are_forwarded_with_the_flow() {
    with_fixture("ipv4_options_are_forwarded_with_the_flow", |fx| {
        let mut l4 = frames::transport(PROTO_TCP, 51000, 80, b"");
        frames::finish_l4(&mut l4, CLIENT4.into(), VIP4.into(), PROTO_TCP);
        let mut ip = V4::new(CLIENT4, VIP4, PROTO_TCP);
        // Record route (7), length 11, pointer 4, then end-of-options padding to 12 bytes.
        ip.options = vec![7, 11, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let frame = ip.frame(&l4);
        let b = expected_flow_backend(fx, S_TCP4, PROTO_TCP, CLIENT4.into(), 51000, VIP4.into(), 80);
        fx.expect_forwarded(&frame, b, XDP_TX);
        assert_eq!(fx.stat(stat::EVENT_IPV4_OPTIONS), 1);
    });
}

/// The backend the fragment rule picks: the 3-tuple hash in the UDP service's table.
fn fragment_backend(fx: &Fixture, id: u32, src: IpAddr, dst: IpAddr) -> u32 {
    fx.ring_choice(id, flow_hash(&flow_key(PROTO_UDP, src, 0, dst, 0)))
}

#[test]
fn first_and_later_v4_fragments_reach_the_same_backend() {
    with_fixture("first_and_later_v4_fragments_reach_the_same_backend", |fx| {
        let b = fragment_backend(fx, S_UDP4, CLIENT4.into(), VIP4.into());
        let mut first = V4::new(CLIENT4, VIP4, PROTO_UDP);
        first.frag = 0x2000; // more fragments, offset 0
        let mut l4 = frames::transport(PROTO_UDP, 7200, 53, &[1u8; 64]);
        l4[4..6].copy_from_slice(&1000u16.to_be_bytes()); // the whole datagram's length
        fx.expect_forwarded(&first.frame(&l4), b, XDP_TX);
        let mut later = V4::new(CLIENT4, VIP4, PROTO_UDP);
        later.frag = 9; // offset 72 bytes, last fragment
        fx.expect_forwarded(&later.frame(&[2u8; 64]), b, XDP_TX);
        assert_eq!(fx.stat(stat::EVENT_FRAGMENT), 2);
        assert_eq!(fx.dp.flow_count(), 0, "fragments are not recorded as flows");
    });
}

#[test]
fn v6_fragments_reach_the_same_backend() {
    with_fixture("v6_fragments_reach_the_same_backend", |fx| {
        let b = fragment_backend(fx, S_UDP6, CLIENT6.into(), VIP6.into());
        // Fragment header: next UDP, offset 0 with M set, then offset 8 (64 bytes) without.
        let mut first = vec![PROTO_UDP, 0, 0x00, 0x01, 0, 0, 0, 7];
        first.extend_from_slice(&frames::transport(PROTO_UDP, 7300, 53, &[1u8; 56]));
        fx.expect_forwarded(&frames::ipv6_frame(CLIENT6, VIP6, 44, &first), b, XDP_TX);
        let mut later = vec![PROTO_UDP, 0, 0x00, 0x40, 0, 0, 0, 7];
        later.extend_from_slice(&[2u8; 32]);
        fx.expect_forwarded(&frames::ipv6_frame(CLIENT6, VIP6, 44, &later), b, XDP_TX);
    });
}

#[test]
fn fragment_for_a_vip_without_fragment_entry_passes() {
    with_fixture("fragment_for_a_vip_without_fragment_entry_passes", |fx| {
        // VIP4/TCP has no port-0 entry in this fixture.
        let mut later = V4::new(CLIENT4, VIP4, PROTO_TCP);
        later.frag = 20;
        fx.expect_untouched(&later.frame(&[0u8; 40]), XDP_PASS, stat::PASS_NOT_SERVICE);
    });
}

#[test]
fn fragment_entry_does_not_capture_whole_packets() {
    with_fixture("fragment_entry_does_not_capture_whole_packets", |fx| {
        // VIP4 has a UDP fragment entry on port 0, which must not act as an all-ports service.
        let frame = flow_frame(PROTO_UDP, CLIENT4.into(), 7400, VIP4.into(), 5000, b"");
        fx.expect_untouched(&frame, XDP_PASS, stat::PASS_NOT_SERVICE);
    });
}

// ---- ICMP errors about VIP flows --------------------------------------------------------

/// Establishes a TCP flow, then points the whole table elsewhere so that only the flow table
/// knows the flow's backend. Returns that backend.
fn pinned_flow(fx: &mut Fixture, id: u32, client: IpAddr, sport: u16, vip: IpAddr) -> u32 {
    let frame = flow_frame(PROTO_TCP, client, sport, vip, 80, b"");
    let b = expected_flow_backend(fx, id, PROTO_TCP, client, sport, vip, 80);
    fx.expect_forwarded(&frame, b, XDP_TX);
    fx.republish(id, service_key(vip, 80, PROTO_TCP), vec![(b + 1) % 3; RING as usize]);
    b
}

#[test]
fn icmp_frag_needed_goes_to_the_flows_backend() {
    with_fixture("icmp_frag_needed_goes_to_the_flows_backend", |fx| {
        let b = pinned_flow(fx, S_TCP4, CLIENT4.into(), 52000, VIP4.into());
        // What the backend sent: VIP:80 -> client:52000, too big for a router's next hop.
        let reply = V4::new(VIP4, CLIENT4, PROTO_TCP).packet(&frames::transport(PROTO_TCP, 80, 52000, &[0u8; 1400]));
        let icmp = frames::icmp4_frag_needed(ROUTER4, VIP4, &reply, 1280);
        fx.expect_forwarded(&icmp, b, XDP_TX);
        assert_eq!(fx.stat(stat::EVENT_ICMP_TOO_BIG), 1);
    });
}

#[test]
fn icmpv6_packet_too_big_goes_to_the_flows_backend() {
    with_fixture("icmpv6_packet_too_big_goes_to_the_flows_backend", |fx| {
        let b = pinned_flow(fx, S_TCP6, CLIENT6.into(), 52000, VIP6.into());
        let reply = frames::ipv6_packet(VIP6, CLIENT6, PROTO_TCP, &frames::transport(PROTO_TCP, 80, 52000, &[0u8; 1400]));
        let icmp = frames::icmp6_packet_too_big(ROUTER6, VIP6, &reply, 1280);
        fx.expect_forwarded(&icmp, b, XDP_TX);
    });
}

#[test]
fn icmp_frag_needed_without_flow_follows_the_table() {
    with_fixture("icmp_frag_needed_without_flow_follows_the_table", |fx| {
        let reply = V4::new(VIP4, CLIENT4, PROTO_TCP).packet(&frames::transport(PROTO_TCP, 80, 52100, b""));
        let icmp = frames::icmp4_frag_needed(ROUTER4, VIP4, &reply, 1280);
        let b = expected_flow_backend(fx, S_TCP4, PROTO_TCP, CLIENT4.into(), 52100, VIP4.into(), 80);
        fx.expect_forwarded(&icmp, b, XDP_TX);
        assert_eq!(fx.dp.flow_count(), 0, "an ICMP error does not create a flow");
    });
}

#[test]
fn icmp_frag_needed_about_other_traffic_passes() {
    with_fixture("icmp_frag_needed_about_other_traffic_passes", |fx| {
        // About the node's own traffic (source 203.0.113.50, not a VIP).
        let own = V4::new(OTHER4, CLIENT4, PROTO_TCP).packet(&frames::transport(PROTO_TCP, 22, 52200, b""));
        let icmp = frames::icmp4_frag_needed(ROUTER4, OTHER4, &own, 1280);
        fx.expect_untouched(&icmp, XDP_PASS, stat::PASS_NOT_SERVICE);
    });
}

#[test]
fn icmp_error_with_cut_quote_passes() {
    with_fixture("icmp_error_with_cut_quote_passes", |fx| {
        let reply = V4::new(VIP4, CLIENT4, PROTO_TCP).packet(&frames::transport(PROTO_TCP, 80, 52300, b""));
        // Quote only the IP header and 2 bytes of the ports.
        let icmp = frames::icmp4_frag_needed(ROUTER4, VIP4, &reply[..22], 1280);
        fx.expect_untouched(&icmp, XDP_PASS, stat::PASS_MALFORMED);
    });
}

#[test]
fn every_frame_is_counted_once_under_a_verdict() {
    with_fixture("every_frame_is_counted_once_under_a_verdict", |fx| {
        let frames = [
            tcp4(53000, VIP4, 80),
            tcp4(53000, OTHER4, 80),
            frames::arp_request(CLIENT4, VIP4),
            tcp4(53000, VIP4_EMPTY, 80),
            tcp4(53000, VIP4_REDIRECT, 80),
            tcp4(53000, VIP4, 80)[..30].to_vec(),
            to_mac(tcp4(53000, VIP4, 80), OTHER_HOST_MAC),
        ];
        fx.dp.set_local_macs(LO, &[NODE_MAC]).unwrap();
        for f in &frames {
            fx.run(f);
        }
        let stats = fx.dp.stats().unwrap();
        let verdicts: u64 = stats[..=stat::DROP_REDIRECT_FAILED as usize].iter().sum();
        assert_eq!(verdicts, frames.len() as u64, "{stats:?}");
    });
}

#[test]
fn client_mac_constant_is_what_frames_carry() {
    // Guards the fixture itself: frames come from the client MAC to the node MAC.
    let f = tcp4(1, VIP4, 80);
    assert_eq!(&f[..6], &NODE_MAC);
    assert_eq!(&f[6..12], &CLIENT_MAC);
}

// ---- tunnels ----------------------------------------------------------------------------

/// The next hop toward the tunnelled backends (a router), and the node's tunnel sources.
const ROUTER_MAC: [u8; 6] = [0x02, 0, 0, 0, 7, 7];
const TUNNEL_SRC4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
const TUNNEL_SRC6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 2);
const TB4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 11);
const TB6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 2, 0, 0, 0, 0x11);
const GUE_PORT: u16 = 6080;
const TUNNEL_MTU: u16 = 1500;

/// Makes backends 0-2 one tunnelled backend at `addr` by `method` (every flow of the fixture's
/// services goes to it), behind the router, and sets the tunnel sources (`mask4`: the bits of
/// the IPv4 source the flow's hash fills).
fn tunnel_to(fx: &mut Fixture, addr: IpAddr, method: u8, mask4: [u8; 4]) {
    for slot in 0..3 {
        let b = Backend {
            dst_mac: ROUTER_MAC,
            src_mac: NODE_MAC,
            ifindex: 1,
            flags: BACKEND_F_USABLE,
            addr: lb_common::addr16(addr),
            method,
            family: lb_common::family(addr),
            mtu: TUNNEL_MTU,
            gue_port: GUE_PORT.to_be(),
            ..Default::default()
        };
        fx.dp.set_backend(slot, &b).unwrap();
    }
    let settings = Settings {
        tunnel_src4: TUNNEL_SRC4.octets(),
        tunnel_src4_hash_mask: mask4,
        tunnel_src6: TUNNEL_SRC6.octets(),
        ..Default::default()
    };
    fx.dp.set_settings(settings).unwrap();
}

/// `frame` (IPv4 or IPv6) with DSCP EF and ECN ECT(1) in its IP header (checksum fixed).
fn with_tos(mut frame: Vec<u8>) -> Vec<u8> {
    const TOS: u8 = 0xb9;
    if frame[12..14] == [0x08, 0x00] {
        frame[15] = TOS;
        frame[24..26].fill(0);
        let sum = pnet_packet::util::checksum(&frame[14..34], 5);
        frame[24..26].copy_from_slice(&sum.to_be_bytes());
    } else {
        frame[14] = 0x60 | (TOS >> 4);
        frame[15] = (TOS << 4) | (frame[15] & 0x0f);
    }
    frame
}

fn eth_to_router(ethertype: u16) -> Vec<u8> {
    let mut e = ROUTER_MAC.to_vec();
    e.extend_from_slice(&NODE_MAC);
    e.extend_from_slice(&ethertype.to_be_bytes());
    e
}

/// Runs `frame`, expects XDP_TX of exactly `expected`, counted as encapsulated.
fn expect_tunnelled(fx: &mut Fixture, frame: &[u8], expected: &[u8]) {
    let before = fx.stat(stat::EVENT_ENCAPSULATED);
    let (verdict, out) = fx.run(frame);
    assert_eq!(verdict, XDP_TX, "verdict");
    assert_eq!(out.len(), expected.len(), "frame length");
    assert_eq!(out, expected, "frame out");
    assert_eq!(fx.stat(stat::EVENT_ENCAPSULATED), before + 1);
}

fn key_of(proto: u8, src: IpAddr, sport: u16, dst: IpAddr, dport: u16) -> FlowKey {
    flow_key(proto, src, sport, dst, dport)
}

#[test]
fn ipip_wraps_the_packet_for_the_backend_through_the_router() {
    with_fixture("ipip_wraps_the_packet_for_the_backend_through_the_router", |fx| {
        tunnel_to(fx, TB4.into(), lb_common::FORWARD_IPIP, [0; 4]);
        let frame = with_tos(flow_frame(PROTO_TCP, CLIENT4.into(), 40000, VIP4.into(), 80, b"GET / HTTP/1.0\r\n\r\n"));
        let inner = &frame[14..];
        let mut expected = eth_to_router(0x0800);
        expected.extend(frames::outer_ipv4(0xb9, 4, TUNNEL_SRC4, TB4, true, inner.len()));
        expected.extend_from_slice(inner);
        expect_tunnelled(fx, &frame, &expected);
        assert_eq!((fx.stat(stat::VERDICT_TX), fx.stat(stat::EVENT_FLOW_NEW)), (1, 1));
        // A packet without DF: the outer header leaves it fragmentable too.
        let mut v4 = V4::new(CLIENT4, VIP4, PROTO_UDP);
        v4.frag = 0;
        let frame = v4.frame(&frames::transport(PROTO_UDP, 5353, 53, b"query"));
        let mut expected = eth_to_router(0x0800);
        expected.extend(frames::outer_ipv4(0, 4, TUNNEL_SRC4, TB4, false, frame.len() - 14));
        expected.extend_from_slice(&frame[14..]);
        expect_tunnelled(fx, &frame, &expected);
    });
}

#[test]
fn ip6ip6_and_4in6_wrap_in_ipv6_with_the_flow_label_from_the_hash() {
    with_fixture("ip6ip6_and_4in6_wrap_in_ipv6_with_the_flow_label_from_the_hash", |fx| {
        tunnel_to(fx, TB6.into(), lb_common::FORWARD_IPIP, [0; 4]);
        let frame = with_tos(flow_frame(PROTO_UDP, CLIENT6.into(), 5353, VIP6.into(), 53, b"query"));
        let hash = flow_hash(&key_of(PROTO_UDP, CLIENT6.into(), 5353, VIP6.into(), 53));
        let mut expected = eth_to_router(0x86dd);
        expected.extend(frames::outer_ipv6(0xb9, hash, 41, TUNNEL_SRC6, TB6, frame.len() - 14));
        expected.extend_from_slice(&frame[14..]);
        expect_tunnelled(fx, &frame, &expected);
        // An IPv4 VIP's packet to the IPv6 backend: 4-in-6 (next header 4).
        let frame = with_tos(flow_frame(PROTO_TCP, CLIENT4.into(), 40001, VIP4.into(), 80, b"x"));
        let hash = flow_hash(&key_of(PROTO_TCP, CLIENT4.into(), 40001, VIP4.into(), 80));
        let mut expected = eth_to_router(0x86dd);
        expected.extend(frames::outer_ipv6(0xb9, hash, 4, TUNNEL_SRC6, TB6, frame.len() - 14));
        expected.extend_from_slice(&frame[14..]);
        expect_tunnelled(fx, &frame, &expected);
    });
}

#[test]
fn gue_wraps_in_udp_to_the_fou_port_with_the_source_port_and_address_from_the_hash() {
    with_fixture("gue_wraps_in_udp_to_the_fou_port_with_the_source_port_and_address_from_the_hash", |fx| {
        tunnel_to(fx, TB4.into(), lb_common::FORWARD_GUE, [0, 0, 0, 0xff]);
        let frame = flow_frame(PROTO_TCP, CLIENT4.into(), 40002, VIP4.into(), 80, b"GET / HTTP/1.0\r\n\r\n");
        let hash = flow_hash(&key_of(PROTO_TCP, CLIENT4.into(), 40002, VIP4.into(), 80));
        let inner = &frame[14..];
        let src = Ipv4Addr::new(203, 0, 113, hash.to_be_bytes()[3]);
        let mut expected = eth_to_router(0x0800);
        expected.extend(frames::outer_ipv4(0, 17, src, TB4, true, 8 + inner.len()));
        expected.extend_from_slice(&(0xc000 | (hash & 0x3fff) as u16).to_be_bytes());
        expected.extend_from_slice(&GUE_PORT.to_be_bytes());
        expected.extend_from_slice(&((8 + inner.len()) as u16).to_be_bytes());
        expected.extend_from_slice(&[0, 0]);
        expected.extend_from_slice(inner);
        expect_tunnelled(fx, &frame, &expected);
    });
}

/// A TCP segment from the client whose IP packet is `ip_len` bytes.
fn sized_tcp(src: IpAddr, dst: IpAddr, ip_len: usize) -> Vec<u8> {
    let headers = if src.is_ipv4() { 20 + 20 } else { 40 + 20 };
    frames::tcp_frame(TCP_ACK, src, 41000, dst, 80, &vec![0x5a; ip_len - headers])
}

/// The ICMP answer the program must send for `frame` (checked field by field, then its
/// checksum over the whole message).
fn check_too_big_answer(frame: &[u8], out: &[u8], mtu: u32) {
    assert_eq!(out[..6], frame[6..12], "back to the client's MAC");
    assert_eq!(out[6..12], frame[..6], "from the MAC it was sent to");
    if frame[12..14] == [0x08, 0x00] {
        assert_eq!(out.len(), 14 + 20 + 8 + 128);
        let ip = &out[14..34];
        assert_eq!((ip[0], ip[9], ip[8]), (0x45, 1, 64), "IPv4, ICMP, TTL");
        assert_eq!(u16::from_be_bytes([ip[2], ip[3]]), 20 + 8 + 128);
        assert_eq!((&ip[12..16], &ip[16..20]), (&frame[30..34], &frame[26..30]), "from the VIP to the client");
        assert_eq!(pnet_packet::util::checksum(ip, 5), u16::from_be_bytes([ip[10], ip[11]]));
        let icmp = &out[34..];
        assert_eq!((icmp[0], icmp[1]), (3, 4), "fragmentation needed");
        assert_eq!(u16::from_be_bytes([icmp[6], icmp[7]]) as u32, mtu);
        assert_eq!(&icmp[8..], &frame[14..14 + 128], "quotes the packet's start");
        assert_eq!(pnet_packet::util::checksum(icmp, 1), u16::from_be_bytes([icmp[2], icmp[3]]));
    } else {
        assert_eq!(out.len(), 14 + 40 + 8 + 128);
        let ip = &out[14..54];
        assert_eq!((ip[0] >> 4, ip[6], u16::from_be_bytes([ip[4], ip[5]])), (6, 58, 8 + 128));
        assert_eq!((&ip[8..24], &ip[24..40]), (&frame[38..54], &frame[22..38]), "from the VIP to the client");
        let icmp = &out[54..];
        assert_eq!((icmp[0], icmp[1]), (2, 0), "packet too big");
        assert_eq!(u32::from_be_bytes([icmp[4], icmp[5], icmp[6], icmp[7]]), mtu);
        assert_eq!(&icmp[8..], &frame[14..14 + 128]);
        let (src, dst): (Ipv6Addr, Ipv6Addr) = (<[u8; 16]>::try_from(&ip[8..24]).unwrap().into(), <[u8; 16]>::try_from(&ip[24..40]).unwrap().into());
        let mut zeroed = icmp.to_vec();
        zeroed[2..4].fill(0);
        let sum = pnet_packet::util::ipv6_checksum(&zeroed, 1, &[], &src, &dst, pnet_packet::ip::IpNextHeaderProtocols::Icmpv6);
        assert_eq!(sum, u16::from_be_bytes([icmp[2], icmp[3]]), "ICMPv6 checksum");
    }
}

#[test]
fn at_the_mtu_boundary_the_packet_is_wrapped_and_one_byte_more_is_answered_too_big() {
    with_fixture("at_the_mtu_boundary_the_packet_is_wrapped_and_one_byte_more_is_answered_too_big", |fx| {
        for (client, vip, backend, room) in [
            (IpAddr::V4(CLIENT4), IpAddr::V4(VIP4), IpAddr::V4(TB4), TUNNEL_MTU as usize - 20),
            (IpAddr::V6(CLIENT6), IpAddr::V6(VIP6), IpAddr::V6(TB6), TUNNEL_MTU as usize - 40),
        ] {
            tunnel_to(fx, backend, lb_common::FORWARD_IPIP, [0; 4]);
            let fits = sized_tcp(client, vip, room);
            let (verdict, out) = fx.run(&fits);
            assert_eq!((verdict, out.len()), (XDP_TX, fits.len() + TUNNEL_MTU as usize - room), "{client}: {room} bytes fit");
            assert_eq!(u16::from_be_bytes([out[12], out[13]]), if backend.is_ipv4() { 0x0800 } else { 0x86dd });
            let sent = fx.stat(stat::TOO_BIG_SENT);
            let too_big = sized_tcp(client, vip, room + 1);
            let (verdict, out) = fx.run(&too_big);
            assert_eq!(verdict, XDP_TX, "{client}: the answer goes back");
            check_too_big_answer(&too_big, &out, room as u32);
            assert_eq!(fx.stat(stat::TOO_BIG_SENT), sent + 1);
        }
        // GUE takes 8 bytes more.
        tunnel_to(fx, TB4.into(), lb_common::FORWARD_GUE, [0; 4]);
        let (verdict, _) = fx.run(&sized_tcp(CLIENT4.into(), VIP4.into(), TUNNEL_MTU as usize - 28));
        assert_eq!(verdict, XDP_TX);
        let too_big = sized_tcp(CLIENT4.into(), VIP4.into(), TUNNEL_MTU as usize - 27);
        let (_, out) = fx.run(&too_big);
        check_too_big_answer(&too_big, &out, TUNNEL_MTU as u32 - 28);
        // Without DF, nothing can be answered: dropped and counted.
        let mut v4 = V4::new(CLIENT4, VIP4, PROTO_UDP);
        v4.frag = 0;
        let frame = v4.frame(&frames::transport(PROTO_UDP, 5353, 53, &[0u8; 1480]));
        let (verdict, _) = fx.run(&frame);
        assert_eq!((verdict, fx.stat(stat::DROP_TOO_BIG)), (XDP_DROP, 1));
    });
}

#[test]
fn too_big_answers_are_rate_limited_per_cpu() {
    with_fixture("too_big_answers_are_rate_limited_per_cpu", |fx| {
        tunnel_to(fx, TB4.into(), lb_common::FORWARD_IPIP, [0; 4]);
        let too_big = sized_tcp(CLIENT4.into(), VIP4.into(), TUNNEL_MTU as usize);
        let limit = lb_common::TOO_BIG_PER_CPU;
        // BPF_PROG_TEST_RUN runs on one CPU; well within the second.
        let started = std::time::Instant::now();
        let verdicts: Vec<u32> = (0..limit + 5).map(|_| fx.run(&too_big).0).collect();
        assert!(started.elapsed() < std::time::Duration::from_millis(900), "too slow to stay in one window");
        assert!(verdicts[..limit as usize].iter().all(|&v| v == XDP_TX));
        assert!(verdicts[limit as usize..].iter().all(|&v| v == XDP_DROP));
        assert_eq!((fx.stat(stat::TOO_BIG_SENT), fx.stat(stat::DROP_TOO_BIG)), (limit, 5));
    });
}

#[test]
fn icmp_too_big_about_a_tunnelled_flow_reaches_its_backend_through_the_tunnel() {
    with_fixture("icmp_too_big_about_a_tunnelled_flow_reaches_its_backend_through_the_tunnel", |fx| {
        let b = pinned_flow(fx, S_TCP4, CLIENT4.into(), 52000, VIP4.into());
        tunnel_to(fx, TB4.into(), lb_common::FORWARD_IPIP, [0; 4]);
        let reply = V4::new(VIP4, CLIENT4, PROTO_TCP).packet(&frames::transport(PROTO_TCP, 80, 52000, &[0u8; 1400]));
        let icmp = frames::icmp4_frag_needed(ROUTER4, VIP4, &reply, 1280);
        let mut expected = eth_to_router(0x0800);
        expected.extend(frames::outer_ipv4(0, 4, TUNNEL_SRC4, TB4, true, icmp.len() - 14));
        expected.extend_from_slice(&icmp[14..]);
        expect_tunnelled(fx, &icmp, &expected);
        assert_eq!(fx.stat(stat::EVENT_ICMP_TOO_BIG), 1);
        assert!(b < 3);
    });
}
