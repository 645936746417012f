//! A tun device that lives exactly as long as the descriptor the agent holds: the kernel
//! removes a non-persistent tun device when its last descriptor closes, also when the process
//! is killed, and with it every route through it.

use std::{
    fs::{File, OpenOptions},
    io,
    os::fd::AsRawFd as _,
    os::unix::fs::OpenOptionsExt as _,
};

/// The tun device `name`, held open.
#[derive(Debug)]
pub struct Tun {
    /// Held, never read: closing it removes the device.
    _device: File,
    pub name: String,
}

impl Tun {
    /// Creates the tun device `name` (1..=15 characters), which must not exist yet
    /// (`IFF_TUN_EXCL`): a device someone else made could outlive the agent.
    pub fn create(name: &str) -> io::Result<Tun> {
        let file = OpenOptions::new().read(true).write(true).custom_flags(libc::O_CLOEXEC).open("/dev/net/tun")?;
        // SAFETY: ifreq is plain old data (a name and a union of integers and addresses); all
        // zeroes is a valid value of it.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        let bytes = name.as_bytes();
        if bytes.is_empty() || bytes.len() >= ifr.ifr_name.len() || bytes.contains(&0) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("invalid interface name {name:?}")));
        }
        for (dst, &src) in ifr.ifr_name.iter_mut().zip(bytes) {
            *dst = src as libc::c_char;
        }
        ifr.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI | libc::IFF_TUN_EXCL) as libc::c_short;
        // SAFETY: TUNSETIFF reads and writes one struct ifreq through the pointer, which points
        // at `ifr`, alive and exclusively borrowed for the call; the descriptor is open.
        if unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut ifr as *mut libc::ifreq) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Tun { _device: file, name: name.to_owned() })
    }
}
