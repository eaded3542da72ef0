//! `sbx exec` on the host side that holds the VM (its monitor): processes
//! started in the running guest through the guest init's control port,
//! each with the host's id. The event reader ([`VmSandbox::wait`]) hands
//! exec events to the [`ExecTable`]; a writer thread per exec passes its
//! output to the caller's descriptors and acknowledges it, an input thread
//! sends its stdin within the window the guest acknowledges.
//!
//! The guest is not trusted: output beyond what the window allows is
//! dropped, unknown ids are ignored, and a guest that never answers gets a
//! timeout.
//!
//! [`VmSandbox::wait`]: sbx_shared::backend::Sandbox::wait

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sbx_shared::backend::{BackendError, ExitStatus, ProcessIo, Sandbox, SandboxIo, Stats};
use sbx_shared::spec::Process;
use sbx_vm_protocol::{
    decode, encode, ExecProcess, GuestEvent, HostMessage, EXEC_CHUNK, EXEC_WINDOW,
};

/// How long the guest may take to start an exec's process.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Output queued for the writer beyond this means the guest ignores its
/// window: the rest is dropped.
const QUEUE_LIMIT: u64 = 4 * EXEC_WINDOW;

/// A piece of output: (stream, bytes).
type Chunk = (u8, Vec<u8>);

#[derive(Default)]
struct State {
    /// The guest's answer to the start: its pid, or (code, message).
    started: Option<Result<i32, (i32, String)>>,
    exit: Option<Result<ExitStatus, String>>,
    /// Input bytes the guest has passed on, in all.
    input_acked: u64,
    /// Output bytes handed to the writer and not yet written.
    queued: u64,
}

struct Session {
    state: Mutex<State>,
    changed: Condvar,
    output: Mutex<Option<Sender<Chunk>>>,
}

impl Session {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn end(&self, exit: Result<ExitStatus, String>) {
        let mut s = self.lock();
        if s.started.is_none() {
            if let Err(m) = &exit {
                s.started = Some(Err((125, m.clone())));
            }
        }
        s.exit.get_or_insert(exit);
        drop(s);
        drop(self.output.lock().unwrap_or_else(|p| p.into_inner()).take());
        self.changed.notify_all();
    }
}

/// The execs of one VM.
#[derive(Default)]
pub struct ExecTable {
    next: AtomicU32,
    sessions: Mutex<HashMap<u32, Arc<Session>>>,
    /// Set once the VM has ended: why no exec can start.
    closed: Mutex<Option<String>>,
}

fn send(control: &Mutex<File>, msg: &HostMessage) -> std::io::Result<()> {
    let line = sbx_vm_protocol::to_line(msg);
    control
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .write_all(&line)
}

impl ExecTable {
    fn get(&self, id: u32) -> Option<Arc<Session>> {
        let map = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&id).cloned()
    }

    fn remove(&self, id: u32) -> Option<Arc<Session>> {
        let mut map = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&id)
    }

    /// Take an exec event; false when `e` is not one.
    pub fn dispatch(&self, e: &GuestEvent) -> bool {
        match e {
            GuestEvent::ExecStarted { id, pid } => {
                if let Some(s) = self.get(*id) {
                    s.lock().started.get_or_insert(Ok(*pid));
                    s.changed.notify_all();
                }
            }
            GuestEvent::ExecStartFailed { id, code, message } => {
                if let Some(s) = self.remove(*id) {
                    s.lock()
                        .started
                        .get_or_insert(Err((*code, message.clone())));
                    s.end(Err(message.clone()));
                }
            }
            GuestEvent::ExecOutput { id, stream, data } => {
                let (Some(s), Some(data)) = (self.get(*id), decode(data)) else {
                    return true;
                };
                let mut st = s.lock();
                if st.queued + data.len() as u64 > QUEUE_LIMIT {
                    return true;
                }
                st.queued += data.len() as u64;
                drop(st);
                let tx = s.output.lock().unwrap_or_else(|p| p.into_inner()).clone();
                if let Some(tx) = tx {
                    let _ = tx.send((*stream, data));
                }
            }
            GuestEvent::ExecInputAck { id, bytes } => {
                if let Some(s) = self.get(*id) {
                    let mut st = s.lock();
                    st.input_acked = st.input_acked.max(*bytes);
                    drop(st);
                    s.changed.notify_all();
                }
            }
            GuestEvent::ExecExit { id, code, signal } => {
                if let Some(s) = self.remove(*id) {
                    s.end(Ok(ExitStatus {
                        code: *code,
                        signal: *signal,
                    }));
                }
            }
            _ => return false,
        }
        true
    }

    /// The VM ended: every exec with it, and no new one.
    pub fn close(&self, why: &str) {
        *self.closed.lock().unwrap_or_else(|p| p.into_inner()) = Some(why.to_string());
        let all: Vec<_> = self
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .collect();
        for (_, s) in all {
            s.end(Err(why.to_string()));
        }
    }

    /// Start `process` in the guest with its streams on `io`.
    pub fn start(
        self: &Arc<Self>,
        control: &Arc<Mutex<File>>,
        vmm_pid: i32,
        process: &Process,
        io: ProcessIo,
    ) -> Result<Box<dyn Sandbox>, BackendError> {
        let id = self.next.fetch_add(1, Ordering::SeqCst);
        let session = Arc::new(Session {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            output: Mutex::new(None),
        });
        let (tx, rx) = mpsc::channel();
        *session.output.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
        {
            // Registered under the same lock `close` takes: a VM that ends
            // from here on ends this exec too.
            let closed = self.closed.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(why) = &*closed {
                return Err(BackendError::Setup(why.clone()));
            }
            let mut map = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
            map.insert(id, Arc::clone(&session));
        }
        let tty_size = if process.terminal {
            io.stdout.as_ref().and_then(winsize)
        } else {
            None
        };
        let msg = HostMessage::Exec {
            id,
            process: ExecProcess {
                args: process.args.clone(),
                env: process.env.clone(),
                cwd: process.cwd.clone(),
                user: process.user.clone(),
                terminal: process.terminal,
                stdin: process.stdin,
                tty_size,
                rlimits: process
                    .rlimits
                    .iter()
                    .map(|r| (r.resource, r.soft, r.hard))
                    .collect(),
            },
        };
        if let Err(e) = send(control, &msg) {
            self.remove(id);
            return Err(BackendError::io("writing to the VM's control port", e));
        }
        let deadline = Instant::now() + START_TIMEOUT;
        let mut st = session.lock();
        while st.started.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                drop(st);
                self.remove(id);
                return Err(BackendError::Setup(format!(
                    "the VM's guest init did not start the process within {}s",
                    START_TIMEOUT.as_secs()
                )));
            }
            st = session
                .changed
                .wait_timeout(st, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        if let Some(Err((code, message))) = st.started.clone() {
            return Err(match code {
                126 | 127 => BackendError::Exec { message, code },
                _ => BackendError::Setup(message),
            });
        }
        drop(st);

        let ProcessIo {
            stdin,
            stdout,
            stderr,
        } = io;
        let writer = {
            let (session, control) = (Arc::clone(&session), Arc::clone(control));
            std::thread::spawn(move || write_output(id, rx, stdout, stderr, &session, &control))
        };
        if let (Some(input), true) = (stdin, process.stdin) {
            let (session, control) = (Arc::clone(&session), Arc::clone(control));
            std::thread::spawn(move || send_input(id, input, &session, &control));
        }
        Ok(Box::new(VmExec {
            id,
            vmm_pid,
            session,
            control: Arc::clone(control),
            writer: Mutex::new(Some(writer)),
        }))
    }
}

fn winsize(fd: &OwnedFd) -> Option<(u16, u16)> {
    // SAFETY: TIOCGWINSZ writes into the winsize we own.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: as above, on a descriptor we hold.
    let ok = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) } == 0;
    (ok && ws.ws_row > 0).then_some((ws.ws_row, ws.ws_col))
}

/// Pass the exec's output on, acknowledging it; until the exec ends.
fn write_output(
    id: u32,
    rx: Receiver<Chunk>,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    session: &Session,
    control: &Mutex<File>,
) {
    let mut dests = [stdout.map(File::from), stderr.map(File::from)];
    let mut total = 0u64;
    while let Ok((stream, data)) = rx.recv() {
        let i = if stream == 2 { 1 } else { 0 };
        if let Some(d) = &mut dests[i] {
            // A reader that went away gets no more; the guest still gets
            // its acknowledgements.
            if d.write_all(&data).is_err() {
                dests[i] = None;
            }
        }
        total += data.len() as u64;
        let mut st = session.lock();
        st.queued = st.queued.saturating_sub(data.len() as u64);
        drop(st);
        let _ = send(control, &HostMessage::ExecAck { id, bytes: total });
    }
}

/// Send the caller's input to the exec within the window, then its end.
fn send_input(id: u32, input: OwnedFd, session: &Session, control: &Mutex<File>) {
    let mut input = File::from(input);
    let mut buf = vec![0u8; EXEC_CHUNK];
    let mut sent = 0u64;
    let ended = |s: &State| s.exit.is_some();
    loop {
        // Poll, so that an exec that ends while its caller types nothing
        // lets this thread go.
        let mut pfd = libc::pollfd {
            fd: input.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll(2) over one pollfd we own.
        let n = unsafe { libc::poll(&mut pfd, 1, 200) };
        if ended(&session.lock()) {
            return;
        }
        if n <= 0 {
            continue;
        }
        let n = match input.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut st = session.lock();
        while sent - st.input_acked >= EXEC_WINDOW && !ended(&st) {
            st = session
                .changed
                .wait_timeout(st, Duration::from_millis(200))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        if ended(&st) {
            return;
        }
        drop(st);
        let data = encode(&buf[..n]);
        if send(control, &HostMessage::ExecInput { id, data }).is_err() {
            return;
        }
        sent += n as u64;
    }
    let _ = send(control, &HostMessage::ExecInputEof { id });
}

/// A process `sbx exec` started in the VM.
struct VmExec {
    id: u32,
    vmm_pid: i32,
    session: Arc<Session>,
    control: Arc<Mutex<File>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl VmExec {
    fn send(&self, msg: &HostMessage) -> Result<(), BackendError> {
        if self.session.lock().exit.is_some() {
            return Ok(());
        }
        match send(&self.control, msg) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            Err(e) => Err(BackendError::io("writing to the VM's control port", e)),
        }
    }
}

impl Sandbox for VmExec {
    fn pid(&self) -> i32 {
        self.vmm_pid
    }

    fn take_io(&mut self) -> SandboxIo {
        SandboxIo::default()
    }

    fn wait(&self) -> Result<ExitStatus, BackendError> {
        let mut st = self.session.lock();
        while st.exit.is_none() {
            st = self
                .session
                .changed
                .wait(st)
                .unwrap_or_else(|p| p.into_inner());
        }
        let exit = st.exit.clone();
        drop(st);
        // All output is out before the exit is.
        if let Some(w) = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = w.join();
        }
        match exit {
            Some(Ok(s)) => Ok(s),
            Some(Err(m)) => Err(BackendError::Setup(m)),
            None => Err(BackendError::Setup(
                "the exec ended without a status".into(),
            )),
        }
    }

    fn signal(&self, sig: i32) -> Result<(), BackendError> {
        if !(1..=64).contains(&sig) {
            return Err(BackendError::Setup(format!("invalid signal {sig}")));
        }
        self.send(&HostMessage::ExecSignal {
            id: self.id,
            signal: sig,
        })
    }

    fn stats(&self) -> Result<Stats, BackendError> {
        Ok(Stats::default())
    }

    fn resize(&self, rows: u16, cols: u16) -> Result<(), BackendError> {
        self.send(&HostMessage::ExecResize {
            id: self.id,
            rows,
            cols,
        })
    }
}
