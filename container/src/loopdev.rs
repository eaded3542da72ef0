//! Loop devices for volumes: a free one from `/dev/loop-control`, bound to
//! the volume's disk image with `LOOP_CONFIGURE` and `LO_FLAGS_AUTOCLEAR`,
//! so the kernel detaches it when its last user goes: the mount in the
//! container's mount namespace, which dies with the container however it
//! ends. The descriptor here only bridges the time until that mount.
//!
//! Reference: linux/include/uapi/linux/loop.h, drivers/block/loop.c.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

/// `LOOP_CTL_GET_FREE` (loop.h): returns the number of a free device.
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
/// `LOOP_CONFIGURE` (loop.h, Linux 5.8): bind, set flags, in one call.
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
/// `LO_FLAGS_AUTOCLEAR` (loop.h): detach on last close.
const LO_FLAGS_AUTOCLEAR: u32 = 4;
/// Attempts when another process takes the free device first.
const ATTEMPTS: usize = 32;

/// `struct loop_info64` (loop.h).
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config` (loop.h).
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// An attached loop device; it detaches itself once this is dropped and
/// nothing has it mounted.
#[derive(Debug)]
pub struct LoopDevice {
    _device: File,
    pub path: PathBuf,
}

fn err(what: impl std::fmt::Display, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

/// Attach `image` to a free loop device.
pub fn attach(image: &Path) -> Result<LoopDevice, String> {
    let backing = OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .map_err(|e| err(format_args!("opening {}", image.display()), e))?;
    let control = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")
        .map_err(|e| err("opening /dev/loop-control", e))?;
    let mut last = Errno::EBUSY;
    for _ in 0..ATTEMPTS {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a number.
        let n = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE as _) };
        if n < 0 {
            return Err(err("finding a free loop device", Errno::last().desc()));
        }
        let path = PathBuf::from(format!("/dev/loop{n}"));
        let device = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| err(format_args!("opening {}", path.display()), e))?;
        // SAFETY: all-zero is a valid loop_config (no offset, no limit,
        // default block size, no encryption).
        let mut config: LoopConfig = unsafe { std::mem::zeroed() };
        config.fd = backing.as_raw_fd() as u32;
        config.info.lo_flags = LO_FLAGS_AUTOCLEAR;
        let name = image.as_os_str().as_encoded_bytes();
        let len = name.len().min(config.info.lo_file_name.len() - 1);
        config.info.lo_file_name[..len].copy_from_slice(&name[..len]);
        // SAFETY: LOOP_CONFIGURE reads the loop_config we own, which
        // outlives the call.
        let r = unsafe { libc::ioctl(device.as_raw_fd(), LOOP_CONFIGURE as _, &config) };
        if r == 0 {
            return Ok(LoopDevice {
                _device: device,
                path,
            });
        }
        last = Errno::last();
        // EBUSY: someone bound that device between GET_FREE and here.
        if last != Errno::EBUSY {
            break;
        }
    }
    Err(err(
        format_args!("attaching {} to a loop device", image.display()),
        last.desc(),
    ))
}
