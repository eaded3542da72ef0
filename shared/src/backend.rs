//! The seam between "what to run" and "how it is isolated".
//!
//! `run`, `exec`, build `RUN` steps, compose and the benches all go through
//! [`Backend::start`], so each works under every isolation level.

use std::fs::File;

use crate::spec::SandboxSpec;

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
    /// After [`Sandbox::wait`]: write what the workload changed in its root
    /// filesystem as an OCI layer tar (deletions as `.wh.` whiteouts). This
    /// is how a build's `RUN` step becomes a layer under any backend.
    fn diff(&self, out: &mut dyn std::io::Write) -> Result<(), BackendError> {
        let _ = out;
        Err(BackendError::Unsupported(
            "this backend cannot export a sandbox's filesystem changes yet".into(),
        ))
    }
}
