//! virtio-console (virtio 1.2, 5.3) with a single port and no multiport
//! feature: the receive queue is fed from a host descriptor, what the
//! guest transmits is written to another.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use virtio_queue::{Queue, QueueT, Reader, Writer};
use vm_memory::GuestMemoryMmap;

use super::{VirtioDevice, VirtioError, TYPE_CONSOLE, VIRTIO_F_VERSION_1};

pub const RX_QUEUE: usize = 0;
pub const TX_QUEUE: usize = 1;
const QUEUE_SIZES: &[u16] = &[256, 256];
/// How much host input is read at a time.
const INPUT_CHUNK: usize = 4096;
/// Largest transmit chain copied out at once.
const MAX_TX_BYTES: usize = 1 << 20;

/// One console port.
pub struct Console {
    to_host: Option<File>,
    from_host: Option<File>,
    /// Host input read but not yet placed in guest buffers.
    pending: VecDeque<u8>,
    input_closed: bool,
}

impl Console {
    pub fn new(to_host: Option<OwnedFd>, from_host: Option<OwnedFd>) -> Self {
        Console {
            to_host: to_host.map(File::from),
            from_host: from_host.map(File::from),
            pending: VecDeque::new(),
            input_closed: false,
        }
    }

    fn transmit(&mut self, q: &mut Queue, mem: &GuestMemoryMmap) -> Result<bool, VirtioError> {
        let mut used = false;
        while let Some(chain) = q.pop_descriptor_chain(mem) {
            let head = chain.head_index();
            if let Ok(reader) = Reader::new(mem, chain) {
                let mut bytes = Vec::new();
                let limit = reader.available_bytes().min(MAX_TX_BYTES) as u64;
                if reader.take(limit).read_to_end(&mut bytes).is_ok() {
                    if let Some(out) = &mut self.to_host {
                        // A host that stopped listening loses the output;
                        // the guest is not told.
                        if out.write_all(&bytes).is_err() {
                            self.to_host = None;
                        }
                    }
                }
            }
            q.add_used(mem, head, 0)
                .map_err(|source| VirtioError::Queue {
                    queue: TX_QUEUE,
                    source,
                })?;
            used = true;
        }
        Ok(used)
    }

    /// Moves pending input into the guest's receive buffers.
    fn deliver(&mut self, q: &mut Queue, mem: &GuestMemoryMmap) -> Result<bool, VirtioError> {
        let mut used = false;
        while !self.pending.is_empty() {
            let Some(chain) = q.pop_descriptor_chain(mem) else {
                break;
            };
            let head = chain.head_index();
            let mut written = 0;
            if let Ok(mut writer) = Writer::new(mem, chain) {
                let n = writer.available_bytes().min(self.pending.len());
                let bytes: Vec<u8> = self.pending.drain(..n).collect();
                if writer.write_all(&bytes).is_ok() {
                    written = n as u32;
                }
            }
            q.add_used(mem, head, written)
                .map_err(|source| VirtioError::Queue {
                    queue: RX_QUEUE,
                    source,
                })?;
            used = true;
        }
        Ok(used)
    }
}

impl VirtioDevice for Console {
    fn device_type(&self) -> u32 {
        TYPE_CONSOLE
    }

    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1
    }

    fn queue_max_sizes(&self) -> &[u16] {
        QUEUE_SIZES
    }

    /// cols, rows, max_nr_ports, emerg_wr: unused without their features.
    fn config(&self) -> Vec<u8> {
        vec![0; 12]
    }

    fn process_queue(
        &mut self,
        queue: usize,
        queues: &mut [Queue],
        mem: &GuestMemoryMmap,
    ) -> Result<bool, VirtioError> {
        match (queue, queues) {
            (TX_QUEUE, [_, tx]) => self.transmit(tx, mem),
            (RX_QUEUE, [rx, _]) => self.deliver(rx, mem),
            _ => Ok(false),
        }
    }

    fn input_fd(&self) -> Option<RawFd> {
        self.from_host.as_ref().map(|f| f.as_raw_fd())
    }

    fn wants_input(&self) -> bool {
        self.from_host.is_some() && !self.input_closed && self.pending.is_empty()
    }

    fn process_input(
        &mut self,
        queues: &mut [Queue],
        mem: &GuestMemoryMmap,
    ) -> Result<bool, VirtioError> {
        let Some(input) = &mut self.from_host else {
            return Ok(false);
        };
        let mut buf = [0u8; INPUT_CHUNK];
        match input.read(&mut buf) {
            Ok(0) | Err(_) => self.input_closed = true,
            Ok(n) => self.pending.extend(&buf[..n]),
        }
        match queues.get_mut(RX_QUEUE) {
            Some(rx) if rx.ready() => self.deliver(rx, mem),
            _ => Ok(false),
        }
    }

    fn reset(&mut self) {
        self.pending.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{TestDriver, BUFFERS};
    use super::*;

    fn console() -> (TestDriver, std::io::PipeReader, std::io::PipeWriter) {
        let (from_guest, to_host) = std::io::pipe().unwrap();
        let (from_host, to_guest) = std::io::pipe().unwrap();
        let c = Console::new(Some(to_host.into()), Some(from_host.into()));
        let mut d = TestDriver::new(Box::new(c));
        d.init(0);
        (d, from_guest, to_guest)
    }

    #[test]
    fn transmit_reaches_the_host() {
        let (mut d, mut from_guest, _to_guest) = console();
        d.write_bytes(BUFFERS, b"hello ");
        d.write_bytes(BUFFERS + 0x100, b"host");
        d.add_chain(
            TX_QUEUE,
            &[(BUFFERS, 6, false), (BUFFERS + 0x100, 4, false)],
        );
        d.notify(TX_QUEUE);
        assert_eq!(d.used(TX_QUEUE).len(), 1);
        drop(d);
        let mut out = String::new();
        from_guest.read_to_string(&mut out).unwrap();
        assert_eq!(out, "hello host");
    }

    #[test]
    fn host_input_fills_receive_buffers() {
        let (mut d, _from_guest, mut to_guest) = console();
        assert!(!d.transport.wants_input() || d.transport.input_fd().is_some());
        // Input before any buffer: kept until one is posted.
        to_guest.write_all(b"0123456789").unwrap();
        d.transport.input_ready();
        assert!(d.used(RX_QUEUE).is_empty());
        assert!(!d.transport.wants_input(), "pending input stops reading");
        d.add_chain(RX_QUEUE, &[(BUFFERS, 4, true)]);
        d.add_chain(RX_QUEUE, &[(BUFFERS + 0x100, 64, true)]);
        d.notify(RX_QUEUE);
        let used = d.used(RX_QUEUE);
        assert_eq!(used.iter().map(|u| u.1).collect::<Vec<_>>(), vec![4, 6]);
        assert_eq!(d.read_bytes(BUFFERS, 4), b"0123");
        assert_eq!(d.read_bytes(BUFFERS + 0x100, 6), b"456789");
        assert!(d.transport.wants_input());
    }

    #[test]
    fn closed_input_stops_reading() {
        let (mut d, _from_guest, to_guest) = console();
        drop(to_guest);
        d.transport.input_ready();
        assert!(!d.transport.wants_input());
    }
}
