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
/// Where multicast adverts go (RFC 5798 section 5.1.1.2 and 5.1.2.2).
pub const GROUP_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
pub const GROUP_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);
/// The TTL / hop limit every advert is sent with, and the only one a link-local advert can
/// arrive with (a router on the way would have decremented it).
pub const TTL: u8 = 255;

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
    /// Who may send adverts, and how.
    pub peers: Peers<'a>,
}

/// Where an instance's adverts come from, which decides what a received one must look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peers<'a> {
    /// Anyone on the link: adverts go to the group, with TTL / hop limit 255.
    Multicast,
    /// `unicast_peers`: only these sources, with a TTL / hop limit of at least `min_ttl`
    /// (255 unless configured lower for peers across a router).
    Unicast { peers: &'a [IpAddr], min_ttl: u8 },
}

/// Why an advert was dropped; each reason is a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Invalid {
    /// TTL (IPv4) or hop limit (IPv6) not 255 (unicast: below `min_ttl`): the advert may come
    /// from off the link.
    #[error("TTL or hop limit too low (not sent on this link)")]
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
    /// A multicast instance's advert not sent to the VRRP group (unicast to this node or to
    /// a virtual address): peers of a multicast instance send to the group only.
    #[error("not sent to the VRRP multicast group")]
    Destination,
    /// A unicast instance's advert from an address that is not one of its `unicast_peers`
    /// (keepalived's `check_unicast_src`).
    #[error("source is not one of unicast_peers")]
    UnknownSource,
}

impl Invalid {
    /// Every reason, in declaration order (for counters and status output).
    pub const ALL: [Invalid; 12] = [
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
        Invalid::Destination,
        Invalid::UnknownSource,
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
            Invalid::Destination => "destination",
            Invalid::UnknownSource => "unknown_source",
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

/// Whether `dst` is the VRRP group of its family.
fn is_group(dst: IpAddr) -> bool {
    match dst {
        IpAddr::V4(a) => a == GROUP_V4,
        IpAddr::V6(a) => a == GROUP_V6,
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
/// 2. TTL / hop limit: 255 for a multicast instance, whatever the destination (an advert
///    sent unicast to this node or to a virtual address is no exception); for a unicast
///    instance at least its `min_ttl` (255 unless configured lower for peers across a
///    router);
/// 3. the sender: a multicast instance takes only adverts sent to the group; a unicast
///    instance only adverts from one of its `unicast_peers` (keepalived's
///    `check_unicast_src`);
/// 4. version, then type;
/// 5. length: the fixed header, at least one address, and exactly the addresses (and v2
///    authentication data) the count announces;
/// 6. checksum: v2 over the message; v3 IPv6 with the pseudo-header; v3 IPv4 either way
///    (see the module documentation);
/// 7. VRID;
/// 8. v2 authentication: type 0 when no password is configured (the data is then ignored,
///    RFC 3768), else type 1 and the password, zero-padded to 8 bytes;
/// 9. interval not 0 (a backup would otherwise wait only its skew time for the master).
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
    match expect.peers {
        Peers::Multicast if ttl != TTL => return Err(Invalid::Ttl),
        Peers::Multicast if !is_group(dst) => return Err(Invalid::Destination),
        Peers::Unicast { min_ttl, .. } if ttl < min_ttl => return Err(Invalid::Ttl),
        Peers::Unicast { peers, .. } if !peers.contains(&src) => return Err(Invalid::UnknownSource),
        _ => {}
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
mod tests;
