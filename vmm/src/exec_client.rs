//! `sbx exec` into a detached VM, from the CLI: the VM's monitor holds the
//! control port, so the request goes to the monitor's control socket with
//! the caller's stream descriptors (SCM_RIGHTS); the monitor starts the
//! process through the guest init and answers with its id, then its exit.
//! Signals and resizes follow on requests of their own.

use std::io::BufReader;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Mutex;

use sbx_shared::backend::{BackendError, ExitStatus, Sandbox, SandboxIo, SandboxRef, Stats, Stdio};
use sbx_shared::monitor::protocol::{self, Request, Response};
use sbx_shared::monitor::MonitorError;
use sbx_shared::spec::Process;

fn not_running(target: &SandboxRef<'_>) -> BackendError {
    BackendError::Setup(format!(
        "sandbox {} is not running",
        sbx_shared::ids::short(&target.spec.id)
    ))
}

fn setup(what: &'static str) -> impl FnOnce(nix::errno::Errno) -> BackendError {
    move |e| BackendError::Setup(format!("exec: {what}: {}", e.desc()))
}

fn dup(fd: impl AsFd) -> Result<OwnedFd, BackendError> {
    fd.as_fd()
        .try_clone_to_owned()
        .map_err(|e| BackendError::io("exec: duplicating a descriptor", e))
}

/// The descriptors the monitor gets (stdin, stdout, stderr) and the
/// caller's ends.
fn streams(
    process: &Process,
    stdio: Stdio,
) -> Result<([Option<OwnedFd>; 3], SandboxIo), BackendError> {
    let mut io = SandboxIo::default();
    if process.terminal {
        // The process's terminal is in the guest; a host pty in raw mode
        // carries its bytes, the caller relays the master.
        let pty = nix::pty::openpty(None, None).map_err(setup("allocating a terminal"))?;
        let mut t = nix::sys::termios::tcgetattr(&pty.slave).map_err(setup("terminal mode"))?;
        nix::sys::termios::cfmakeraw(&mut t);
        nix::sys::termios::tcsetattr(&pty.slave, nix::sys::termios::SetArg::TCSANOW, &t)
            .map_err(setup("terminal mode"))?;
        copy_winsize(&pty.slave);
        let input = dup(&pty.slave)?;
        io.tty = Some(std::fs::File::from(pty.master));
        return Ok(([Some(input), Some(pty.slave), None], io));
    }
    match stdio {
        Stdio::Inherit => {
            let stdin = if process.stdin {
                Some(dup(std::io::stdin())?)
            } else {
                None
            };
            Ok((
                [
                    stdin,
                    Some(dup(std::io::stdout())?),
                    Some(dup(std::io::stderr())?),
                ],
                io,
            ))
        }
        Stdio::Piped => {
            let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(setup("pipe"));
            let (out_r, out_w) = pipe()?;
            let (err_r, err_w) = pipe()?;
            io.stdout = Some(out_r.into());
            io.stderr = Some(err_r.into());
            let stdin = if process.stdin {
                let (r, w) = pipe()?;
                io.stdin = Some(w.into());
                Some(r)
            } else {
                None
            };
            Ok(([stdin, Some(out_w), Some(err_w)], io))
        }
    }
}

/// The caller's terminal size onto the pty that stands for the guest's.
fn copy_winsize(slave: &OwnedFd) {
    // SAFETY: TIOCGWINSZ writes into the winsize we own.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: as above; fd 1 is ours to query.
    if unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0 {
        // SAFETY: TIOCSWINSZ reads the winsize we pass, on a pty we hold.
        unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    }
}

pub fn exec(
    target: &SandboxRef<'_>,
    process: &Process,
    stdio: Stdio,
) -> Result<Box<dyn Sandbox>, BackendError> {
    let (fds, io) = streams(process, stdio)?;
    let [stdin, stdout, stderr] = &fds;
    let req = Request::Exec {
        process: process.clone(),
        stdin: stdin.is_some(),
        stdout: stdout.is_some(),
        stderr: stderr.is_some(),
    };
    let send: Vec<_> = fds.iter().flatten().map(|f| f.as_fd()).collect();
    let dir = target.spec.dir.clone();
    let (stream, first) = match protocol::request_exec(&dir, &req, &send) {
        Ok(r) => r,
        Err(MonitorError::NoMonitor) => return Err(not_running(target)),
        Err(e) => return Err(BackendError::Setup(e.to_string())),
    };
    drop(fds);
    let exec = match first {
        Response {
            exec_id: Some(id), ..
        } => id,
        Response {
            error: Some(message),
            exit_code,
            ..
        } => {
            return Err(match exit_code {
                Some(code @ (126 | 127)) => BackendError::Exec { message, code },
                _ => BackendError::Setup(message),
            })
        }
        _ => {
            return Err(BackendError::Setup(
                "the monitor did not start the process".into(),
            ))
        }
    };
    Ok(Box::new(ExecClient {
        dir,
        exec,
        pid: target.pid,
        stream: Mutex::new(stream),
        io: Mutex::new(io),
    }))
}

/// A process started through a VM's monitor, as the CLI holds it.
struct ExecClient {
    dir: PathBuf,
    exec: u32,
    pid: i32,
    stream: Mutex<BufReader<UnixStream>>,
    io: Mutex<SandboxIo>,
}

impl ExecClient {
    fn request(&self, req: &Request) -> Result<(), BackendError> {
        match protocol::request(&self.dir, req) {
            Ok(Response { error: Some(e), .. }) => Err(BackendError::Setup(e)),
            Ok(_) | Err(MonitorError::NoMonitor) => Ok(()),
            Err(e) => Err(BackendError::Setup(e.to_string())),
        }
    }
}

impl Sandbox for ExecClient {
    fn pid(&self) -> i32 {
        self.pid
    }

    fn take_io(&mut self) -> SandboxIo {
        std::mem::take(&mut *self.io.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn wait(&self) -> Result<ExitStatus, BackendError> {
        let mut stream = self.stream.lock().unwrap_or_else(|p| p.into_inner());
        match protocol::read_answer(&mut stream) {
            Ok(Response {
                exit_code: Some(code),
                ..
            }) => Ok(ExitStatus::exited(code)),
            Ok(Response { error: Some(e), .. }) => Err(BackendError::Setup(e)),
            Ok(_) => Err(BackendError::Setup(
                "the monitor gave no exit status".into(),
            )),
            Err(MonitorError::NoMonitor) => Err(BackendError::Setup(
                "the sandbox's monitor went away before the process ended".into(),
            )),
            Err(e) => Err(BackendError::Setup(e.to_string())),
        }
    }

    fn signal(&self, sig: i32) -> Result<(), BackendError> {
        self.request(&Request::ExecSignal {
            exec: self.exec,
            signal: sig,
        })
    }

    fn stats(&self) -> Result<Stats, BackendError> {
        Ok(Stats::default())
    }

    fn resize(&self, rows: u16, cols: u16) -> Result<(), BackendError> {
        self.request(&Request::ExecResize {
            exec: self.exec,
            rows,
            cols,
        })
    }
}
