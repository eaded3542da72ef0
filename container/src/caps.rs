//! Docker's default capability set.

use caps::{CapSet, Capability, CapsHashSet};

/// The 14 capabilities Docker grants a container by default.
pub const DEFAULT: [Capability; 14] = [
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FSETID,
    Capability::CAP_FOWNER,
    Capability::CAP_MKNOD,
    Capability::CAP_NET_RAW,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
    Capability::CAP_SETFCAP,
    Capability::CAP_SETPCAP,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_SYS_CHROOT,
    Capability::CAP_KILL,
    Capability::CAP_AUDIT_WRITE,
];

/// Bitmask of [`DEFAULT`] as /proc/PID/status prints CapEff.
pub fn default_mask() -> u64 {
    DEFAULT.iter().fold(0, |m, c| m | c.bitmask())
}

/// Shrink the bounding set to the default set. Needs CAP_SETPCAP, so it runs
/// before the user switch.
pub fn drop_bounding() -> Result<(), String> {
    for cap in caps::all() {
        if !DEFAULT.contains(&cap) {
            match caps::drop(None, CapSet::Bounding, cap) {
                Ok(()) => {}
                // A capability newer than this kernel knows is not held.
                Err(_) if !caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) => {}
                Err(e) => return Err(format!("dropping {cap} from the bounding set: {e}")),
            }
        }
    }
    Ok(())
}

/// Effective and permitted = the default set, inheritable and ambient empty
/// (Docker ≥ 20.10). After a switch to a non-root user the kernel has
/// already cleared them, as Docker leaves them.
pub fn set_process_caps() -> Result<(), String> {
    let set: CapsHashSet = DEFAULT.into_iter().collect();
    caps::clear(None, CapSet::Ambient)
        .map_err(|e| format!("clearing ambient capabilities: {e}"))?;
    caps::clear(None, CapSet::Inheritable)
        .map_err(|e| format!("clearing inheritable capabilities: {e}"))?;
    caps::set(None, CapSet::Effective, &set)
        .map_err(|e| format!("setting effective capabilities: {e}"))?;
    caps::set(None, CapSet::Permitted, &set)
        .map_err(|e| format!("setting permitted capabilities: {e}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn docker_default_mask() {
        // `docker run busybox grep CapEff /proc/self/status`
        assert_eq!(super::default_mask(), 0x00000000a80425fb);
    }
}
