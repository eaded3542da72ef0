//! A tap interface opened through /dev/net/tun: Ethernet frames, each
//! preceded by a virtio-net header (IFF_VNET_HDR) of the size the device
//! uses, with no offloads.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};

/// ioctls of linux/if_tun.h: _IOW('T', 202 / 208 / 216, int).
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const IFNAMSIZ: usize = 16;

/// Tap failures, each naming the interface.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("tap name {0:?}: must be 1 to 15 bytes without NUL")]
    InvalidName(String),
    #[error("open /dev/net/tun for tap {name}: {source}")]
    OpenTun { name: String, source: io::Error },
    #[error("attach tap {name} (TUNSETIFF): {source}")]
    SetIff { name: String, source: io::Error },
    #[error("set vnet header size on tap {name}: {source}")]
    SetVnetHdrSize { name: String, source: io::Error },
    #[error("disable offloads on tap {name}: {source}")]
    SetOffload { name: String, source: io::Error },
}

/// struct ifreq with the flags member of its union.
#[repr(C)]
struct IfReqFlags {
    name: [u8; IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// An open tap queue.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

impl Tap {
    /// Attaches to (or creates) tap `name` with `vnet_hdr_size`-byte headers.
    pub fn open(name: &str, vnet_hdr_size: i32) -> Result<Self, TapError> {
        if name.is_empty() || name.len() >= IFNAMSIZ || name.contains('\0') {
            return Err(TapError::InvalidName(name.to_owned()));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
            .map_err(|source| TapError::OpenTun {
                name: name.to_owned(),
                source,
            })?;
        let mut req = IfReqFlags {
            name: [0; IFNAMSIZ],
            flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        let fd = file.as_raw_fd();
        // SAFETY: TUNSETIFF reads and writes a struct ifreq; `req` is one
        // (40 bytes, repr(C)) and lives across the call.
        let r = unsafe { libc::ioctl(fd, TUNSETIFF, &mut req as *mut IfReqFlags) };
        if r < 0 {
            return Err(TapError::SetIff {
                name: name.to_owned(),
                source: io::Error::last_os_error(),
            });
        }
        // SAFETY: TUNSETVNETHDRSZ reads an int through the pointer, which
        // points at a live local.
        let r = unsafe { libc::ioctl(fd, TUNSETVNETHDRSZ, &vnet_hdr_size as *const i32) };
        if r < 0 {
            return Err(TapError::SetVnetHdrSize {
                name: name.to_owned(),
                source: io::Error::last_os_error(),
            });
        }
        // SAFETY: TUNSETOFFLOAD takes its flags by value; 0 = no offloads.
        let r = unsafe { libc::ioctl(fd, TUNSETOFFLOAD, 0 as libc::c_ulong) };
        if r < 0 {
            return Err(TapError::SetOffload {
                name: name.to_owned(),
                source: io::Error::last_os_error(),
            });
        }
        Ok(Tap {
            file,
            name: name.to_owned(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads one frame (with its vnet header).
    pub fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        io::Read::read(&mut self.file, buf)
    }

    /// Writes one frame (with its vnet header).
    pub fn write_frame(&mut self, frame: &[u8]) -> io::Result<usize> {
        io::Write::write(&mut self.file, frame)
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}
