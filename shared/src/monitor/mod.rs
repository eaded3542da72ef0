//! Detached sandboxes without a daemon: a small monitor process per sandbox.
//!
//! [`detach`] double-forks (the monitor is re-parented to init and leads
//! its own session), and the monitor — single-threaded whenever it calls
//! [`Backend::start`], since a container backend clones there — holds the
//! [`Sandbox`](crate::backend::Sandbox): it writes the workload's output to
//! `<dir>/log.json`, its pid, exit code and times to the record, applies the
//! restart policy, and answers requests on `<dir>/ctl` (signal, stop, wait)
//! through the `Sandbox` trait, so a VM backend gets all of it for free.
//! The workload dies with its monitor (parent-death signal, or the VMM being
//! the monitor), and a dead monitor shows as exited: see [`lifecycle::view`].

pub mod lifecycle;
pub mod protocol;
mod server;
pub mod signals;

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};

use serde::{Deserialize, Serialize};

use crate::backend::{Backend, BackendError};
use crate::spec::SandboxSpec;
use crate::state::{Record, State, StateError};

pub use lifecycle::{Lifecycle, RestartPolicy};

#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// The workload could not be started; the backend's own error.
    #[error(transparent)]
    Start(#[from] BackendError),
    #[error("the sandbox's monitor exited before the workload started (see {0})")]
    Died(String),
    #[error("the sandbox has no monitor (it is not running)")]
    NoMonitor,
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl MonitorError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        MonitorError::Io {
            context: context.into(),
            source,
        }
    }
}

/// What the monitor tells [`detach`] once the first start is over.
#[derive(Debug, Serialize, Deserialize)]
struct Report {
    pid: Option<i32>,
    error: Option<String>,
    code: Option<i32>,
}

impl Report {
    fn into_result(self) -> Result<i32, BackendError> {
        match (self.pid, self.error) {
            (Some(pid), None) => Ok(pid),
            (_, error) => {
                let message = error.unwrap_or_else(|| "the workload did not start".into());
                Err(match self.code {
                    Some(code @ (126 | 127)) => BackendError::Exec { message, code },
                    _ => BackendError::Setup(message),
                })
            }
        }
    }
}

fn send_report(report: OwnedFd, r: &Report) {
    let mut f = std::fs::File::from(report);
    if let Ok(data) = serde_json::to_vec(r) {
        let _ = f.write_all(&data);
    }
}

/// Start the sandbox under a new monitor process and return the workload's
/// host pid once it runs. The record (already created) and `life` are
/// saved by the monitor; a start failure comes back here, with the record
/// left as exited.
///
/// Call from a single-threaded process: the monitor is forked from it and
/// then starts the backend.
pub fn detach(
    backend: &dyn Backend,
    spec: &SandboxSpec,
    state: &State,
    record: Record,
    life: Lifecycle,
) -> Result<i32, MonitorError> {
    let (report_r, report_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| MonitorError::io("creating the monitor's report pipe", e.into()))?;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: the caller is single-threaded (documented above); the child
    // only calls setsid, fork and _exit, and the grandchild runs the monitor
    // and ends with _exit.
    match unsafe { nix::unistd::fork() } {
        Err(e) => Err(MonitorError::io("forking the monitor", e.into())),
        Ok(nix::unistd::ForkResult::Child) => {
            drop(report_r);
            let _ = nix::unistd::setsid();
            // SAFETY: as above; this process is single-threaded.
            match unsafe { nix::unistd::fork() } {
                Ok(nix::unistd::ForkResult::Child) => {
                    let code = become_monitor(backend, spec, state, record, life, report_w);
                    // SAFETY: _exit skips the destructors and atexit
                    // handlers, which belong to the CLI's copy.
                    unsafe { libc::_exit(code) }
                }
                // SAFETY: as above.
                _ => unsafe { libc::_exit(0) },
            }
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            drop(report_w);
            let _ = nix::sys::wait::waitpid(child, None);
            let mut data = Vec::new();
            let _ = std::fs::File::from(report_r).read_to_end(&mut data);
            match serde_json::from_slice::<Report>(&data) {
                Ok(r) => Ok(r.into_result()?),
                Err(_) => Err(MonitorError::Died(
                    spec.dir.join("monitor.log").display().to_string(),
                )),
            }
        }
    }
}

/// In the grandchild: leave the caller's terminal and pipes (a caller that
/// waits for their end must not wait for the sandbox), then serve.
fn become_monitor(
    backend: &dyn Backend,
    spec: &SandboxSpec,
    state: &State,
    record: Record,
    life: Lifecycle,
    report: OwnedFd,
) -> i32 {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null");
    let errlog = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(spec.dir.join("monitor.log"));
    if let Ok(null) = &null {
        let _ = nix::unistd::dup2(null.as_raw_fd(), 0);
        let _ = nix::unistd::dup2(null.as_raw_fd(), 1);
        let err = errlog
            .as_ref()
            .map(|f| f.as_raw_fd())
            .unwrap_or(null.as_raw_fd());
        let _ = nix::unistd::dup2(err, 2);
    }
    // The originals close as `null` and `errlog` drop.
    drop((null, errlog));
    let _ = std::env::set_current_dir("/");
    server::serve(backend, spec, state, record, life, report)
}
