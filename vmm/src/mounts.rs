//! The spec's mounts for a VM: each volume becomes one more virtio-blk
//! disk (after the root disk, so the guest sees them as `/dev/vdb`… in
//! order), which the guest init mounts at its target; a tmpfs is the
//! guest init's to make. Host bind mounts would need virtio-fs
//! (virtiofsd over vhost-user), which neither engine has yet.

use sbx_shared::spec::{MountSource, SandboxSpec};
use sbx_shared::volumes::{disk_path, FSTYPE};
use sbx_vm_protocol::{disk_device, GuestMount, GuestMountSource};

use crate::config::Disk;

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("-v {host}:{target}: host bind mounts into a VM are not supported yet (virtio-fs is pending); use a named volume instead (-v NAME:{target})")]
    BindIntoVm { host: String, target: String },
}

/// The volumes' disks (to declare after the root disk) and the mounts the
/// guest init makes.
pub fn plan(spec: &SandboxSpec) -> Result<(Vec<Disk>, Vec<GuestMount>), MountError> {
    let (mut disks, mut mounts) = (Vec::new(), Vec::new());
    for m in &spec.mounts {
        let source = match &m.source {
            MountSource::Bind { path } => {
                return Err(MountError::BindIntoVm {
                    host: path.display().to_string(),
                    target: m.target.clone(),
                })
            }
            MountSource::Volume { dir, .. } => {
                disks.push(Disk {
                    path: disk_path(dir),
                    read_only: m.read_only,
                });
                GuestMountSource::Disk {
                    // The root disk is index 0.
                    device: disk_device(disks.len()),
                    fstype: FSTYPE.into(),
                }
            }
            MountSource::Tmpfs { size, mode } => GuestMountSource::Tmpfs {
                size: *size,
                mode: *mode,
            },
        };
        mounts.push(GuestMount {
            target: m.target.clone(),
            read_only: m.read_only,
            source,
        });
    }
    Ok((disks, mounts))
}
