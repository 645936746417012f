//! `lb_userspace::config::parse` on any UTF-8 text: it never panics, every diagnostic points
//! into the file, and what it accepts keeps the limits the README's configuration reference
//! promises (the data plane relies on them: table sizes, ids, counts).
#![no_main]

use std::collections::HashSet;

use lb_common::{MAX_BACKENDS, MAX_RING_SIZE, MAX_SERVICES};
use lb_userspace::config::{self, Severity, FLOW_TABLE_SIZE_RANGE, MAX_SERVICE_NAME_LEN, MAX_WEIGHT, MIN_TABLE_SIZE};
use libfuzzer_sys::fuzz_target;

fn is_prime(n: u32) -> bool {
    n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| !n.is_multiple_of(d))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let lines = text.lines().count().max(1);
    let (cfg, diagnostics) = match config::parse("fuzz.toml", text) {
        Ok((cfg, warnings)) => {
            assert!(warnings.iter().all(|d| d.severity == Severity::Warning), "{warnings:?}");
            (Some(cfg), warnings)
        }
        Err(e) => {
            assert!(e.diagnostics.iter().any(|d| d.severity == Severity::Error), "refused without an error: {e:?}");
            (None, e.diagnostics)
        }
    };
    // A line past the end is allowed: a syntax error at the end of a file without a final newline.
    for d in &diagnostics {
        assert!(d.line <= lines + 1, "diagnostic past the end ({lines} lines): {d}");
        assert!(!d.message.is_empty());
    }
    let Some(cfg) = cfg else { return };

    let agent = &cfg.agent;
    assert!(!agent.interfaces.is_empty());
    assert!(FLOW_TABLE_SIZE_RANGE.contains(&agent.flow_table_size));
    assert!((1..=MAX_SERVICES).contains(&agent.max_services));
    assert!(cfg.services.len() <= agent.max_services as usize, "more services than max_services");
    assert!(!(agent.assign_vips && !cfg.vrrp.is_empty()));
    if let Some(a) = &cfg.announce {
        assert!(cfg.vrrp.is_empty() && !agent.assign_vips, "[announce] beside VRRP or assign_vips");
        assert!(![0, 253, 254, 255].contains(&a.table), "table {}", a.table);
        assert!(!agent.interfaces.contains(&a.interface), "[announce] interface {} is attached", a.interface);
        assert!(!a.drain_quiet.is_zero() && a.drain_quiet <= a.drain_timeout);
        for vip in a.vips.iter().flatten() {
            assert!(cfg.services.iter().any(|s| s.vip == *vip), "announced {vip} is no service's VIP");
        }
    }
    let mut names = HashSet::new();
    let mut keys = HashSet::new();
    for s in &cfg.services {
        assert!(is_prime(s.table_size), "table_size {} is no prime", s.table_size);
        assert!((MIN_TABLE_SIZE..=MAX_RING_SIZE as u32).contains(&s.table_size));
        assert!(!s.name.is_empty() && s.name.len() <= MAX_SERVICE_NAME_LEN, "{:?}", s.name);
        assert!(s.name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)), "{:?}", s.name);
        assert!(names.insert(&s.name), "service name {} twice", s.name);
        assert!(keys.insert((s.vip, s.port, s.protocol)), "{} {} {} twice", s.vip, s.port, s.protocol);
        assert!((1..=MAX_BACKENDS).contains(&s.quorum));
        assert!(!s.vip.is_unspecified() && !s.vip.is_multicast() && !s.vip.is_loopback());
        let mut addresses = HashSet::new();
        for b in &s.backends {
            assert_eq!(b.address.is_ipv6(), s.vip.is_ipv6(), "backend {} of VIP {}", b.address, s.vip);
            assert_ne!(b.address, s.vip);
            assert!(b.weight <= MAX_WEIGHT);
            assert!(addresses.insert(b.address), "backend {} twice", b.address);
        }
    }
    for v in &cfg.vrrp {
        assert!(v.vrid >= 1 && v.priority >= 1);
        assert!(!v.virtual_addresses.is_empty());
        let v6 = v.virtual_addresses[0].is_ipv6();
        assert!(v.virtual_addresses.iter().all(|a| a.is_ipv6() == v6), "one family per instance");
        let ms = v.advert_interval.as_millis();
        match v.version {
            // What the advert's interval field can carry (and the v2 password its 8 bytes).
            2 => {
                assert!(!v6 && v.advert_interval.subsec_nanos() == 0 && (1000..=255_000).contains(&ms));
                assert!(v.auth_pass.as_ref().is_none_or(|p| (1..=8).contains(&p.len())));
            }
            3 => assert!(ms.is_multiple_of(10) && (10..=40_950).contains(&ms) && v.auth_pass.is_none()),
            other => panic!("version {other}"),
        }
    }
});
