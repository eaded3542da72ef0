//! Idle sandboxes of every kind, for the footprint and scaling benches: a
//! shell that says `ready` and then waits (exiting on SIGTERM), started
//! the way each runtime starts it, and stopped again.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::peers::{wait_for_line, OciRuntime, Podman, QemuPeer};

/// The workload: it says it runs, then waits; SIGTERM ends it (it is PID 1
/// in a container, where a signal without a handler would be ignored).
pub const IDLE_ARGS: [&str; 3] = [
    "sh",
    "-c",
    "trap 'exit 0' TERM; echo ready; sleep 600 & wait",
];
/// Memory limit (containers: so that they get a memory cgroup) and guest
/// RAM (VMs).
pub const MEMORY_MIB: u64 = 64;

/// A way to start an idle sandbox.
pub enum Kind<'a> {
    SbxContainer(&'a Path),
    SbxVm(&'a Path),
    Oci(&'a OciRuntime, &'a Path),
    Podman(&'a Podman),
    Qemu(&'a QemuPeer),
}

impl Kind<'_> {
    pub fn name(&self) -> String {
        match self {
            Kind::SbxContainer(_) => "sbx_container".into(),
            Kind::SbxVm(_) => "sbx_vm".into(),
            Kind::Oci(rt, _) => rt.name.into(),
            Kind::Podman(_) => "podman_runc".into(),
            Kind::Qemu(_) => "qemu_microvm".into(),
        }
    }

    /// Guest RAM when the sandbox is a VM.
    pub fn guest_mib(&self) -> Option<u64> {
        matches!(self, Kind::SbxVm(_) | Kind::Qemu(_)).then_some(MEMORY_MIB)
    }
}

/// A running idle sandbox.
pub struct Idle<'a> {
    /// The host process whose tree is the sandbox's (sbx run, crun run,
    /// conmon, qemu).
    pub root_pid: i32,
    child: Option<Child>,
    podman: Option<(String, &'a Podman)>,
    oci: Option<(String, PathBuf)>,
}

/// Start one idle sandbox; returns once its workload said `ready`.
pub fn start<'a>(kind: &Kind<'a>) -> Result<Idle<'a>, String> {
    let mem = format!("{MEMORY_MIB}m");
    let child = match kind {
        Kind::SbxContainer(root) | Kind::SbxVm(root) => {
            let mut c = super::sbx(root);
            c.args(["run", "--rm", "--memory", &mem]);
            if matches!(kind, Kind::SbxVm(_)) {
                c.arg("--isolation=vm");
            }
            c.arg("busybox").args(IDLE_ARGS);
            c.stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("sbx run: {e}"))?
        }
        Kind::Oci(rt, bundle) => {
            let (child, id) = rt.spawn(bundle).map_err(|e| format!("{}: {e}", rt.name))?;
            return ready(Idle {
                root_pid: child.id() as i32,
                child: Some(child),
                podman: None,
                oci: Some((id, rt.bin.clone())),
            });
        }
        Kind::Podman(p) => {
            let name = p.run_detached(&IDLE_ARGS, Some(&mem))?;
            let pid = p.pid(&name).filter(|p| *p > 0);
            let conmon = pid.and_then(super::memory::parent);
            let idle = Idle {
                root_pid: conmon.unwrap_or(0),
                child: None,
                podman: Some((name, *p)),
                oci: None,
            };
            if conmon.is_none() {
                idle.stop();
                return Err("podman: no running container after run -d".into());
            }
            return Ok(idle);
        }
        Kind::Qemu(q) => {
            let child = q.spawn_idle(MEMORY_MIB)?;
            return Ok(Idle {
                root_pid: child.id() as i32,
                child: Some(child),
                podman: None,
                oci: None,
            });
        }
    };
    ready(Idle {
        root_pid: child.id() as i32,
        child: Some(child),
        podman: None,
        oci: None,
    })
}

/// Wait for the workload's `ready` on the child's stdout.
fn ready(mut idle: Idle<'_>) -> Result<Idle<'_>, String> {
    let stdout = idle
        .child
        .as_mut()
        .and_then(|c| c.stdout.take())
        .expect("piped stdout");
    if wait_for_line(stdout, "ready") {
        Ok(idle)
    } else {
        idle.stop();
        Err("the sandbox ended before its workload said ready".into())
    }
}

impl Idle<'_> {
    /// SIGTERM (the workload exits), then SIGKILL to the whole tree if it
    /// lingers; the runtime's leftovers are removed.
    pub fn stop(mut self) {
        if let Some((name, p)) = self.podman.take() {
            p.remove(&name);
            return;
        }
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pids = super::memory::tree(self.root_pid);
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe { libc::kill(self.root_pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if let Ok(None) = child.try_wait() {
            for p in pids.iter().rev() {
                // SAFETY: kill(2) takes no pointers; these were the
                // sandbox's processes a moment ago.
                unsafe { libc::kill(*p, libc::SIGKILL) };
            }
            let _ = child.wait();
        }
        if let Some((id, bin)) = self.oci.take() {
            let _ = super::try_run(std::process::Command::new(bin).args(["delete", "-f", &id]));
        }
    }
}
