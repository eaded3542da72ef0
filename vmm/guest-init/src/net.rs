//! The guest's network interfaces, from the spec: each virtio-net device
//! found by its MAC address, given its address and netmask, brought up.
//! By ioctl (SIOCSIFADDR, SIOCSIFNETMASK, SIOCSIFFLAGS): the initramfs has
//! no `ip`. The kernel adds the subnet's route by itself; no other route
//! is made, so nothing but the sandbox's own network is reachable.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use sbx_vm_protocol::GuestNet;

type Result<T> = std::result::Result<T, String>;

pub fn configure(nets: &[GuestNet]) -> Result<()> {
    if nets.is_empty() {
        return Ok(());
    }
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| format!("network: socket: {}", e.desc()))?;
    for (i, n) in nets.iter().enumerate() {
        let name = by_mac(&n.mac).unwrap_or_else(|| format!("eth{i}"));
        let (addr, prefix) = parse_cidr(&n.address)
            .ok_or_else(|| format!("network: invalid address {:?}", n.address))?;
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        };
        set_addr(&sock, &name, libc::SIOCSIFADDR, addr)
            .and_then(|()| set_addr(&sock, &name, libc::SIOCSIFNETMASK, Ipv4Addr::from(mask)))
            .and_then(|()| up(&sock, &name))
            .map_err(|e| format!("network: configuring {name} ({}): {}", n.address, e.desc()))?;
    }
    Ok(())
}

fn parse_cidr(s: &str) -> Option<(Ipv4Addr, u32)> {
    let (a, p) = s.split_once('/')?;
    let p: u32 = p.parse().ok().filter(|p| *p <= 32)?;
    Some((a.parse().ok()?, p))
}

/// The interface whose MAC address is `mac` (`/sys/class/net/*/address`).
fn by_mac(mac: &str) -> Option<String> {
    let mac = mac.to_ascii_lowercase();
    std::fs::read_dir("/sys/class/net")
        .ok()?
        .flatten()
        .find_map(|e| {
            let addr = std::fs::read_to_string(e.path().join("address")).ok()?;
            (addr.trim() == mac).then(|| e.file_name().to_string_lossy().into_owned())
        })
}

fn ifreq(name: &str) -> std::result::Result<libc::ifreq, Errno> {
    if name.len() >= libc::IFNAMSIZ {
        return Err(Errno::ENAMETOOLONG);
    }
    // SAFETY: ifreq is plain old data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in name.bytes().enumerate() {
        req.ifr_name[i] = b as libc::c_char;
    }
    Ok(req)
}

fn set_addr(
    sock: &OwnedFd,
    name: &str,
    request: libc::c_ulong,
    addr: Ipv4Addr,
) -> std::result::Result<(), Errno> {
    let mut req = ifreq(name)?;
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(addr).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in fits in the ifreq's sockaddr union member
    // (both 16 bytes); we write it into our own ifreq.
    unsafe {
        std::ptr::write(
            (&mut req.ifr_ifru.ifru_addr as *mut libc::sockaddr).cast::<libc::sockaddr_in>(),
            sin,
        );
    }
    // SAFETY: SIOCSIFADDR/SIOCSIFNETMASK read the ifreq we own.
    if unsafe { libc::ioctl(sock.as_raw_fd(), request, &req) } != 0 {
        return Err(Errno::last());
    }
    Ok(())
}

fn up(sock: &OwnedFd, name: &str) -> std::result::Result<(), Errno> {
    let mut req = ifreq(name)?;
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we own.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) != 0 {
            return Err(Errno::last());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) != 0 {
            return Err(Errno::last());
        }
    }
    Ok(())
}
