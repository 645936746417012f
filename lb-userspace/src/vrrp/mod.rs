//! VRRP (RFC 5798 v3, RFC 3768 v2): which node of a pair holds the VIPs.
//!
//! - `packet`: the advert codec and receive-side validation (pure).
//! - `machine`: the RFC state machine with keepalived's FAULT (pure).
//! - `track`: tracked interfaces and track scripts: faults and priority.
//! - `vmac`: the `use_vmac` macvlan with the virtual MAC, and arp_ignore on its interface.
//! - `status`: what `xlb stats` shows of each instance.
//! - `io`: raw protocol-112 sockets and AF_PACKET frames.
//! - `announce`: gratuitous ARP and unsolicited neighbour advertisement frames.

pub mod announce;
pub mod io;
pub mod machine;
pub mod instance;
pub mod packet;
pub mod status;
pub mod track;
pub mod vmac;

pub use instance::{Vrrp, VrrpError};
pub use status::InstanceStatus;
pub use vmac::LocalMac;
