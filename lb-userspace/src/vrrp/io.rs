//! The sockets VRRP speaks through: raw IP protocol 112 to 224.0.0.18 / ff02::12 (or to
//! unicast peers) with TTL / hop limit 255, and AF_PACKET for gratuitous ARP and unsolicited
//! neighbour advertisements.

use std::{
    io,
    mem::MaybeUninit,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use nix::sys::socket::{self as nixsock, sockopt, ControlMessageOwned, MsgFlags, SockaddrIn6};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::unix::AsyncFd;

pub use super::packet::{GROUP_V4, GROUP_V6};
use super::packet::TTL;

pub const PROTO_VRRP: i32 = 112;

/// A VRRP packet as received.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// TTL (IPv4) or hop limit (IPv6) it arrived with.
    pub ttl: u8,
    /// The VRRP message (after the IP header).
    pub payload: Vec<u8>,
}

/// A raw protocol-112 socket bound to one interface.
///
/// Not bound to an address: a raw socket bound to one only receives packets sent to it, and
/// adverts go to the group. The source address is set on every send instead (IP_PKTINFO /
/// IPV6_PKTINFO), so that it is the primary address the checksum was computed with.
pub struct VrrpSocket {
    fd: AsyncFd<Socket>,
    v6: bool,
    src: IpAddr,
    ifindex: u32,
}

impl VrrpSocket {
    /// Opens the socket on `ifname` (index `ifindex`), sending from `src` (the interface's
    /// primary address; for IPv6 its link-local address) and, when `multicast`, joining the
    /// VRRP group. Multicast loopback is off: a node never hears itself.
    pub fn open(ifname: &str, ifindex: u32, src: IpAddr, multicast: bool) -> io::Result<VrrpSocket> {
        let v6 = src.is_ipv6();
        let domain = if v6 { Domain::IPV6 } else { Domain::IPV4 };
        let socket = Socket::new(domain, Type::RAW, Some(Protocol::from(PROTO_VRRP)))?;
        socket.bind_device(Some(ifname.as_bytes()))?;
        socket.set_nonblocking(true)?;
        match src {
            IpAddr::V4(a) => {
                socket.set_ttl_v4(u32::from(TTL))?;
                socket.set_multicast_ttl_v4(u32::from(TTL))?;
                socket.set_multicast_loop_v4(false)?;
                socket.set_multicast_if_v4(&a)?;
                if multicast {
                    socket.join_multicast_v4_n(&GROUP_V4, &socket2::InterfaceIndexOrAddress::Index(ifindex))?;
                }
            }
            IpAddr::V6(_) => {
                socket.set_unicast_hops_v6(u32::from(TTL))?;
                socket.set_multicast_hops_v6(u32::from(TTL))?;
                socket.set_multicast_loop_v6(false)?;
                socket.set_multicast_if_v6(ifindex)?;
                nixsock::setsockopt(&socket, sockopt::Ipv6RecvHopLimit, &true).map_err(io::Error::from)?;
                nixsock::setsockopt(&socket, sockopt::Ipv6RecvPacketInfo, &true).map_err(io::Error::from)?;
                if multicast {
                    socket.join_multicast_v6(&GROUP_V6, ifindex)?;
                }
            }
        }
        // SAFETY: the socket moves into the AsyncFd, which keeps its descriptor open, unchanged, until dropped.
        let fd = unsafe { AsyncFd::register(socket) }.map_err(|e| e.into_parts().1)?;
        Ok(VrrpSocket { fd, v6, src, ifindex })
    }

    /// The next VRRP packet.
    pub async fn recv(&self) -> io::Result<Incoming> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| if self.v6 { recv_v6(fd.get_ref()) } else { recv_v4(fd.get_ref()) }) {
                Ok(Ok(Some(incoming))) => return Ok(incoming),
                Ok(Ok(None)) => continue,
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }

    /// Sends `payload` (a VRRP message) to `dst`; the kernel adds the IP header.
    pub async fn send(&self, dst: IpAddr, payload: &[u8]) -> io::Result<()> {
        loop {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|fd| self.send_now(fd.get_ref(), dst, payload)) {
                Ok(result) => return result.map(|_| ()),
                Err(_would_block) => continue,
            }
        }
    }
}

impl VrrpSocket {
    fn send_now(&self, socket: &Socket, dst: IpAddr, payload: &[u8]) -> io::Result<()> {
        let iov = [io::IoSlice::new(payload)];
        let fd = socket.as_raw_fd();
        let sent = match (self.src, dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                let info = libc::in_pktinfo {
                    ipi_ifindex: self.ifindex as i32,
                    ipi_spec_dst: libc::in_addr { s_addr: u32::from(src).to_be() },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                let to = nixsock::SockaddrIn::from(std::net::SocketAddrV4::new(dst, 0));
                nixsock::sendmsg(fd, &iov, &[nixsock::ControlMessage::Ipv4PacketInfo(&info)], MsgFlags::empty(), Some(&to))
            }
            (IpAddr::V6(src), IpAddr::V6(dst)) => {
                let info = libc::in6_pktinfo { ipi6_addr: libc::in6_addr { s6_addr: src.octets() }, ipi6_ifindex: self.ifindex };
                let scope = if dst.is_multicast() || dst.is_unicast_link_local() { self.ifindex } else { 0 };
                let to = SockaddrIn6::from(std::net::SocketAddrV6::new(dst, 0, 0, scope));
                nixsock::sendmsg(fd, &iov, &[nixsock::ControlMessage::Ipv6PacketInfo(&info)], MsgFlags::empty(), Some(&to))
            }
            _ => return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("cannot send to {dst} from {}", self.src))),
        };
        sent.map(|_| ()).map_err(io::Error::from)
    }
}

/// An IPv4 raw socket delivers the IP header too: TTL and addresses come from it.
fn recv_v4(socket: &Socket) -> io::Result<Option<Incoming>> {
    let mut buf = [MaybeUninit::<u8>::uninit(); 2048];
    let (n, _) = socket.recv_from(&mut buf)?;
    // SAFETY: recv_from initialised the first n bytes.
    let data: Vec<u8> = buf[..n].iter().map(|b| unsafe { b.assume_init() }).collect();
    if data.len() < 20 {
        return Ok(None);
    }
    let ihl = usize::from(data[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([data[2], data[3]])).min(data.len());
    if ihl < 20 || total < ihl {
        return Ok(None);
    }
    Ok(Some(Incoming {
        src: IpAddr::V4(Ipv4Addr::new(data[12], data[13], data[14], data[15])),
        dst: IpAddr::V4(Ipv4Addr::new(data[16], data[17], data[18], data[19])),
        ttl: data[8],
        payload: data[ihl..total].to_vec(),
    }))
}

/// An IPv6 raw socket delivers the payload only: hop limit and destination come as control
/// messages.
fn recv_v6(socket: &Socket) -> io::Result<Option<Incoming>> {
    let mut buf = [0u8; 2048];
    let mut cmsg = nix::cmsg_space!(libc::in6_pktinfo, libc::c_int);
    let mut iov = [io::IoSliceMut::new(&mut buf)];
    let msg = nixsock::recvmsg::<SockaddrIn6>(socket.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::empty())
        .map_err(io::Error::from)?;
    let n = msg.bytes;
    let src = msg.address.map(|a| IpAddr::V6(a.ip()));
    let mut ttl = None;
    let mut dst = None;
    for c in msg.cmsgs().map_err(io::Error::from)? {
        match c {
            ControlMessageOwned::Ipv6HopLimit(h) => ttl = Some(h as u8),
            ControlMessageOwned::Ipv6PacketInfo(info) => dst = Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr))),
            _ => {}
        }
    }
    let (Some(src), Some(dst), Some(ttl)) = (src, dst, ttl) else { return Ok(None) };
    Ok(Some(Incoming { src, dst, ttl, payload: buf[..n].to_vec() }))
}

/// Sends whole Ethernet frames out of one interface (gratuitous ARP, unsolicited NA).
pub struct FrameSender {
    fd: OwnedFd,
    ifindex: u32,
}

impl FrameSender {
    pub fn open(ifindex: u32) -> io::Result<FrameSender> {
        // SAFETY: plain socket(2); the descriptor is owned from here on.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh, valid descriptor.
        Ok(FrameSender { fd: unsafe { OwnedFd::from_raw_fd(fd) }, ifindex })
    }

    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: sockaddr_ll is plain data; zero is a valid start.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = self.ifindex as i32;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: frame and addr outlive the call; sizes are theirs.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}
