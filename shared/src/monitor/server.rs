//! The monitor's loop: start the workload, pump its output into the log,
//! answer the control socket, record how it ended, restart it by policy.
//!
//! One thread does all of that with poll(2); a second one only blocks in
//! [`Sandbox::wait`] and is joined before any restart, so the process is
//! single-threaded again each time it calls [`Backend::start`].

use std::collections::HashMap;
use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::backend::{Backend, BackendError, ExitStatus, Sandbox, Stdio};
use crate::logs::{self, LogWriter, Stream};
use crate::spec::SandboxSpec;
use crate::state::{proc_start_time, Record, State, Status};

use super::lifecycle::Lifecycle;
use super::protocol::{self, Request, Response};
use super::{send_report, Report};

/// First restart delay; doubled per restart, reset after a long run.
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A run this long resets the restart delay (Docker uses 10 s too).
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(10);

struct Monitor<'a> {
    spec: &'a SandboxSpec,
    state: &'a State,
    record: Record,
    life: Lifecycle,
    listener: UnixListener,
    log: Option<LogWriter>,
    /// Clients of `wait` and `stop`, answered when the workload ends.
    waiters: Vec<UnixStream>,
    /// Stopped or killed by hand: the restart policy no longer applies.
    manual_stop: bool,
    /// When a `stop` turns into SIGKILL.
    kill_at: Option<Instant>,
    /// Processes `exec` started, by the id their client was given.
    execs: Arc<Mutex<HashMap<u32, Arc<dyn Sandbox>>>>,
    next_exec: u32,
}

/// Run the monitor to the end; the result is its exit status.
pub(super) fn serve(
    backend: &dyn Backend,
    spec: &SandboxSpec,
    state: &State,
    record: Record,
    mut life: Lifecycle,
    report: OwnedFd,
) -> i32 {
    let listener = match protocol::listen(&spec.dir) {
        Ok(l) => l,
        Err(e) => {
            send_report(
                report,
                &Report {
                    pid: None,
                    error: Some(e.to_string()),
                    code: None,
                },
            );
            return 1;
        }
    };
    let log = LogWriter::open(&logs::path(&spec.dir))
        .map_err(|e| eprintln!("sbx monitor: opening the log: {e}"))
        .ok();
    let me = std::process::id() as i32;
    life.monitor_pid = Some(me);
    life.monitor_start = proc_start_time(me);
    life.error = None;
    let mut m = Monitor {
        spec,
        state,
        record,
        life,
        listener,
        log,
        waiters: Vec::new(),
        manual_stop: false,
        kill_at: None,
        execs: Arc::default(),
        next_exec: 0,
    };
    let mut report = Some(report);
    let mut delay = BACKOFF_START;
    loop {
        let sandbox = match backend.start(spec, Stdio::Piped) {
            Ok(s) => s,
            Err(e) => {
                m.failed_start(&e, report.take());
                break;
            }
        };
        let started = Instant::now();
        m.started(&*sandbox);
        if let Some(r) = report.take() {
            let pid = Some(sandbox.pid());
            send_report(
                r,
                &Report {
                    pid,
                    error: None,
                    code: None,
                },
            );
        }
        let status = m.supervise(sandbox);
        let code = status
            .as_ref()
            .map(|s| s.code)
            .unwrap_or(super::lifecycle::KILLED);
        m.exited(status);
        if m.manual_stop || !m.life.restart.restarts(code, m.life.restart_count) {
            break;
        }
        if started.elapsed() >= BACKOFF_RESET_AFTER {
            delay = BACKOFF_START;
        }
        m.life.restart_count += 1;
        m.life.restarting = true;
        m.save_life();
        if !m.backoff(delay) {
            break;
        }
        delay = (delay * 2).min(BACKOFF_MAX);
        m.life.restarting = false;
    }
    m.finish(backend);
    0
}

impl Monitor<'_> {
    fn save_life(&self) {
        if let Err(e) = self.life.save(&self.spec.dir) {
            eprintln!("sbx monitor: {e}");
        }
    }

    fn save_record(&self) {
        if let Err(e) = self.state.save(&self.record) {
            eprintln!("sbx monitor: {e}");
        }
    }

    fn failed_start(&mut self, e: &BackendError, report: Option<OwnedFd>) {
        let code = match e {
            BackendError::Exec { code, .. } => *code,
            _ => 125,
        };
        self.record.status = Status::Exited;
        self.record.exit_code = Some(code);
        self.record.finished = Some(chrono::Utc::now());
        self.record.pid = None;
        self.life.error = Some(e.to_string());
        self.life.restarting = false;
        self.save_life();
        self.save_record();
        if let Some(r) = report {
            send_report(
                r,
                &Report {
                    pid: None,
                    error: Some(e.to_string()),
                    code: Some(code),
                },
            );
        }
        self.answer_waiters(Some(code));
    }

    fn started(&mut self, sandbox: &dyn Sandbox) {
        self.life.started = Some(chrono::Utc::now());
        self.life.details = sandbox.details();
        self.life.error = None;
        self.life.restarting = false;
        self.save_life();
        self.record.status = Status::Running;
        self.record.pid = Some(sandbox.pid());
        self.record.pid_start = proc_start_time(sandbox.pid());
        self.record.exit_code = None;
        self.record.finished = None;
        self.save_record();
    }

    fn exited(&mut self, status: Result<ExitStatus, BackendError>) {
        let code = match status {
            Ok(s) => s.code,
            Err(e) => {
                self.life.error = Some(e.to_string());
                self.save_life();
                super::lifecycle::KILLED
            }
        };
        self.record.status = Status::Exited;
        self.record.exit_code = Some(code);
        self.record.finished = Some(chrono::Utc::now());
        self.record.pid = None;
        self.save_record();
        self.answer_waiters(Some(code));
    }

    fn answer_waiters(&mut self, exit_code: Option<i32>) {
        for w in self.waiters.drain(..) {
            protocol::answer(
                &w,
                &Response {
                    exit_code,
                    ..Response::default()
                },
            );
        }
    }

    /// Until the workload ends: log its output, serve requests.
    fn supervise(&mut self, mut sandbox: Box<dyn Sandbox>) -> Result<ExitStatus, BackendError> {
        let io = sandbox.take_io();
        // Held, never written: a detached `-i` workload keeps an open stdin.
        let _stdin = io.stdin;
        let mut streams: Vec<(File, Stream)> = [
            (io.stdout, Stream::Stdout),
            (io.tty, Stream::Stdout),
            (io.stderr, Stream::Stderr),
        ]
        .into_iter()
        .filter_map(|(f, s)| f.map(|f| (f, s)))
        .collect();
        for (f, _) in &streams {
            set_nonblocking(f);
        }
        let sb: Arc<dyn Sandbox> = Arc::from(sandbox);
        let (wake_r, wake_w) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
            Ok(p) => p,
            // Without a wake-up pipe, wait here; the log and socket are
            // served by no one meanwhile, but the exit is still recorded.
            Err(_) => return sb.wait(),
        };
        let waiter = {
            let sb = Arc::clone(&sb);
            std::thread::spawn(move || {
                let status = sb.wait();
                drop(wake_w);
                status
            })
        };
        // `--timeout`: killed this long after each start.
        self.kill_at = self.spec.timeout.map(|t| Instant::now() + t);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let timeout = match self.kill_at {
                Some(t) => {
                    let ms = t.saturating_duration_since(Instant::now()).as_millis();
                    PollTimeout::try_from(ms.min(60_000) as i32).unwrap_or(PollTimeout::MAX)
                }
                None => PollTimeout::NONE,
            };
            let (ready, wake, listener) = {
                let mut fds = vec![
                    PollFd::new(self.listener.as_fd(), PollFlags::POLLIN),
                    PollFd::new(wake_r.as_fd(), PollFlags::POLLIN),
                ];
                fds.extend(
                    streams
                        .iter()
                        .map(|(f, _)| PollFd::new(f.as_fd(), PollFlags::POLLIN)),
                );
                match poll(&mut fds, timeout) {
                    Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
                let hit = |f: &PollFd| !f.revents().unwrap_or(PollFlags::empty()).is_empty();
                let ready: Vec<bool> = fds[2..].iter().map(hit).collect();
                (ready, hit(&fds[1]), hit(&fds[0]))
            };
            if self.kill_at.is_some_and(|t| Instant::now() >= t) {
                self.kill_at = None;
                let _ = sb.signal(libc::SIGKILL);
            }
            if listener {
                self.accept(Some(&*sb));
            }
            let mut closed = Vec::new();
            for (i, (f, stream)) in streams.iter_mut().enumerate() {
                if ready.get(i) == Some(&true) && !self.pump(f, *stream, &mut buf) {
                    closed.push(i);
                }
            }
            for i in closed.into_iter().rev() {
                streams.remove(i);
            }
            if wake {
                break;
            }
        }
        let status = waiter
            .join()
            .unwrap_or_else(|_| Err(BackendError::Setup("the wait thread panicked".into())));
        self.kill_at = None;
        // What the workload wrote just before it ended.
        for (f, stream) in streams.iter_mut() {
            while self.pump(f, *stream, &mut buf) {}
        }
        if let Some(log) = &mut self.log {
            let _ = log.flush_partial();
        }
        status
    }

    /// Move one read's worth of output into the log; false at EOF (or when
    /// nothing more is there right now).
    fn pump(&mut self, f: &mut File, stream: Stream, buf: &mut [u8]) -> bool {
        match f.read(buf) {
            Ok(0) => false,
            Ok(n) => {
                if let Some(log) = &mut self.log {
                    if let Err(e) = log.write(stream, &buf[..n]) {
                        eprintln!("sbx monitor: writing the log: {e}");
                    }
                }
                true
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => true,
            // EAGAIN: nothing now; EIO: a pty whose other side closed.
            Err(_) => false,
        }
    }

    /// Serve every pending connection.
    fn accept(&mut self, sb: Option<&dyn Sandbox>) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => match protocol::read_request_fds(&stream) {
                    Ok((req, fds)) => self.handle(stream, req, fds, sb),
                    Err(e) => protocol::answer(
                        &stream,
                        &Response {
                            error: Some(e),
                            ..Response::default()
                        },
                    ),
                },
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
    }

    /// One request; `sb` is None while the monitor waits to restart.
    fn handle(
        &mut self,
        stream: UnixStream,
        req: Request,
        fds: Vec<OwnedFd>,
        sb: Option<&dyn Sandbox>,
    ) {
        let last = self.record.exit_code;
        let done = |error: Option<String>| Response {
            exit_code: last,
            error,
            ..Response::default()
        };
        match (req, sb) {
            (Request::Signal { signal, stop }, sb) => {
                self.manual_stop |= stop;
                let r = sb.map(|sb| sb.signal(signal)).unwrap_or(Ok(()));
                protocol::answer(&stream, &done(r.err().map(|e| e.to_string())));
            }
            (
                Request::Stop {
                    signal,
                    timeout_secs,
                },
                Some(sb),
            ) => {
                self.manual_stop = true;
                let timeout = Duration::from_secs_f64(timeout_secs.clamp(0.0, 1e6));
                if timeout.is_zero() || sb.signal(signal).is_err() {
                    let _ = sb.signal(libc::SIGKILL);
                } else {
                    let at = Instant::now() + timeout;
                    self.kill_at = Some(self.kill_at.map_or(at, |t| t.min(at)));
                }
                self.waiters.push(stream);
            }
            (Request::Stop { .. }, None) => {
                self.manual_stop = true;
                protocol::answer(&stream, &done(None));
            }
            (Request::Wait, Some(_)) => self.waiters.push(stream),
            (Request::Wait, None) => protocol::answer(&stream, &done(None)),
            (
                Request::Exec {
                    process,
                    stdin,
                    stdout,
                    stderr,
                },
                Some(sb),
            ) => self.exec(stream, sb, &process, [stdin, stdout, stderr], fds),
            (Request::Exec { .. }, None) => {
                let e = format!(
                    "sandbox {} is not running",
                    crate::ids::short(&self.spec.id)
                );
                protocol::answer(&stream, &done(Some(e)));
            }
            (Request::ExecSignal { exec, signal }, _) => {
                let r = self.exec_of(exec).map(|p| p.signal(signal));
                let error = match r {
                    Some(Ok(())) => None,
                    Some(Err(e)) => Some(e.to_string()),
                    None => Some(format!("no running exec {exec}")),
                };
                protocol::answer(&stream, &done(error));
            }
            (Request::ExecResize { exec, rows, cols }, _) => {
                let r = self.exec_of(exec).map(|p| p.resize(rows, cols));
                let error = r.and_then(|r| r.err()).map(|e| e.to_string());
                protocol::answer(&stream, &done(error));
            }
        }
    }

    fn exec_of(&self, id: u32) -> Option<Arc<dyn Sandbox>> {
        let execs = self.execs.lock().unwrap_or_else(|p| p.into_inner());
        execs.get(&id).cloned()
    }

    /// Start a process in the sandbox for an `exec` client: answer its id,
    /// then (from a thread that waits for it) its exit.
    fn exec(
        &mut self,
        stream: UnixStream,
        sb: &dyn Sandbox,
        process: &crate::spec::Process,
        present: [bool; 3],
        fds: Vec<OwnedFd>,
    ) {
        let mut fds = fds.into_iter();
        let mut take = |present: bool| if present { fds.next() } else { None };
        let io = crate::backend::ProcessIo {
            stdin: take(present[0]),
            stdout: take(present[1]),
            stderr: take(present[2]),
        };
        let child: Arc<dyn Sandbox> = match sb.exec(process, io) {
            Ok(c) => Arc::from(c),
            Err(e) => {
                let exit_code = match &e {
                    BackendError::Exec { code, .. } => Some(*code),
                    _ => None,
                };
                let r = Response {
                    exit_code,
                    error: Some(e.to_string()),
                    ..Response::default()
                };
                return protocol::answer(&stream, &r);
            }
        };
        let id = self.next_exec;
        self.next_exec = self.next_exec.wrapping_add(1);
        let r = Response {
            exec_id: Some(id),
            ..Response::default()
        };
        protocol::answer(&stream, &r);
        self.execs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, Arc::clone(&child));
        let execs = Arc::clone(&self.execs);
        std::thread::spawn(move || {
            let r = match child.wait() {
                Ok(s) => Response {
                    exit_code: Some(s.code),
                    ..Response::default()
                },
                Err(e) => Response {
                    error: Some(e.to_string()),
                    ..Response::default()
                },
            };
            execs.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
            protocol::answer(&stream, &r);
        });
    }

    /// Wait `delay` before a restart, still serving requests. False when
    /// the sandbox was stopped meanwhile.
    fn backoff(&mut self, delay: Duration) -> bool {
        let until = Instant::now() + delay;
        while !self.manual_stop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            let readable = {
                let mut fds = [PollFd::new(self.listener.as_fd(), PollFlags::POLLIN)];
                let t = PollTimeout::try_from(left.as_millis().max(1) as i32)
                    .unwrap_or(PollTimeout::MAX);
                matches!(poll(&mut fds, t), Ok(n) if n > 0)
            };
            if readable {
                self.accept(None);
            }
        }
        false
    }

    /// The workload will not run again: close the socket, remove an
    /// `--rm` sandbox.
    fn finish(mut self, backend: &dyn Backend) {
        self.answer_waiters(self.record.exit_code);
        let _ = std::fs::remove_file(self.spec.dir.join(protocol::SOCKET));
        if self.life.restarting {
            self.life.restarting = false;
            self.save_life();
        }
        if self.record.auto_remove {
            let _ = backend.cleanup(self.spec);
            let _ = crate::volumes::remove_anonymous_of(self.spec);
            let _ = self.state.remove(&self.record);
        }
    }
}

fn set_nonblocking(f: &File) {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    if let Ok(flags) = fcntl(std::os::fd::AsRawFd::as_raw_fd(f), FcntlArg::F_GETFL) {
        let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
        let _ = fcntl(std::os::fd::AsRawFd::as_raw_fd(f), FcntlArg::F_SETFL(flags));
    }
}
