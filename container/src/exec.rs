//! `sbx exec` for containers: another process in a running sandbox.
//!
//! The parent opens the workload's namespaces and root through
//! /proc/PID first (so a workload that ends meanwhile cannot swap them),
//! joins its pid namespace (which applies to children only) and clones; the
//! child joins the cgroups and the other namespaces, enters the root, and
//! from there does what the workload's own child did: user, rlimits,
//! capabilities, no_new_privs, seccomp, exec.

use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Mutex;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::sys::stat::Mode;
use nix::unistd::Pid;

use sbx_shared::backend::{BackendError, Sandbox, SandboxRef, Stdio};
use sbx_shared::paths::Root;
use sbx_shared::spec::Process;

use crate::cgroups::Cgroup;
use crate::child::{self, ExecChildArgs};
use crate::{child_stdio, pipe, seccomp, setup_err, started, ContainerSandbox};

/// The namespaces joined in the child, in order: the cgroup namespace
/// after the cgroups, the mount namespace last.
const NAMESPACES: &[(&str, CloneFlags)] = &[
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("mnt", CloneFlags::CLONE_NEWNS),
];

fn open(path: &str, flags: OFlag) -> Result<OwnedFd, BackendError> {
    let fd = nix::fcntl::open(path, flags | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| BackendError::Setup(format!("opening {path}: {}", e.desc())))?;
    // SAFETY: `open` returned a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub(crate) fn exec(
    root: &Root,
    target: &SandboxRef<'_>,
    process: &Process,
    stdio: Stdio,
) -> Result<Box<dyn Sandbox>, BackendError> {
    if nix::unistd::geteuid().as_raw() != 0 {
        return Err(BackendError::Setup(
            "the container backend needs root (run sbx as root)".into(),
        ));
    }
    let pid = target.pid;
    let not_running = || {
        BackendError::Setup(format!(
            "sandbox {} is not running",
            sbx_shared::ids::short(&target.spec.id)
        ))
    };
    if target
        .pid_start
        .is_some_and(|s| sbx_shared::state::proc_start_time(pid) != Some(s))
    {
        return Err(not_running());
    }
    let namespaces: Vec<(OwnedFd, CloneFlags)> = NAMESPACES
        .iter()
        .map(|(name, flag)| {
            Ok((
                open(&format!("/proc/{pid}/ns/{name}"), OFlag::O_RDONLY)?,
                *flag,
            ))
        })
        .collect::<Result<_, BackendError>>()
        .map_err(|_| not_running())?;
    let pid_ns =
        open(&format!("/proc/{pid}/ns/pid"), OFlag::O_RDONLY).map_err(|_| not_running())?;
    let sandbox_root = open(
        &format!("/proc/{pid}/root"),
        OFlag::O_PATH | OFlag::O_DIRECTORY,
    )
    .map_err(|_| not_running())?;
    // The descriptors name the workload's: check it is still the same
    // process now that they are held.
    if target
        .pid_start
        .is_some_and(|s| sbx_shared::state::proc_start_time(pid) != Some(s))
    {
        return Err(not_running());
    }
    let seccomp = seccomp::filter(&root.cache())
        .map_err(|e| BackendError::Setup(format!("seccomp profile: {e}")))?;
    let procs = Cgroup::existing(&target.spec.id).procs_files();

    let (err_read, err_write) = pipe()?;
    let (child_stdio, mut io, pty_socket) = child_stdio(process.terminal, process.stdin, stdio)?;
    // Children of this process are created in the sandbox's pid namespace
    // until we switch back below (threads cannot be created meanwhile);
    // this process itself stays where it is.
    let own_pid_ns = open("/proc/self/ns/pid", OFlag::O_RDONLY)?;
    nix::sched::setns(&pid_ns, CloneFlags::CLONE_NEWPID)
        .map_err(setup_err("joining the sandbox's pid namespace"))?;
    // SAFETY: a fork-like clone (no new stack, no CLONE_VM) of this
    // single-threaded process; the child only runs `child::run_exec`, which
    // execs or exits.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            libc::SIGCHLD as libc::c_ulong,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_int>(),
            std::ptr::null_mut::<libc::c_int>(),
            0 as libc::c_ulong,
        )
    };
    let clone_err = Errno::last();
    if ret != 0 {
        nix::sched::setns(&own_pid_ns, CloneFlags::CLONE_NEWPID)
            .map_err(setup_err("returning to sbx's own pid namespace"))?;
    }
    if ret < 0 {
        return Err(setup_err("starting the process (clone)")(clone_err));
    }
    if ret == 0 {
        drop(err_read);
        drop(io);
        child::run_exec(ExecChildArgs {
            process,
            namespaces: &namespaces,
            root: &sandbox_root,
            cgroup_procs: &procs,
            seccomp: &seccomp,
            error_pipe: err_write,
            stdio: child_stdio,
        });
    }
    let child = Pid::from_raw(ret as i32);
    drop(err_write);
    drop(child_stdio);
    started(child, err_read, pty_socket, &mut io)?;
    Ok(Box::new(ContainerSandbox {
        pid: child,
        upper: target.spec.dir.join("upper"),
        cgroup: Cgroup::none(),
        tty: io.tty.as_ref().and_then(|t| t.try_clone().ok()),
        io: Mutex::new(io),
        reaped: Mutex::new(None),
    }))
}
