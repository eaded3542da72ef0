//! What the cloned child does between clone and execve. It runs as PID 1 of
//! the new pid namespace; the parent is single-threaded when it clones, so
//! ordinary Rust (allocation included) is safe here. Any failure is written
//! to the error pipe and ends the child; a successful execve closes the pipe
//! (O_CLOEXEC) with nothing written, which is how the parent learns the
//! workload started.

use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::sys::signal::{SigHandler, Signal};
use nix::unistd::{Gid, Uid};

use sbx_shared::spec::{NetworkMode, Process, SandboxSpec};

use crate::rootfs::{self, SandboxDirs};
use crate::seccomp::BpfProgram;
use sbx_workload::user;

/// Exit status of the child when setup failed before exec; the parent reads
/// the reason from the error pipe, so this value is never shown.
const SETUP_FAILED: i32 = 125;

pub struct ChildArgs<'a> {
    pub spec: &'a SandboxSpec,
    pub dirs: &'a SandboxDirs,
    pub cgroup_procs: &'a [PathBuf],
    pub seccomp: &'a BpfProgram,
    pub error_pipe: OwnedFd,
    pub stdio: ChildStdio,
    /// A network namespace to join (bridge networks), made by the parent.
    pub netns: Option<RawFd>,
}

/// Descriptors the child makes its 0, 1 and 2.
pub enum ChildStdio {
    /// Keep the caller's stdout and stderr; stdin too when `-i`, else /dev/null.
    Inherit,
    /// A pty opened in the sandbox's devpts, its slave for all three as the
    /// controlling terminal; the master goes to the parent over this socket.
    Tty(OwnedFd),
    Pipes {
        stdin: Option<OwnedFd>,
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
}

/// Failure before exec: the message and the exit status the CLI should
/// report (126 not executable, 127 not found, 125 anything else).
struct Failure(i32, String);

impl From<String> for Failure {
    fn from(s: String) -> Self {
        Failure(SETUP_FAILED, s)
    }
}

fn sys(what: &str) -> impl FnOnce(Errno) -> Failure + '_ {
    move |e| Failure(SETUP_FAILED, format!("{what}: {}", e.desc()))
}

/// Never returns: execs the workload or exits.
pub fn run(args: ChildArgs) -> ! {
    let pipe = args.error_pipe.as_raw_fd();
    report_and_exit(pipe, setup_and_exec(&args))
}

/// What the child of `sbx exec` needs, opened by its parent: the
/// workload's namespaces (all but pid, which the parent joined before
/// cloning) and its root directory.
pub struct ExecChildArgs<'a> {
    pub process: &'a Process,
    pub namespaces: &'a [(OwnedFd, CloneFlags)],
    pub root: &'a OwnedFd,
    pub cgroup_procs: &'a [PathBuf],
    pub seccomp: &'a BpfProgram,
    pub error_pipe: OwnedFd,
    pub stdio: ChildStdio,
}

/// Never returns: joins the running sandbox and execs the process, or exits.
pub fn run_exec(args: ExecChildArgs) -> ! {
    let pipe = args.error_pipe.as_raw_fd();
    report_and_exit(pipe, join_and_exec(&args))
}

fn report_and_exit(pipe: RawFd, result: Result<Never, Failure>) -> ! {
    let Failure(code, message) = match result {
        Ok(never) => match never {},
        Err(f) => f,
    };
    let mut report = Vec::with_capacity(message.len() + 1);
    report.push(code as u8);
    report.extend_from_slice(message.as_bytes());
    // SAFETY: `pipe` is the open write end of the error pipe.
    let mut f = std::mem::ManuallyDrop::new(unsafe {
        <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(pipe)
    });
    let _ = f.write_all(&report);
    // SAFETY: _exit skips atexit handlers and destructors, which belong to
    // the parent's copy of this address space.
    unsafe { libc::_exit(code) }
}

fn join_and_exec(args: &ExecChildArgs) -> Result<Never, Failure> {
    set_pdeathsig()?;
    for procs in args.cgroup_procs {
        std::fs::write(procs, "0")
            .map_err(|e| format!("joining cgroup {}: {e}", procs.display()))?;
    }
    // The cgroup namespace after the cgroups; the mount namespace last,
    // then the workload's root (pivoted to, so not the namespace's own).
    for (fd, flag) in args.namespaces {
        nix::sched::setns(fd, *flag).map_err(sys("joining the sandbox's namespaces"))?;
    }
    nix::unistd::fchdir(args.root.as_raw_fd()).map_err(sys("entering the sandbox's root"))?;
    nix::unistd::chroot(".").map_err(sys("entering the sandbox's root"))?;
    exec_process(args.process, &args.stdio, args.seccomp)
}

enum Never {}

fn setup_and_exec(args: &ChildArgs) -> Result<Never, Failure> {
    let spec = args.spec;
    // Die with sbx: a foreground sandbox must not outlive its CLI.
    set_pdeathsig()?;

    for procs in args.cgroup_procs {
        std::fs::write(procs, "0")
            .map_err(|e| format!("joining cgroup {}: {e}", procs.display()))?;
    }
    nix::sched::unshare(CloneFlags::CLONE_NEWCGROUP)
        .map_err(sys("creating the cgroup namespace"))?;
    if let Some(fd) = args.netns {
        // SAFETY: the parent keeps the descriptor open until this child
        // has execed or failed.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        nix::sched::setns(fd, CloneFlags::CLONE_NEWNET)
            .map_err(sys("joining the sandbox's network namespace"))?;
    }

    rootfs::setup(spec, args.dirs)?;

    nix::unistd::sethostname(&spec.hostname).map_err(sys("setting the hostname"))?;
    if spec.network == NetworkMode::None {
        sbx_workload::net::loopback_up().map_err(sys("bringing up lo"))?;
    }

    exec_process(&spec.process, &args.stdio, args.seccomp)
}

/// From stdio to execve, the same for a sandbox's workload and for a
/// process `exec` adds: user, rlimits, capabilities, no_new_privs, seccomp.
fn exec_process(
    process: &Process,
    stdio: &ChildStdio,
    seccomp: &BpfProgram,
) -> Result<Never, Failure> {
    setup_stdio(stdio, process.stdin)?;

    let user = user::resolve(&process.user).map_err(Failure::from)?;
    let mut env = process.env.clone();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", user.home));
    }

    for r in &process.rlimits {
        let lim = libc::rlimit {
            rlim_cur: r.soft,
            rlim_max: r.hard,
        };
        // SAFETY: setrlimit reads the struct we pass.
        if unsafe { libc::setrlimit(r.resource as _, &lim) } != 0 {
            return Err(sys("setting an rlimit")(Errno::last()));
        }
    }

    crate::caps::drop_bounding()?;
    let groups: Vec<Gid> = user.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    nix::unistd::setgroups(&groups).map_err(sys("setting supplementary groups"))?;
    let gid = Gid::from_raw(user.gid);
    nix::unistd::setresgid(gid, gid, gid).map_err(sys("setting the group"))?;
    let uid = Uid::from_raw(user.uid);
    nix::unistd::setresuid(uid, uid, uid).map_err(sys("setting the user"))?;
    if user.uid == 0 {
        crate::caps::set_process_caps()?;
    }
    // Credential changes reset the parent-death signal.
    set_pdeathsig()?;

    let cwd = if process.cwd.is_empty() {
        "/"
    } else {
        process.cwd.as_str()
    };
    nix::unistd::chdir(cwd).map_err(|e| {
        Failure(
            SETUP_FAILED,
            format!("changing to working directory {cwd}: {}", e.desc()),
        )
    })?;

    let program = sbx_workload::program::find(&process.args, &env)
        .map_err(|(code, message)| Failure(code, message))?;
    let argv: Vec<CString> = process
        .args
        .iter()
        .map(|a| cstring(a))
        .collect::<Result<_, _>>()?;
    let envp: Vec<CString> = env.iter().map(|e| cstring(e)).collect::<Result<_, _>>()?;

    // Rust ignores SIGPIPE for itself; the workload must get the default.
    // SAFETY: restoring default dispositions has no preconditions.
    unsafe {
        let _ = nix::sys::signal::signal(Signal::SIGPIPE, SigHandler::SigDfl);
    }
    nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    )
    .map_err(sys("resetting the signal mask"))?;
    // Descriptors the caller leaked to us must not reach the workload.
    // SAFETY: close_range only flags descriptors close-on-exec.
    unsafe { libc::close_range(3, u32::MAX, libc::CLOSE_RANGE_CLOEXEC as i32) };

    nix::sys::prctl::set_no_new_privs().map_err(sys("setting no_new_privs"))?;
    crate::seccomp::install(seccomp).map_err(|e| format!("installing the seccomp filter: {e}"))?;

    let e = nix::unistd::execve(&program, &argv, &envp).unwrap_err();
    let shown = &process.args[0];
    Err(match e {
        Errno::ENOENT => Failure(127, format!("exec {shown:?}: no such file or directory")),
        Errno::EACCES | Errno::EPERM => Failure(126, format!("exec {shown:?}: permission denied")),
        e => Failure(126, format!("exec {shown:?}: {}", e.desc())),
    })
}

fn cstring(s: &str) -> Result<CString, Failure> {
    CString::new(s).map_err(|_| {
        Failure(
            SETUP_FAILED,
            format!("argument or variable {s:?} holds a NUL byte"),
        )
    })
}

fn set_pdeathsig() -> Result<(), Failure> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(sys("setting the parent-death signal"))
}

fn setup_stdio(stdio: &ChildStdio, keep_stdin: bool) -> Result<(), Failure> {
    let dup2 = |from: RawFd, to: RawFd| {
        nix::unistd::dup2(from, to)
            .map(|_| ())
            .map_err(sys("setting up stdio"))
    };
    match stdio {
        ChildStdio::Inherit => {
            if !keep_stdin {
                let null = nix::fcntl::open(
                    "/dev/null",
                    nix::fcntl::OFlag::O_RDONLY,
                    nix::sys::stat::Mode::empty(),
                )
                .map_err(sys("opening /dev/null"))?;
                dup2(null, 0)?;
                let _ = nix::unistd::close(null);
            }
        }
        ChildStdio::Tty(sock) => {
            let slave = open_pty(sock)?;
            nix::unistd::setsid().map_err(sys("setsid"))?;
            // SAFETY: TIOCSCTTY on a terminal we hold makes it our
            // controlling terminal; the argument 0 means "don't steal".
            if unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) } != 0 {
                return Err(sys("acquiring the controlling terminal")(Errno::last()));
            }
            for fd in 0..3 {
                dup2(slave.as_raw_fd(), fd)?;
            }
        }
        ChildStdio::Pipes {
            stdin,
            stdout,
            stderr,
        } => {
            match stdin {
                Some(fd) => dup2(fd.as_raw_fd(), 0)?,
                None => {
                    let null = nix::fcntl::open(
                        "/dev/null",
                        nix::fcntl::OFlag::O_RDONLY,
                        nix::sys::stat::Mode::empty(),
                    )
                    .map_err(sys("opening /dev/null"))?;
                    dup2(null, 0)?;
                    let _ = nix::unistd::close(null);
                }
            }
            dup2(stdout.as_raw_fd(), 1)?;
            dup2(stderr.as_raw_fd(), 2)?;
        }
    }
    Ok(())
}

/// Open a pty in the (already pivoted-to) sandbox's /dev/ptmx, send the
/// master to the parent, return the slave.
fn open_pty(sock: &OwnedFd) -> Result<OwnedFd, Failure> {
    use nix::fcntl::OFlag;
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(sys("opening /dev/ptmx"))?;
    nix::pty::grantpt(&master).map_err(sys("grantpt"))?;
    nix::pty::unlockpt(&master).map_err(sys("unlockpt"))?;
    let name = nix::pty::ptsname_r(&master).map_err(sys("ptsname"))?;
    let slave = nix::fcntl::open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(sys("opening the pty slave"))?;
    // SAFETY: `open` returned a fresh descriptor nothing else owns.
    let slave = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(slave) };
    let fds = [master.as_raw_fd()];
    let iov = [std::io::IoSlice::new(b"t")];
    sendmsg::<()>(
        sock.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(sys("passing the terminal to sbx"))?;
    Ok(slave)
}
