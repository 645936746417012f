//! The edge to the kernel's network configuration over rtnetlink: interfaces and their
//! addresses, neighbour (ARP/ND) entries and their changes, and the VIPs the node holds.

use std::net::IpAddr;

use futures::{channel::mpsc::UnboundedReceiver, StreamExt, TryStreamExt};
use netlink_packet_route::{
    address::{AddressAttribute, AddressFlags, AddressMessage},
    link::{LinkAttribute, LinkFlags, LinkMessage, LinkXdp},
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState},
    RouteNetlinkMessage,
};
use rtnetlink::{new_connection, new_multicast_connection, Handle, MulticastGroup};

use crate::config::InterfaceInfo;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("opening a netlink socket: {0}")]
    Socket(#[from] std::io::Error),
    #[error("interface {0} vanished right after it was created")]
    Missing(String),
    #[error("{what}: {source}")]
    Netlink { what: String, #[source] source: rtnetlink::Error },
    #[error("listing neighbours: {0}")]
    Injected(std::io::Error),
}

type Result<T> = std::result::Result<T, NetError>;

fn nl(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetError {
    let what = what.into();
    move |source| NetError::Netlink { what, source }
}

/// A netlink connection driven by a task on the current tokio runtime.
#[derive(Clone)]
pub struct Net {
    handle: Handle,
}

/// One neighbour table entry as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Neighbour {
    pub ifindex: u32,
    pub address: IpAddr,
    /// The link-layer address, when the entry holds a usable one.
    pub mac: Option<[u8; 6]>,
    pub state: NeighbourState,
    /// The kernel removed the entry.
    pub deleted: bool,
}

impl Neighbour {
    /// The kernel holds the entry as confirmed (REACHABLE) or fixed (PERMANENT, NOARP):
    /// nothing to ask it.
    pub fn confirmed(&self) -> bool {
        !self.deleted && matches!(self.state, NeighbourState::Reachable | NeighbourState::Permanent | NeighbourState::Noarp)
    }
}

impl Net {
    pub fn new() -> Result<Net> {
        let (conn, handle, _) = new_connection()?;
        tokio::spawn(conn);
        Ok(Net { handle })
    }

    /// Every interface with its index, MAC and addresses.
    pub async fn interfaces(&self) -> Result<Vec<InterfaceInfo>> {
        let mut links = self.handle.link().get().execute();
        let mut out = Vec::new();
        while let Some(msg) = links.try_next().await.map_err(nl("listing interfaces"))? {
            let mut info = InterfaceInfo { name: String::new(), ifindex: msg.header.index, mac: [0; 6], mtu: 0, addrs: Vec::new() };
            for attr in &msg.attributes {
                match attr {
                    LinkAttribute::IfName(name) => info.name = name.clone(),
                    LinkAttribute::Mtu(mtu) => info.mtu = *mtu,
                    LinkAttribute::Address(bytes) if bytes.len() == 6 => info.mac.copy_from_slice(bytes),
                    _ => {}
                }
            }
            out.push(info);
        }
        let mut addrs = self.handle.address().get().execute();
        while let Some(msg) = addrs.try_next().await.map_err(nl("listing addresses"))? {
            if let (Some(iface), Some(addr)) = (out.iter_mut().find(|i| i.ifindex == msg.header.index), address_of(&msg)) {
                iface.addrs.push((addr, msg.header.prefix_len));
            }
        }
        Ok(out)
    }

    /// Current neighbour entries (both families).
    pub async fn neighbours(&self) -> Result<Vec<Neighbour>> {
        if crate::faults::injected("netlink") {
            return Err(NetError::Injected(crate::faults::error("netlink")));
        }
        let mut entries = self.handle.neighbours().get().execute();
        let mut out = Vec::new();
        while let Some(msg) = entries.try_next().await.map_err(nl("listing neighbours"))? {
            if let Some(n) = neighbour_of(&msg, false) {
                out.push(n);
            }
        }
        Ok(out)
    }

    /// Asks the kernel to resolve (or re-confirm) `address` on `ifindex` as if traffic used it
    /// (`NTF_USE`): it creates the entry if needed and sends ARP or neighbour solicitations.
    /// The answer arrives as a neighbour event.
    pub async fn resolve(&self, ifindex: u32, address: IpAddr) -> Result<()> {
        self.handle
            .neighbours()
            .add(ifindex, address)
            .flags(NeighbourFlags::Use)
            .replace()
            .execute()
            .await
            .map_err(nl(format!("resolving neighbour {address} on interface {ifindex}")))
    }

    /// Adds `address` (host prefix) to `ifindex`. Returns false if it was already there.
    pub async fn add_address(&self, ifindex: u32, address: IpAddr) -> Result<bool> {
        let plen = if address.is_ipv4() { 32 } else { 128 };
        let mut req = self.handle.address().add(ifindex, address, plen);
        if address.is_ipv6() {
            req.message_mut().attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
            // Deprecated at once (preferred lifetime 0, valid for ever): it still takes traffic,
            // but the kernel never picks it as the source of this node's own connections
            // (RFC 6724 rule 3), so health checks to backends on the VIP's subnet do not leave
            // from the VIP, which every backend holds on `lo` and would answer to itself.
            let mut lifetimes = netlink_packet_route::address::CacheInfo::default();
            lifetimes.ifa_preferred = 0;
            lifetimes.ifa_valid = u32::MAX;
            req.message_mut().attributes.push(AddressAttribute::CacheInfo(lifetimes));
        }
        match req.execute().await {
            Ok(()) => Ok(true),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => Ok(false),
            Err(e) => Err(nl(format!("adding {address}/{plen} to interface {ifindex}"))(e)),
        }
    }

    /// State of the interface `ifindex`, or None when it does not exist.
    pub async fn link(&self, ifindex: u32) -> Result<Option<LinkState>> {
        let mut found = self.handle.link().get().match_index(ifindex).execute();
        match found.try_next().await {
            Ok(Some(msg)) => Ok(Some(link_state(&msg))),
            Ok(None) => Ok(None),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
            Err(e) => Err(nl(format!("reading interface {ifindex}"))(e)),
        }
    }

    /// Creates (or finds) the macvlan `name` on `base` with MAC `mac`, up; returns its index.
    /// Private mode, as keepalived's use_vmac: the node's other interfaces do not see it.
    pub async fn macvlan(&self, name: &str, base: u32, mac: [u8; 6]) -> Result<u32> {
        if let Some(index) = self.index_of(name).await? {
            return Ok(index);
        }
        let msg = rtnetlink::LinkMacVlan::new(name, base, netlink_packet_route::link::MacVlanMode::Private)
            .address(mac.to_vec())
            .up()
            .build();
        self.handle.link().add(msg).execute().await.map_err(nl(format!("creating macvlan {name} on interface {base}")))?;
        self.index_of(name).await?.ok_or_else(|| NetError::Missing(name.to_owned()))
    }

    /// Removes the interface `ifindex` (a macvlan this agent made).
    pub async fn del_link(&self, ifindex: u32) -> Result<()> {
        self.handle.link().del(ifindex).execute().await.map_err(nl(format!("removing interface {ifindex}")))
    }

    /// Index of the interface `name`, if it exists.
    pub async fn index_of(&self, name: &str) -> Result<Option<u32>> {
        let mut found = self.handle.link().get().match_name(name.to_owned()).execute();
        match found.try_next().await {
            Ok(m) => Ok(m.map(|m| m.header.index)),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
            Err(e) => Err(nl(format!("looking up interface {name}"))(e)),
        }
    }

    /// Sets the interface `ifindex` up.
    pub async fn set_up(&self, ifindex: u32) -> Result<()> {
        let msg = rtnetlink::LinkUnspec::new_with_index(ifindex).up().build();
        self.handle.link().set(msg).execute().await.map_err(nl(format!("setting interface {ifindex} up")))
    }

    /// Adds the host route to `address` (/32, /128) through interface `ifindex` to routing
    /// table `table` (protocol static, as an administrator's route). Returns false if it was
    /// there already.
    pub async fn add_host_route(&self, table: u32, ifindex: u32, address: IpAddr) -> Result<bool> {
        match self.handle.route().add(host_route(table, ifindex, address)).execute().await {
            Ok(()) => Ok(true),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => Ok(false),
            Err(e) => Err(nl(format!("adding the route to {address} through interface {ifindex} in table {table}"))(e)),
        }
    }

    /// Removes what [`Net::add_host_route`] added (no error if it is not there).
    pub async fn del_host_route(&self, table: u32, ifindex: u32, address: IpAddr) -> Result<()> {
        match self.handle.route().del(host_route(table, ifindex, address)).execute().await {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ESRCH => Ok(()),
            Err(e) => Err(nl(format!("removing the route to {address} through interface {ifindex} from table {table}"))(e)),
        }
    }

    /// The kernel's path to `address`, as `ip route get ADDRESS` answers it: `None` when no
    /// route leads there (or only a blackhole, prohibit or local one).
    pub async fn route_to(&self, address: IpAddr) -> Result<Option<Path>> {
        use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMetric, RouteType, RouteVia};
        let query = rtnetlink::RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(address, if address.is_ipv4() { 32 } else { 128 })
            .expect("a host prefix of the address's own family")
            .build();
        let mut answers = self.handle.route().get(query).execute();
        let what = || format!("looking up the route to {address}");
        let msg = match answers.try_next().await {
            Ok(Some(msg)) => msg,
            Ok(None) => return Ok(None),
            // ENETUNREACH, EHOSTUNREACH, EINVAL: no route.
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() != -libc::ENOBUFS && e.raw_code() != -libc::EINTR => {
                return Ok(None)
            }
            Err(e) => return Err(nl(what())(e)),
        };
        if msg.header.kind != RouteType::Unicast {
            return Ok(None);
        }
        let mut path = Path { ifindex: 0, next_hop: address, mtu: None };
        for attr in &msg.attributes {
            match attr {
                RouteAttribute::Oif(i) => path.ifindex = *i,
                RouteAttribute::Gateway(RouteAddress::Inet(a)) => path.next_hop = IpAddr::V4(*a),
                RouteAttribute::Gateway(RouteAddress::Inet6(a)) => path.next_hop = IpAddr::V6(*a),
                RouteAttribute::Via(RouteVia::Inet6(a)) => path.next_hop = IpAddr::V6(*a),
                RouteAttribute::Via(RouteVia::Inet(a)) => path.next_hop = IpAddr::V4(*a),
                RouteAttribute::Metrics(metrics) => {
                    for m in metrics {
                        if let RouteMetric::Mtu(mtu) = m {
                            path.mtu = Some(*mtu);
                        }
                    }
                }
                _ => {}
            }
        }
        Ok((path.ifindex != 0).then_some(path))
    }

    /// Removes `address` from `ifindex` (no error if it is not there).
    pub async fn del_address(&self, ifindex: u32, address: IpAddr) -> Result<()> {
        let mut found = self.handle.address().get().set_link_index_filter(ifindex).set_address_filter(address).execute();
        while let Some(msg) = found.try_next().await.map_err(nl(format!("looking up {address}")))? {
            self.handle.address().del(msg).execute().await.map_err(nl(format!("removing {address} from interface {ifindex}")))?;
        }
        Ok(())
    }
}

/// The route `address`/32 (/128) through `ifindex` in `table`, as `ip route add ADDRESS dev
/// IFACE table TABLE proto static` makes it (scope link: no gateway).
fn host_route(table: u32, ifindex: u32, address: IpAddr) -> netlink_packet_route::route::RouteMessage {
    use netlink_packet_route::route::{RouteProtocol, RouteScope};
    let builder = rtnetlink::RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(address, if address.is_ipv4() { 32 } else { 128 })
        .expect("a host prefix of the address's own family");
    let scope = if address.is_ipv4() { RouteScope::Link } else { RouteScope::Universe };
    builder.output_interface(ifindex).table_id(table).protocol(RouteProtocol::Static).scope(scope).build()
}

/// Where the kernel sends packets for an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Path {
    pub ifindex: u32,
    /// The gateway, or the address itself when it is on the link.
    pub next_hop: IpAddr,
    /// The route's own MTU, when it sets one (`ip route ... mtu N`).
    pub mtu: Option<u32>,
}

/// A MAC as `ip link` writes it: `02:00:5e:10:00:02`.
pub fn format_mac(m: &[u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// What VRRP tracks of an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkState {
    /// Administratively up with carrier (IFF_UP and IFF_LOWER_UP).
    pub running: bool,
    /// Id of the XDP program attached, if any.
    pub xdp_prog: Option<u32>,
    /// Its MAC address.
    pub mac: Option<[u8; 6]>,
}

fn link_state(msg: &LinkMessage) -> LinkState {
    let flags = msg.header.flags;
    let running = flags.contains(LinkFlags::Up) && flags.contains(LinkFlags::LowerUp);
    let xdp_prog = msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::Xdp(xdp) => xdp.iter().find_map(|x| match x {
            LinkXdp::ProgId(id) if *id != 0 => Some(*id),
            _ => None,
        }),
        _ => None,
    });
    let mac = msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(bytes) if bytes.len() == 6 => {
            let mut m = [0u8; 6];
            m.copy_from_slice(bytes);
            Some(m)
        }
        _ => None,
    });
    LinkState { running, xdp_prog, mac }
}

fn address_of(msg: &AddressMessage) -> Option<IpAddr> {
    // IFA_LOCAL is the interface's own address on point-to-point links; IFA_ADDRESS otherwise.
    let local = msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    local.or_else(|| {
        msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        })
    })
}

fn neighbour_of(msg: &NeighbourMessage, deleted: bool) -> Option<Neighbour> {
    let mut address = None;
    let mut mac = None;
    for attr in &msg.attributes {
        match attr {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => address = Some(IpAddr::V4(*a)),
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => address = Some(IpAddr::V6(*a)),
            NeighbourAttribute::LinkLayerAddress(bytes) if bytes.len() == 6 => {
                let mut m = [0u8; 6];
                m.copy_from_slice(bytes);
                mac = Some(m);
            }
            _ => {}
        }
    }
    let state = msg.header.state;
    let valid = matches!(
        state,
        NeighbourState::Reachable | NeighbourState::Stale | NeighbourState::Delay | NeighbourState::Probe | NeighbourState::Permanent | NeighbourState::Noarp
    );
    Some(Neighbour {
        ifindex: msg.header.ifindex,
        address: address?,
        mac: if valid && !deleted { mac.filter(|m| *m != [0; 6]) } else { None },
        state,
        deleted,
    })
}

/// Neighbour table changes as they happen (RTNLGRP_NEIGH).
/// What the neighbour subscription says.
#[derive(Clone, Debug)]
pub enum NeighbourEvent {
    Changed(Neighbour),
    /// The socket's buffer overflowed and changes were lost: read the whole table again.
    Overrun,
}

pub struct NeighbourEvents {
    messages: UnboundedReceiver<(netlink_packet_core::NetlinkMessage<RouteNetlinkMessage>, netlink_sys::SocketAddr)>,
}

impl NeighbourEvents {
    pub fn subscribe() -> Result<NeighbourEvents> {
        let (conn, _handle, messages) = new_multicast_connection(&[MulticastGroup::Neigh])?;
        tokio::spawn(conn);
        Ok(NeighbourEvents { messages })
    }

    /// The next change, or None when the socket closed.
    pub async fn next(&mut self) -> Option<NeighbourEvent> {
        loop {
            let (msg, _) = self.messages.next().await?;
            let change = match msg.payload {
                netlink_packet_core::NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbour(m)) => neighbour_of(&m, false),
                netlink_packet_core::NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelNeighbour(m)) => neighbour_of(&m, true),
                netlink_packet_core::NetlinkPayload::Overrun(_) => return Some(NeighbourEvent::Overrun),
                _ => None,
            };
            if let Some(n) = change {
                return Some(NeighbourEvent::Changed(n));
            }
        }
    }
}

/// Interface changes as they happen (RTNLGRP_LINK): only that something changed; the reader
/// asks [`Net::link`] for the state it cares about.
pub struct LinkEvents {
    messages: UnboundedReceiver<(netlink_packet_core::NetlinkMessage<RouteNetlinkMessage>, netlink_sys::SocketAddr)>,
}

impl LinkEvents {
    pub fn subscribe() -> Result<LinkEvents> {
        let (conn, _handle, messages) = new_multicast_connection(&[MulticastGroup::Link])?;
        tokio::spawn(conn);
        Ok(LinkEvents { messages })
    }

    /// Waits for the next change of some interface; None when the socket closed.
    pub async fn next(&mut self) -> Option<()> {
        self.messages.next().await.map(|_| ())
    }
}
