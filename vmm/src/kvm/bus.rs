//! Port and MMIO dispatch from vCPU exits to the devices, and the two ways
//! a guest ends the VM from there: the i8042 reset and the exit port.

use std::sync::{Arc, Mutex, MutexGuard};

use super::devices::i8042::I8042;
use super::devices::rtc::Rtc;
use super::devices::serial::Serial;
use super::devices::virtio::mmio::MmioTransport;
use super::layout::{
    EXIT_PORT, I8042_COMMAND_PORT, I8042_DATA_PORT, RTC_DATA_PORT, RTC_INDEX_PORT, SERIAL_PORT,
    SERIAL_PORT_LEN, VIRTIO_MMIO_SIZE, VIRTIO_MMIO_START,
};
use super::VmExit;

/// What the vCPU does after an access.
#[derive(Debug, PartialEq, Eq)]
pub enum BusAction {
    None,
    Exit(VmExit),
}

/// Locks a device; a device whose lock was poisoned by a panicking thread
/// is still used (its state is plain registers).
fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Every device a vCPU can reach.
pub struct Bus {
    pub serial: Mutex<Serial>,
    pub i8042: Mutex<I8042>,
    pub rtc: Mutex<Rtc>,
    pub virtio: Vec<Arc<Mutex<MmioTransport>>>,
}

impl Bus {
    pub fn new(serial: Serial, virtio: Vec<Arc<Mutex<MmioTransport>>>) -> Self {
        Bus {
            serial: Mutex::new(serial),
            i8042: Mutex::new(I8042::default()),
            rtc: Mutex::new(Rtc::default()),
            virtio,
        }
    }

    /// A guest `in`: unclaimed ports read as all ones, as on a PC.
    pub fn pio_read(&self, port: u16, data: &mut [u8]) {
        let value = match port {
            p if (SERIAL_PORT..SERIAL_PORT + SERIAL_PORT_LEN).contains(&p) => {
                lock(&self.serial).read(p)
            }
            I8042_DATA_PORT | I8042_COMMAND_PORT => lock(&self.i8042).read(port),
            RTC_INDEX_PORT | RTC_DATA_PORT => lock(&self.rtc).read(port),
            _ => 0xff,
        };
        data.fill(0xff);
        if let Some(first) = data.first_mut() {
            *first = value;
        }
    }

    /// A guest `out`.
    pub fn pio_write(&self, port: u16, data: &[u8]) -> BusAction {
        let Some(&value) = data.first() else {
            return BusAction::None;
        };
        match port {
            p if (SERIAL_PORT..SERIAL_PORT + SERIAL_PORT_LEN).contains(&p) => {
                lock(&self.serial).write(p, value)
            }
            I8042_DATA_PORT | I8042_COMMAND_PORT if lock(&self.i8042).write(port, value) => {
                return BusAction::Exit(VmExit::Reset);
            }
            I8042_DATA_PORT | I8042_COMMAND_PORT => {}
            RTC_INDEX_PORT | RTC_DATA_PORT => lock(&self.rtc).write(port, value),
            EXIT_PORT => return BusAction::Exit(VmExit::ExitCode(value)),
            _ => {}
        }
        BusAction::None
    }

    fn transport(&self, addr: u64) -> Option<(&Mutex<MmioTransport>, u64)> {
        let offset = addr.checked_sub(VIRTIO_MMIO_START)?;
        let index = usize::try_from(offset / VIRTIO_MMIO_SIZE).ok()?;
        self.virtio
            .get(index)
            .map(|t| (&**t, offset % VIRTIO_MMIO_SIZE))
    }

    /// A guest MMIO load outside RAM: unclaimed addresses read as zero.
    pub fn mmio_read(&self, addr: u64, data: &mut [u8]) {
        match self.transport(addr) {
            Some((t, offset)) => lock(t).read(offset, data),
            None => data.fill(0),
        }
    }

    /// A guest MMIO store outside RAM.
    pub fn mmio_write(&self, addr: u64, data: &[u8]) {
        if let Some((t, offset)) = self.transport(addr) {
            lock(t).write(offset, data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kvm::devices::irq::IrqLine;

    fn bus() -> Bus {
        let serial = Serial::new(IrqLine::new(4).unwrap(), Box::new(std::io::sink()));
        Bus::new(serial, Vec::new())
    }

    #[test]
    fn reset_and_exit_port_end_the_vm() {
        let b = bus();
        assert_eq!(b.pio_write(0x64, &[0xfe]), BusAction::Exit(VmExit::Reset));
        assert_eq!(
            b.pio_write(EXIT_PORT, &[7]),
            BusAction::Exit(VmExit::ExitCode(7))
        );
        assert_eq!(b.pio_write(0x80, &[1]), BusAction::None);
    }

    #[test]
    fn unclaimed_ports_and_mmio_read_as_floating() {
        let b = bus();
        let mut d = [0u8; 2];
        b.pio_read(0x1234, &mut d);
        assert_eq!(d, [0xff, 0xff]);
        let mut m = [1u8; 4];
        b.mmio_read(VIRTIO_MMIO_START, &mut m);
        assert_eq!(m, [0; 4]);
        b.mmio_write(VIRTIO_MMIO_START + 0x70, &[1, 0, 0, 0]);
    }
}
