//! The spec's mounts in the new root, before the switch into it: volumes
//! (virtio-blk disks holding ext4) and tmpfs. Each target is resolved
//! with openat2(RESOLVE_IN_ROOT) and created when missing, so a symlink in
//! the image cannot put a mount outside the root; the mount goes on
//! through /proc/self/fd. On the way out, the volumes are unmounted so
//! their filesystems are clean for whoever mounts them next.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::Mode;
use sbx_vm_protocol::{GuestMount, GuestMountSource, GuestSpec};

type Result<T> = std::result::Result<T, String>;

/// openat2 with RESOLVE_IN_ROOT: `path` looked up as if `root` were `/`.
fn open_in_root(root: RawFd, path: &str, flags: OFlag) -> std::result::Result<OwnedFd, Errno> {
    let rel = path.trim_start_matches('/');
    let c = CString::new(if rel.is_empty() { "." } else { rel }).map_err(|_| Errno::EINVAL)?;
    // SAFETY: open_how is plain old data; all-zero is its documented default.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | OFlag::O_CLOEXEC).bits() as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: openat2 reads `how` (size passed) and the NUL-terminated
    // path; both outlive the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root,
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the kernel just returned this descriptor; we own it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// The directory `path` inside `root`, made (with its parents) if missing.
fn ensure_dir(root: RawFd, path: &str) -> std::result::Result<OwnedFd, Errno> {
    let mut dir = open_in_root(root, "/", OFlag::O_PATH | OFlag::O_DIRECTORY)?;
    for part in path.split('/').filter(|p| !p.is_empty()) {
        if part == ".." {
            return Err(Errno::EINVAL);
        }
        dir = match open_in_root(dir.as_raw_fd(), part, OFlag::O_PATH | OFlag::O_DIRECTORY) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => {
                let parent = open_in_root(dir.as_raw_fd(), ".", OFlag::O_DIRECTORY)?;
                match nix::sys::stat::mkdirat(
                    Some(parent.as_raw_fd()),
                    part,
                    Mode::from_bits_truncate(0o755),
                ) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(e),
                }
                open_in_root(dir.as_raw_fd(), part, OFlag::O_PATH | OFlag::O_DIRECTORY)?
            }
            Err(e) => return Err(e),
        };
    }
    Ok(dir)
}

/// Make every mount of `spec` under `new_root`.
pub fn mount_all(spec: &GuestSpec, new_root: &str) -> Result<()> {
    if spec.mounts.is_empty() {
        return Ok(());
    }
    let root = nix::fcntl::open(
        new_root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("open {new_root}: {}", e.desc()))?;
    // SAFETY: `open` returned a fresh descriptor that nothing else owns.
    let root = unsafe { OwnedFd::from_raw_fd(root) };
    for m in &spec.mounts {
        mount_one(root.as_raw_fd(), m)?;
    }
    Ok(())
}

fn mount_one(root: RawFd, m: &GuestMount) -> Result<()> {
    let target = ensure_dir(root, &m.target)
        .map_err(|e| format!("creating mount point {}: {}", m.target, e.desc()))?;
    let at = format!("/proc/self/fd/{}", target.as_raw_fd());
    let ro = if m.read_only {
        MsFlags::MS_RDONLY
    } else {
        MsFlags::empty()
    };
    match &m.source {
        GuestMountSource::Disk { device, fstype } => mount(
            Some(device.as_str()),
            at.as_str(),
            Some(fstype.as_str()),
            ro,
            None::<&str>,
        )
        .map_err(|e| format!("mounting {device} on {}: {}", m.target, e.desc())),
        GuestMountSource::Tmpfs { size, mode } => {
            let mut data = format!("mode={:o}", mode.unwrap_or(0o1777));
            if let Some(size) = size {
                data.push_str(&format!(",size={size}"));
            }
            let flags = ro | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
            mount(
                Some("tmpfs"),
                at.as_str(),
                Some("tmpfs"),
                flags,
                Some(data.as_str()),
            )
            .map_err(|e| format!("mounting tmpfs on {}: {}", m.target, e.desc()))
        }
    }
}

/// After the workload: unmount the volumes, children first, so their
/// filesystems are clean (a busy one is at least synced by the caller).
pub fn unmount_volumes(spec: &GuestSpec) {
    for m in spec.mounts.iter().rev() {
        if matches!(m.source, GuestMountSource::Disk { .. })
            && umount2(m.target.as_str(), MntFlags::empty()).is_err()
        {
            let _ = mount(
                None::<&str>,
                m.target.as_str(),
                None::<&str>,
                MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None::<&str>,
            );
        }
    }
}
