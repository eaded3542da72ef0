//! Phase timestamps of one VM run, from VMM start to the guest's exit.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Milestones, each recorded once by whichever thread reaches it first.
#[derive(Debug)]
pub struct Timings {
    start: Instant,
    memory_ready: OnceLock<Instant>,
    vm_ready: OnceLock<Instant>,
    guest_loaded: OnceLock<Instant>,
    vcpus_ready: OnceLock<Instant>,
    first_run: OnceLock<Instant>,
    first_io: OnceLock<Instant>,
    exit: OnceLock<Instant>,
}

/// The milestones as offsets from VMM start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PhaseTimes {
    /// Guest RAM mapped.
    pub memory_ready: Option<Duration>,
    /// VM created, memory registered, irqchip and PIT in place.
    pub vm_ready: Option<Duration>,
    /// Kernel, initramfs, command line and boot tables written.
    pub guest_loaded: Option<Duration>,
    /// vCPUs created and configured, devices wired.
    pub vcpus_ready: Option<Duration>,
    /// First KVM_RUN entered: the guest's first instruction follows.
    pub first_run: Option<Duration>,
    /// First port or MMIO access by the guest (serial, console, ...).
    pub first_io: Option<Duration>,
    /// The guest ended the VM (or the VMM stopped it).
    pub exit: Option<Duration>,
}

impl Timings {
    pub fn new(start: Instant) -> Self {
        Timings {
            start,
            memory_ready: OnceLock::new(),
            vm_ready: OnceLock::new(),
            guest_loaded: OnceLock::new(),
            vcpus_ready: OnceLock::new(),
            first_run: OnceLock::new(),
            first_io: OnceLock::new(),
            exit: OnceLock::new(),
        }
    }

    fn mark(cell: &OnceLock<Instant>) {
        let _ = cell.set(Instant::now());
    }

    pub fn mark_memory_ready(&self) {
        Self::mark(&self.memory_ready)
    }
    pub fn mark_vm_ready(&self) {
        Self::mark(&self.vm_ready)
    }
    pub fn mark_guest_loaded(&self) {
        Self::mark(&self.guest_loaded)
    }
    pub fn mark_vcpus_ready(&self) {
        Self::mark(&self.vcpus_ready)
    }
    pub fn mark_first_run(&self) {
        if self.first_run.get().is_none() {
            Self::mark(&self.first_run)
        }
    }
    pub fn mark_first_io(&self) {
        if self.first_io.get().is_none() {
            Self::mark(&self.first_io)
        }
    }
    pub fn mark_exit(&self) {
        Self::mark(&self.exit)
    }

    pub fn phases(&self) -> PhaseTimes {
        let since = |cell: &OnceLock<Instant>| cell.get().map(|t| t.duration_since(self.start));
        PhaseTimes {
            memory_ready: since(&self.memory_ready),
            vm_ready: since(&self.vm_ready),
            guest_loaded: since(&self.guest_loaded),
            vcpus_ready: since(&self.vcpus_ready),
            first_run: since(&self.first_run),
            first_io: since(&self.first_io),
            exit: since(&self.exit),
        }
    }
}

impl std::fmt::Display for PhaseTimes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Option<Duration>| match d {
            Some(d) => format!("{:.3} ms", d.as_secs_f64() * 1e3),
            None => "-".into(),
        };
        write!(
            f,
            "memory {} · vm {} · loaded {} · vcpus {} · first KVM_RUN {} · first I/O {} · exit {}",
            ms(self.memory_ready),
            ms(self.vm_ready),
            ms(self.guest_loaded),
            ms(self.vcpus_ready),
            ms(self.first_run),
            ms(self.first_io),
            ms(self.exit)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_marks_win() {
        let t = Timings::new(Instant::now());
        t.mark_first_io();
        let a = t.phases().first_io;
        std::thread::sleep(Duration::from_millis(2));
        t.mark_first_io();
        assert_eq!(t.phases().first_io, a);
        assert!(t.phases().exit.is_none());
    }
}
