//! Frames a new master sends so that neighbours point the virtual addresses at it:
//! gratuitous ARP (an ARP announcement, RFC 5227) for IPv4 and an unsolicited neighbour
//! advertisement with the override flag (RFC 4861 section 7.2.6) for IPv6.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use pnet_packet::{ip::IpNextHeaderProtocol, util::ipv6_checksum};

/// The virtual MAC of VRID `vrid` (RFC 5798 section 7.3): 00-00-5E-00-01-{vrid} for IPv4,
/// 00-00-5E-00-02-{vrid} for IPv6.
pub fn virtual_mac(vrid: u8, ipv6: bool) -> [u8; 6] {
    [0x00, 0x00, 0x5e, 0x00, if ipv6 { 0x02 } else { 0x01 }, vrid]
}

/// The frame announcing that `addr` is at `mac`; `link_local` is the IPv6 source address of
/// the interface (neighbour advertisements come from it).
pub fn announcement(addr: IpAddr, mac: [u8; 6], link_local: Option<Ipv6Addr>) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => gratuitous_arp(a, mac),
        IpAddr::V6(a) => unsolicited_na(a, mac, link_local.unwrap_or(a)),
    }
}

/// A broadcast ARP request whose sender and target are both `addr`.
pub fn gratuitous_arp(addr: Ipv4Addr, mac: [u8; 6]) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&0x0806u16.to_be_bytes());
    // Ethernet, IPv4, 6-byte MACs, 4-byte addresses, request.
    f.extend_from_slice(&[0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&addr.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&addr.octets());
    f
}

/// A neighbour advertisement for `target` at `mac`, to all nodes, with the override flag.
pub fn unsolicited_na(target: Ipv6Addr, mac: [u8; 6], src: Ipv6Addr) -> Vec<u8> {
    let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    let mut icmp = Vec::with_capacity(32);
    icmp.extend_from_slice(&[136, 0, 0, 0]); // type, code, checksum
    icmp.extend_from_slice(&[0x20, 0, 0, 0]); // R=0 S=0 O=1
    icmp.extend_from_slice(&target.octets());
    icmp.extend_from_slice(&[2, 1]); // target link-layer address option, 8 bytes
    icmp.extend_from_slice(&mac);
    let sum = ipv6_checksum(&icmp, 1, &[], &src, &all_nodes, IpNextHeaderProtocol(58));
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut f = Vec::with_capacity(14 + 40 + icmp.len());
    f.extend_from_slice(&[0x33, 0x33, 0, 0, 0, 1]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&0x86ddu16.to_be_bytes());
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    f.push(58);
    f.push(255);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&all_nodes.octets());
    f.extend_from_slice(&icmp);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

    #[test]
    fn gratuitous_arp_announces_the_address() {
        let f = gratuitous_arp(Ipv4Addr::new(203, 0, 113, 100), MAC);
        assert_eq!(f.len(), 42);
        assert_eq!(&f[..6], &[0xff; 6], "broadcast");
        assert_eq!(&f[6..12], &MAC);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[20..22], &[0, 1], "request");
        assert_eq!(&f[22..28], &MAC, "sender MAC");
        assert_eq!(&f[28..32], &[203, 0, 113, 100], "sender address");
        assert_eq!(&f[38..42], &[203, 0, 113, 100], "target address is the sender's");
    }

    #[test]
    fn unsolicited_na_overrides_and_checksums() {
        let target: Ipv6Addr = "2001:db8:0:1::100".parse().unwrap();
        let src: Ipv6Addr = "fe80::2".parse().unwrap();
        let f = unsolicited_na(target, MAC, src);
        assert_eq!(&f[..6], &[0x33, 0x33, 0, 0, 0, 1]);
        assert_eq!(f[14 + 7], 255, "hop limit");
        let icmp = &f[54..];
        assert_eq!(icmp[0], 136);
        assert_eq!(icmp[4] & 0xe0, 0x20, "override only");
        assert_eq!(&icmp[8..24], &target.octets());
        assert_eq!(&icmp[24..32], &[2, 1, 0x02, 0, 0, 0, 0, 0x02]);
        // The checksum over the pseudo-header and message sums to zero.
        let all_nodes: Ipv6Addr = "ff02::1".parse().unwrap();
        let check = ipv6_checksum(icmp, 1, &[], &src, &all_nodes, IpNextHeaderProtocol(58));
        assert_eq!(check, u16::from_be_bytes([icmp[2], icmp[3]]));
    }

    #[test]
    fn virtual_macs_follow_rfc_5798() {
        assert_eq!(virtual_mac(51, false), [0, 0, 0x5e, 0, 1, 51]);
        assert_eq!(virtual_mac(51, true), [0, 0, 0x5e, 0, 2, 51]);
    }
}
