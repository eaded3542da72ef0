//! One sandbox at a time per volume: an exclusive `flock` on the volume's
//! `lock` file, held by the process that holds the sandbox (the foreground
//! `sbx run`, or a detached sandbox's monitor) for as long as it runs. The
//! kernel drops the lock when that process dies, however it dies.

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::sync::Mutex;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::{VolumeError, LOCK, OWNER, RECORD};
use crate::backend::{BackendError, ExitStatus, Sandbox, SandboxIo, Stats};
use crate::spec::{MountSource, SandboxSpec};

/// Take the lock of the volume in `dir` without waiting.
pub(super) fn try_lock(dir: &Path, name: &str) -> Result<Flock<File>, VolumeError> {
    if !dir.join(RECORD).exists() {
        return Err(VolumeError::NotFound(name.to_string()));
    }
    let path = dir.join(LOCK);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| VolumeError::io(format!("opening {}", path.display()), e))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(lock),
        Err((_, Errno::EWOULDBLOCK)) => {
            let by = std::fs::read_to_string(dir.join(OWNER)).unwrap_or_default();
            let by = crate::ids::short(by.trim()).to_string();
            Err(VolumeError::Busy {
                name: name.to_string(),
                by: if by.is_empty() { "?".into() } else { by },
            })
        }
        Err((_, e)) => Err(VolumeError::io(
            format!("locking {}", path.display()),
            e.into(),
        )),
    }
}

/// The locks of every volume a sandbox mounts; dropping it releases them.
#[derive(Debug, Default)]
pub struct Lease {
    locks: Vec<Flock<File>>,
}

impl Lease {
    /// Lock every volume of `spec`, or none: the first one in use by
    /// another sandbox is the error.
    pub fn acquire(spec: &SandboxSpec) -> Result<Lease, VolumeError> {
        let mut lease = Lease::default();
        for m in &spec.mounts {
            if let MountSource::Volume { name, dir, .. } = &m.source {
                lease.locks.push(try_lock(dir, name)?);
                let _ = std::fs::write(dir.join(OWNER), &spec.id);
            }
        }
        Ok(lease)
    }

    pub fn is_empty(&self) -> bool {
        self.locks.is_empty()
    }
}

/// `sandbox`, holding `lease` until its workload has been waited for (or
/// it is dropped). With no volumes, `sandbox` itself.
pub fn hold(sandbox: Box<dyn Sandbox>, lease: Lease) -> Box<dyn Sandbox> {
    if lease.is_empty() {
        return sandbox;
    }
    Box::new(Leased {
        inner: sandbox,
        lease: Mutex::new(Some(lease)),
    })
}

/// A sandbox and its volumes' locks. Every [`Sandbox`] method is passed
/// through to the sandbox itself.
struct Leased {
    inner: Box<dyn Sandbox>,
    lease: Mutex<Option<Lease>>,
}

impl Sandbox for Leased {
    fn pid(&self) -> i32 {
        self.inner.pid()
    }

    fn take_io(&mut self) -> SandboxIo {
        self.inner.take_io()
    }

    fn wait(&self) -> Result<ExitStatus, BackendError> {
        let status = self.inner.wait();
        drop(self.lease.lock().unwrap_or_else(|p| p.into_inner()).take());
        status
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
