use std::collections::HashSet;

use super::*;

fn v4(s: &str) -> IpAddr {
    IpAddr::V4(s.parse().unwrap())
}

fn v6(s: &str) -> IpAddr {
    IpAddr::V6(s.parse().unwrap())
}

const GROUP4: &str = "224.0.0.18";
const GROUP6: &str = "ff02::12";

fn expect_v3(vrid: u8, ipv6: bool) -> Expect<'static> {
    Expect { version: 3, vrid, ipv6, auth_pass: None, peers: Peers::Multicast }
}

fn expect_v2(vrid: u8, auth_pass: Option<&[u8]>) -> Expect<'_> {
    Expect { version: 2, vrid, ipv6: false, auth_pass, peers: Peers::Multicast }
}

/// `e` for a unicast instance whose peers are `peers`, at the default minimum TTL.
fn unicast<'a>(e: Expect<'a>, peers: &'a [IpAddr]) -> Expect<'a> {
    Expect { peers: Peers::Unicast { peers, min_ttl: TTL }, ..e }
}

/// An independent internet checksum, the RFC 1071 way: fold after every addition.
fn reference_checksum(parts: &[&[u8]]) -> u16 {
    let bytes: Vec<u8> = parts.concat();
    let mut sum: u32 = 0;
    for i in (0..bytes.len()).step_by(2) {
        let hi = u32::from(bytes[i]) << 8;
        let lo = bytes.get(i + 1).map_or(0, |&b| u32::from(b));
        sum += hi | lo;
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[test]
fn internet_checksum_sums() {
    // RFC 1071 section 3's example: the folded sum of these bytes is 0xddf2.
    assert_eq!(fold(add_words(0, &[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7])), 0xddf2);
    // An odd last byte counts as the high half of a word.
    assert_eq!(!fold(add_words(0, &[0x12, 0x34, 0x56])), reference_checksum(&[&[0x12, 0x34, 0x56]]));
    assert_eq!(fold(add_words(0, &[0x12, 0x34, 0x56])), 0x6834);
    // Carries fold back in, however many.
    assert_eq!(fold(add_words(0, &[0xff; 4096])), 0xffff);
    assert_eq!(fold(add_words(0, &[0x80, 0x00, 0x80, 0x00, 0x00, 0x01])), 0x0002);
}

/// Recomputes the checksum of a (possibly altered) message the given way.
fn refresh_checksum(m: &mut [u8], src: IpAddr, dst: IpAddr, pseudo: bool) {
    m[6] = 0;
    m[7] = 0;
    let start = if pseudo { pseudo_header_sum(src, dst, m.len()) } else { 0 };
    let sum = !fold(add_words(start, m));
    m[6..8].copy_from_slice(&sum.to_be_bytes());
}

fn advert_v3(addresses: Vec<IpAddr>) -> Advert {
    Advert { version: 3, vrid: 51, priority: 100, interval_cs: 100, addresses }
}

/// A keepalived 2.0 VRRPv3 advert as captured on the wire (keepalived issue #1490):
/// 10.0.0.3 to 224.0.0.18, VRID 2, priority 150, interval 100 cs, three addresses,
/// checksum 0x082d (over the IPv4 pseudo-header).
#[test]
fn keepalived_v3_ipv4_capture() {
    let wire = [
        0x31, 2, 150, 3, 0x00, 100, 0x08, 0x2d, //
        185, 203, 112, 1, //
        10, 0, 0, 1, //
        10, 0, 8, 1,
    ];
    let advert = Advert {
        version: 3,
        vrid: 2,
        priority: 150,
        interval_cs: 100,
        addresses: vec![v4("185.203.112.1"), v4("10.0.0.1"), v4("10.0.8.1")],
    };
    let (src, dst) = (v4("10.0.0.3"), v4(GROUP4));
    assert_eq!(encode(&advert, src, dst, Checksum::PseudoHeader, None), wire);
    let decoded = decode(&wire, src, dst, 255, &expect_v3(2, false)).unwrap();
    assert_eq!(decoded, (advert, Some(Checksum::PseudoHeader)));
}

#[test]
fn v3_ipv4_bytes_both_checksums() {
    let advert = advert_v3(vec![v4("192.168.1.1")]);
    let (src, dst) = (v4("192.168.1.10"), v4(GROUP4));
    let body = [0x31, 51, 100, 1, 0x00, 100];
    let address = [192, 168, 1, 1];
    // Checksums computed apart from this module (Python, then checked by hand).
    let pseudo = encode(&advert, src, dst, Checksum::PseudoHeader, None);
    assert_eq!(pseudo, [&body[..], &[0x06, 0x7c], &address].concat());
    let plain = encode(&advert, src, dst, Checksum::NoPseudoHeader, None);
    assert_eq!(plain, [&body[..], &[0xa8, 0xbd], &address].concat());
    // And by the reference sum.
    let zeroed = [&body[..], &[0, 0], &address].concat();
    let ph = [192, 168, 1, 10, 224, 0, 0, 18, 0, 112, 0, 12];
    assert_eq!(reference_checksum(&[&ph, &zeroed]), 0x067c);
    assert_eq!(reference_checksum(&[&zeroed]), 0xa8bd);
}

#[test]
fn v3_ipv4_unicast_pseudo_header_uses_the_peer_address() {
    let advert = advert_v3(vec![v4("192.168.1.1")]);
    let (src, peer) = (v4("192.168.1.10"), v4("192.168.1.11"));
    let m = encode(&advert, src, peer, Checksum::PseudoHeader, None);
    assert_eq!(m[6..8], [0x24, 0xdb]);
    let peers = [src];
    let e = unicast(expect_v3(51, false), &peers);
    assert_eq!(decode(&m, src, peer, 255, &e).unwrap().1, Some(Checksum::PseudoHeader));
    // Summed as if sent to the group (old keepalived unicast): refused.
    let old = encode(&advert, src, v4(GROUP4), Checksum::PseudoHeader, None);
    assert_eq!(decode(&old, src, peer, 255, &e), Err(Invalid::Checksum));
}

#[test]
fn v3_ipv6_bytes() {
    let advert = advert_v3(vec![v6("2001:db8::100")]);
    let (src, dst) = (v6("fe80::1"), v6(GROUP6));
    let m = encode(&advert, src, dst, Checksum::NoPseudoHeader, None);
    let mut expected = vec![0x31, 51, 100, 1, 0x00, 100, 0x3d, 0x8f];
    expected.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00]);
    assert_eq!(m, expected, "IPv6 always sums the pseudo-header, whatever `checksum` says");
    let mut ph = Vec::new();
    ph.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    ph.extend_from_slice(&[0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x12]);
    ph.extend_from_slice(&[0, 0, 0, 24, 0, 0, 0, 112]);
    let mut zeroed = expected.clone();
    zeroed[6..8].copy_from_slice(&[0, 0]);
    assert_eq!(reference_checksum(&[&ph, &zeroed]), 0x3d8f);
    let decoded = decode(&m, src, dst, 255, &expect_v3(51, true)).unwrap();
    assert_eq!(decoded, (advert, None));
}

#[test]
fn v2_bytes_with_and_without_password() {
    let advert = Advert { version: 2, vrid: 51, priority: 100, interval_cs: 100, addresses: vec![v4("192.168.1.1")] };
    let (src, dst) = (v4("192.168.1.10"), v4(GROUP4));
    let pass = encode(&advert, src, dst, Checksum::PseudoHeader, Some(b"secret"));
    #[rustfmt::skip]
    let expected = [
        0x21, 51, 100, 1, V2_AUTH_PASS, 1, 0x7b, 0xd4,
        192, 168, 1, 1,
        b's', b'e', b'c', b'r', b'e', b't', 0, 0,
    ];
    assert_eq!(pass, expected, "v2 never sums a pseudo-header");
    let mut zeroed = expected;
    zeroed[6..8].copy_from_slice(&[0, 0]);
    assert_eq!(reference_checksum(&[&zeroed]), 0x7bd4);

    let none = encode(&advert, src, dst, Checksum::PseudoHeader, None);
    #[rustfmt::skip]
    let expected = [
        0x21, 51, 100, 1, V2_AUTH_NONE, 1, 0xb9, 0x20,
        192, 168, 1, 1,
        0, 0, 0, 0, 0, 0, 0, 0,
    ];
    assert_eq!(none, expected);

    assert_eq!(decode(&pass, src, dst, 255, &expect_v2(51, Some(b"secret"))), Ok((advert.clone(), None)));
    assert_eq!(decode(&none, src, dst, 255, &expect_v2(51, None)), Ok((advert, None)));
}

#[test]
fn round_trips() {
    let four = vec![v4("203.0.113.100"), v4("203.0.113.101"), v4("198.51.100.7"), v4("10.1.2.3")];
    let six = vec![v6("2001:db8::100"), v6("2001:db8::101"), v6("fe80::5")];
    type Case = (Advert, IpAddr, IpAddr, Checksum, Option<&'static [u8]>);
    let cases: Vec<Case> = vec![
        (advert_v3(four.clone()), v4("203.0.113.2"), v4(GROUP4), Checksum::PseudoHeader, None),
        (advert_v3(four.clone()), v4("203.0.113.2"), v4(GROUP4), Checksum::NoPseudoHeader, None),
        (advert_v3(four.clone()), v4("203.0.113.2"), v4("203.0.113.3"), Checksum::NoPseudoHeader, None),
        (advert_v3(six.clone()), v6("fe80::2"), v6(GROUP6), Checksum::PseudoHeader, None),
        (advert_v3(six.clone()), v6("2001:db8::2"), v6("2001:db8::3"), Checksum::PseudoHeader, None),
        (
            Advert { version: 3, vrid: 255, priority: 255, interval_cs: 4095, addresses: vec![v4("192.0.2.1")] },
            v4("192.0.2.2"),
            v4(GROUP4),
            Checksum::PseudoHeader,
            None,
        ),
        (
            Advert { version: 3, vrid: 1, priority: 1, interval_cs: 1, addresses: vec![v4("192.0.2.1")] },
            v4("192.0.2.2"),
            v4(GROUP4),
            Checksum::NoPseudoHeader,
            None,
        ),
        // Priority 0: a master resigning.
        (
            Advert { version: 3, vrid: 51, priority: 0, interval_cs: 100, addresses: vec![v4("192.0.2.1")] },
            v4("192.0.2.2"),
            v4(GROUP4),
            Checksum::PseudoHeader,
            None,
        ),
        (
            Advert { version: 2, vrid: 7, priority: 200, interval_cs: 300, addresses: four.clone() },
            v4("10.0.0.1"),
            v4(GROUP4),
            Checksum::PseudoHeader,
            None,
        ),
        (
            Advert { version: 2, vrid: 7, priority: 200, interval_cs: 25500, addresses: four },
            v4("10.0.0.1"),
            v4("10.0.0.9"),
            Checksum::NoPseudoHeader,
            Some(b"12345678"),
        ),
    ];
    for (advert, src, dst, checksum, pass) in cases {
        let m = encode(&advert, src, dst, checksum, pass);
        let ipv6 = src.is_ipv6();
        assert_eq!(m.len(), message_len(advert.version, ipv6, advert.addresses.len()));
        let peers = [src];
        let multicast = Expect { version: advert.version, vrid: advert.vrid, ipv6, auth_pass: pass, peers: Peers::Multicast };
        let expect = if is_group(dst) { multicast } else { unicast(multicast, &peers) };
        let (decoded, variant) = decode(&m, src, dst, 255, &expect).unwrap_or_else(|e| panic!("{advert:?}: {e}"));
        assert_eq!(decoded, advert);
        let expected_variant = (advert.version == 3 && !ipv6).then_some(checksum);
        assert_eq!(variant, expected_variant, "{advert:?}");
    }
}

#[test]
fn all_255_addresses_round_trip() {
    let addresses: Vec<IpAddr> =
        (0..=254u8).map(|i| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(i)))).collect();
    let advert = advert_v3(addresses);
    let (src, dst) = (v6("fe80::1"), v6(GROUP6));
    let m = encode(&advert, src, dst, Checksum::PseudoHeader, None);
    assert_eq!(m.len(), 8 + 255 * 16);
    assert_eq!(decode(&m, src, dst, 255, &expect_v3(51, true)), Ok((advert, None)));
}

#[test]
fn intervals_are_clamped_to_the_fields() {
    let (src, dst) = (v4("10.0.0.1"), v4(GROUP4));
    let v2 = |cs| {
        let a = Advert { version: 2, vrid: 1, priority: 100, interval_cs: cs, addresses: vec![v4("10.0.0.100")] };
        encode(&a, src, dst, Checksum::PseudoHeader, None)[5]
    };
    assert_eq!([v2(0), v2(50), v2(100), v2(199), v2(200), v2(25500), v2(u16::MAX)], [1, 1, 1, 1, 2, 255, 255]);
    let v3 = |cs| {
        let m =
            encode(&Advert { interval_cs: cs, ..advert_v3(vec![v4("10.0.0.100")]) }, src, dst, Checksum::PseudoHeader, None);
        u16::from_be_bytes([m[4], m[5]])
    };
    assert_eq!([v3(0), v3(1), v3(100), v3(4095), v3(4096), v3(u16::MAX)], [1, 1, 100, 4095, 4095, 4095]);
}

#[test]
fn long_passwords_are_cut_to_eight_bytes() {
    let a = Advert { version: 2, vrid: 1, priority: 100, interval_cs: 100, addresses: vec![v4("10.0.0.100")] };
    let (src, dst) = (v4("10.0.0.1"), v4(GROUP4));
    let m = encode(&a, src, dst, Checksum::PseudoHeader, Some(b"0123456789"));
    assert_eq!(&m[12..], b"01234567");
    assert!(decode(&m, src, dst, 255, &expect_v2(1, Some(b"01234567"))).is_ok());
}

#[test]
fn v3_reserved_bits_are_ignored() {
    let (src, dst) = (v4("10.0.0.1"), v4(GROUP4));
    let mut m = encode(&advert_v3(vec![v4("10.0.0.100")]), src, dst, Checksum::PseudoHeader, None);
    m[4] |= 0xf0;
    refresh_checksum(&mut m, src, dst, true);
    let (advert, _) = decode(&m, src, dst, 255, &expect_v3(51, false)).unwrap();
    assert_eq!(advert.interval_cs, 100);
}

#[test]
fn v2_auth_data_is_ignored_without_a_password() {
    let (src, dst) = (v4("10.0.0.1"), v4(GROUP4));
    let a = Advert { version: 2, vrid: 9, priority: 100, interval_cs: 100, addresses: vec![v4("10.0.0.100")] };
    let mut m = encode(&a, src, dst, Checksum::PseudoHeader, None);
    m[12..].copy_from_slice(b"garbage!");
    refresh_checksum(&mut m, src, dst, false);
    assert_eq!(decode(&m, src, dst, 255, &expect_v2(9, None)), Ok((a, None)));
}

/// A valid v3 IPv4 message, its addresses and an Expect accepting it.
fn valid_v3_ipv4() -> (Vec<u8>, IpAddr, IpAddr) {
    let (src, dst) = (v4("192.168.1.10"), v4(GROUP4));
    (encode(&advert_v3(vec![v4("192.168.1.1")]), src, dst, Checksum::PseudoHeader, None), src, dst)
}

fn valid_v2() -> (Vec<u8>, IpAddr, IpAddr) {
    let (src, dst) = (v4("192.168.1.10"), v4(GROUP4));
    let a = Advert { version: 2, vrid: 51, priority: 100, interval_cs: 100, addresses: vec![v4("192.168.1.1")] };
    (encode(&a, src, dst, Checksum::PseudoHeader, Some(b"secret")), src, dst)
}

#[test]
fn every_reason_is_produced() {
    let e3 = expect_v3(51, false);
    let e2 = expect_v2(51, Some(b"secret"));
    let (m3, src, dst) = valid_v3_ipv4();
    let (m2, _, _) = valid_v2();
    assert!(decode(&m3, src, dst, 255, &e3).is_ok());
    assert!(decode(&m2, src, dst, 255, &e2).is_ok());
    let mut seen = HashSet::new();
    let mut check = |want: Invalid, got: Result<(Advert, Option<Checksum>), Invalid>| {
        assert_eq!(got, Err(want));
        seen.insert(want);
    };
    // An altered v3 message with a fresh checksum.
    let altered = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut m = m3.clone();
        f(&mut m);
        refresh_checksum(&mut m, src, dst, true);
        m
    };

    // Family: v6 addresses for a v4 instance, mixed src/dst, v2 over IPv6.
    check(Invalid::Family, decode(&m3, v6("fe80::1"), v6(GROUP6), 255, &e3));
    check(Invalid::Family, decode(&m3, src, v6(GROUP6), 255, &e3));
    check(Invalid::Family, decode(&m3, v6("fe80::1"), v6(GROUP6), 255, &Expect { ipv6: true, ..e2 }));
    // TTL: anything but 255, to the group or not; for a unicast instance, below its minimum.
    check(Invalid::Ttl, decode(&m3, src, dst, 254, &e3));
    check(Invalid::Ttl, decode(&m3, src, v4("192.168.1.11"), 64, &e3));
    let peers = [src];
    check(Invalid::Ttl, decode(&m3, src, dst, 254, &unicast(e3, &peers)));
    // Destination: a multicast instance's advert sent unicast (the pseudo-header sum holds
    // the destination, so the forgery's checksum is right for it).
    let mut to_me = m3.clone();
    refresh_checksum(&mut to_me, src, v4("192.168.1.11"), true);
    check(Invalid::Destination, decode(&to_me, src, v4("192.168.1.11"), 255, &e3));
    // Unknown source: a unicast instance's advert from anyone but its peers.
    check(Invalid::UnknownSource, decode(&m3, src, dst, 255, &unicast(e3, &[v4("192.168.1.12")])));
    // Truncated: empty, short header, short address list, v2 without its auth data.
    check(Invalid::Truncated, decode(&[], src, dst, 255, &e3));
    check(Invalid::Truncated, decode(&m3[..7], src, dst, 255, &e3));
    check(Invalid::Truncated, decode(&m3[..11], src, dst, 255, &e3));
    check(Invalid::Truncated, decode(&altered(&|m| m[3] = 2), src, dst, 255, &e3));
    check(Invalid::Truncated, decode(&m2[..12], src, dst, 255, &e2));
    // Version: v2 to a v3 instance and back, and an unknown one.
    check(Invalid::Version, decode(&m2, src, dst, 255, &e3));
    check(Invalid::Version, decode(&m3, src, dst, 255, &e2));
    check(Invalid::Version, decode(&altered(&|m| m[0] = 0x41), src, dst, 255, &e3));
    // Type.
    check(Invalid::Type, decode(&altered(&|m| m[0] = 0x32), src, dst, 255, &e3));
    // Length: no addresses, trailing bytes.
    check(Invalid::Length, decode(&altered(&|m| m[3] = 0), src, dst, 255, &e3));
    check(Invalid::Length, decode(&altered(&|m| m.extend_from_slice(&[0, 0, 0, 0])), src, dst, 255, &e3));
    // Checksum: a flipped bit, the v3 IPv6 message without its pseudo-header, a v2 message
    // summed with a pseudo-header.
    check(Invalid::Checksum, decode(&[&m3[..9], &[m3[9] ^ 1], &m3[10..]].concat(), src, dst, 255, &e3));
    // Another source: the pseudo-header sum no longer matches, the message alone neither.
    check(Invalid::Checksum, decode(&m3, v4("192.168.1.99"), dst, 255, &e3));
    let (s6, d6) = (v6("fe80::1"), v6(GROUP6));
    let mut m6 = encode(&advert_v3(vec![v6("2001:db8::1")]), s6, d6, Checksum::PseudoHeader, None);
    refresh_checksum(&mut m6, s6, d6, false);
    check(Invalid::Checksum, decode(&m6, s6, d6, 255, &expect_v3(51, true)));
    let mut m2p = m2.clone();
    refresh_checksum(&mut m2p, src, dst, true);
    check(Invalid::Checksum, decode(&m2p, src, dst, 255, &e2));
    // VRID.
    check(Invalid::Vrid, decode(&m3, src, dst, 255, &expect_v3(52, false)));
    check(Invalid::Vrid, decode(&m2, src, dst, 255, &expect_v2(50, Some(b"secret"))));
    // Auth: wrong password, password expected but none sent, none expected but one sent,
    // an unknown type.
    check(Invalid::Auth, decode(&m2, src, dst, 255, &expect_v2(51, Some(b"secreT"))));
    check(Invalid::Auth, decode(&m2, src, dst, 255, &expect_v2(51, Some(b"secret1"))));
    check(Invalid::Auth, decode(&m2, src, dst, 255, &expect_v2(51, None)));
    let mut none = m2.clone();
    none[4] = V2_AUTH_NONE;
    refresh_checksum(&mut none, src, dst, false);
    check(Invalid::Auth, decode(&none, src, dst, 255, &e2));
    let mut ah = m2.clone();
    ah[4] = 2;
    refresh_checksum(&mut ah, src, dst, false);
    check(Invalid::Auth, decode(&ah, src, dst, 255, &e2));
    // Interval 0, v3 (reserved bits set do not hide it) and v2.
    check(Invalid::Interval, decode(&altered(&|m| m[4..6].copy_from_slice(&[0xf0, 0])), src, dst, 255, &e3));
    let mut zero = m2.clone();
    zero[5] = 0;
    refresh_checksum(&mut zero, src, dst, false);
    check(Invalid::Interval, decode(&zero, src, dst, 255, &e2));

    assert_eq!(seen, HashSet::from(Invalid::ALL), "every reason has a packet producing it");
}

#[test]
fn a_multicast_instance_takes_ttl_255_adverts_to_the_group_only() {
    let e = expect_v3(51, false);
    let (src, me, vip) = (v4("192.168.1.10"), v4("192.168.1.11"), v4("192.168.1.1"));
    let a = advert_v3(vec![vip]);
    let to = |dst: IpAddr| encode(&a, src, dst, Checksum::PseudoHeader, None);
    assert!(decode(&to(v4(GROUP4)), src, v4(GROUP4), 255, &e).is_ok());
    // Off the link (a router decremented it), or sent with a host's default TTL.
    for ttl in [0, 1, 64, 128, 254] {
        assert_eq!(decode(&to(v4(GROUP4)), src, v4(GROUP4), ttl, &e), Err(Invalid::Ttl), "ttl {ttl}");
        assert_eq!(decode(&to(me), src, me, ttl, &e), Err(Invalid::Ttl), "unicast, ttl {ttl}");
    }
    // Unicast to this node or to a virtual address, even with TTL 255 and a right checksum.
    assert_eq!(decode(&to(me), src, me, 255, &e), Err(Invalid::Destination));
    assert_eq!(decode(&to(vip), src, vip, 255, &e), Err(Invalid::Destination));
    // Another multicast group is not the VRRP one.
    let other = v4("224.0.0.5");
    assert_eq!(decode(&to(other), src, other, 255, &e), Err(Invalid::Destination));
    // IPv6: hop limit and group alike.
    let e6 = expect_v3(51, true);
    let (s6, me6) = (v6("fe80::1"), v6("fe80::2"));
    let a6 = advert_v3(vec![v6("2001:db8::100")]);
    let m6 = encode(&a6, s6, v6(GROUP6), Checksum::PseudoHeader, None);
    assert!(decode(&m6, s6, v6(GROUP6), 255, &e6).is_ok());
    assert_eq!(decode(&m6, s6, v6(GROUP6), 254, &e6), Err(Invalid::Ttl));
    let u6 = encode(&a6, s6, me6, Checksum::PseudoHeader, None);
    assert_eq!(decode(&u6, s6, me6, 255, &e6), Err(Invalid::Destination));
}

#[test]
fn a_unicast_instance_takes_its_peers_only_at_its_minimum_ttl() {
    let (peer, me, stranger) = (v4("192.168.1.10"), v4("192.168.1.11"), v4("192.168.1.66"));
    let a = advert_v3(vec![v4("192.168.1.1")]);
    let peers = [v4("198.51.100.10"), peer];
    let e = unicast(expect_v3(51, false), &peers);
    let from = |src: IpAddr| encode(&a, src, me, Checksum::PseudoHeader, None);
    assert!(decode(&from(peer), peer, me, 255, &e).is_ok());
    // TTL 255 by default, as on a multicast link.
    assert_eq!(decode(&from(peer), peer, me, 254, &e), Err(Invalid::Ttl));
    // Anyone else, with a perfect advert.
    assert_eq!(decode(&from(stranger), stranger, me, 255, &e), Err(Invalid::UnknownSource));
    // A peer that multicasts is still a peer.
    let m = encode(&a, peer, v4(GROUP4), Checksum::PseudoHeader, None);
    assert!(decode(&m, peer, v4(GROUP4), 255, &e).is_ok());
    // min_ttl lowered for a peer two routers away: 253 passes, 252 does not; strangers stay out.
    let far = peers[0];
    let routed = Expect { peers: Peers::Unicast { peers: &peers, min_ttl: 253 }, ..e };
    assert!(decode(&from(far), far, me, 253, &routed).is_ok());
    assert_eq!(decode(&from(far), far, me, 252, &routed), Err(Invalid::Ttl));
    assert_eq!(decode(&from(stranger), stranger, me, 255, &routed), Err(Invalid::UnknownSource));
    // min_ttl 1: the check is off.
    let off = Expect { peers: Peers::Unicast { peers: &peers, min_ttl: 1 }, ..e };
    assert!(decode(&from(far), far, me, 1, &off).is_ok());
}

#[test]
fn reasons_have_stable_distinct_names() {
    let names: Vec<&str> = Invalid::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(
        names,
        ["ttl", "truncated", "version", "type", "length", "checksum", "vrid", "auth", "family", "interval", "destination", "unknown_source"]
    );
    let messages: HashSet<String> = Invalid::ALL.iter().map(ToString::to_string).collect();
    assert_eq!(messages.len(), Invalid::ALL.len());
}

#[test]
fn both_ipv4_checksums_are_accepted_and_reported() {
    let advert = advert_v3(vec![v4("192.168.1.1"), v4("192.168.1.2")]);
    let (src, dst) = (v4("192.168.1.10"), v4(GROUP4));
    for variant in [Checksum::PseudoHeader, Checksum::NoPseudoHeader] {
        let m = encode(&advert, src, dst, variant, None);
        assert_eq!(decode(&m, src, dst, 255, &expect_v3(51, false)), Ok((advert.clone(), Some(variant))));
    }
}

#[test]
fn either_zero_representation_of_the_checksum_verifies() {
    // Ones' complement has two zeros; a sender may write 0xffff where we would write
    // 0x0000 or the reverse. Find a message whose checksum comes out as 0 and flip it.
    let (src, dst) = (v4("192.168.1.10"), v4(GROUP4));
    let mut found = false;
    for prio in 1..=255u8 {
        for vrid in 1..=255u8 {
            let a = Advert { vrid, priority: prio, ..advert_v3(vec![v4("192.168.1.1")]) };
            let mut m = encode(&a, src, dst, Checksum::NoPseudoHeader, None);
            if m[6..8] == [0, 0] {
                m[6..8].copy_from_slice(&[0xff, 0xff]);
                assert_eq!(decode(&m, src, dst, 255, &expect_v3(vrid, false)).unwrap().1, Some(Checksum::NoPseudoHeader));
                found = true;
            }
        }
    }
    assert!(found);
}

/// xorshift64: deterministic bytes without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }

    fn one_in(&mut self, n: u64) -> bool {
        self.next().is_multiple_of(n)
    }
}

#[test]
fn the_decoder_never_panics() {
    let (m3, src4, dst4) = valid_v3_ipv4();
    let (m2, _, _) = valid_v2();
    let (s6, d6) = (v6("fe80::1"), v6(GROUP6));
    let m6 = encode(&advert_v3(vec![v6("2001:db8::1"), v6("2001:db8::2")]), s6, d6, Checksum::PseudoHeader, None);
    let e3 = expect_v3(51, false);
    let e6 = expect_v3(51, true);
    let e2 = expect_v2(51, Some(b"secret"));
    let e2n = expect_v2(51, None);
    let peers = [src4];
    let expects = [e3, e6, e2, e2n, unicast(e3, &peers)];
    let addresses = [(src4, dst4), (s6, d6), (src4, v4("192.168.1.11"))];

    // Every truncation of valid packets, to every kind of receiver.
    for m in [&m3, &m2, &m6] {
        for n in 0..=m.len() {
            for e in &expects {
                for &(s, d) in &addresses {
                    let r = decode(&m[..n], s, d, 255, e);
                    if n < m.len() {
                        assert!(r.is_err());
                    }
                }
            }
        }
    }

    // Random bytes; half of them shaped (version, type, count, checksum) to get past the
    // early checks.
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut accepted = 0;
    for i in 0..20_000 {
        let e = &expects[i % expects.len()];
        let ipv6 = e.ipv6;
        let (s, d) = if ipv6 { (s6, d6) } else { addresses[i % 2 * 2] };
        let len = (rng.next() % 80) as usize;
        let mut m: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
        if i % 2 == 0 && len >= 1 {
            m[0] = e.version << 4 | TYPE_ADVERTISEMENT;
            if len >= HEADER_LEN {
                let count = rng.next() % 4 + 1;
                m.truncate(HEADER_LEN);
                m[1] = if rng.one_in(4) { rng.byte() } else { e.vrid };
                m[3] = count as u8;
                let body = message_len(e.version, ipv6, count as usize) - HEADER_LEN;
                m.extend((0..body).map(|_| rng.byte()));
                if e.version == 2 && rng.one_in(2) {
                    m[4] = if e.auth_pass.is_some() { V2_AUTH_PASS } else { V2_AUTH_NONE };
                    let n = m.len();
                    m[n - V2_AUTH_LEN..].copy_from_slice(&auth_data(e.auth_pass));
                }
                let pseudo = e.version == 3 && (ipv6 || rng.one_in(2));
                refresh_checksum(&mut m, s, d, pseudo);
            }
        }
        let ttl = if rng.one_in(8) { rng.byte() } else { 255 };
        if let Ok((advert, _)) = decode(&m, s, d, ttl, e) {
            accepted += 1;
            assert_eq!(advert.version, e.version);
            assert_eq!(advert.vrid, e.vrid);
            assert!(!advert.addresses.is_empty() && advert.addresses.iter().all(|a| a.is_ipv6() == ipv6));
            assert!(advert.interval_cs > 0);
            // What is accepted re-encodes to a message that is accepted again.
            let again = encode(&advert, s, d, Checksum::PseudoHeader, e.auth_pass);
            assert_eq!(decode(&again, s, d, 255, e).map(|(a, _)| a), Ok(advert));
        }
    }
    assert!(accepted > 1000, "the shaped inputs reach the end of the checks ({accepted} accepted)");
}
