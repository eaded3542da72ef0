//! What the workload side of both backends shares: the container's cloned
//! child and the VM's guest init do the same last steps before exec.
//!
//! No dependencies beyond libc and nix: the guest init links this
//! statically.

pub mod net;
pub mod program;
pub mod user;
