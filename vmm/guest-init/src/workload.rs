//! Starting the workload: fork, then in the child the process attributes
//! (session, stdio, rlimits, groups, user, cwd) and execve. A failure is
//! written to an O_CLOEXEC pipe that a successful execve closes empty, with
//! Docker's exit status for it (126 not executable, 127 not found).

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, Signal};
use nix::unistd::{ForkResult, Gid, Pid, Uid};
use sbx_vm_protocol::GuestSpec;

use sbx_workload::user;

const SETUP_FAILED: i32 = crate::SETUP_FAILED;

/// A failure before exec: the exit status to report and the message.
type Failure = (i32, String);

/// The running workload and the init's ends of its streams.
pub struct Started {
    pub pid: Pid,
    /// Its stdout (a pipe), or the pty master carrying all its output.
    pub stdout: OwnedFd,
    /// Its stderr (a pipe); None with a terminal.
    pub stderr: Option<OwnedFd>,
    /// Where its input goes: a pipe, or the pty master; None: /dev/null.
    pub stdin: Option<OwnedFd>,
    pub terminal: bool,
}

/// What the child makes its fds 0, 1 and 2.
enum ChildStdio {
    Tty(OwnedFd),
    Pipes {
        stdin: Option<OwnedFd>,
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
}

fn sys(what: &str) -> impl FnOnce(Errno) -> Failure + '_ {
    move |e| (SETUP_FAILED, format!("{what}: {}", e.desc()))
}

fn pipe() -> Result<(OwnedFd, OwnedFd), Failure> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("creating a pipe"))
}

/// The SIGCHLD that the relay's signalfd reads must be blocked from before
/// the fork, so that none is lost.
pub fn block_sigchld() {
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None);
}

pub fn start(spec: &GuestSpec) -> Result<Started, Failure> {
    let user = user::resolve(&spec.user).map_err(|e| (SETUP_FAILED, e))?;
    let (child_stdio, started_io) = if spec.terminal {
        let pty = nix::pty::openpty(None, None).map_err(sys("allocating a pseudo-terminal"))?;
        for fd in [&pty.master, &pty.slave] {
            nix::fcntl::fcntl(
                fd.as_raw_fd(),
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            )
            .map_err(sys("allocating a pseudo-terminal"))?;
        }
        if let Some((rows, cols)) = spec.tty_size {
            set_winsize(pty.master.as_raw_fd(), rows, cols);
        }
        let input = pty
            .master
            .try_clone()
            .map_err(|e| (SETUP_FAILED, format!("duplicating the pty master: {e}")))?;
        (ChildStdio::Tty(pty.slave), (pty.master, None, Some(input)))
    } else {
        let (stdin_child, stdin_ours) = if spec.stdin {
            let (r, w) = pipe()?;
            nix::fcntl::fcntl(
                w.as_raw_fd(),
                nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
            )
            .map_err(sys("creating a pipe"))?;
            (Some(r), Some(w))
        } else {
            (None, None)
        };
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        (
            ChildStdio::Pipes {
                stdin: stdin_child,
                stdout: out_w,
                stderr: err_w,
            },
            (out_r, Some(err_r), stdin_ours),
        )
    };
    let (err_read, err_write) = pipe()?;
    block_sigchld();

    // SAFETY: the init is single-threaded, so the child may do anything the
    // parent could before it execs or exits.
    match unsafe { nix::unistd::fork() }.map_err(sys("fork"))? {
        ForkResult::Child => {
            drop(err_read);
            let (code, message) = match exec(spec, &user, child_stdio) {
                Ok(never) => match never {},
                Err(f) => f,
            };
            let mut report = vec![code as u8];
            report.extend_from_slice(message.as_bytes());
            let _ = File::from(err_write).write_all(&report);
            // SAFETY: _exit ends the child without running the parent's
            // destructors on its copy of the address space.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(err_write);
            drop(child_stdio);
            let mut report = Vec::new();
            let _ = File::from(err_read).read_to_end(&mut report);
            if let Some((&code, message)) = report.split_first() {
                let _ = nix::sys::wait::waitpid(child, None);
                return Err((code as i32, String::from_utf8_lossy(message).into_owned()));
            }
            let (stdout, stderr, stdin) = started_io;
            Ok(Started {
                pid: child,
                stdout,
                stderr,
                stdin,
                terminal: spec.terminal,
            })
        }
    }
}

pub fn set_winsize(fd: RawFd, rows: u16, cols: u16) {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads the winsize we pass, on a pty we hold.
    unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &size) };
}

enum Never {}

fn exec(spec: &GuestSpec, user: &user::User, stdio: ChildStdio) -> Result<Never, Failure> {
    nix::unistd::setsid().map_err(sys("setsid"))?;
    let dup2 = |from: RawFd, to: RawFd| {
        nix::unistd::dup2(from, to)
            .map(|_| ())
            .map_err(sys("setting up stdio"))
    };
    let null = || {
        nix::fcntl::open(
            "/dev/null",
            nix::fcntl::OFlag::O_RDWR,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(sys("opening /dev/null"))
    };
    match &stdio {
        ChildStdio::Tty(slave) => {
            // SAFETY: TIOCSCTTY on a terminal we hold makes it our
            // controlling terminal; 0 means "don't steal".
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
                    let n = null()?;
                    dup2(n, 0)?;
                    let _ = nix::unistd::close(n);
                }
            }
            dup2(stdout.as_raw_fd(), 1)?;
            dup2(stderr.as_raw_fd(), 2)?;
        }
    }

    let mut env = spec.env.clone();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", user.home));
    }
    for &(resource, soft, hard) in &spec.rlimits {
        let lim = libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        };
        // SAFETY: setrlimit reads the struct we pass.
        if unsafe { libc::setrlimit(resource as _, &lim) } != 0 {
            return Err(sys("setting an rlimit")(Errno::last()));
        }
    }
    let groups: Vec<Gid> = user.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    nix::unistd::setgroups(&groups).map_err(sys("setting supplementary groups"))?;
    let gid = Gid::from_raw(user.gid);
    nix::unistd::setresgid(gid, gid, gid).map_err(sys("setting the group"))?;
    let uid = Uid::from_raw(user.uid);
    nix::unistd::setresuid(uid, uid, uid).map_err(sys("setting the user"))?;

    let cwd = if spec.cwd.is_empty() { "/" } else { &spec.cwd };
    nix::unistd::chdir(cwd).map_err(|e| {
        (
            SETUP_FAILED,
            format!("changing to working directory {cwd}: {}", e.desc()),
        )
    })?;

    let program = sbx_workload::program::find(&spec.args, &env)?;
    let argv: Vec<CString> = spec
        .args
        .iter()
        .map(|a| cstring(a))
        .collect::<Result<_, _>>()?;
    let envp: Vec<CString> = env.iter().map(|e| cstring(e)).collect::<Result<_, _>>()?;

    // The init blocks SIGCHLD and Rust ignores SIGPIPE; the workload gets
    // the defaults.
    // SAFETY: restoring a default disposition has no preconditions.
    unsafe {
        let _ = nix::sys::signal::signal(Signal::SIGPIPE, SigHandler::SigDfl);
    }
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
        .map_err(sys("resetting the signal mask"))?;

    let e = nix::unistd::execve(&program, &argv, &envp).unwrap_err();
    let shown = &spec.args[0];
    Err(match e {
        Errno::ENOENT => (127, format!("exec {shown:?}: no such file or directory")),
        Errno::EACCES | Errno::EPERM => (126, format!("exec {shown:?}: permission denied")),
        e => (126, format!("exec {shown:?}: {}", e.desc())),
    })
}

fn cstring(s: &str) -> Result<CString, Failure> {
    CString::new(s).map_err(|_| {
        (
            SETUP_FAILED,
            format!("argument or variable {s:?} holds a NUL byte"),
        )
    })
}
