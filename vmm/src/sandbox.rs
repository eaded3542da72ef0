//! A running VM as a [`Sandbox`]: events from the guest init over the
//! control port, signals and resizes to it, the VMM process as its pid.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sbx_shared::backend::{BackendError, ExitStatus, ProcessIo, Sandbox, SandboxIo, Stats};
use sbx_shared::spec::Process;
use sbx_vm_protocol::{GuestEvent, HostMessage, LineBuffer};

use crate::engine::RunningVm;
use crate::exec::ExecTable;
use crate::VmError;

/// How long the guest may take to power off once it reported the exit.
const POWEROFF_GRACE: Duration = Duration::from_secs(10);
/// Lines of the serial console quoted when the VM dies unexpectedly.
const LOG_TAIL_LINES: usize = 3;

/// Reads [`GuestEvent`]s off the control port.
pub struct EventReader {
    port: File,
    lines: LineBuffer,
}

impl EventReader {
    pub fn new(port: File) -> Self {
        EventReader {
            port,
            lines: LineBuffer::default(),
        }
    }

    /// The next event; `Ok(None)` once the VM is gone (EOF) or, with a
    /// deadline, `Err(TimedOut)` when it passes first.
    pub fn next(&mut self, deadline: Option<Instant>) -> std::io::Result<Option<GuestEvent>> {
        let mut buf = [0u8; 4096];
        loop {
            while let Some(line) = self.lines.next_line() {
                if let Ok(e) = sbx_vm_protocol::from_line(&line) {
                    return Ok(Some(e));
                }
            }
            if let Some(d) = deadline {
                let left = d.saturating_duration_since(Instant::now());
                let mut pfd = libc::pollfd {
                    fd: self.port.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                let ms = left.as_millis().min(i32::MAX as u128) as i32;
                // SAFETY: poll(2) over one pollfd we own.
                let n = unsafe { libc::poll(&mut pfd, 1, ms) };
                if n == 0 {
                    return Err(std::io::ErrorKind::TimedOut.into());
                }
                if n < 0 {
                    continue;
                }
            }
            match self.port.read(&mut buf) {
                Ok(0) => return Ok(None),
                Ok(n) => self.lines.push(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }
}

/// Boot phases and the VM's make-up, kept as `vm.json` in the sandbox dir
/// (and printed with `SBX_DEBUG=1`).
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct BootRecord {
    pub engine: String,
    pub vmm_pid: i32,
    pub memory_mib: u64,
    pub vcpus: u8,
    pub kernel: PathBuf,
    pub root_disk: PathBuf,
    pub root_disk_built: bool,
    /// sbx's own work before the VMM starts (kernel, initramfs, disk).
    pub prepare_ms: f64,
    /// VMM start → the guest init runs, its consoles open (the boot).
    pub vmm_to_init_ms: Option<f64>,
    /// VMM start → the guest init has set the sandbox up (mounts, spec).
    pub vmm_to_init_ready_ms: Option<f64>,
    #[serde(skip)]
    pub guest_init_start_ns: u64,
    /// Guest clock at the init's first instruction: the kernel's boot.
    pub guest_kernel_ms: Option<f64>,
    /// The init's mounts and setup, on the guest clock.
    pub guest_init_ms: Option<f64>,
    /// VMM start → the workload runs.
    pub vmm_to_workload_ms: Option<f64>,
    /// Workload start → its exit reported.
    pub workload_ms: Option<f64>,
    /// Exit reported → the VMM gone.
    pub shutdown_ms: Option<f64>,
    pub vmm_exit: Option<String>,
}

pub fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

impl BootRecord {
    pub fn save(&self, dir: &Path) {
        if let Ok(text) = serde_json::to_vec_pretty(self) {
            let _ = std::fs::write(dir.join("vm.json"), text);
        }
    }

    pub fn debug_print(&self) {
        let debug = std::env::var("SBX_DEBUG").is_ok_and(|v| !v.is_empty() && v != "0");
        if !debug {
            return;
        }
        let f = |v: Option<f64>| {
            v.map(|v| format!("{v:.1} ms"))
                .unwrap_or_else(|| "-".into())
        };
        eprintln!(
            "sbx: vm: engine {}, {} MiB, {} vCPU, root disk {}; prepare {:.1} ms, vmm start → init {} (guest kernel {}) → init ready {} (init setup {}) → workload {}; workload {}, shutdown {}",
            self.engine,
            self.memory_mib,
            self.vcpus,
            if self.root_disk_built { "built" } else { "cached" },
            self.prepare_ms,
            f(self.vmm_to_init_ms),
            f(self.guest_kernel_ms),
            f(self.vmm_to_init_ready_ms),
            f(self.guest_init_ms),
            f(self.vmm_to_workload_ms),
            f(self.workload_ms),
            f(self.shutdown_ms),
        );
    }
}

/// What the VM's logs say about its end, to quote in an error: the
/// kernel's panic line when there is one, the serial console's last lines,
/// and the VMM's own last complaint.
pub fn log_tail(serial: &Path, vmm: &Path) -> String {
    let text = std::fs::read_to_string(serial).unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .map(|l| l.trim_end_matches('\r').trim())
        .filter(|l| !l.is_empty())
        .collect();
    let mut quoted: Vec<&str> = Vec::new();
    if let Some(panic) = lines.iter().find(|l| l.contains("Kernel panic")) {
        quoted.push(panic);
    }
    for l in &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..] {
        if !quoted.contains(l) {
            quoted.push(l);
        }
    }
    let mut out = String::new();
    if !quoted.is_empty() {
        out.push_str("; guest serial console:");
        for l in quoted {
            out.push_str("\n  ");
            out.push_str(l);
        }
    }
    let vmm_text = std::fs::read_to_string(vmm).unwrap_or_default();
    if let Some(last) = vmm_text.lines().rev().find(|l| !l.trim().is_empty()) {
        out.push_str(&format!("\n  VMM: {last}"));
    }
    out
}

pub struct VmSandbox {
    pub(crate) vm: Box<dyn RunningVm>,
    pub(crate) control: Arc<Mutex<File>>,
    /// Output console relays; joined once the VM has ended, so that all
    /// output is out before `wait` returns.
    pub(crate) relays: Mutex<Vec<std::thread::JoinHandle<()>>>,
    pub(crate) events: Mutex<EventReader>,
    pub(crate) io: Mutex<SandboxIo>,
    pub(crate) killed: AtomicBool,
    pub(crate) finished: Mutex<Option<ExitStatus>>,
    pub(crate) record: Mutex<BootRecord>,
    pub(crate) started_at: Instant,
    /// The host end of the stdin console, held open for the VM's life.
    pub(crate) stdin_sink: Option<Arc<File>>,
    pub(crate) dir: PathBuf,
    pub(crate) serial_log: PathBuf,
    pub(crate) vmm_log: PathBuf,
    /// Processes `sbx exec` started.
    pub(crate) execs: Arc<ExecTable>,
    /// The changes disk (a build's RUN step), and what the guest said of
    /// the tar it wrote there.
    pub(crate) changes_disk: Option<PathBuf>,
    pub(crate) changes: Mutex<Option<Result<u64, String>>>,
}

impl VmSandbox {
    fn send(&self, msg: &HostMessage) -> Result<(), BackendError> {
        if self
            .finished
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
        {
            return Ok(());
        }
        let line = sbx_vm_protocol::to_line(msg);
        let mut c = self.control.lock().unwrap_or_else(|p| p.into_inner());
        match c.write_all(&line) {
            Ok(()) => Ok(()),
            // The VM is going away: nothing left to signal.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            Err(e) => Err(BackendError::io("writing to the VM's control port", e)),
        }
    }
}

impl Sandbox for VmSandbox {
    fn pid(&self) -> i32 {
        self.vm.pid()
    }

    fn take_io(&mut self) -> SandboxIo {
        std::mem::take(&mut *self.io.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn wait(&self) -> Result<ExitStatus, BackendError> {
        if let Some(s) = *self.finished.lock().unwrap_or_else(|p| p.into_inner()) {
            return Ok(s);
        }
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        let exit = loop {
            match events.next(None) {
                Ok(Some(GuestEvent::Exit { code, signal })) => {
                    break Some(ExitStatus { code, signal })
                }
                Ok(Some(GuestEvent::Changes { bytes })) => {
                    *self.changes.lock().unwrap_or_else(|p| p.into_inner()) = Some(Ok(bytes));
                }
                Ok(Some(GuestEvent::ChangesFailed { message })) => {
                    *self.changes.lock().unwrap_or_else(|p| p.into_inner()) = Some(Err(message));
                }
                Ok(Some(e)) => {
                    self.execs.dispatch(&e);
                }
                Ok(None) | Err(_) => break None,
            }
        };
        self.execs.close("the VM has stopped");
        let exit_at = Instant::now();
        let vmm_exit = match self.vm.wait_timeout(Some(POWEROFF_GRACE)) {
            Some(s) => s,
            None => {
                self.vm.kill();
                self.vm.wait_timeout(None).unwrap_or_default()
            }
        };
        for r in std::mem::take(&mut *self.relays.lock().unwrap_or_else(|p| p.into_inner())) {
            let _ = r.join();
        }
        let status = match exit {
            Some(s) => Ok(s),
            None if self.killed.load(Ordering::SeqCst) => Ok(ExitStatus::signaled(libc::SIGKILL)),
            None => Err(VmError::Died {
                vmm: vmm_exit.clone(),
                log: log_tail(&self.serial_log, &self.vmm_log),
            }),
        };
        {
            let mut r = self.record.lock().unwrap_or_else(|p| p.into_inner());
            if exit.is_some() {
                r.workload_ms = Some(ms(exit_at - self.started_at));
                r.shutdown_ms = Some(ms(exit_at.elapsed()));
            }
            r.vmm_exit = Some(vmm_exit);
            r.save(&self.dir);
            r.debug_print();
        }
        let status = status?;
        *self.finished.lock().unwrap_or_else(|p| p.into_inner()) = Some(status);
        Ok(status)
    }

    fn signal(&self, sig: i32) -> Result<(), BackendError> {
        if sig == libc::SIGKILL {
            self.killed.store(true, Ordering::SeqCst);
            self.vm.kill();
            return Ok(());
        }
        if !(1..=64).contains(&sig) {
            return Err(BackendError::Setup(format!("invalid signal {sig}")));
        }
        self.send(&HostMessage::Signal { signal: sig })
    }

    fn stats(&self) -> Result<Stats, BackendError> {
        let pid = self.vm.pid();
        let mut stats = Stats {
            pids: 1,
            ..Stats::default()
        };
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
        // SAFETY: as above.
        let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        if let Ok(statm) = std::fs::read_to_string(format!("/proc/{pid}/statm")) {
            let rss: u64 = statm
                .split(' ')
                .nth(1)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            stats.memory_bytes = rss * page;
        }
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            if let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) {
                let f: Vec<&str> = rest.split(' ').collect();
                let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
                    + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
                stats.cpu_ns = ticks * 1_000_000_000 / tick;
            }
        }
        Ok(stats)
    }

    fn resize(&self, rows: u16, cols: u16) -> Result<(), BackendError> {
        self.send(&HostMessage::Resize { rows, cols })
    }

    /// What the workload changed, from the tar the guest init wrote to the
    /// changes disk (the VM started with [`crate::VmBackend::with_changes`]).
    fn diff(&self, out: &mut dyn Write) -> Result<(), BackendError> {
        if self
            .finished
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none()
        {
            return Err(BackendError::Setup(
                "the sandbox's changes can be taken only after it has exited".into(),
            ));
        }
        let Some(disk) = &self.changes_disk else {
            return Err(BackendError::Unsupported(
                "this VM was started without a changes disk (only build steps have one)".into(),
            ));
        };
        let reported = self
            .changes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let bytes = match reported {
            Some(Ok(bytes)) => bytes,
            Some(Err(m)) => return Err(BackendError::Setup(format!("vm: {m}"))),
            None => {
                return Err(BackendError::Setup(
                    "vm: the guest did not report the sandbox's changes".into(),
                ))
            }
        };
        crate::changes::copy_checked(disk, bytes, out)
            .map_err(|e| BackendError::Setup(e.to_string()))
    }

    /// Another process in the running VM, through the guest init.
    fn exec(&self, process: &Process, io: ProcessIo) -> Result<Box<dyn Sandbox>, BackendError> {
        if self
            .finished
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
        {
            return Err(BackendError::Setup("the VM is not running".into()));
        }
        self.execs.start(&self.control, self.vm.pid(), process, io)
    }

    /// The engine, the VM's make-up and its boot phases (also `vm.json`).
    fn details(&self) -> serde_json::Value {
        let record = self.record.lock().unwrap_or_else(|p| p.into_inner());
        serde_json::to_value(&*record).unwrap_or(serde_json::Value::Null)
    }
}
