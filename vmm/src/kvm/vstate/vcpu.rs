//! vCPUs: their boot state (CPUID, MSRs, registers, local APIC) and the
//! run loop that dispatches port and MMIO exits to the bus until the guest
//! asks to stop, fails, or the VMM stops it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use kvm_bindings::{kvm_mp_state, KVM_MAX_CPUID_ENTRIES, KVM_MP_STATE_RUNNABLE};
use kvm_ioctls::{VcpuExit, VcpuFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::vm::Vm;
use crate::kvm::arch::cpuid::{self, CpuidPolicy};
use crate::kvm::arch::regs;
use crate::kvm::bus::{Bus, BusAction};
use crate::kvm::timings::Timings;
use crate::kvm::VmExit;

/// vCPU setup and run failures, each naming the vCPU and the operation.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    #[error("vCPU {index}: {op}: {source}")]
    Kvm {
        index: u8,
        op: &'static str,
        source: kvm_ioctls::Error,
    },
    #[error("vCPU {index}: KVM_SET_MSRS set {set} of {wanted} MSRs")]
    SetMsrs {
        index: u8,
        set: usize,
        wanted: usize,
    },
    #[error("vCPU {index}: the guest triple-faulted (KVM_EXIT_SHUTDOWN) at rip {rip:#x}")]
    TripleFault { index: u8, rip: u64 },
    #[error(
        "vCPU {index}: KVM could not emulate an instruction (KVM_EXIT_INTERNAL_ERROR, \
         suberror {suberror}) at rip {rip:#x}"
    )]
    EmulationFailure { index: u8, suberror: u32, rip: u64 },
    #[error("vCPU {index}: VM entry failed, hardware reason {reason:#x}")]
    FailEntry { index: u8, reason: u64 },
    #[error("vCPU {index}: unexpected exit {exit}")]
    UnexpectedExit { index: u8, exit: String },
}

/// Instruction byte of `int3`, and the #BP vector it raises.
const INT3: u8 = 0xcc;
const BP_VECTOR: u8 = 3;

/// One vCPU, configured and ready to run.
pub struct Vcpu {
    index: u8,
    fd: VcpuFd,
    mem: Arc<GuestMemoryMmap>,
}

impl Vcpu {
    fn kvm_err(index: u8, op: &'static str) -> impl Fn(kvm_ioctls::Error) -> VcpuError {
        move |source| VcpuError::Kvm { index, op, source }
    }

    /// Creates vCPU `index` of `count` and sets its boot state. The boot
    /// vCPU (0) starts at `entry` in long mode; the others wait for INIT and
    /// SIPI, as on hardware.
    pub fn new(
        vm: &Vm,
        mem: Arc<GuestMemoryMmap>,
        index: u8,
        count: u8,
        entry: u64,
        policy: CpuidPolicy,
    ) -> Result<Self, VcpuError> {
        let err = |op| Self::kvm_err(index, op);
        let fd = vm
            .fd()
            .create_vcpu(u64::from(index))
            .map_err(err("KVM_CREATE_VCPU"))?;
        let mut cpuid = vm
            .kvm()
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(err("KVM_GET_SUPPORTED_CPUID"))?;
        cpuid::filter(&mut cpuid, index, count, policy);
        fd.set_cpuid2(&cpuid).map_err(err("KVM_SET_CPUID2"))?;

        let msrs = regs::boot_msrs();
        let set = fd.set_msrs(&msrs).map_err(err("KVM_SET_MSRS"))?;
        if set != msrs.as_slice().len() {
            return Err(VcpuError::SetMsrs {
                index,
                set,
                wanted: msrs.as_slice().len(),
            });
        }
        let lapic = fd.get_lapic().map_err(err("KVM_GET_LAPIC"))?;
        fd.set_lapic(&regs::virtual_wire_lapic(lapic))
            .map_err(err("KVM_SET_LAPIC"))?;
        fd.set_fpu(&regs::boot_fpu()).map_err(err("KVM_SET_FPU"))?;
        if index == 0 {
            let sregs = fd.get_sregs().map_err(err("KVM_GET_SREGS"))?;
            fd.set_sregs(&regs::long_mode_sregs(sregs))
                .map_err(err("KVM_SET_SREGS"))?;
            fd.set_regs(&regs::entry_regs(entry))
                .map_err(err("KVM_SET_REGS"))?;
            let runnable = kvm_mp_state {
                mp_state: KVM_MP_STATE_RUNNABLE,
            };
            fd.set_mp_state(runnable).map_err(err("KVM_SET_MP_STATE"))?;
        }
        Ok(Vcpu { index, fd, mem })
    }

    pub fn index(&self) -> u8 {
        self.index
    }

    fn rip(&self) -> u64 {
        self.fd.get_regs().map(|r| r.rip).unwrap_or(0)
    }

    /// The guest instruction byte at RIP, through the guest's page tables.
    fn byte_at_rip(&self) -> Option<u8> {
        let rip = self.fd.get_regs().ok()?.rip;
        let t = self.fd.translate_gva(rip).ok()?;
        if t.valid == 0 {
            return None;
        }
        self.mem.read_obj(GuestAddress(t.physical_address)).ok()
    }

    /// KVM's instruction emulator (all a guest kernel gets under PVM)
    /// cannot deliver `int3` in long mode. Linux runs one at boot (its
    /// alternatives self-test): do what the CPU would — raise #BP with RIP
    /// past the instruction. Returns false when the failure is another one.
    fn deliver_int3(&mut self) -> bool {
        if self.byte_at_rip() != Some(INT3) {
            return false;
        }
        let (Ok(mut regs), Ok(mut events)) = (self.fd.get_regs(), self.fd.get_vcpu_events()) else {
            return false;
        };
        regs.rip += 1;
        events.exception.injected = 1;
        events.exception.nr = BP_VECTOR;
        events.exception.has_error_code = 0;
        events.exception.error_code = 0;
        self.fd.set_regs(&regs).is_ok() && self.fd.set_vcpu_events(&events).is_ok()
    }

    /// Runs until the guest ends the VM, fails, or `stop` is set (then
    /// returns None). A signal to this thread interrupts KVM_RUN.
    pub fn run(
        &mut self,
        bus: &Bus,
        stop: &AtomicBool,
        timings: &Arc<Timings>,
    ) -> Result<Option<VmExit>, VcpuError> {
        let index = self.index;
        let mut first = true;
        loop {
            if stop.load(Ordering::Acquire) {
                return Ok(None);
            }
            if first {
                timings.mark_first_run();
                first = false;
            }
            let action = match self.fd.run() {
                Ok(VcpuExit::IoOut(port, data)) => {
                    timings.mark_first_io();
                    bus.pio_write(port, data)
                }
                Ok(VcpuExit::IoIn(port, data)) => {
                    timings.mark_first_io();
                    bus.pio_read(port, data);
                    BusAction::None
                }
                Ok(VcpuExit::MmioRead(addr, data)) => {
                    timings.mark_first_io();
                    bus.mmio_read(addr, data);
                    BusAction::None
                }
                Ok(VcpuExit::MmioWrite(addr, data)) => {
                    timings.mark_first_io();
                    bus.mmio_write(addr, data);
                    BusAction::None
                }
                // With the in-kernel irqchip KVM handles HLT; if one comes
                // out anyway, run again.
                Ok(VcpuExit::Hlt) | Ok(VcpuExit::IrqWindowOpen) | Ok(VcpuExit::Intr) => {
                    BusAction::None
                }
                Ok(VcpuExit::Shutdown) => {
                    return Err(VcpuError::TripleFault {
                        index,
                        rip: self.rip(),
                    })
                }
                Ok(VcpuExit::InternalError) => {
                    if self.deliver_int3() {
                        continue;
                    }
                    let run = self.fd.get_kvm_run();
                    // SAFETY: after KVM_EXIT_INTERNAL_ERROR the kernel filled
                    // the `internal` member of the exit union.
                    let suberror = unsafe { run.__bindgen_anon_1.internal.suberror };
                    return Err(VcpuError::EmulationFailure {
                        index,
                        suberror,
                        rip: self.rip(),
                    });
                }
                Ok(VcpuExit::FailEntry(reason, _cpu)) => {
                    return Err(VcpuError::FailEntry { index, reason })
                }
                Ok(VcpuExit::SystemEvent(kind, _)) => match kind {
                    kvm_bindings::KVM_SYSTEM_EVENT_RESET => BusAction::Exit(VmExit::Reset),
                    _ => BusAction::Exit(VmExit::Shutdown),
                },
                Ok(other) => {
                    return Err(VcpuError::UnexpectedExit {
                        index,
                        exit: format!("{other:?}"),
                    })
                }
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => BusAction::None,
                Err(source) => {
                    return Err(VcpuError::Kvm {
                        index,
                        op: "KVM_RUN",
                        source,
                    })
                }
            };
            if let BusAction::Exit(exit) = action {
                return Ok(Some(exit));
            }
        }
    }
}
