//! The seam between "what to run" and "how it is isolated".
//!
//! `run`, `exec`, build `RUN` steps, compose and the benches all go through
//! [`Backend::start`], so each works under every isolation level.

use std::fs::File;
use std::os::fd::OwnedFd;

use crate::spec::{Process, SandboxSpec};

/// How the workload's standard streams are connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stdio {
    /// The workload writes straight to the caller's own stdout and stderr
    /// (and reads its stdin when the spec asks for it): the fast path for a
    /// foreground `sbx run`.
    Inherit,
    /// The backend hands back pipes (or, with `process.terminal`, a pty
    /// master) through [`Sandbox::take_io`].
    Piped,
}

/// Host-side ends of the workload's streams. With a terminal, `tty` is the
/// pty master carrying stdin and the merged output; otherwise stdout and
/// stderr stay apart.
#[derive(Debug, Default)]
pub struct SandboxIo {
    pub stdin: Option<File>,
    pub stdout: Option<File>,
    pub stderr: Option<File>,
    pub tty: Option<File>,
}

/// The host descriptors a process started by [`Sandbox::exec`] uses. With
/// a terminal, `stdout` is the terminal (a pty slave) and carries its
/// input too; None: discarded output, no input.
#[derive(Debug, Default)]
pub struct ProcessIo {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

/// How a sandbox ended, folded the way shells and Docker fold it: the exit
/// code, or 128 + the signal number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    pub code: i32,
    /// The signal that ended the workload, when one did.
    pub signal: Option<i32>,
}

impl ExitStatus {
    pub fn exited(code: i32) -> Self {
        ExitStatus { code, signal: None }
    }

    pub fn signaled(sig: i32) -> Self {
        ExitStatus {
            code: 128 + sig,
            signal: Some(sig),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Memory charged to the sandbox, in bytes.
    pub memory_bytes: u64,
    /// CPU time used, in nanoseconds.
    pub cpu_ns: u64,
    /// Number of tasks.
    pub pids: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The workload could not be started inside the sandbox; `code` is the
    /// exit status Docker uses for the case (126 not executable, 127 not
    /// found).
    #[error("{message}")]
    Exec { message: String, code: i32 },
    /// The host refused to set the sandbox up.
    #[error("{0}")]
    Setup(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Unsupported(String),
}

impl BackendError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        BackendError::Io {
            context: context.into(),
            source,
        }
    }
}

/// An isolation level.
pub trait Backend {
    /// Create the sandbox and start its workload. Returns once the workload
    /// is running (or has failed to start, which is reported here).
    fn start(&self, spec: &SandboxSpec, stdio: Stdio) -> Result<Box<dyn Sandbox>, BackendError>;

    /// Start another process in a running sandbox (`sbx exec`), from a
    /// process other than the one that started it: `target` is what the
    /// sandbox's record and saved spec say. The result is waited on,
    /// signalled and relayed like a sandbox; its exit status is the
    /// process's. A container joins the workload's namespaces; a VM asks
    /// its guest init over the control channel.
    fn exec(
        &self,
        target: &SandboxRef<'_>,
        process: &Process,
        stdio: Stdio,
    ) -> Result<Box<dyn Sandbox>, BackendError> {
        let _ = (target, process, stdio);
        Err(BackendError::Unsupported(
            "this isolation level cannot run a process in a running sandbox yet".into(),
        ))
    }

    /// Release what a sandbox that no longer runs may have left on the host
    /// (its monitor was killed before it could clean up): cgroups, devices.
    /// Idempotent; nothing to do by default.
    fn cleanup(&self, spec: &SandboxSpec) -> Result<(), BackendError> {
        let _ = spec;
        Ok(())
    }
}

/// A running sandbox as another process finds it again.
#[derive(Debug, Clone, Copy)]
pub struct SandboxRef<'a> {
    /// The spec it was started from (its saved `spec.json`).
    pub spec: &'a SandboxSpec,
    /// The host pid of its workload (container) or VMM (vm).
    pub pid: i32,
    /// That pid's start time, so a recycled pid is refused.
    pub pid_start: Option<u64>,
}

/// A running sandbox. `signal`, `stats` and `resize` take `&self` so one
/// thread can forward signals while another waits.
pub trait Sandbox: Send + Sync {
    /// The host pid that represents the sandbox (workload or VMM).
    fn pid(&self) -> i32;
    /// The host-side stream ends (only with [`Stdio::Piped`]); taken once.
    fn take_io(&mut self) -> SandboxIo;
    /// Wait for the workload to end, then release everything the sandbox
    /// held (mounts, cgroups, devices, state files of an `--rm` run).
    fn wait(&self) -> Result<ExitStatus, BackendError>;
    /// Deliver a signal to the workload.
    fn signal(&self, sig: i32) -> Result<(), BackendError>;
    fn stats(&self) -> Result<Stats, BackendError>;
    /// Tell the workload's terminal its new size.
    fn resize(&self, rows: u16, cols: u16) -> Result<(), BackendError>;
    /// Backend-specific facts for `sbx inspect` (a VM's engine and boot
    /// phases); nothing by default.
    fn details(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
    /// After [`Sandbox::wait`]: write what the workload changed in its root
    /// filesystem as an OCI layer tar (deletions as `.wh.` whiteouts). This
    /// is how a build's `RUN` step becomes a layer under any backend.
    fn diff(&self, out: &mut dyn std::io::Write) -> Result<(), BackendError> {
        let _ = out;
        Err(BackendError::Unsupported(
            "this backend cannot export a sandbox's filesystem changes yet".into(),
        ))
    }
    /// Start another process in this running sandbox from the process that
    /// holds it (a VM's monitor, serving `sbx exec` on its control socket),
    /// its streams on `io`. The result is waited on and signalled like a
    /// sandbox; its exit status is the process's.
    fn exec(&self, process: &Process, io: ProcessIo) -> Result<Box<dyn Sandbox>, BackendError> {
        let _ = (process, io);
        Err(BackendError::Unsupported(
            "this sandbox cannot start another process from its holder".into(),
        ))
    }
}
