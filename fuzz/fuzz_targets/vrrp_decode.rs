//! `lb_userspace::vrrp::packet::decode` on any message, from any source, to any destination,
//! with any TTL and any expectation; what it accepts must encode back to the same message.
//!
//! Input: a 45-byte header, then the VRRP message.
//!
//! | bytes | meaning |
//! |---|---|
//! | 0 | flags: bit 0 IPv6; bit 1 destination is the multicast group (else bytes 29..45); bit 2 the checksum is filled in before decoding, bit 3 then over the pseudo-header; bit 4 the receiver expects the other family; bit 5 the destination is of the other family |
//! | 1 | TTL / hop limit |
//! | 2, 3 | expected version, VRID |
//! | 4..12, 12 | v2 password and its length (`% 9`; 0: none expected) |
//! | 13..29, 29..45 | source and destination addresses (IPv4: the first 4 bytes) |
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_userspace::vrrp::packet::{decode, encode, Checksum, Expect, Peers, HEADER_LEN, V2_AUTH_LEN};
use libfuzzer_sys::fuzz_target;

const CONTROL: usize = 45;

fn address(bytes: &[u8], v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(bytes).expect("16 bytes")))
    } else {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    }
}

/// The internet checksum of `message` (its checksum field taken as zero), with `pseudo`
/// summed in: the value a sender puts in bytes 6..8.
fn checksum(message: &[u8], src: IpAddr, dst: IpAddr, pseudo: bool) -> u16 {
    let mut sum = 0u64;
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks(2) {
            sum += u64::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
        }
    };
    let mut m = message.to_vec();
    m[6..8].fill(0);
    add(&m);
    if pseudo {
        let len = m.len();
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                add(&s.octets());
                add(&d.octets());
                add(&[0, 112, (len >> 8) as u8, len as u8]);
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                add(&s.octets());
                add(&d.octets());
                add(&(len as u32).to_be_bytes());
                add(&[0, 0, 0, 112]);
            }
            _ => {}
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fuzz_target!(|data: &[u8]| {
    let Some((control, payload)) = data.split_at_checked(CONTROL) else { return };
    let flags = control[0];
    let v6 = flags & 1 != 0;
    let src = address(&control[13..29], v6);
    let dst_v6 = v6 != (flags & 32 != 0);
    let dst = match (flags & 2 != 0, dst_v6) {
        (true, false) => IpAddr::V4(Ipv4Addr::new(224, 0, 0, 18)),
        (true, true) => IpAddr::V6(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12)),
        (false, _) => address(&control[29..45], dst_v6),
    };
    let pass_len = usize::from(control[12] % 9);
    let pass = (pass_len > 0).then(|| &control[4..4 + pass_len]);
    // With flags & 64 a unicast instance whose one peer is the advert's source (flags & 128)
    // or another address, its min_ttl from control[12]; else a multicast instance.
    let peer = [if flags & 128 != 0 { src } else { address(&control[29..45], v6) }];
    let peers = if flags & 64 != 0 { Peers::Unicast { peers: &peer, min_ttl: control[12] | 1 } } else { Peers::Multicast };
    let expect = Expect { version: control[2], vrid: control[3], ipv6: v6 != (flags & 16 != 0), auth_pass: pass, peers };
    let mut message = payload.to_vec();
    if flags & 4 != 0 && message.len() >= HEADER_LEN {
        let sum = checksum(&message, src, dst, flags & 8 != 0);
        message[6..8].copy_from_slice(&sum.to_be_bytes());
    }

    let Ok((advert, variant)) = decode(&message, src, dst, control[1], &expect) else { return };

    // Only from the link, or from a peer: the rules of what VRRP trusts.
    let ttl = control[1];
    match expect.peers {
        Peers::Multicast => assert!(ttl == 255 && dst.is_multicast(), "multicast instance took ttl {ttl} to {dst}"),
        Peers::Unicast { peers, min_ttl } => assert!(peers.contains(&src) && ttl >= min_ttl, "unicast instance took {src} ttl {ttl}"),
    }
    // What was accepted is what the receiver expects, and consistent with itself.
    assert_eq!((advert.version, advert.vrid), (expect.version, expect.vrid));
    assert_eq!(src.is_ipv6(), expect.ipv6);
    assert_eq!(advert.addresses.len(), usize::from(message[3]));
    assert!(!advert.addresses.is_empty());
    assert!(advert.addresses.iter().all(|a| a.is_ipv6() == expect.ipv6), "{advert:?}");
    assert_ne!(advert.interval_cs, 0);
    assert_eq!(variant.is_some(), advert.version != 2 && !expect.ipv6, "a variant for v3 IPv4 alone");
    // The configuration only expects versions 2 and 3, which `encode` is for.
    if !matches!(advert.version, 2 | 3) {
        return;
    }
    assert!(advert.version == 3 || !expect.ipv6, "v2 is IPv4 only");
    assert!(advert.version == 2 || advert.interval_cs <= 0x0fff);

    // Encoded again (the way the sender checksummed it), it reads back the same ...
    let again = encode(&advert, src, dst, variant.unwrap_or(Checksum::PseudoHeader), pass);
    let (back, _) = decode(&again, src, dst, control[1], &expect).expect("our own encoding decodes");
    assert_eq!(back, advert);
    // ... and it is the message byte for byte, but for the checksum (0x0000 and 0xffff are the
    // same sum), the v3 reserved bits and, without a password, the v2 data the receiver ignores.
    assert_eq!(again.len(), message.len());
    let mut seen = message.clone();
    let mut ours = again.clone();
    for m in [&mut seen, &mut ours] {
        m[6..8].fill(0);
        if advert.version == 3 {
            m[4] &= 0x0f;
        } else if pass.is_none() {
            let len = m.len();
            m[len - V2_AUTH_LEN..].fill(0);
        }
    }
    assert_eq!(seen, ours, "re-encoded advert differs from the one decoded");
});
