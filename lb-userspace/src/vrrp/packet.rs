//! VRRP advertisements on the wire: encoding, and the checks RFC 5798 section 7.1 (version 3)
//! and RFC 3768 section 7.1 (version 2) make before a received advert may touch the state
//! machine. Pure code, no I/O: the sockets are in `io.rs`.
//!
//! # Formats
//!
//! Version 3 (RFC 5798 section 5.1), IPv4 or IPv6:
//!
//! ```text
//! | version 3 | type 1 | VRID | priority | count |
//! | rsvd (4 bits) | max advert interval (12 bits, centiseconds) | checksum |
//! | count addresses, 4 or 16 bytes each |
//! ```
//!
//! Version 2 (RFC 3768 section 5.1), IPv4 only:
//!
//! ```text
//! | version 2 | type 1 | VRID | priority | count |
//! | auth type | advert interval (seconds) | checksum |
//! | count IPv4 addresses | authentication data (8 bytes) |
//! ```
//!
//! # Checksums
//!
//! The checksum is the internet checksum (RFC 1071): the 16-bit ones' complement of the ones'
//! complement sum of the message, checksum field zero.
//!
//! - Version 2 sums the VRRP message alone.
//! - Version 3 over IPv6 also sums the IPv6 pseudo-header (RFC 8200 section 8.1: source,
//!   destination, 32-bit upper-layer length, three zero bytes, next header 112).
//! - Version 3 over IPv4 is deployed both ways. RFC 5798 section 5.2.8 says the checksum
//!   covers "a pseudo-header as defined in Section 8.1 of RFC 2460", without saying what that
//!   means for IPv4. keepalived (by default), FRR (by default) and Wireshark read it as the
//!   IPv4 pseudo-header (source, destination, zero, protocol 112, 16-bit length): that is
//!   [`Checksum::PseudoHeader`]. Cisco and others read it as IPv6-only and sum the VRRP
//!   message alone, as version 2 does: [`Checksum::NoPseudoHeader`] (keepalived's
//!   `v3_checksum_as_v2`, FRR's `no checksum-with-ipv4-pseudoheader`). RFC 9568, which
//!   obsoletes RFC 5798, settles on the second: only the IPv6 checksum has a pseudo-header.
//!
//!   Which one a node sends is configuration (`checksum` in `[[vrrp_instance]]`); [`decode`]
//!   accepts either and reports which one matched, so a mixed pair keeps working and the
//!   operator can see what the peer speaks. Accepting both costs little: the checksum only
//!   guards against corruption, and two accepted sums merely double the small chance
//!   (2^-16 to 2^-15) that a corrupted advert passes.
//!
//! The pseudo-header holds the destination address the packet was sent to: the multicast
//! group, or the peer's own address for unicast adverts. (Old keepalived releases put the
//! group address in it even for unicast; such adverts fail the check here, as they do in
//! current keepalived unless `old_unicast_checksum` is set.)

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The type of an advertisement, the only VRRP message type.
pub const TYPE_ADVERTISEMENT: u8 = 1;
/// Version 2 authentication types (RFC 3768 section 5.3.6; RFC 2338 defined type 1).
pub const V2_AUTH_NONE: u8 = 0;
pub const V2_AUTH_PASS: u8 = 1;
/// Version 2 authentication data after the addresses: the password, zero-padded.
pub const V2_AUTH_LEN: usize = 8;
/// The fixed header before the addresses, in both versions.
pub const HEADER_LEN: usize = 8;
/// At most this many addresses fit the 8-bit count.
pub const MAX_ADDRESSES: usize = 255;
/// The largest version 3 interval (12 bits of centiseconds, 40.95 s).
pub const V3_MAX_INTERVAL_CS: u16 = 0x0fff;

/// IP protocol number of VRRP, as it appears in the pseudo-headers.
const PROTOCOL: u8 = 112;

/// One advertisement, either version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    /// 2 or 3.
    pub version: u8,
    pub vrid: u8,
    pub priority: u8,
    /// Advertisement interval in centiseconds (v3: the 12-bit field; v2: seconds * 100).
    pub interval_cs: u16,
    pub addresses: Vec<IpAddr>,
}

/// How a v3 IPv4 advert's checksum was (or is to be) computed; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checksum {
    /// Over the IPv4 pseudo-header and the message (RFC 5798 as keepalived reads it).
    PseudoHeader,
    /// Over the message alone (RFC 9568; Cisco; keepalived's `v3_checksum_as_v2`).
    NoPseudoHeader,
}

/// What the receiver expects (from its configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expect<'a> {
    pub version: u8,
    pub vrid: u8,
    pub ipv6: bool,
    /// v2 simple password (up to 8 bytes); None = auth type 0 expected.
    pub auth_pass: Option<&'a [u8]>,
}

/// Why an advert was dropped; each reason is a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Invalid {
    /// TTL (IPv4) or hop limit (IPv6) not 255: the advert may come from off the link.
    #[error("TTL or hop limit is not 255")]
    Ttl,
    /// Shorter than the fixed header, or than the addresses (and v2 authentication data) its
    /// count announces.
    #[error("truncated: shorter than its header or the addresses it counts")]
    Truncated,
    /// Version field not the configured one.
    #[error("VRRP version is not the configured one")]
    Version,
    /// Type not 1 (advertisement).
    #[error("type is not advertisement (1)")]
    Type,
    /// No addresses (both RFCs: one or more), or bytes beyond the announced addresses (and v2
    /// authentication data).
    #[error("address count does not match the length")]
    Length,
    /// Wrong checksum (v3 IPv4: neither variant matches).
    #[error("bad checksum")]
    Checksum,
    /// Another VRID: another virtual router on the same link.
    #[error("VRID is not ours")]
    Vrid,
    /// v2: authentication type or password not the configured ones.
    #[error("authentication type or password mismatch")]
    Auth,
    /// Address family not the instance's (also: v2 over IPv6, source and destination of
    /// different families).
    #[error("address family is not the instance's")]
    Family,
    /// Advertisement interval 0.
    #[error("advertisement interval is 0")]
    Interval,
}

impl Invalid {
    /// Every reason, in declaration order (for counters and status output).
    pub const ALL: [Invalid; 10] = [
        Invalid::Ttl,
        Invalid::Truncated,
        Invalid::Version,
        Invalid::Type,
        Invalid::Length,
        Invalid::Checksum,
        Invalid::Vrid,
        Invalid::Auth,
        Invalid::Family,
        Invalid::Interval,
    ];

    /// A stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Invalid::Ttl => "ttl",
            Invalid::Truncated => "truncated",
            Invalid::Version => "version",
            Invalid::Type => "type",
            Invalid::Length => "length",
            Invalid::Checksum => "checksum",
            Invalid::Vrid => "vrid",
            Invalid::Auth => "auth",
            Invalid::Family => "family",
            Invalid::Interval => "interval",
        }
    }
}

/// Length of a message of `version` carrying `count` addresses of the given family.
pub fn message_len(version: u8, ipv6: bool, count: usize) -> usize {
    let address_len = if ipv6 { 16 } else { 4 };
    let auth_len = if version == 2 { V2_AUTH_LEN } else { 0 };
    HEADER_LEN + count * address_len + auth_len
}

/// Encodes an advert as the VRRP message (IP payload; the kernel adds the IP header).
///
/// - v3: the interval field is `interval_cs` clamped to 1 ..= 4095; the checksum covers the
///   IPv6 pseudo-header for IPv6, and for IPv4 is computed as `checksum` says.
/// - v2 (IPv4 only): auth type 1 with the password zero-padded to 8 bytes (longer ones cut) when
///   `auth_pass` is Some, else auth type 0 with 8 zero bytes; the interval field is
///   `interval_cs / 100` clamped to 1 ..= 255 s; the checksum covers the message alone
///   (RFC 3768). `checksum` is not used.
///
/// `src` and `dst` are the addresses of the IP header the kernel will write; their family is
/// the message's. The caller passes addresses of that family only, at most 255 (configuration
/// guarantees both); others are left out so that the message stays consistent.
pub fn encode(advert: &Advert, src: IpAddr, dst: IpAddr, checksum: Checksum, auth_pass: Option<&[u8]>) -> Vec<u8> {
    let ipv6 = src.is_ipv6();
    let v2 = advert.version == 2;
    debug_assert!(matches!(advert.version, 2 | 3), "VRRP version {}", advert.version);
    debug_assert_eq!(ipv6, dst.is_ipv6(), "source and destination families differ");
    debug_assert!(!(v2 && ipv6), "VRRP version 2 is IPv4 only");
    debug_assert!(advert.addresses.iter().all(|a| a.is_ipv6() == ipv6), "addresses of another family");
    debug_assert!(advert.addresses.len() <= MAX_ADDRESSES, "more than 255 addresses");
    let addresses: Vec<IpAddr> = advert.addresses.iter().copied().filter(|a| a.is_ipv6() == ipv6).take(MAX_ADDRESSES).collect();

    let mut m = Vec::with_capacity(message_len(advert.version, ipv6, addresses.len()));
    m.push(advert.version << 4 | TYPE_ADVERTISEMENT);
    m.push(advert.vrid);
    m.push(advert.priority);
    m.push(addresses.len() as u8);
    if v2 {
        m.push(if auth_pass.is_some() { V2_AUTH_PASS } else { V2_AUTH_NONE });
        m.push((advert.interval_cs / 100).clamp(1, 255) as u8);
    } else {
        m.extend_from_slice(&advert.interval_cs.clamp(1, V3_MAX_INTERVAL_CS).to_be_bytes());
    }
    m.extend_from_slice(&[0, 0]); // checksum, filled in below
    for a in &addresses {
        match a {
            IpAddr::V4(a) => m.extend_from_slice(&a.octets()),
            IpAddr::V6(a) => m.extend_from_slice(&a.octets()),
        }
    }
    if v2 {
        m.extend_from_slice(&auth_data(auth_pass));
    }

    let pseudo = !v2 && (ipv6 || checksum == Checksum::PseudoHeader);
    let start = if pseudo { pseudo_header_sum(src, dst, m.len()) } else { 0 };
    let sum = !fold(add_words(start, &m));
    m[6..8].copy_from_slice(&sum.to_be_bytes());
    m
}

fn dst_is_multicast(dst: IpAddr) -> bool {
    match dst {
        IpAddr::V4(a) => a.is_multicast(),
        IpAddr::V6(a) => a.is_multicast(),
    }
}

/// Validates a received advert and decodes it.
///
/// `payload` is the VRRP message (after the IP header), `src` and `dst` the IP header's
/// addresses (`dst`: the multicast group or, for unicast adverts, our own address), `ttl` its
/// TTL or hop limit. Checks, in the order of RFC 5798 / RFC 3768 section 7.1 (the first to fail
/// is the reason returned):
///
/// 1. family: `src` and `dst` are of the instance's family (IPv4 for version 2);
/// 2. TTL / hop limit 255 on multicast adverts. Unicast adverts may cross a router to a
///    peer in another network (what `unicast_peers` is for), so their TTL is not checked,
///    as keepalived does;
/// 3. version, then type;
/// 4. length: the fixed header, at least one address, and exactly the addresses (and v2
///    authentication data) the count announces;
/// 5. checksum: v2 over the message; v3 IPv6 with the pseudo-header; v3 IPv4 either way
///    (see the module documentation);
/// 6. VRID;
/// 7. v2 authentication: type 0 when no password is configured (the data is then ignored,
///    RFC 3768), else type 1 and the password, zero-padded to 8 bytes;
/// 8. interval not 0 (a backup would otherwise wait only its skew time for the master).
///
/// The v3 reserved bits are ignored (RFC 5798 section 5.2.6). Left to the caller: whether we
/// own the addresses (priority 255), whether the addresses match the configured ones (a MAY in
/// both RFCs), and, for version 2, that the interval equals the configured one (RFC 3768
/// section 7.1: MUST discard otherwise).
///
/// Returns the advert and, for v3 IPv4 only, which checksum variant matched (when both do,
/// which needs a pseudo-header summing to zero, `PseudoHeader`).
pub fn decode(payload: &[u8], src: IpAddr, dst: IpAddr, ttl: u8, expect: &Expect) -> Result<(Advert, Option<Checksum>), Invalid> {
    let ipv6 = src.is_ipv6();
    if ipv6 != dst.is_ipv6() || ipv6 != expect.ipv6 || (ipv6 && expect.version == 2) {
        return Err(Invalid::Family);
    }
    if ttl != 255 && dst_is_multicast(dst) {
        return Err(Invalid::Ttl);
    }
    let Some(&first) = payload.first() else {
        return Err(Invalid::Truncated);
    };
    let version = first >> 4;
    if version != expect.version {
        return Err(Invalid::Version);
    }
    if first & 0x0f != TYPE_ADVERTISEMENT {
        return Err(Invalid::Type);
    }
    if payload.len() < HEADER_LEN {
        return Err(Invalid::Truncated);
    }
    let count = usize::from(payload[3]);
    if count == 0 {
        return Err(Invalid::Length);
    }
    let len = message_len(version, ipv6, count);
    if payload.len() < len {
        return Err(Invalid::Truncated);
    }
    if payload.len() > len {
        return Err(Invalid::Length);
    }

    let variant = verify_checksum(payload, version, src, dst)?;
    if payload[1] != expect.vrid {
        return Err(Invalid::Vrid);
    }
    if version == 2 {
        let (auth_type, data) = (payload[4], &payload[len - V2_AUTH_LEN..]);
        let ok = match expect.auth_pass {
            None => auth_type == V2_AUTH_NONE,
            Some(pass) => auth_type == V2_AUTH_PASS && data == auth_data(Some(pass)),
        };
        if !ok {
            return Err(Invalid::Auth);
        }
    }
    let interval_cs = if version == 2 {
        u16::from(payload[5]) * 100
    } else {
        u16::from_be_bytes([payload[4], payload[5]]) & V3_MAX_INTERVAL_CS
    };
    if interval_cs == 0 {
        return Err(Invalid::Interval);
    }

    let list_end = if version == 2 { len - V2_AUTH_LEN } else { len };
    let list = &payload[HEADER_LEN..list_end];
    let addresses = if ipv6 {
        list.chunks_exact(16)
            .map(|c| {
                let mut octets = [0; 16];
                octets.copy_from_slice(c);
                IpAddr::V6(Ipv6Addr::from(octets))
            })
            .collect()
    } else {
        list.chunks_exact(4).map(|c| IpAddr::V4(Ipv4Addr::new(c[0], c[1], c[2], c[3]))).collect()
    };
    let advert = Advert { version, vrid: payload[1], priority: payload[2], interval_cs, addresses };
    Ok((advert, variant))
}

/// Checks the checksum of a complete message; for v3 IPv4, says which variant matched.
fn verify_checksum(payload: &[u8], version: u8, src: IpAddr, dst: IpAddr) -> Result<Option<Checksum>, Invalid> {
    // A correct checksum makes the ones' complement sum, checksum included, all ones.
    let message = add_words(0, payload);
    let with_pseudo = || fold(add_words(pseudo_header_sum(src, dst, payload.len()), payload)) == 0xffff;
    match (version, src.is_ipv6()) {
        (2, _) if fold(message) == 0xffff => Ok(None),
        (2, _) => Err(Invalid::Checksum),
        (_, true) if with_pseudo() => Ok(None),
        (_, true) => Err(Invalid::Checksum),
        (_, false) if with_pseudo() => Ok(Some(Checksum::PseudoHeader)),
        (_, false) if fold(message) == 0xffff => Ok(Some(Checksum::NoPseudoHeader)),
        (_, false) => Err(Invalid::Checksum),
    }
}

/// The v2 authentication data: the password, cut or zero-padded to 8 bytes.
fn auth_data(pass: Option<&[u8]>) -> [u8; V2_AUTH_LEN] {
    let mut data = [0; V2_AUTH_LEN];
    if let Some(pass) = pass {
        let n = pass.len().min(V2_AUTH_LEN);
        data[..n].copy_from_slice(&pass[..n]);
    }
    data
}

/// The sum of the pseudo-header of an upper-layer message of `len` bytes: IPv4 (RFC 768:
/// source, destination, zero, protocol, 16-bit length) or IPv6 (RFC 8200 section 8.1:
/// source, destination, 32-bit length, three zeros, next header).
fn pseudo_header_sum(src: IpAddr, dst: IpAddr, len: usize) -> u64 {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let tail = [0, PROTOCOL, (len >> 8) as u8, len as u8];
            add_words(add_words(add_words(0, &s.octets()), &d.octets()), &tail)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut tail = [0; 8];
            tail[..4].copy_from_slice(&(len as u32).to_be_bytes());
            tail[7] = PROTOCOL;
            add_words(add_words(add_words(0, &s.octets()), &d.octets()), &tail)
        }
        // Families are checked before any checksum; a mixed pair has no pseudo-header.
        _ => 0,
    }
}

/// Adds `data` as big-endian 16-bit words (an odd last byte padded with zero) to `acc`.
fn add_words(acc: u64, data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(2);
    let mut sum = acc;
    for c in &mut chunks {
        sum += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u64::from(*last) << 8;
    }
    sum
}

/// Folds the carries back in: the 16-bit ones' complement sum.
fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

#[cfg(test)]
mod tests {
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
        Expect { version: 3, vrid, ipv6, auth_pass: None }
    }

    fn expect_v2(vrid: u8, auth_pass: Option<&[u8]>) -> Expect<'_> {
        Expect { version: 2, vrid, ipv6: false, auth_pass }
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
        let e = expect_v3(51, false);
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
            let expect = Expect { version: advert.version, vrid: advert.vrid, ipv6, auth_pass: pass };
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
        // TTL: anything but 255 to the group; a unicast advert may have crossed a router.
        check(Invalid::Ttl, decode(&m3, src, dst, 254, &e3));
        assert_ne!(decode(&m3, src, v4("192.168.1.11"), 64, &e3).err(), Some(Invalid::Ttl));
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
    fn reasons_have_stable_distinct_names() {
        let names: Vec<&str> = Invalid::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names, ["ttl", "truncated", "version", "type", "length", "checksum", "vrid", "auth", "family", "interval"]);
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
        let expects = [e3, e6, e2, e2n];
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
}
