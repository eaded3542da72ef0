//! sbx-container: the namespace backend.
//!
//! One clone(2) with new mount, pid, uts, ipc and net namespaces (cgroup
//! after joining the sandbox's cgroups); the child builds the rootfs, drops
//! privileges and execs the workload as PID 1. No re-exec of sbx, no
//! handshake beyond an error pipe that a successful exec closes.

pub mod caps;
mod cgroups;
mod child;
mod exec;
mod loopdev;
mod mounts;
pub mod rootfs;
pub mod seccomp;

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

use sbx_shared::backend::{
    Backend, BackendError, ExitStatus, Sandbox, SandboxIo, SandboxRef, Stats, Stdio,
};
use sbx_shared::paths::Root;
use sbx_shared::spec::{MountSource, NetworkMode, Process, SandboxSpec};
use sbx_shared::volumes::Lease;

use crate::cgroups::Cgroup;
use crate::child::{ChildArgs, ChildStdio};
use crate::rootfs::SandboxDirs;

pub struct ContainerBackend {
    root: Root,
}

impl ContainerBackend {
    pub fn new(root: &Root) -> Self {
        ContainerBackend { root: root.clone() }
    }
}

fn setup_err(context: &str) -> impl FnOnce(Errno) -> BackendError + '_ {
    move |e| BackendError::Setup(format!("{context}: {}", e.desc()))
}

impl Backend for ContainerBackend {
    fn start(&self, spec: &SandboxSpec, stdio: Stdio) -> Result<Box<dyn Sandbox>, BackendError> {
        if nix::unistd::geteuid().as_raw() != 0 {
            return Err(BackendError::Setup(
                "the container backend needs root (run sbx as root)".into(),
            ));
        }
        let mut dirs = SandboxDirs::new(&spec.dir);
        // Volumes: locked for this sandbox, then each on a loop device that
        // the child mounts; ours is closed once it has (see loopdev).
        let lease = Lease::acquire(spec).map_err(|e| BackendError::Setup(e.to_string()))?;
        let loops = attach_volumes(spec, &mut dirs)?;
        // A sandbox started again (`sbx start`, a restart policy): its
        // overlay was mounted `volatile`, and overlayfs refuses a work dir
        // that says so; the work dir holds nothing else worth keeping.
        if dirs.work.exists() {
            std::fs::remove_dir_all(&dirs.work)
                .map_err(|e| BackendError::io(format!("resetting {}", dirs.work.display()), e))?;
        }
        rootfs::write_etc_files(spec, &dirs)
            .map_err(|e| BackendError::io("writing the sandbox's /etc files", e))?;
        let seccomp = seccomp::filter(&self.root.cache())
            .map_err(|e| BackendError::Setup(format!("seccomp profile: {e}")))?;
        let cgroup = Cgroup::create(&spec.id, &spec.limits)
            .map_err(|e| BackendError::Setup(format!("cgroups: {e}")))?;

        // Bridge networks: a network namespace made and plumbed (veths,
        // addresses) before the clone, which the child joins.
        let netns = match sbx_shared::network::netns::for_container(spec) {
            Ok(ns) => ns,
            Err(e) => {
                cgroup.remove();
                return Err(e.into());
            }
        };
        let spawned = spawn(spec, &dirs, &cgroup, &seccomp, stdio, netns.as_ref());
        drop(netns);
        drop(loops);
        let sandbox: Result<Box<dyn Sandbox>, BackendError> = match spawned {
            Ok((pid, io)) => Ok(Box::new(ContainerSandbox {
                pid,
                upper: dirs.upper.clone(),
                cgroup,
                tty: io.tty.as_ref().and_then(|t| t.try_clone().ok()),
                io: Mutex::new(io),
                reaped: Mutex::new(None),
            })),
            Err(e) => {
                cgroup.remove();
                Err(e)
            }
        };
        // The volumes' locks go once the workload is reaped: its mount
        // namespace, and the volumes' mounts with it, are gone by then.
        sandbox.map(|s| sbx_shared::volumes::hold(s, lease))
    }

    fn exec(
        &self,
        target: &SandboxRef<'_>,
        process: &Process,
        stdio: Stdio,
    ) -> Result<Box<dyn Sandbox>, BackendError> {
        exec::exec(&self.root, target, process, stdio)
    }

    /// The mounts lived in the workload's mount namespace and went with
    /// it; only cgroups can outlive a killed monitor.
    fn cleanup(&self, spec: &SandboxSpec) -> Result<(), BackendError> {
        Cgroup::existing(&spec.id).remove();
        Ok(())
    }
}

/// A loop device for each volume mount, recorded in `dirs` by target.
fn attach_volumes(
    spec: &SandboxSpec,
    dirs: &mut SandboxDirs,
) -> Result<Vec<loopdev::LoopDevice>, BackendError> {
    let mut loops = Vec::new();
    for m in &spec.mounts {
        if let MountSource::Volume { name, dir, .. } = &m.source {
            let disk = sbx_shared::volumes::disk_path(dir);
            let device = loopdev::attach(&disk)
                .map_err(|e| BackendError::Setup(format!("volume {name}: {e}")))?;
            dirs.volume_devices
                .push((m.target.clone(), device.path.clone()));
            loops.push(device);
        }
    }
    Ok(loops)
}

fn pipe() -> Result<(OwnedFd, OwnedFd), BackendError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(setup_err("creating a pipe"))
}

fn spawn(
    spec: &SandboxSpec,
    dirs: &SandboxDirs,
    cgroup: &Cgroup,
    seccomp: &seccomp::BpfProgram,
    stdio: Stdio,
    netns: Option<&OwnedFd>,
) -> Result<(Pid, SandboxIo), BackendError> {
    let (err_read, err_write) = pipe()?;
    let (child_stdio, mut io, pty_socket) =
        child_stdio(spec.process.terminal, spec.process.stdin, stdio)?;

    let mut flags =
        libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC;
    if spec.network == NetworkMode::None || spec.network == NetworkMode::Bridge && netns.is_none() {
        flags |= libc::CLONE_NEWNET;
    }
    let procs = cgroup.procs_files();
    // SAFETY: a fork-like clone (no new stack, no CLONE_VM): the child gets a
    // copy of this single-threaded process and only runs `child::run`, which
    // execs or exits.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_int>(),
            std::ptr::null_mut::<libc::c_int>(),
            0 as libc::c_ulong,
        )
    };
    if ret < 0 {
        return Err(setup_err("creating the sandbox's namespaces (clone)")(
            Errno::last(),
        ));
    }
    if ret == 0 {
        drop(err_read);
        drop(io);
        child::run(ChildArgs {
            spec,
            dirs,
            cgroup_procs: &procs,
            seccomp,
            error_pipe: err_write,
            stdio: child_stdio,
            netns: netns.map(|fd| fd.as_raw_fd()),
        });
    }
    let pid = Pid::from_raw(ret as i32);
    drop(err_write);
    drop(child_stdio);
    started(pid, err_read, pty_socket, &mut io)?;
    Ok((pid, io))
}

/// The child's ends of its standard streams, the host's ends, and the
/// socket its pty master comes back on.
fn child_stdio(
    terminal: bool,
    stdin: bool,
    stdio: Stdio,
) -> Result<(ChildStdio, SandboxIo, Option<UnixStream>), BackendError> {
    let mut io = SandboxIo::default();
    // The pty is opened by the child inside the sandbox's own devpts (so
    // that ttyname() and /dev/pts/0 work there) and its master comes back
    // over this socket.
    if terminal {
        let (ours, theirs) =
            UnixStream::pair().map_err(|e| BackendError::io("creating the terminal socket", e))?;
        return Ok((ChildStdio::Tty(OwnedFd::from(theirs)), io, Some(ours)));
    }
    if stdio == Stdio::Inherit {
        return Ok((ChildStdio::Inherit, io, None));
    }
    let stdin = if stdin {
        let (r, w) = pipe()?;
        io.stdin = Some(File::from(w));
        Some(r)
    } else {
        None
    };
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    io.stdout = Some(File::from(out_r));
    io.stderr = Some(File::from(err_r));
    let child = ChildStdio::Pipes {
        stdin,
        stdout: out_w,
        stderr: err_w,
    };
    Ok((child, io, None))
}

/// After the clone: take the pty master, then learn from the error pipe
/// whether the exec succeeded (EOF with nothing read) or why not.
fn started(
    pid: Pid,
    err_read: OwnedFd,
    pty_socket: Option<UnixStream>,
    io: &mut SandboxIo,
) -> Result<(), BackendError> {
    if let Some(sock) = pty_socket {
        // Nothing received means the child failed first: its reason is
        // on the error pipe.
        if let Some(master) = receive_fd(&sock) {
            io.tty = Some(File::from(master));
        }
    }
    let mut report = Vec::new();
    let _ = File::from(err_read).read_to_end(&mut report);
    if let Some((&code, message)) = report.split_first() {
        let _ = waitpid(pid, None);
        let message = String::from_utf8_lossy(message).into_owned();
        return Err(if code == 126 || code == 127 {
            BackendError::Exec {
                message,
                code: code as i32,
            }
        } else {
            BackendError::Setup(message)
        });
    }
    Ok(())
}

/// One descriptor passed with SCM_RIGHTS; None on EOF or error.
fn receive_fd(sock: &UnixStream) -> Option<OwnedFd> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::FromRawFd;
    let mut byte = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = loop {
        match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(Errno::EINTR) => continue,
            r => break r.ok()?,
        }
    };
    for cmsg in msg.cmsgs().ok()? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            // SAFETY: the kernel just installed these descriptors in our
            // table; we take ownership of the first.
            return fds.first().map(|fd| unsafe { OwnedFd::from_raw_fd(*fd) });
        }
    }
    None
}

/// Stats of a sandbox in no cgroup: the sum over the processes of its pid
/// namespace (resident memory, CPU time, count).
fn pidns_stats(init: Pid) -> Stats {
    let mut stats = Stats::default();
    let Ok(ns) = std::fs::read_link(format!("/proc/{init}/ns/pid")) else {
        return stats;
    };
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    // SAFETY: as above.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return stats;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        if std::fs::read_link(format!("/proc/{pid}/ns/pid"))
            .ok()
            .as_ref()
            != Some(&ns)
        {
            continue;
        }
        stats.pids += 1;
        if let Ok(statm) = std::fs::read_to_string(format!("/proc/{pid}/statm")) {
            let rss: u64 = statm
                .split(' ')
                .nth(1)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            stats.memory_bytes += rss * page;
        }
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            if let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) {
                let f: Vec<&str> = rest.split(' ').collect();
                let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
                    + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
                stats.cpu_ns += ticks * 1_000_000_000 / tick;
            }
        }
    }
    stats
}

pub struct ContainerSandbox {
    pid: Pid,
    /// The overlay upper dir: what the workload changed.
    upper: std::path::PathBuf,
    cgroup: Cgroup,
    /// A second handle on the pty master, for window-size changes after the
    /// caller has taken the first.
    tty: Option<File>,
    io: Mutex<SandboxIo>,
    /// Set once the workload has been reaped, so a late signal cannot hit a
    /// recycled pid.
    reaped: Mutex<Option<ExitStatus>>,
}

impl Sandbox for ContainerSandbox {
    fn pid(&self) -> i32 {
        self.pid.as_raw()
    }

    fn take_io(&mut self) -> SandboxIo {
        std::mem::take(&mut *self.io.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn wait(&self) -> Result<ExitStatus, BackendError> {
        let status = loop {
            match waitpid(self.pid, None) {
                Ok(WaitStatus::Exited(_, code)) => break ExitStatus::exited(code),
                Ok(WaitStatus::Signaled(_, sig, _)) => break ExitStatus::signaled(sig as i32),
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(e) => return Err(setup_err("waiting for the workload")(e)),
            }
        };
        *self.reaped.lock().unwrap_or_else(|p| p.into_inner()) = Some(status);
        // PID 1 is gone, so the kernel is killing the rest of the pid
        // namespace; the mount namespace (and with it every mount) goes with
        // its last task. Only the cgroups need removing.
        self.cgroup.remove();
        Ok(status)
    }

    fn signal(&self, sig: i32) -> Result<(), BackendError> {
        let reaped = self.reaped.lock().unwrap_or_else(|p| p.into_inner());
        if reaped.is_some() {
            return Ok(());
        }
        let sig = Signal::try_from(sig)
            .map_err(|_| BackendError::Setup(format!("invalid signal {sig}")))?;
        match nix::sys::signal::kill(self.pid, sig) {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(e) => Err(setup_err("signalling the workload")(e)),
        }
    }

    fn stats(&self) -> Result<Stats, BackendError> {
        if !self.cgroup.is_empty() {
            return Ok(self.cgroup.stats());
        }
        Ok(pidns_stats(self.pid))
    }

    fn diff(&self, out: &mut dyn std::io::Write) -> Result<(), BackendError> {
        if self
            .reaped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none()
        {
            return Err(BackendError::Setup(
                "the sandbox's changes can be taken only after it has exited".into(),
            ));
        }
        sbx_shared::build::layer::write_upper(&self.upper, out, &mount_point)
            .map(|_| ())
            .map_err(|e| BackendError::io(format!("exporting {}", self.upper.display()), e))
    }

    fn resize(&self, rows: u16, cols: u16) -> Result<(), BackendError> {
        let Some(tty) = &self.tty else { return Ok(()) };
        let size = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads the winsize we pass on a pty we hold.
        if unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCSWINSZ, &size) } != 0 {
            return Err(setup_err("resizing the terminal")(Errno::last()));
        }
        Ok(())
    }
}

/// What the backend itself leaves in the upper dir when the image lacks
/// it: empty mount points for /proc, /sys, /dev and the generated /etc
/// files. They are not the workload's changes.
fn mount_point(path: &str, st: &std::fs::Metadata) -> bool {
    match path {
        "proc" | "sys" | "dev" => st.is_dir(),
        "etc/hosts" | "etc/hostname" | "etc/resolv.conf" => st.is_file() && st.len() == 0,
        _ => false,
    }
}
