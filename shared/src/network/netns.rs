//! A container's network namespace, made before its clone and plumbed
//! from outside: the caller unshares into a fresh namespace, keeps a
//! descriptor on it and returns to its own. Nothing is mounted, so nothing
//! outlives the descriptor and the sandbox's processes: when both are gone
//! the kernel destroys the namespace, and the veth pair with it.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sched::CloneFlags;

use super::{link, veth_name, Attachment, NetworkError};
use crate::spec::{NetworkMode, SandboxSpec};

/// A fresh, empty network namespace held by a descriptor.
pub fn create() -> Result<OwnedFd, NetworkError> {
    let err = |what: &str| {
        let what = what.to_string();
        move |e: nix::errno::Errno| NetworkError::io(what, e.into())
    };
    let own = File::open("/proc/thread-self/ns/net")
        .map_err(|e| NetworkError::io("opening this thread's network namespace", e))?;
    nix::sched::unshare(CloneFlags::CLONE_NEWNET).map_err(err("creating a network namespace"))?;
    let new = File::open("/proc/thread-self/ns/net");
    // Back home before anything else can fail.
    nix::sched::setns(&own, CloneFlags::CLONE_NEWNET)
        .map_err(err("returning to the host's network namespace"))?;
    let new = new.map_err(|e| NetworkError::io("opening the new network namespace", e))?;
    Ok(OwnedFd::from(new))
}

/// A path other processes can open the namespace by.
pub fn path_of(fd: &OwnedFd) -> String {
    format!("/proc/{}/fd/{}", std::process::id(), fd.as_raw_fd())
}

/// For a container on bridge networks: a new namespace with `ethN` for the
/// Nth network, addressed, and `lo` up. None for the other modes.
pub fn for_container(spec: &SandboxSpec) -> Result<Option<OwnedFd>, NetworkError> {
    if spec.network != NetworkMode::Bridge {
        return Ok(None);
    }
    let ns = create()?;
    let path = path_of(&ns);
    for (i, att) in spec.networks.iter().enumerate() {
        plug(&spec.id, att, i, &path)?;
    }
    Ok(Some(ns))
}

/// One more interface (`eth{index}`) in the namespace at `netns`, for `att`.
pub fn plug(
    sandbox_id: &str,
    att: &Attachment,
    index: usize,
    netns: &str,
) -> Result<(), NetworkError> {
    let host = veth_name(sandbox_id, &att.network_id);
    link::veth_into(att, &host, &format!("eth{index}"), netns)
}
