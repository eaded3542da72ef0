//! The init's loop while the workload runs: one poll(2) over the control
//! port, the workload's output, the stdin console and a signalfd for
//! SIGCHLD. Output is copied to its console, input to the workload (with
//! backpressure), host messages are applied, children are reaped.
//!
//! When the workload ends, every process left is killed, its output drained
//! to EOF, and the consoles flushed to the host before the exit is reported.
//! Output flow control is in [`crate::output`].

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use sbx_vm_protocol::{GuestSpec, HostMessage};

use crate::console::Control;
use crate::exec::{Execs, Want};
use crate::output::Output;
use crate::workload::{self, Started};

/// After the workload ends, how long its leftovers may take to die and
/// their output to drain (counted from the last progress).
const DRAIN_LIMIT: Duration = Duration::from_secs(2);
const CHUNK: usize = 64 * 1024;

/// The consoles the workload's streams travel on.
pub struct Consoles {
    pub stdout: File,
    pub stderr: File,
    pub stdin: File,
}

pub struct Relay {
    ctl: Control,
    stdin_console: File,
    pid: Pid,
    terminal: bool,
    /// The workload's stdout (or pty) and stderr, as consoles 1 and 2.
    outputs: [Output; 2],
    /// Where input goes; None once closed (or never asked for).
    input: Option<OwnedFd>,
    /// Read from the stdin console, not yet taken by the workload.
    pending: Vec<u8>,
    /// Bytes read from the stdin console so far.
    received: u64,
    /// The host's count of stdin bytes, once its stdin ended.
    stdin_eof_at: Option<u64>,
    sigfd: Option<SignalFd>,
    status: Option<(i32, Option<i32>)>,
    drain_deadline: Option<Instant>,
    /// `sbx.debug` on the kernel command line: say what happens on the
    /// serial console.
    trace: bool,
    /// Processes `sbx exec` started.
    execs: Execs,
}

#[derive(Clone, Copy)]
enum Source {
    Control,
    Signals,
    Output(usize),
    Stdin,
    Input,
    Exec(Want),
}

fn read_fd(fd: RawFd, buf: &mut [u8]) -> Result<usize, Errno> {
    // SAFETY: read(2) into a buffer we own, of its length.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    Errno::result(n).map(|n| n as usize)
}

fn set_nonblocking(fd: &OwnedFd) {
    let _ = nix::fcntl::fcntl(
        fd.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    );
}

impl Relay {
    pub fn new(
        ctl: Control,
        consoles: Consoles,
        w: Started,
        spec: &GuestSpec,
        trace: bool,
    ) -> Relay {
        workload::block_sigchld();
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGCHLD);
        let sigfd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(|e| eprintln!("sbx-guest-init: signalfd: {}", e.desc()))
            .ok();
        if let Some(i) = &w.stdin {
            set_nonblocking(i);
        }
        set_nonblocking(&w.stdout);
        if let Some(e) = &w.stderr {
            set_nonblocking(e);
        }
        Relay {
            ctl,
            stdin_console: consoles.stdin,
            pid: w.pid,
            terminal: w.terminal,
            outputs: [
                Output::new(Some(w.stdout), consoles.stdout),
                Output::new(w.stderr, consoles.stderr),
            ],
            input: w.stdin.filter(|_| spec.stdin || spec.terminal),
            pending: Vec::new(),
            received: 0,
            stdin_eof_at: None,
            sigfd,
            status: None,
            drain_deadline: None,
            trace,
            execs: Execs::new(spec.clone()),
        }
    }

    /// Relay until the workload has ended and its output is drained; give
    /// back the control port and the exit (code, signal).
    pub fn run(mut self) -> (Control, i32, Option<i32>) {
        let mut buf = vec![0u8; CHUNK];
        loop {
            self.reap();
            if self.status.is_some() && !self.outputs.iter().any(Output::is_open) {
                break;
            }
            // Leftovers that will not die end the drain; a host that is
            // slow to take the output does not.
            if self.drain_deadline.is_some_and(|d| Instant::now() >= d)
                && !self.outputs.iter().any(Output::window_full)
            {
                break;
            }
            let mut fds: Vec<libc::pollfd> = Vec::new();
            let mut sources: Vec<Source> = Vec::new();
            let mut watch = |fd: RawFd, events: libc::c_short, s: Source| {
                fds.push(libc::pollfd {
                    fd,
                    events,
                    revents: 0,
                });
                sources.push(s);
            };
            watch(self.ctl.port().as_raw_fd(), libc::POLLIN, Source::Control);
            if let Some(s) = &self.sigfd {
                watch(s.as_raw_fd(), libc::POLLIN, Source::Signals);
            }
            for (i, o) in self.outputs.iter().enumerate() {
                if let Some(fd) = o.readable_fd() {
                    watch(fd, libc::POLLIN, Source::Output(i));
                }
            }
            if let Some(i) = &self.input {
                if self.pending.is_empty() {
                    if self.status.is_none() {
                        watch(self.stdin_console.as_raw_fd(), libc::POLLIN, Source::Stdin);
                    }
                } else {
                    watch(i.as_raw_fd(), libc::POLLOUT, Source::Input);
                }
            }
            if self.status.is_none() {
                for (fd, events, want) in self.execs.wanted() {
                    watch(fd, events, Source::Exec(want));
                }
            }
            // Without a signalfd, reap by polling.
            let timeout =
                if self.drain_deadline.is_some() || self.sigfd.is_none() || self.execs.draining() {
                    50
                } else {
                    -1
                };
            // SAFETY: poll(2) over a pollfd array we own, of its length.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if n < 0 {
                continue; // EINTR
            }
            for (pfd, source) in fds.iter().zip(sources) {
                if pfd.revents != 0 {
                    self.handle(source, &mut buf);
                }
            }
            self.reap();
            self.execs.report_ended(&mut self.ctl);
        }
        for o in &self.outputs {
            o.flush();
        }
        let (code, signal) = self.status.unwrap_or((crate::SETUP_FAILED, None));
        (self.ctl, code, signal)
    }

    fn handle(&mut self, source: Source, buf: &mut [u8]) {
        match source {
            Source::Control => {
                for m in self.ctl.read_messages() {
                    self.apply(m);
                }
            }
            Source::Signals => {
                if let Some(s) = &mut self.sigfd {
                    while let Ok(Some(_)) = s.read_signal() {}
                }
            }
            Source::Output(i) => {
                if self.outputs[i].pump(buf) {
                    self.progress();
                }
            }
            Source::Stdin => match read_fd(self.stdin_console.as_raw_fd(), buf) {
                Ok(n) if n > 0 => {
                    self.received += n as u64;
                    self.pending.extend_from_slice(&buf[..n]);
                    self.flush_input();
                }
                _ => {}
            },
            Source::Input => self.flush_input(),
            Source::Exec(want) => self.execs.ready(&mut self.ctl, want, buf),
        }
    }

    fn apply(&mut self, m: HostMessage) {
        if self.status.is_none() && self.execs.apply(&mut self.ctl, &m) {
            return;
        }
        match m {
            HostMessage::Signal { signal } if self.status.is_none() => {
                if let Ok(sig) = Signal::try_from(signal) {
                    let _ = nix::sys::signal::kill(self.pid, sig);
                }
            }
            HostMessage::Resize { rows, cols } => {
                if let (true, Some(master)) = (self.terminal, self.outputs[0].source_fd()) {
                    workload::set_winsize(master, rows, cols);
                }
            }
            HostMessage::Ack { console, bytes } => {
                if let Some(o) = (console as usize)
                    .checked_sub(1)
                    .and_then(|i| self.outputs.get_mut(i))
                {
                    o.ack(bytes);
                    self.progress();
                }
            }
            HostMessage::StdinEof { bytes } => {
                if self.trace {
                    eprintln!(
                        "sbx-guest-init: host stdin ended at {bytes} bytes; {} received, {} pending",
                        self.received,
                        self.pending.len()
                    );
                }
                self.stdin_eof_at = Some(bytes);
                self.close_input_at_eof();
            }
            // An exec's, once the workload has ended: the VM is going.
            _ => {}
        }
    }

    fn flush_input(&mut self) {
        let Some(input) = &self.input else {
            self.pending.clear();
            return;
        };
        while !self.pending.is_empty() {
            match nix::unistd::write(input, &self.pending) {
                Ok(n) => {
                    self.pending.drain(..n);
                }
                Err(Errno::EAGAIN) => return,
                Err(Errno::EINTR) => {}
                Err(_) => {
                    // EPIPE: the workload closed its stdin.
                    self.input = None;
                    self.pending.clear();
                    return;
                }
            }
        }
        self.close_input_at_eof();
    }

    /// Close the workload's stdin once every byte the host sent has been
    /// passed on. A terminal has no end of input but the EOF character,
    /// which travels in the stream.
    fn close_input_at_eof(&mut self) {
        if let Some(at) = self.stdin_eof_at {
            if !self.terminal && self.received >= at && self.pending.is_empty() {
                if self.trace && self.input.is_some() {
                    eprintln!(
                        "sbx-guest-init: workload stdin closed after {} bytes",
                        self.received
                    );
                }
                self.input = None;
            }
        }
    }

    /// Reap every child that has ended; when the workload is among them,
    /// kill what it left behind so its streams reach EOF.
    fn reap(&mut self) {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == self.pid => {
                    self.workload_ended(code, None);
                }
                Ok(WaitStatus::Signaled(pid, sig, _)) if pid == self.pid => {
                    self.workload_ended(128 + sig as i32, Some(sig as i32));
                }
                Ok(WaitStatus::Exited(pid, code)) => {
                    self.execs.reaped(pid, code, None);
                }
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    self.execs.reaped(pid, 128 + sig as i32, Some(sig as i32));
                }
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }

    /// Output moved: the drain may go on.
    fn progress(&mut self) {
        if self.drain_deadline.is_some() {
            self.drain_deadline = Some(Instant::now() + DRAIN_LIMIT);
        }
    }

    fn workload_ended(&mut self, code: i32, signal: Option<i32>) {
        self.status = Some((code, signal));
        self.input = None;
        // SAFETY: kill(-1, SIGKILL) signals every process but the caller
        // (PID 1); it takes no pointers.
        unsafe { libc::kill(-1, libc::SIGKILL) };
        self.drain_deadline = Some(Instant::now() + DRAIN_LIMIT);
    }
}
