//! The spec's own mounts inside the container's root, before pivot_root:
//! host bind mounts, volumes (ext4 on the loop device the parent attached)
//! and tmpfs. Targets are resolved with RESOLVE_IN_ROOT and created when
//! missing, so a symlink in the image cannot point a mount at the host.
//! A read-only bind is remounted `MS_RDONLY`: a bind mount ignores the
//! flag on its first mount(2).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use nix::fcntl::OFlag;
use nix::mount::{mount, MsFlags};
use nix::sys::stat::{Mode, SFlag};

use sbx_shared::spec::{Mount, MountSource, SandboxSpec};
use sbx_shared::volumes::FSTYPE;

use crate::rootfs::{ensure_in_root, err, fd_path, open_in_root, Kind, SetupResult};

/// Mount every entry of `spec.mounts` under the root `root`; `devices`
/// maps a volume mount's target to its loop device.
pub fn mount_all(
    root: RawFd,
    spec: &SandboxSpec,
    devices: &[(String, PathBuf)],
) -> SetupResult<()> {
    for m in &spec.mounts {
        match &m.source {
            MountSource::Bind { path } => bind(root, m, path)?,
            MountSource::Volume { name, .. } => {
                let device = devices
                    .iter()
                    .find(|(t, _)| t == &m.target)
                    .map(|(_, d)| d)
                    .ok_or_else(|| format!("volume {name}: no loop device attached"))?;
                let target = ensure_in_root(root, &m.target, Kind::Dir)
                    .map_err(|e| err(format!("creating mount point {}", m.target), e))?;
                let flags = if m.read_only {
                    MsFlags::MS_RDONLY
                } else {
                    MsFlags::empty()
                };
                mount(
                    Some(device.as_path()),
                    fd_path(&target).as_str(),
                    Some(FSTYPE),
                    flags,
                    None::<&str>,
                )
                .map_err(|e| err(format!("mounting volume {name} on {}", m.target), e))?;
            }
            MountSource::Tmpfs { size, mode } => {
                let target = ensure_in_root(root, &m.target, Kind::Dir)
                    .map_err(|e| err(format!("creating mount point {}", m.target), e))?;
                let mut data = format!("mode={:o}", mode.unwrap_or(0o1777));
                if let Some(size) = size {
                    data.push_str(&format!(",size={size}"));
                }
                let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
                if m.read_only {
                    flags |= MsFlags::MS_RDONLY;
                }
                mount(
                    Some("tmpfs"),
                    fd_path(&target).as_str(),
                    Some("tmpfs"),
                    flags,
                    Some(data.as_str()),
                )
                .map_err(|e| err(format!("mounting tmpfs on {}", m.target), e))?;
            }
        }
    }
    Ok(())
}

fn bind(root: RawFd, m: &Mount, path: &std::path::Path) -> SetupResult<()> {
    let what = format!("bind mount {}:{}", path.display(), m.target);
    let src = nix::fcntl::open(path, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| err(&what, e))?;
    // SAFETY: `open` returned a fresh descriptor that nothing else owns.
    let src = unsafe { OwnedFd::from_raw_fd(src) };
    let st = nix::sys::stat::fstat(src.as_raw_fd()).map_err(|e| err(&what, e))?;
    let kind = if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR {
        Kind::Dir
    } else {
        Kind::File
    };
    let target = ensure_in_root(root, &m.target, kind)
        .map_err(|e| err(format!("creating mount point {}", m.target), e))?;
    mount(
        Some(fd_path(&src).as_str()),
        fd_path(&target).as_str(),
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| err(&what, e))?;
    if m.read_only {
        // Reopen to reach the bind mount rather than what lay beneath.
        let target = open_in_root(root, &m.target, OFlag::O_PATH)
            .map_err(|e| err(format!("opening {}", m.target), e))?;
        // A bind remount sets the mount's flags anew: keep the source's
        // nosuid, nodev and noexec.
        let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        if let Ok(vfs) = nix::sys::statvfs::fstatvfs(&target) {
            use nix::sys::statvfs::FsFlags;
            for (has, set) in [
                (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
                (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
                (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
            ] {
                if vfs.flags().contains(has) {
                    flags |= set;
                }
            }
        }
        mount(
            None::<&str>,
            fd_path(&target).as_str(),
            None::<&str>,
            flags,
            None::<&str>,
        )
        .map_err(|e| err(format!("making {} read-only", m.target), e))?;
    }
    Ok(())
}
