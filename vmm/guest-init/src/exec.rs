//! `sbx exec` in the guest: more processes in the running sandbox, started
//! on the host's request over the control port and multiplexed on it by
//! the host's exec id: output and exit go up as events, input, signals and
//! resizes come down as messages.
//!
//! Each direction keeps at most [`EXEC_WINDOW`] bytes unacknowledged per
//! exec, and at most [`EXEC_MAX`] execs run at once, so what is in flight
//! on the control port stays well inside the VMM's socket buffer (QEMU
//! drops console output its socket cannot take).

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use sbx_vm_protocol::{
    decode, encode, ExecProcess, GuestEvent, GuestSpec, HostMessage, EXEC_CHUNK, EXEC_MAX,
    EXEC_WINDOW,
};

use crate::console::Control;
use crate::workload;

/// After an exec's process ends, how long what it left running may hold
/// its output open before the exit is reported anyway.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);

struct Session {
    id: u32,
    pid: Pid,
    terminal: bool,
    /// stdout (or the pty master) and stderr; None once at EOF.
    outputs: [Option<OwnedFd>; 2],
    /// Where input goes; None once closed (or never asked for).
    input: Option<OwnedFd>,
    pending: Vec<u8>,
    /// Input bytes passed to the process, in all.
    passed: u64,
    input_eof: bool,
    /// Output bytes sent, and acknowledged by the host.
    sent: u64,
    acked: u64,
    status: Option<(i32, Option<i32>)>,
    ended_at: Option<Instant>,
}

/// The execs of one VM.
pub struct Execs {
    base: GuestSpec,
    sessions: Vec<Session>,
}

/// A descriptor an exec wants polled.
#[derive(Clone, Copy)]
pub enum Want {
    Output(usize, usize),
    Input(usize),
}

fn set_nonblocking(fd: &OwnedFd) {
    let _ = nix::fcntl::fcntl(
        fd.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    );
}

impl Execs {
    pub fn new(base: GuestSpec) -> Self {
        Execs {
            base,
            sessions: Vec::new(),
        }
    }

    /// The descriptors to poll: outputs while their window has room, input
    /// while some is pending.
    pub fn wanted(&self) -> Vec<(RawFd, libc::c_short, Want)> {
        let mut out = Vec::new();
        for (i, s) in self.sessions.iter().enumerate() {
            if s.sent - s.acked < EXEC_WINDOW {
                for (j, o) in s.outputs.iter().enumerate() {
                    if let Some(fd) = o {
                        out.push((fd.as_raw_fd(), libc::POLLIN, Want::Output(i, j)));
                    }
                }
            }
            if let (Some(fd), false) = (&s.input, s.pending.is_empty()) {
                out.push((fd.as_raw_fd(), libc::POLLOUT, Want::Input(i)));
            }
        }
        out
    }

    /// Whether an ended exec is still draining (the caller polls with a
    /// timeout meanwhile).
    pub fn draining(&self) -> bool {
        self.sessions.iter().any(|s| s.status.is_some())
    }

    pub fn ready(&mut self, ctl: &mut Control, want: Want, buf: &mut [u8]) {
        match want {
            Want::Output(i, j) => self.pump(ctl, i, j, buf),
            Want::Input(i) => self.flush_input(ctl, i),
        }
    }

    fn pump(&mut self, ctl: &mut Control, i: usize, j: usize, buf: &mut [u8]) {
        let Some(s) = self.sessions.get_mut(i) else {
            return;
        };
        let Some(fd) = &s.outputs[j] else { return };
        let len = buf.len().min(EXEC_CHUNK);
        // SAFETY: read(2) into a buffer we own, at most its length.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), len) };
        match Errno::result(n) {
            Ok(0) => s.outputs[j] = None,
            Ok(n) => {
                let n = n as usize;
                s.sent += n as u64;
                ctl.send(&GuestEvent::ExecOutput {
                    id: s.id,
                    stream: j as u8 + 1,
                    data: encode(&buf[..n]),
                });
                if let Some(t) = &mut s.ended_at {
                    *t = Instant::now();
                }
            }
            Err(Errno::EAGAIN) | Err(Errno::EINTR) => {}
            // EIO: a pty master once no slave is open.
            Err(_) => s.outputs[j] = None,
        }
    }

    fn flush_input(&mut self, ctl: &mut Control, i: usize) {
        let Some(s) = self.sessions.get_mut(i) else {
            return;
        };
        let before = s.passed;
        if let Some(input) = &s.input {
            while !s.pending.is_empty() {
                match nix::unistd::write(input, &s.pending) {
                    Ok(n) => {
                        s.pending.drain(..n);
                        s.passed += n as u64;
                    }
                    Err(Errno::EAGAIN) => break,
                    Err(Errno::EINTR) => {}
                    Err(_) => {
                        // EPIPE: the process closed its stdin; what comes
                        // is dropped (and acknowledged, so the host goes on).
                        s.input = None;
                        break;
                    }
                }
            }
        }
        if s.input.is_none() {
            s.passed += s.pending.len() as u64;
            s.pending.clear();
        }
        if s.input_eof && s.pending.is_empty() && !s.terminal {
            s.input = None;
        }
        if s.passed != before {
            ctl.send(&GuestEvent::ExecInputAck {
                id: s.id,
                bytes: s.passed,
            });
        }
    }

    /// A host message for an exec; false when it is not one.
    pub fn apply(&mut self, ctl: &mut Control, m: &HostMessage) -> bool {
        let find = |sessions: &[Session], id: u32| sessions.iter().position(|s| s.id == id);
        match m {
            HostMessage::Exec { id, process } => self.start(ctl, *id, process),
            HostMessage::ExecInput { id, data } => {
                if let (Some(i), Some(data)) = (find(&self.sessions, *id), decode(data)) {
                    self.sessions[i].pending.extend_from_slice(&data);
                    self.flush_input(ctl, i);
                }
            }
            HostMessage::ExecInputEof { id } => {
                if let Some(i) = find(&self.sessions, *id) {
                    self.sessions[i].input_eof = true;
                    self.flush_input(ctl, i);
                }
            }
            HostMessage::ExecSignal { id, signal } => {
                if let Some(s) = find(&self.sessions, *id).map(|i| &self.sessions[i]) {
                    if let (None, Ok(sig)) = (s.status, Signal::try_from(*signal)) {
                        let _ = nix::sys::signal::kill(s.pid, sig);
                    }
                }
            }
            HostMessage::ExecResize { id, rows, cols } => {
                if let Some(s) = find(&self.sessions, *id).map(|i| &self.sessions[i]) {
                    if let (true, Some(master)) = (s.terminal, &s.outputs[0]) {
                        workload::set_winsize(master.as_raw_fd(), *rows, *cols);
                    }
                }
            }
            HostMessage::ExecAck { id, bytes } => {
                if let Some(i) = find(&self.sessions, *id) {
                    let s = &mut self.sessions[i];
                    // A host cannot acknowledge what was never sent.
                    s.acked = (*bytes).clamp(s.acked, s.sent);
                }
            }
            _ => return false,
        }
        true
    }

    fn start(&mut self, ctl: &mut Control, id: u32, p: &ExecProcess) {
        let fail = |ctl: &mut Control, code: i32, message: String| {
            ctl.send(&GuestEvent::ExecStartFailed { id, code, message })
        };
        if self.sessions.iter().any(|s| s.id == id) {
            return fail(ctl, crate::SETUP_FAILED, format!("exec id {id} is in use"));
        }
        if self.sessions.len() >= EXEC_MAX {
            let m = format!("too many processes started by exec at once (at most {EXEC_MAX})");
            return fail(ctl, crate::SETUP_FAILED, m);
        }
        let mut spec = self.base.clone();
        spec.args = p.args.clone();
        spec.env = p.env.clone();
        spec.cwd = p.cwd.clone();
        spec.user = p.user.clone();
        spec.terminal = p.terminal;
        spec.stdin = p.stdin;
        spec.tty_size = p.tty_size;
        spec.rlimits = p.rlimits.clone();
        let started = match workload::start(&spec) {
            Ok(w) => w,
            Err((code, message)) => return fail(ctl, code, message),
        };
        set_nonblocking(&started.stdout);
        if let Some(e) = &started.stderr {
            set_nonblocking(e);
        }
        if let Some(i) = &started.stdin {
            set_nonblocking(i);
        }
        ctl.send(&GuestEvent::ExecStarted {
            id,
            pid: started.pid.as_raw(),
        });
        self.sessions.push(Session {
            id,
            pid: started.pid,
            terminal: p.terminal,
            outputs: [Some(started.stdout), started.stderr],
            input: started.stdin.filter(|_| p.stdin || p.terminal),
            pending: Vec::new(),
            passed: 0,
            input_eof: false,
            sent: 0,
            acked: 0,
            status: None,
            ended_at: None,
        });
    }

    /// A reaped child; whether it was an exec's process.
    pub fn reaped(&mut self, pid: Pid, code: i32, signal: Option<i32>) -> bool {
        let Some(s) = self.sessions.iter_mut().find(|s| s.pid == pid) else {
            return false;
        };
        s.status = Some((code, signal));
        s.ended_at = Some(Instant::now());
        s.input = None;
        true
    }

    /// Report the execs that ended and whose output is out (or that the
    /// drain gave up on).
    pub fn report_ended(&mut self, ctl: &mut Control) {
        let mut i = 0;
        while i < self.sessions.len() {
            let s = &self.sessions[i];
            let drained = s.outputs.iter().all(Option::is_none)
                || s.ended_at
                    .is_some_and(|t| t.elapsed() >= DRAIN_LIMIT && s.sent - s.acked < EXEC_WINDOW);
            match s.status {
                Some((code, signal)) if drained => {
                    ctl.send(&GuestEvent::ExecExit {
                        id: s.id,
                        code,
                        signal,
                    });
                    self.sessions.remove(i);
                }
                _ => i += 1,
            }
        }
    }
}
