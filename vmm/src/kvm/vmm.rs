//! Building a VM from a VmConfig: the boot steps, each its own function.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::arch::cpuid::{self, CpuidPolicy};
use super::arch::{boot, mptable, regs};
use super::bus::Bus;
use super::devices::irq::IrqLine;
use super::devices::serial::Serial;
use super::devices::virtio::block::Block;
use super::devices::virtio::console::Console;
use super::devices::virtio::mmio::{reg, MmioTransport};
use super::devices::virtio::net::{Net, VNET_HDR_LEN};
use super::devices::virtio::tap::Tap;
use super::devices::virtio::VirtioDevice;
use super::event_loop::QueueEvent;
use super::layout::{self, MAX_VIRTIO_DEVICES, SERIAL_IRQ};
use super::timings::Timings;
use super::vstate::vcpu::Vcpu;
use super::vstate::vm::Vm;
use super::{memory, KvmError};
use crate::config::VmConfig;

pub use super::runner::Stopper;

/// Most vCPUs: the MP table's APIC IDs leave the I/O APIC one above them.
pub const MAX_VCPUS: u8 = 254;

/// A VM ready to run.
pub struct Vmm {
    pub(super) timings: Arc<Timings>,
    pub(super) mem: Arc<GuestMemoryMmap>,
    pub(super) vm: Vm,
    pub(super) vcpus: Vec<Vcpu>,
    pub(super) bus: Arc<Bus>,
    pub(super) queue_events: Vec<QueueEvent>,
    pub(super) stopper: Stopper,
}

/// The virtio devices of a config, in guest order: disks, consoles, nets.
fn virtio_devices(config: &mut VmConfig) -> Result<Vec<Box<dyn VirtioDevice>>, KvmError> {
    let mut devices: Vec<Box<dyn VirtioDevice>> = Vec::new();
    for disk in &config.disks {
        devices.push(Box::new(Block::open(&disk.path, disk.read_only)?));
    }
    for console in config.consoles.drain(..) {
        devices.push(Box::new(Console::new(console.to_host, console.from_host)));
    }
    for net in &config.nets {
        let tap = Tap::open(&net.tap, VNET_HDR_LEN as i32)?;
        devices.push(Box::new(Net::new(tap, net.mac)));
    }
    if devices.len() > MAX_VIRTIO_DEVICES {
        return Err(KvmError::TooManyDevices {
            count: devices.len(),
            max: MAX_VIRTIO_DEVICES,
        });
    }
    Ok(devices)
}

/// The command line plus one `virtio_mmio.device=` entry per device.
pub fn full_cmdline(base: &str, devices: usize) -> String {
    let mut cmdline = base.trim().to_owned();
    for i in 0..devices {
        cmdline.push_str(&format!(
            " virtio_mmio.device=4K@{:#x}:{}",
            layout::virtio_mmio_base(i),
            layout::virtio_irq(i)
        ));
    }
    cmdline.trim_start().to_owned()
}

fn io(what: &'static str) -> impl Fn(std::io::Error) -> KvmError {
    move |source| KvmError::Io { what, source }
}

impl Vmm {
    /// Builds the VM; VMM start is now.
    pub fn new(config: VmConfig) -> Result<Self, KvmError> {
        Self::new_at(config, Instant::now())
    }

    /// Builds the VM; phase times count from `start` (e.g. process start).
    pub fn new_at(mut config: VmConfig, start: Instant) -> Result<Self, KvmError> {
        let timings = Arc::new(Timings::new(start));
        if config.vcpus == 0 || config.vcpus > MAX_VCPUS {
            return Err(KvmError::VcpuCount {
                count: config.vcpus,
                max: MAX_VCPUS,
            });
        }
        let mem = Arc::new(memory::create(config.memory_mib)?);
        timings.mark_memory_ready();
        let vm = Vm::new(&mem)?;
        timings.mark_vm_ready();

        let devices = virtio_devices(&mut config)?;
        let kernel = boot::load_kernel(&mem, &config.kernel)?;
        let initramfs = match &config.initramfs {
            Some(path) => Some(boot::load_initramfs(&mem, path, kernel.end)?),
            None => None,
        };
        let policy = CpuidPolicy::detect();
        let base_cmdline = match policy {
            CpuidPolicy::Pvm => cpuid::pvm_cmdline(&config.cmdline),
            CpuidPolicy::Host => config.cmdline.clone(),
        };
        let cmdline = full_cmdline(&base_cmdline, devices.len());
        let cmdline_len = boot::write_cmdline(&mem, &cmdline)?;
        boot::write_zero_page(&mem, &kernel, cmdline_len, initramfs)?;
        regs::write_boot_tables(&mem)?;
        mptable::write(&mem, config.vcpus)?;
        timings.mark_guest_loaded();

        let serial_irq = IrqLine::new(SERIAL_IRQ).map_err(io("serial eventfd"))?;
        vm.register_irqfd(serial_irq.eventfd(), SERIAL_IRQ)?;
        let serial_out =
            Serial::output_to(config.serial_log.as_deref()).map_err(io("serial log"))?;
        let serial = Serial::new(serial_irq, serial_out);

        let mut transports = Vec::new();
        let mut queue_events = Vec::new();
        for (i, device) in devices.into_iter().enumerate() {
            let irq = IrqLine::new(layout::virtio_irq(i)).map_err(io("virtio irq eventfd"))?;
            vm.register_irqfd(irq.eventfd(), irq.gsi())?;
            let transport = MmioTransport::new(device, mem.clone(), irq);
            for queue in 0..transport.queue_count() {
                let evt = EventFd::new(EFD_NONBLOCK).map_err(io("queue eventfd"))?;
                let addr = layout::virtio_mmio_base(i) + reg::QUEUE_NOTIFY;
                vm.register_mmio_ioevent(&evt, addr, queue as u32)?;
                queue_events.push(QueueEvent {
                    device: i,
                    queue,
                    evt,
                });
            }
            transports.push(Arc::new(Mutex::new(transport)));
        }
        let bus = Arc::new(Bus::new(serial, transports));

        let vcpus = (0..config.vcpus)
            .map(|i| Vcpu::new(&vm, mem.clone(), i, config.vcpus, kernel.entry, policy))
            .collect::<Result<Vec<_>, _>>()?;
        timings.mark_vcpus_ready();
        let stopper = Stopper::new()?;
        Ok(Vmm {
            timings,
            mem,
            vm,
            vcpus,
            bus,
            queue_events,
            stopper,
        })
    }

    /// A handle that stops the VM from another thread.
    pub fn stopper(&self) -> Stopper {
        self.stopper.clone()
    }

    /// The command line the guest gets, for a config's base line and
    /// device count.
    pub fn cmdline_for(config: &VmConfig) -> String {
        let devices = config.disks.len() + config.consoles.len() + config.nets.len();
        full_cmdline(&config.cmdline, devices)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_lists_devices_in_order() {
        assert_eq!(
            full_cmdline("console=ttyS0", 2),
            "console=ttyS0 virtio_mmio.device=4K@0xd0000000:5 \
             virtio_mmio.device=4K@0xd0001000:6"
        );
        assert_eq!(full_cmdline("", 0), "");
    }
}
