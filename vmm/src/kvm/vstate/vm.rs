//! The KVM VM: guest memory slots (registered before any vCPU exists: under
//! PVM a later registration costs milliseconds), the in-kernel PIC, I/O APIC
//! and PIT, and the irqfd/ioeventfd plumbing devices use.

use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{IoEventAddress, Kvm, VmFd};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion, MemoryRegionAddress};
use vmm_sys_util::eventfd::EventFd;

/// Address KVM needs for the TSS on Intel (three pages, below 4 GiB, outside RAM).
const KVM_TSS_ADDRESS: usize = 0xfffb_d000;

/// VM setup failures, each naming the KVM operation.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("open /dev/kvm: {0}")]
    OpenKvm(kvm_ioctls::Error),
    #[error("KVM API version {0}, 12 is required")]
    ApiVersion(i32),
    #[error("KVM_CREATE_VM: {0}")]
    CreateVm(kvm_ioctls::Error),
    #[error("KVM_SET_TSS_ADDR: {0}")]
    SetTssAddress(kvm_ioctls::Error),
    #[error("KVM_CREATE_IRQCHIP: {0}")]
    CreateIrqChip(kvm_ioctls::Error),
    #[error("KVM_CREATE_PIT2: {0}")]
    CreatePit(kvm_ioctls::Error),
    #[error("KVM_SET_USER_MEMORY_REGION slot {slot} at {guest_addr:#x} ({size} bytes): {source}")]
    SetMemoryRegion {
        slot: u32,
        guest_addr: u64,
        size: u64,
        source: kvm_ioctls::Error,
    },
    #[error("host address of guest memory at {guest_addr:#x}")]
    HostAddress { guest_addr: u64 },
    #[error("KVM_IRQFD for GSI {gsi}: {source}")]
    RegisterIrqfd { gsi: u32, source: kvm_ioctls::Error },
    #[error("KVM_IOEVENTFD at {addr:#x}: {source}")]
    RegisterIoevent {
        addr: u64,
        source: kvm_ioctls::Error,
    },
}

/// An open VM with its memory and interrupt controllers in place.
pub struct Vm {
    kvm: Kvm,
    fd: VmFd,
}

impl Vm {
    /// Opens /dev/kvm, creates the VM, registers `mem` and creates the
    /// in-kernel irqchip and PIT.
    pub fn new(mem: &GuestMemoryMmap) -> Result<Self, VmError> {
        let kvm = Kvm::new().map_err(VmError::OpenKvm)?;
        let version = kvm.get_api_version();
        if version != 12 {
            return Err(VmError::ApiVersion(version));
        }
        let fd = kvm.create_vm().map_err(VmError::CreateVm)?;
        let vm = Vm { kvm, fd };
        vm.register_memory(mem)?;
        vm.fd
            .set_tss_address(KVM_TSS_ADDRESS)
            .map_err(VmError::SetTssAddress)?;
        vm.fd.create_irq_chip().map_err(VmError::CreateIrqChip)?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        vm.fd.create_pit2(pit).map_err(VmError::CreatePit)?;
        Ok(vm)
    }

    fn register_memory(&self, mem: &GuestMemoryMmap) -> Result<(), VmError> {
        for (slot, region) in mem.iter().enumerate() {
            let slot = slot as u32;
            let guest_addr = region.start_addr().0;
            let size = region.len();
            let host = region
                .get_host_address(MemoryRegionAddress(0))
                .map_err(|_| VmError::HostAddress { guest_addr })? as u64;
            let region = kvm_userspace_memory_region {
                slot,
                flags: 0,
                guest_phys_addr: guest_addr,
                memory_size: size,
                userspace_addr: host,
            };
            // SAFETY: the host range is a live mapping owned by `mem`, which
            // the VMM keeps until the VM fd is closed.
            unsafe { self.fd.set_user_memory_region(region) }.map_err(|source| {
                VmError::SetMemoryRegion {
                    slot,
                    guest_addr,
                    size,
                    source,
                }
            })?;
        }
        Ok(())
    }

    pub fn kvm(&self) -> &Kvm {
        &self.kvm
    }

    pub fn fd(&self) -> &VmFd {
        &self.fd
    }

    /// Interrupt `gsi` fires whenever `evt` is written.
    pub fn register_irqfd(&self, evt: &EventFd, gsi: u32) -> Result<(), VmError> {
        self.fd
            .register_irqfd(evt, gsi)
            .map_err(|source| VmError::RegisterIrqfd { gsi, source })
    }

    /// A 32-bit guest write of `value` at MMIO `addr` signals `evt` without
    /// a VM exit.
    pub fn register_mmio_ioevent(
        &self,
        evt: &EventFd,
        addr: u64,
        value: u32,
    ) -> Result<(), VmError> {
        self.fd
            .register_ioevent(evt, &IoEventAddress::Mmio(addr), value)
            .map_err(|source| VmError::RegisterIoevent { addr, source })
    }
}
