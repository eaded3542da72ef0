//! Which engine boots the VM: our own `kvm` engine where KVM has hardware
//! virtualization, else QEMU — with KVM acceleration where that works, with
//! TCG where /dev/kvm is PVM (software virtualization that cannot run a
//! standard guest kernel) or missing.

use std::path::Path;
use std::time::Duration;

use sbx_shared::spec::VmEngine;

/// QEMU's accelerator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Kvm,
    Qemu(Accel),
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Engine::Kvm => f.write_str("kvm"),
            Engine::Qemu(Accel::Kvm) => f.write_str("qemu (kvm)"),
            Engine::Qemu(Accel::Tcg) => f.write_str("qemu (tcg)"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("--vm-engine=kvm: /dev/kvm is missing (no KVM on this host); use --vm-engine=qemu")]
    NoKvm,
    #[error("--vm-engine=kvm: /dev/kvm is PVM (/sys/module/kvm_pvm), where the kvm engine boots Linux only up to its first system call; use --vm-engine=qemu")]
    KvmPvm,
}

/// A VM an engine has started.
pub trait RunningVm: Send + Sync {
    /// The host process that is the VM (the VMM).
    fn pid(&self) -> i32;
    /// Wait at most `limit` (None: for ever) for the VMM to end; its exit
    /// status in words, or None while it still runs. Console relays are
    /// drained before this returns.
    fn wait_timeout(&self, limit: Option<Duration>) -> Option<String>;
    /// End the VM at once.
    fn kill(&self);
}

/// What KVM is on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKvm {
    Missing,
    /// `kvm_pvm`: runs any KVM payload, but a standard Linux guest's kernel
    /// code is emulated instruction by instruction.
    Pvm,
    Hardware,
}

impl HostKvm {
    pub fn detect() -> HostKvm {
        if !Path::new("/dev/kvm").exists() {
            HostKvm::Missing
        } else if Path::new("/sys/module/kvm_pvm").exists() {
            HostKvm::Pvm
        } else {
            HostKvm::Hardware
        }
    }
}

/// The engine for a run, and when it was chosen for the user, the one line
/// that says why.
pub fn choose(
    requested: Option<VmEngine>,
    host: HostKvm,
) -> Result<(Engine, Option<String>), EngineError> {
    let qemu_accel = if host == HostKvm::Hardware {
        Accel::Kvm
    } else {
        Accel::Tcg
    };
    match requested {
        Some(VmEngine::Qemu) => Ok((Engine::Qemu(qemu_accel), None)),
        Some(VmEngine::Kvm) => match host {
            HostKvm::Missing => Err(EngineError::NoKvm),
            HostKvm::Pvm => Err(EngineError::KvmPvm),
            HostKvm::Hardware => Ok((Engine::Kvm, None)),
        },
        // Our own VMM where KVM is hardware (DESIGN.md); QEMU, saying why,
        // everywhere else.
        None if host == HostKvm::Hardware => Ok((Engine::Kvm, None)),
        None => {
            let why = match host {
                HostKvm::Missing => "/dev/kvm is missing",
                _ => "/dev/kvm is PVM (/sys/module/kvm_pvm), which cannot run a standard guest kernel",
            };
            let engine = Engine::Qemu(qemu_accel);
            Ok((engine, Some(format!("sbx: vm engine {engine}: {why}"))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pvm_falls_back_to_tcg_and_says_why() {
        let (e, why) = choose(None, HostKvm::Pvm).unwrap();
        assert_eq!(e, Engine::Qemu(Accel::Tcg));
        assert!(why.unwrap().contains("PVM"));
        let (e, why) = choose(None, HostKvm::Hardware).unwrap();
        assert_eq!(
            e,
            Engine::Kvm,
            "our own VMM is the default where KVM is hardware"
        );
        assert!(why.is_none());
        let (e, why) = choose(Some(VmEngine::Qemu), HostKvm::Hardware).unwrap();
        assert_eq!(e, Engine::Qemu(Accel::Kvm));
        assert!(why.is_none());
        assert!(matches!(
            choose(Some(VmEngine::Kvm), HostKvm::Missing),
            Err(EngineError::NoKvm)
        ));
    }
}
