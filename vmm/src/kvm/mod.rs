//! Engine `kvm`: sbx's own VMM on the rust-vmm crates.
//!
//! The boot steps, in order: map guest memory; create the VM and register
//! the memory (before any vCPU); load kernel, initramfs, command line, boot
//! tables and MP table; wire the serial port, the i8042 and the virtio-mmio
//! devices to irqfds and ioeventfds; create the vCPUs; run them, with one
//! device thread, until the guest resets, writes the exit port, or fails.
//!
//! ```no_run
//! use sbx_vmm::config::VmConfig;
//! # fn f(config: VmConfig) -> Result<(), sbx_vmm::kvm::KvmError> {
//! let report = sbx_vmm::kvm::Vmm::new(config)?.run()?;
//! println!("{:?} after {}", report.exit, report.phases);
//! # Ok(()) }
//! ```

pub mod arch;
pub mod bus;
pub mod devices;
pub mod event_loop;
pub mod layout;
pub mod memory;
mod runner;
pub mod timings;
mod vmm;
pub mod vstate;

pub use timings::PhaseTimes;
pub use vmm::{Stopper, Vmm};

/// How the guest ended the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmExit {
    /// CPU reset through the i8042 (Linux `reboot=k`, a test guest's exit).
    Reset,
    /// A byte written to the exit port (layout::EXIT_PORT).
    ExitCode(u8),
    /// KVM reported a system shutdown event.
    Shutdown,
    /// The VMM was asked to stop it (Stopper::stop).
    Stopped,
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub exit: VmExit,
    pub phases: PhaseTimes,
    /// Guest RAM the host allocated by the end of the run.
    pub guest_resident_bytes: u64,
    /// virtio devices that stopped serving a misbehaving driver, and why.
    pub device_failures: Vec<String>,
}

/// Everything that can stop the engine, by phase.
#[derive(Debug, thiserror::Error)]
pub enum KvmError {
    #[error("guest memory: {0}")]
    Memory(#[from] memory::MemoryError),
    #[error("create VM: {0}")]
    Vm(#[from] vstate::vm::VmError),
    #[error("load guest: {0}")]
    Boot(#[from] arch::boot::BootError),
    #[error("boot tables: {0}")]
    Regs(#[from] arch::regs::RegsError),
    #[error("MP table: {0}")]
    MpTable(#[from] arch::mptable::MpTableError),
    #[error("{0}")]
    Vcpu(#[from] vstate::vcpu::VcpuError),
    #[error("disk: {0}")]
    Block(#[from] devices::virtio::block::BlockError),
    #[error("net: {0}")]
    Tap(#[from] devices::virtio::tap::TapError),
    #[error("device event loop: {0}")]
    EventLoop(#[from] event_loop::EventLoopError),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("{count} vCPUs: between 1 and {max}")]
    VcpuCount { count: u8, max: u8 },
    #[error("{count} virtio devices: at most {max}")]
    TooManyDevices { count: usize, max: usize },
    #[error("a vCPU thread panicked")]
    VcpuPanic,
}

/// Builds the VM for `config` and runs it to its end.
pub fn run(config: crate::config::VmConfig) -> Result<RunReport, KvmError> {
    Vmm::new(config)?.run()
}
