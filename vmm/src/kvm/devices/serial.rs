//! COM1: vm-superio's 8250 UART, its interrupt on an irqfd, its output to a
//! file (the guest kernel's console) or nowhere.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

use vm_superio::Serial as Uart;

use super::irq::IrqLine;
use crate::kvm::layout::SERIAL_PORT;

/// Where the serial output goes.
pub type SerialOut = Box<dyn Write + Send>;

/// The UART on 0x3f8..0x400.
pub struct Serial {
    uart: Uart<IrqLine, vm_superio::serial::NoEvents, SerialOut>,
}

impl Serial {
    pub fn new(irq: IrqLine, out: SerialOut) -> Self {
        Serial {
            uart: Uart::new(irq, out),
        }
    }

    /// Output to `path` (created or truncated), or discarded.
    pub fn output_to(path: Option<&Path>) -> io::Result<SerialOut> {
        Ok(match path {
            Some(path) => Box::new(File::create(path)?),
            None => Box::new(io::sink()),
        })
    }

    pub fn read(&mut self, port: u16) -> u8 {
        self.uart.read((port - SERIAL_PORT) as u8)
    }

    /// A failed write of the output is the host's problem, not the guest's:
    /// the byte is dropped.
    pub fn write(&mut self, port: u16, value: u8) {
        let _ = self.uart.write((port - SERIAL_PORT) as u8, value);
        let _ = self.uart.writer_mut().flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn bytes_written_to_thr_come_out() {
        let out = Shared::default();
        let irq = IrqLine::new(4).unwrap();
        let mut s = Serial::new(irq.try_clone().unwrap(), Box::new(out.clone()));
        for b in b"hi\n" {
            s.write(SERIAL_PORT, *b);
        }
        assert_eq!(&*out.0.lock().unwrap(), b"hi\n");
        // Line status: transmitter empty.
        assert_ne!(s.read(SERIAL_PORT + 5) & 0x20, 0);
    }

    #[test]
    fn thr_empty_interrupt_fires_the_irqfd() {
        let irq = IrqLine::new(4).unwrap();
        let mut s = Serial::new(irq.try_clone().unwrap(), Box::new(io::sink()));
        s.write(SERIAL_PORT + 1, 0x02); // IER: THR empty
        s.write(SERIAL_PORT, b'x');
        assert!(irq.eventfd().read().unwrap() >= 1);
    }
}
