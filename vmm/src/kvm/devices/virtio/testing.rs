//! A driver for unit tests: negotiates through the MMIO registers, lays out
//! split virtqueues in guest memory, builds descriptor chains by hand, and
//! reads the used ring back.

use std::sync::Arc;

use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

use super::mmio::{reg, MmioTransport};
use super::{status, VirtioDevice, VIRTIO_F_VERSION_1};
use crate::kvm::devices::irq::IrqLine;
use crate::kvm::memory;

pub const QUEUE_SIZE: u16 = 8;
const QUEUE_AREA: u64 = 0x10000;
/// Buffers for tests start here.
pub const BUFFERS: u64 = 0x100000;

pub struct TestDriver {
    pub mem: Arc<GuestMemoryMmap>,
    pub transport: MmioTransport,
    pub irq: IrqLine,
    next_desc: Vec<u16>,
    last_used: Vec<u16>,
}

fn queue_base(q: usize) -> u64 {
    QUEUE_AREA + q as u64 * 0x1000
}

impl TestDriver {
    pub fn new(device: Box<dyn VirtioDevice>) -> Self {
        let mem = Arc::new(memory::create(16).unwrap());
        let irq = IrqLine::new(5).unwrap();
        let queues = device.queue_max_sizes().len();
        let transport = MmioTransport::new(device, mem.clone(), irq.try_clone().unwrap());
        TestDriver {
            mem,
            transport,
            irq,
            next_desc: vec![0; queues],
            last_used: vec![0; queues],
        }
    }

    pub fn read32(&mut self, offset: u64) -> u32 {
        let mut b = [0u8; 4];
        self.transport.read(offset, &mut b);
        u32::from_le_bytes(b)
    }

    pub fn write32(&mut self, offset: u64, value: u32) {
        self.transport.write(offset, &value.to_le_bytes());
    }

    /// Negotiates VERSION_1 plus `extra` features, sets up every queue
    /// with QUEUE_SIZE entries and sets DRIVER_OK.
    pub fn init(&mut self, extra: u64) {
        let features = VIRTIO_F_VERSION_1 | extra;
        self.write32(reg::STATUS, 0);
        self.write32(reg::STATUS, status::ACKNOWLEDGE);
        self.write32(reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        for page in 0..2u32 {
            self.write32(reg::DRIVER_FEATURES_SEL, page);
            self.write32(reg::DRIVER_FEATURES, (features >> (32 * page)) as u32);
        }
        let s = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;
        self.write32(reg::STATUS, s);
        assert_ne!(self.read32(reg::STATUS) & status::FEATURES_OK, 0);
        for q in 0..self.next_desc.len() {
            let base = queue_base(q);
            self.write32(reg::QUEUE_SEL, q as u32);
            self.write32(reg::QUEUE_NUM, u32::from(QUEUE_SIZE));
            self.write32(reg::QUEUE_DESC_LOW, base as u32);
            self.write32(reg::QUEUE_DRIVER_LOW, (base + 0x80) as u32);
            self.write32(reg::QUEUE_DEVICE_LOW, (base + 0x100) as u32);
            self.write32(reg::QUEUE_READY, 1);
        }
        self.write32(reg::STATUS, s | status::DRIVER_OK);
        assert!(self.transport.is_active());
    }

    /// Publishes a chain of (address, length, device-writable) buffers on
    /// `queue` and returns its head.
    pub fn add_chain(&mut self, queue: usize, buffers: &[(u64, u32, bool)]) -> u16 {
        let base = queue_base(queue);
        let head = self.next_desc[queue];
        for (i, (addr, len, write)) in buffers.iter().enumerate() {
            let index = (head + i as u16) % QUEUE_SIZE;
            let last = i + 1 == buffers.len();
            let flags = u16::from(!last) | if *write { 2 } else { 0 };
            let next = (index + 1) % QUEUE_SIZE;
            let d = GuestAddress(base + u64::from(index) * 16);
            self.mem.write_obj(*addr, d).unwrap();
            self.mem.write_obj(*len, d.unchecked_add(8)).unwrap();
            self.mem.write_obj(flags, d.unchecked_add(12)).unwrap();
            self.mem
                .write_obj(if last { 0 } else { next }, d.unchecked_add(14))
                .unwrap();
        }
        self.next_desc[queue] = (head + buffers.len() as u16) % QUEUE_SIZE;
        let avail = GuestAddress(base + 0x80);
        let idx: u16 = self.mem.read_obj(avail.unchecked_add(2)).unwrap();
        let slot = avail.unchecked_add(4 + 2 * u64::from(idx % QUEUE_SIZE));
        self.mem.write_obj(head, slot).unwrap();
        self.mem
            .write_obj(idx.wrapping_add(1), avail.unchecked_add(2))
            .unwrap();
        head
    }

    pub fn notify(&mut self, queue: usize) {
        self.write32(reg::QUEUE_NOTIFY, queue as u32);
    }

    /// Used elements (head, length) published since the last call.
    pub fn used(&mut self, queue: usize) -> Vec<(u32, u32)> {
        let used = GuestAddress(queue_base(queue) + 0x100);
        let idx: u16 = self.mem.read_obj(used.unchecked_add(2)).unwrap();
        let mut out = Vec::new();
        while self.last_used[queue] != idx {
            let e = used.unchecked_add(4 + 8 * u64::from(self.last_used[queue] % QUEUE_SIZE));
            let id: u32 = self.mem.read_obj(e).unwrap();
            let len: u32 = self.mem.read_obj(e.unchecked_add(4)).unwrap();
            out.push((id, len));
            self.last_used[queue] = self.last_used[queue].wrapping_add(1);
        }
        out
    }

    pub fn write_bytes(&self, addr: u64, bytes: &[u8]) {
        self.mem.write_slice(bytes, GuestAddress(addr)).unwrap();
    }

    pub fn read_bytes(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }
}
