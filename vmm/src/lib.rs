//! sbx-vmm: the KVM microVM backend.
//!
//! Until the vm backend lands, starting a VM says so plainly.

use sbx_shared::backend::{Backend, BackendError, Sandbox, Stdio};
use sbx_shared::spec::SandboxSpec;

#[derive(Debug, Default)]
pub struct VmBackend;

impl Backend for VmBackend {
    fn start(&self, _spec: &SandboxSpec, _stdio: Stdio) -> Result<Box<dyn Sandbox>, BackendError> {
        Err(BackendError::Unsupported(
            "--isolation=vm is not available yet: the vm backend has not landed".into(),
        ))
    }
}

pub mod config;
pub mod kvm;
