//! Engine `kvm` behind [`RunningVm`]: sbx's own VMM (vmm/src/kvm) runs in
//! this process, on a thread of its own, so the sandbox's pid is sbx's and
//! stopping the VM is the VMM's [`Stopper`](crate::kvm::Stopper).

use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Mutex;
use std::time::Duration;

use crate::config::VmConfig;
use crate::engine::RunningVm;
use crate::kvm::{KvmError, Stopper, Vmm};

pub struct KvmVm {
    stopper: Stopper,
    done: Mutex<Receiver<String>>,
    /// How the run ended, once it has.
    ended: Mutex<Option<String>>,
}

/// Build the VM (on its thread: guest memory, vCPUs) and start it.
pub fn spawn(config: VmConfig) -> Result<KvmVm, KvmError> {
    let (built_tx, built_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("sbx-vmm".into())
        .spawn(move || {
            let vmm = match Vmm::new(config) {
                Ok(v) => v,
                Err(e) => {
                    let _ = built_tx.send(Err(e));
                    return;
                }
            };
            let _ = built_tx.send(Ok(vmm.stopper()));
            let how = match vmm.run() {
                Ok(report) => format!("{:?}", report.exit),
                Err(e) => e.to_string(),
            };
            let _ = done_tx.send(how);
        })
        .map_err(|source| KvmError::Io {
            what: "spawn the VMM thread",
            source,
        })?;
    let stopper = built_rx.recv().map_err(|_| KvmError::Io {
        what: "start the VMM thread",
        source: std::io::ErrorKind::BrokenPipe.into(),
    })??;
    Ok(KvmVm {
        stopper,
        done: Mutex::new(done_rx),
        ended: Mutex::new(None),
    })
}

impl RunningVm for KvmVm {
    fn pid(&self) -> i32 {
        std::process::id() as i32
    }

    fn wait_timeout(&self, limit: Option<Duration>) -> Option<String> {
        let mut ended = self.ended.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(how) = &*ended {
            return Some(how.clone());
        }
        let done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        let how = match limit {
            None => done.recv().unwrap_or_else(|_| "VMM thread lost".into()),
            Some(l) => match done.recv_timeout(l) {
                Ok(h) => h,
                Err(RecvTimeoutError::Timeout) => return None,
                Err(RecvTimeoutError::Disconnected) => "VMM thread lost".into(),
            },
        };
        *ended = Some(how.clone());
        Some(how)
    }

    fn kill(&self) {
        self.stopper.stop();
    }
}
