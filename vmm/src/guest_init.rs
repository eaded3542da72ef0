//! The guest init, built static by build.rs from vmm/guest-init and
//! embedded here, so that sbx needs nothing installed beside it.

/// The executable the initramfs holds as `/init`.
pub static BINARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/sbx-guest-init"));

/// A hash of [`BINARY`], naming the cached initramfs.
pub const HASH: &str = env!("SBX_GUEST_INIT_HASH");
