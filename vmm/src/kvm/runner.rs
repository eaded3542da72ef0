//! Running a built VM: one thread per vCPU and one device thread; the first
//! vCPU to end the VM (or a Stopper) stops the rest, each kicked out of
//! KVM_RUN by a signal.

use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, Once};
use std::thread;
use std::time::Duration;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vmm_sys_util::signal::{register_signal_handler, SIGRTMIN};

use super::event_loop::EventLoop;
use super::vmm::Vmm;
use super::{KvmError, RunReport, VmExit};

/// How often a stopping VMM re-kicks vCPUs that have not left KVM_RUN (a
/// kick that lands just before KVM_RUN is entered is lost).
const KICK_INTERVAL: Duration = Duration::from_millis(5);

fn kick_signal() -> libc::c_int {
    SIGRTMIN()
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Nothing to do: delivery alone makes KVM_RUN return EINTR.
}

#[derive(Debug, Default)]
struct StopState {
    stopping: AtomicBool,
    threads: Mutex<Vec<libc::pthread_t>>,
}

/// Stops a running VM from any thread; the run then returns VmExit::Stopped.
#[derive(Debug, Clone)]
pub struct Stopper(Arc<StopState>);

impl Stopper {
    pub(super) fn new() -> Result<Self, KvmError> {
        static REGISTER: Once = Once::new();
        let mut result = Ok(());
        REGISTER.call_once(|| {
            result = register_signal_handler(kick_signal(), on_kick);
        });
        result.map_err(|e| KvmError::Io {
            what: "install the vCPU kick signal handler",
            source: std::io::Error::from_raw_os_error(e.errno()),
        })?;
        Ok(Stopper(Arc::new(StopState::default())))
    }

    /// Asks the VM to stop; returns at once.
    pub fn stop(&self) {
        self.0.stopping.store(true, Ordering::Release);
        self.kick();
    }

    pub fn is_stopping(&self) -> bool {
        self.0.stopping.load(Ordering::Acquire)
    }

    fn flag(&self) -> &AtomicBool {
        &self.0.stopping
    }

    fn kick(&self) {
        let threads = self.0.threads.lock().unwrap_or_else(|p| p.into_inner());
        for t in threads.iter() {
            // SAFETY: `t` is a vCPU thread that has not been joined yet (the
            // list is emptied before joining), so the handle is valid; the
            // signal has a handler installed that does nothing.
            unsafe { libc::pthread_kill(*t, kick_signal()) };
        }
    }

    fn register(&self, thread: libc::pthread_t) {
        self.0
            .threads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(thread);
    }

    fn forget_threads(&self) {
        self.0
            .threads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

fn io(what: &'static str) -> impl Fn(std::io::Error) -> KvmError {
    move |source| KvmError::Io { what, source }
}

impl Vmm {
    /// Runs the guest until it resets, writes the exit port, fails, or the
    /// Stopper is used.
    pub fn run(self) -> Result<RunReport, KvmError> {
        let Vmm {
            timings,
            mem,
            vm,
            vcpus,
            bus,
            queue_events,
            stopper,
        } = self;
        let stop_evt = EventFd::new(EFD_NONBLOCK).map_err(io("stop eventfd"))?;
        let event_loop = EventLoop::new(
            bus.virtio.clone(),
            queue_events,
            stop_evt.try_clone().map_err(io("stop eventfd"))?,
        )?;
        let devices = thread::Builder::new()
            .name("sbx-devices".into())
            .spawn(move || event_loop.run())
            .map_err(io("spawn the device thread"))?;

        let (tx, rx) = mpsc::channel();
        let mut handles = Vec::new();
        let count = vcpus.len();
        for mut vcpu in vcpus {
            let (bus, thread_stopper, timings, tx) =
                (bus.clone(), stopper.clone(), timings.clone(), tx.clone());
            let handle = thread::Builder::new()
                .name(format!("sbx-vcpu{}", vcpu.index()))
                .spawn(move || {
                    let result = vcpu.run(&bus, thread_stopper.flag(), &timings);
                    let _ = tx.send(result);
                    vcpu
                })
                .map_err(io("spawn a vCPU thread"))?;
            stopper.register(handle.as_pthread_t());
            handles.push(handle);
        }
        drop(tx);

        let first = loop {
            match rx.recv_timeout(KICK_INTERVAL * 2) {
                Ok(result) => break Some(result),
                Err(RecvTimeoutError::Timeout) if stopper.is_stopping() => stopper.kick(),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break None,
            }
        };
        timings.mark_exit();
        stopper.flag().store(true, Ordering::Release);
        let mut left = count - usize::from(first.is_some());
        while left > 0 {
            stopper.kick();
            match rx.recv_timeout(KICK_INTERVAL) {
                Ok(_) => left -= 1,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        stopper.forget_threads();
        let mut panicked = false;
        let mut vcpu_fds = Vec::new();
        for handle in handles {
            match handle.join() {
                Ok(vcpu) => vcpu_fds.push(vcpu),
                Err(_) => panicked = true,
            }
        }
        let _ = stop_evt.write(1);
        let _ = devices.join();
        let device_failures = bus
            .virtio
            .iter()
            .filter_map(|t| {
                let t = t.lock().unwrap_or_else(|p| p.into_inner());
                t.failure()
                    .map(|f| format!("virtio device type {}: {f}", t.device_type()))
            })
            .collect();
        let guest_resident_bytes = super::memory::resident_bytes(&mem);
        // vCPU fds close before the VM fd.
        drop(vcpu_fds);
        drop(vm);
        let exit = match first {
            Some(Ok(Some(exit))) => exit,
            Some(Ok(None)) => VmExit::Stopped,
            Some(Err(e)) => return Err(e.into()),
            None => return Err(KvmError::VcpuPanic),
        };
        if panicked {
            return Err(KvmError::VcpuPanic);
        }
        Ok(RunReport {
            exit,
            phases: timings.phases(),
            guest_resident_bytes,
            device_failures,
        })
    }
}
