//! The virtio-mmio transport, register layout version 2 (virtio 1.2,
//! 4.2.2): feature negotiation, device status, queue setup, notification
//! and the interrupt status a driver acknowledges.

use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;

use super::{status, VirtioDevice, INT_CONFIG_CHANGE, INT_USED_RING, VIRTIO_F_VERSION_1};
use crate::kvm::devices::irq::IrqLine;

/// Register offsets (virtio 1.2, table 4.1).
pub mod reg {
    pub const MAGIC_VALUE: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
    pub const VENDOR_ID: u64 = 0x00c;
    pub const DEVICE_FEATURES: u64 = 0x010;
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    pub const DRIVER_FEATURES: u64 = 0x020;
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    pub const QUEUE_SEL: u64 = 0x030;
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    pub const QUEUE_NUM: u64 = 0x038;
    pub const QUEUE_READY: u64 = 0x044;
    pub const QUEUE_NOTIFY: u64 = 0x050;
    pub const INTERRUPT_STATUS: u64 = 0x060;
    pub const INTERRUPT_ACK: u64 = 0x064;
    pub const STATUS: u64 = 0x070;
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
    pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
    pub const CONFIG_GENERATION: u64 = 0x0fc;
    pub const CONFIG: u64 = 0x100;
}

/// "virt" in little endian.
pub const MAGIC: u32 = 0x7472_6976;
pub const VERSION: u32 = 2;
/// Vendor ID reported to the driver ("SBX\0").
pub const VENDOR: u32 = 0x0058_4253;

/// One device behind its MMIO window.
pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    mem: Arc<GuestMemoryMmap>,
    irq: IrqLine,
    queues: Vec<Queue>,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    status: u32,
    interrupt_status: u32,
    active: bool,
    /// Why the device stopped serving the driver, once it did.
    failure: Option<String>,
}

impl MmioTransport {
    pub fn new(device: Box<dyn VirtioDevice>, mem: Arc<GuestMemoryMmap>, irq: IrqLine) -> Self {
        let queues = device
            .queue_max_sizes()
            .iter()
            // Queue::new only fails for sizes that are not a power of two.
            .filter_map(|size| Queue::new(*size).ok())
            .collect();
        MmioTransport {
            device,
            mem,
            irq,
            queues,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            status: 0,
            interrupt_status: 0,
            active: false,
            failure: None,
        }
    }

    pub fn device_type(&self) -> u32 {
        self.device.device_type()
    }

    pub fn queue_count(&self) -> usize {
        self.queues.len()
    }

    pub fn is_active(&self) -> bool {
        self.active
    }

    pub fn status(&self) -> u32 {
        self.status
    }

    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    pub fn input_fd(&self) -> Option<std::os::fd::RawFd> {
        self.device.input_fd()
    }

    /// True when the event loop should wait for the device's input.
    pub fn wants_input(&self) -> bool {
        self.active && self.failure.is_none() && self.device.wants_input()
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    fn selected_queue_ref(&self) -> Option<&Queue> {
        self.queues.get(self.queue_sel as usize)
    }

    /// A 32-bit register or configuration space read at `offset`.
    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= reg::CONFIG {
            super::read_config_bytes(&self.device.config(), offset - reg::CONFIG, data);
            return;
        }
        let value = match offset {
            reg::MAGIC_VALUE => MAGIC,
            reg::VERSION => VERSION,
            reg::DEVICE_ID => self.device.device_type(),
            reg::VENDOR_ID => VENDOR,
            reg::DEVICE_FEATURES => match self.device_features_sel {
                0 => self.device.features() as u32,
                1 => (self.device.features() >> 32) as u32,
                _ => 0,
            },
            reg::QUEUE_NUM_MAX => self.selected_queue_ref().map_or(0, |q| q.max_size().into()),
            reg::QUEUE_READY => self.selected_queue_ref().map_or(0, |q| q.ready().into()),
            reg::INTERRUPT_STATUS => self.interrupt_status,
            reg::STATUS => self.status,
            reg::CONFIG_GENERATION => 0,
            _ => 0,
        };
        write_le(data, value);
    }

    /// A 32-bit register or configuration space write at `offset`.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= reg::CONFIG {
            // No device here has writable configuration.
            return;
        }
        let Some(value) = read_le(data) else {
            return;
        };
        let set_address = |q: &mut Queue, which: u64, value: u32| match which {
            reg::QUEUE_DESC_LOW => q.set_desc_table_address(Some(value), None),
            reg::QUEUE_DESC_HIGH => q.set_desc_table_address(None, Some(value)),
            reg::QUEUE_DRIVER_LOW => q.set_avail_ring_address(Some(value), None),
            reg::QUEUE_DRIVER_HIGH => q.set_avail_ring_address(None, Some(value)),
            reg::QUEUE_DEVICE_LOW => q.set_used_ring_address(Some(value), None),
            _ => q.set_used_ring_address(None, Some(value)),
        };
        match offset {
            reg::DEVICE_FEATURES_SEL => self.device_features_sel = value,
            reg::DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            reg::DRIVER_FEATURES if self.status & status::FEATURES_OK == 0 => {
                match self.driver_features_sel {
                    0 => {
                        self.driver_features =
                            (self.driver_features & !0xffff_ffff) | u64::from(value)
                    }
                    1 => {
                        self.driver_features =
                            (self.driver_features & 0xffff_ffff) | (u64::from(value) << 32)
                    }
                    _ => {}
                }
            }
            reg::QUEUE_SEL => self.queue_sel = value,
            reg::QUEUE_NUM if !self.active => {
                if let Some(q) = self.selected_queue() {
                    q.set_size(value as u16);
                }
            }
            reg::QUEUE_READY if !self.active => {
                if let Some(q) = self.selected_queue() {
                    q.set_ready(value == 1);
                }
            }
            reg::QUEUE_DESC_LOW
            | reg::QUEUE_DESC_HIGH
            | reg::QUEUE_DRIVER_LOW
            | reg::QUEUE_DRIVER_HIGH
            | reg::QUEUE_DEVICE_LOW
            | reg::QUEUE_DEVICE_HIGH
                if !self.active =>
            {
                if let Some(q) = self.selected_queue() {
                    set_address(q, offset, value);
                }
            }
            reg::QUEUE_NOTIFY => self.notify(value as usize),
            reg::INTERRUPT_ACK => self.interrupt_status &= !value,
            reg::STATUS => self.set_status(value),
            _ => {}
        }
    }

    fn set_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        // The driver may only add bits (virtio 1.2, 2.1.1).
        if value & self.status != self.status {
            return;
        }
        let new = value & !self.status;
        if new & status::FEATURES_OK != 0 {
            let offered = self.device.features();
            let subset = self.driver_features & !offered == 0;
            let modern = self.driver_features & VIRTIO_F_VERSION_1 != 0;
            if !(subset && modern) {
                // Leave FEATURES_OK clear: the driver reads it back and gives up.
                self.status = value & !status::FEATURES_OK;
                return;
            }
        }
        self.status = value;
        if new & status::DRIVER_OK != 0 && self.status & status::FEATURES_OK != 0 {
            self.activate();
        }
    }

    fn activate(&mut self) {
        let mem = &*self.mem;
        let bad = self
            .queues
            .iter()
            .position(|q| q.ready() && !q.is_valid(mem));
        if let Some(index) = bad {
            self.fail(format!("queue {index} is ready but its rings are invalid"));
            return;
        }
        self.device.activate(self.driver_features);
        self.active = true;
    }

    fn reset(&mut self) {
        for q in &mut self.queues {
            q.reset();
        }
        self.device.reset();
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.queue_sel = 0;
        self.status = 0;
        self.interrupt_status = 0;
        self.active = false;
        self.failure = None;
    }

    fn fail(&mut self, why: String) {
        if self.failure.is_none() {
            eprintln!(
                "sbx-vmm: virtio device type {} needs reset: {why}",
                self.device.device_type()
            );
        }
        self.failure = Some(why);
        self.status |= status::DEVICE_NEEDS_RESET;
        self.raise(INT_CONFIG_CHANGE);
    }

    fn raise(&mut self, bits: u32) {
        self.interrupt_status |= bits;
        // A full eventfd counter still has the interrupt pending.
        let _ = self.irq.trigger();
    }

    /// The driver notified `queue` (QueueNotify, or its ioeventfd).
    pub fn notify(&mut self, queue: usize) {
        if !self.active || self.failure.is_some() || queue >= self.queues.len() {
            return;
        }
        if !self.queues[queue].ready() {
            return;
        }
        match self
            .device
            .process_queue(queue, &mut self.queues, &self.mem)
        {
            Ok(true) => self.raise(INT_USED_RING),
            Ok(false) => {}
            Err(e) => self.fail(e.to_string()),
        }
    }

    /// The device's input descriptor is readable.
    pub fn input_ready(&mut self) {
        if !self.wants_input() {
            return;
        }
        match self.device.process_input(&mut self.queues, &self.mem) {
            Ok(true) => self.raise(INT_USED_RING),
            Ok(false) => {}
            Err(e) => self.fail(e.to_string()),
        }
    }
}

fn write_le(data: &mut [u8], value: u32) {
    let bytes = value.to_le_bytes();
    let n = data.len().min(4);
    data[..n].copy_from_slice(&bytes[..n]);
}

fn read_le(data: &[u8]) -> Option<u32> {
    match data.len() {
        4 => Some(u32::from_le_bytes([data[0], data[1], data[2], data[3]])),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::block::Block;
    use super::super::testing::TestDriver;
    use super::*;

    fn driver() -> (TestDriver, std::path::PathBuf) {
        let path = std::env::temp_dir().join(format!(
            "sbx-mmio-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::write(&path, vec![0u8; 4096]).unwrap();
        let block = Block::open(&path, false).unwrap();
        (TestDriver::new(Box::new(block)), path)
    }

    #[test]
    fn identifies_as_a_version_2_device() {
        let (mut d, path) = driver();
        assert_eq!(d.read32(reg::MAGIC_VALUE), MAGIC);
        assert_eq!(d.read32(reg::VERSION), 2);
        assert_eq!(d.read32(reg::DEVICE_ID), super::super::TYPE_BLOCK);
        assert_eq!(d.read32(reg::VENDOR_ID), VENDOR);
        d.write32(reg::DEVICE_FEATURES_SEL, 1);
        assert_eq!(d.read32(reg::DEVICE_FEATURES), 1, "VERSION_1 in page 1");
        d.write32(reg::QUEUE_SEL, 0);
        assert_eq!(d.read32(reg::QUEUE_NUM_MAX), 256);
        d.write32(reg::QUEUE_SEL, 5);
        assert_eq!(d.read32(reg::QUEUE_NUM_MAX), 0, "no such queue");
        // Config space: capacity 8 sectors.
        let mut cap = [0u8; 8];
        d.transport.read(reg::CONFIG, &mut cap);
        assert_eq!(u64::from_le_bytes(cap), 8);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn features_ok_needs_version_1_and_a_subset() {
        let (mut d, path) = driver();
        d.write32(reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        d.write32(reg::DRIVER_FEATURES_SEL, 0);
        d.write32(reg::DRIVER_FEATURES, 0);
        d.write32(
            reg::STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
        );
        assert_eq!(
            d.read32(reg::STATUS) & status::FEATURES_OK,
            0,
            "legacy driver refused"
        );

        d.write32(reg::DRIVER_FEATURES_SEL, 1);
        d.write32(reg::DRIVER_FEATURES, 1 | 2); // VERSION_1 + an unoffered bit
        d.write32(
            reg::STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
        );
        assert_eq!(
            d.read32(reg::STATUS) & status::FEATURES_OK,
            0,
            "unoffered bit refused"
        );
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn reset_and_interrupt_ack() {
        let (mut d, path) = driver();
        d.init(0);
        let hdr = super::super::testing::BUFFERS;
        d.write_bytes(hdr, &[4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // flush
        d.add_chain(0, &[(hdr, 16, false), (hdr + 0x100, 1, true)]);
        d.notify(0);
        assert_eq!(d.read32(reg::INTERRUPT_STATUS), INT_USED_RING);
        assert!(d.irq.eventfd().read().unwrap() >= 1, "irqfd signalled");
        d.write32(reg::INTERRUPT_ACK, INT_USED_RING);
        assert_eq!(d.read32(reg::INTERRUPT_STATUS), 0);

        d.write32(reg::STATUS, 0);
        assert_eq!(d.read32(reg::STATUS), 0);
        assert!(!d.transport.is_active());
        d.write32(reg::QUEUE_SEL, 0);
        assert_eq!(d.read32(reg::QUEUE_READY), 0, "queues reset");
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn driver_ok_with_rings_outside_memory_fails_the_device_not_the_vmm() {
        let (mut d, path) = driver();
        d.write32(reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        d.write32(reg::DRIVER_FEATURES_SEL, 1);
        d.write32(reg::DRIVER_FEATURES, 1);
        let s = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;
        d.write32(reg::STATUS, s);
        d.write32(reg::QUEUE_SEL, 0);
        d.write32(reg::QUEUE_NUM, 8);
        d.write32(reg::QUEUE_DESC_LOW, 0xffff_0000);
        d.write32(reg::QUEUE_DESC_HIGH, 0xff);
        d.write32(reg::QUEUE_READY, 1);
        d.write32(reg::STATUS, s | status::DRIVER_OK);
        assert_ne!(d.read32(reg::STATUS) & status::DEVICE_NEEDS_RESET, 0);
        assert!(d.transport.failure().is_some());
        d.notify(0); // ignored, no panic
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn odd_widths_and_offsets_are_ignored() {
        let (mut d, path) = driver();
        d.transport.write(reg::STATUS, &[1, 0]); // 2-byte register write
        assert_eq!(d.read32(reg::STATUS), 0);
        let mut b = [0u8; 1];
        d.transport.read(0x0ec, &mut b);
        d.transport.read(reg::CONFIG + 0xeff, &mut b);
        assert_eq!(b, [0]);
        std::fs::remove_file(path).unwrap();
    }
}
