//! [`Networked`]: any backend, plus what networking needs around a start —
//! a VM's taps on their bridges, and the published-port proxy — held until
//! the workload ends; and at removal, the sandbox's addresses released.

use std::sync::Mutex;

use super::link::{self, LinkGuard};
use super::ports::{self, Bound};
use super::proxy::Proxy;
use super::store::Networks;
use super::{hosts, tap_name, veth_name, NetworkError};
use crate::backend::{
    Backend, BackendError, ExitStatus, Sandbox, SandboxIo, SandboxRef, Stats, Stdio,
};
use crate::paths::Root;
use crate::spec::{Isolation, NetworkMode, Process, SandboxSpec};

impl From<NetworkError> for BackendError {
    fn from(e: NetworkError) -> Self {
        BackendError::Setup(e.to_string())
    }
}

pub struct Networked {
    inner: Box<dyn Backend>,
    root: Root,
    /// Host sockets of the published ports, bound by the CLI before the
    /// sandbox was created (or here, on a later start); kept across
    /// restarts so the ports stay ours.
    bound: Mutex<Option<Vec<Bound>>>,
}

impl Networked {
    pub fn new(root: &Root, inner: Box<dyn Backend>) -> Networked {
        Networked {
            inner,
            root: root.clone(),
            bound: Mutex::new(None),
        }
    }

    /// With the published ports' sockets already bound.
    pub fn with_bound(mut self, bound: Vec<Bound>) -> Networked {
        if !bound.is_empty() {
            self.bound = Mutex::new(Some(bound));
        }
        self
    }

    fn proxy(&self, spec: &SandboxSpec) -> Result<Option<Proxy>, NetworkError> {
        if spec.ports.is_empty() {
            return Ok(None);
        }
        let target = spec.networks.first().map(|a| a.address).ok_or_else(|| {
            NetworkError::Invalid("publishing ports needs a bridge network".into())
        })?;
        let mut slot = self.bound.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(ports::bind_all(&spec.ports)?);
        }
        let bound = slot.as_deref().unwrap_or_default();
        Proxy::spawn(bound, target).map(Some)
    }
}

/// A VM's taps, one per network, named for the engine to open.
fn taps(spec: &SandboxSpec) -> Result<Vec<LinkGuard>, NetworkError> {
    let mut out = Vec::new();
    if spec.isolation != Isolation::Vm || spec.network != NetworkMode::Bridge {
        return Ok(out);
    }
    for att in &spec.networks {
        let name = tap_name(&spec.id, &att.network_id);
        link::tap(att, &name)?;
        out.push(LinkGuard(name));
    }
    Ok(out)
}

impl Backend for Networked {
    fn start(&self, spec: &SandboxSpec, stdio: Stdio) -> Result<Box<dyn Sandbox>, BackendError> {
        let taps = taps(spec)?;
        // Forked before the backend starts, while this process is still
        // single-threaded.
        let proxy = self.proxy(spec)?;
        let inner = self.inner.start(spec, stdio)?;
        if taps.is_empty() && proxy.is_none() {
            return Ok(inner);
        }
        Ok(Box::new(Attached {
            inner,
            held: Mutex::new(Some((taps, proxy))),
        }))
    }

    fn exec(
        &self,
        target: &SandboxRef<'_>,
        process: &Process,
        stdio: Stdio,
    ) -> Result<Box<dyn Sandbox>, BackendError> {
        self.inner.exec(target, process, stdio)
    }

    /// At removal: whatever links a killed monitor left, and the
    /// sandbox's addresses.
    fn cleanup(&self, spec: &SandboxSpec) -> Result<(), BackendError> {
        self.inner.cleanup(spec)?;
        release(&self.root, spec);
        Ok(())
    }
}

/// Give back the sandbox's addresses; delete its leftover links, and a
/// bridge nobody uses any more; tell the peers' hosts files.
pub fn release(root: &Root, spec: &SandboxSpec) {
    let nets = Networks::new(root);
    for att in &spec.networks {
        let _ = link::delete(&tap_name(&spec.id, &att.network_id));
        let _ = link::delete(&veth_name(&spec.id, &att.network_id));
        if let Ok(true) = nets.detach(&att.network, &spec.id) {
            let _ = link::delete(&att.bridge);
        }
        hosts::refresh(&nets, root, &att.network, &spec.id);
    }
}

/// The sandbox, holding its taps and proxy until its workload ends.
struct Attached {
    inner: Box<dyn Sandbox>,
    held: Mutex<Option<(Vec<LinkGuard>, Option<Proxy>)>>,
}

impl Sandbox for Attached {
    fn pid(&self) -> i32 {
        self.inner.pid()
    }
    fn take_io(&mut self) -> SandboxIo {
        self.inner.take_io()
    }
    fn wait(&self) -> Result<ExitStatus, BackendError> {
        let r = self.inner.wait();
        drop(self.held.lock().unwrap_or_else(|p| p.into_inner()).take());
        r
    }
    fn signal(&self, sig: i32) -> Result<(), BackendError> {
        self.inner.signal(sig)
    }
    fn stats(&self) -> Result<Stats, BackendError> {
        self.inner.stats()
    }
    fn resize(&self, rows: u16, cols: u16) -> Result<(), BackendError> {
        self.inner.resize(rows, cols)
    }
    fn details(&self) -> serde_json::Value {
        self.inner.details()
    }
    fn diff(&self, out: &mut dyn std::io::Write) -> Result<(), BackendError> {
        self.inner.diff(out)
    }
    fn exec(
        &self,
        process: &crate::spec::Process,
        io: crate::backend::ProcessIo,
    ) -> Result<Box<dyn Sandbox>, BackendError> {
        self.inner.exec(process, io)
    }
}
