//! virtio-net (virtio 1.2, 5.1) over a frame backend (a tap): one receive
//! and one transmit queue, a MAC address, no offloads and no mergeable
//! receive buffers, so each buffer holds one 12-byte header and one frame.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};

use virtio_queue::{Queue, QueueT, Reader, Writer};
use vm_memory::GuestMemoryMmap;

use super::tap::Tap;
use super::{VirtioDevice, VirtioError, TYPE_NET, VIRTIO_F_VERSION_1};

pub const RX_QUEUE: usize = 0;
pub const TX_QUEUE: usize = 1;
const QUEUE_SIZES: &[u16] = &[256, 256];
/// Feature bit: the device has a MAC address (virtio 1.2, 5.1.3).
pub const VIRTIO_NET_F_MAC: u64 = 1 << 5;
/// struct virtio_net_hdr with num_buffers, as VERSION_1 requires.
pub const VNET_HDR_LEN: usize = 12;
/// Header plus the largest frame a backend hands over (64 KiB + Ethernet).
const MAX_FRAME: usize = VNET_HDR_LEN + 65_550;

/// Where frames go and come from: a tap, or a socket in tests.
pub trait FrameBackend: Send + AsRawFd {
    /// Reads one frame, header first.
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Sends one frame, header first.
    fn send(&mut self, frame: &[u8]) -> io::Result<usize>;
}

impl FrameBackend for Tap {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_frame(buf)
    }
    fn send(&mut self, frame: &[u8]) -> io::Result<usize> {
        self.write_frame(frame)
    }
}

/// A network interface.
pub struct Net<B: FrameBackend> {
    backend: B,
    mac: [u8; 6],
    /// A frame read from the backend, waiting for a receive buffer.
    pending: Option<Vec<u8>>,
    /// Frames the backend refused or the guest's buffers could not hold.
    pub dropped: u64,
}

impl<B: FrameBackend> Net<B> {
    pub fn new(backend: B, mac: [u8; 6]) -> Self {
        Net {
            backend,
            mac,
            pending: None,
            dropped: 0,
        }
    }

    fn transmit(&mut self, q: &mut Queue, mem: &GuestMemoryMmap) -> Result<bool, VirtioError> {
        let mut used = false;
        while let Some(chain) = q.pop_descriptor_chain(mem) {
            let head = chain.head_index();
            if let Ok(reader) = Reader::new(mem, chain) {
                let mut frame = Vec::new();
                let len = reader.available_bytes();
                let ok = (VNET_HDR_LEN..=MAX_FRAME).contains(&len)
                    && reader.take(len as u64).read_to_end(&mut frame).is_ok();
                if !ok || self.backend.send(&frame).is_err() {
                    self.dropped += 1;
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

    fn deliver(&mut self, q: &mut Queue, mem: &GuestMemoryMmap) -> Result<bool, VirtioError> {
        let Some(frame) = self.pending.take() else {
            return Ok(false);
        };
        let Some(chain) = q.pop_descriptor_chain(mem) else {
            self.pending = Some(frame);
            return Ok(false);
        };
        let head = chain.head_index();
        let mut written = 0;
        match Writer::new(mem, chain) {
            Ok(mut w) if w.available_bytes() >= frame.len() => {
                if w.write_all(&frame).is_ok() {
                    written = frame.len() as u32;
                }
            }
            _ => self.dropped += 1,
        }
        q.add_used(mem, head, written)
            .map_err(|source| VirtioError::Queue {
                queue: RX_QUEUE,
                source,
            })?;
        Ok(true)
    }
}

impl<B: FrameBackend> VirtioDevice for Net<B> {
    fn device_type(&self) -> u32 {
        TYPE_NET
    }

    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1 | VIRTIO_NET_F_MAC
    }

    fn queue_max_sizes(&self) -> &[u16] {
        QUEUE_SIZES
    }

    /// mac, then status (unused without VIRTIO_NET_F_STATUS).
    fn config(&self) -> Vec<u8> {
        let mut c = self.mac.to_vec();
        c.extend_from_slice(&[0, 0]);
        c
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
        Some(self.backend.as_raw_fd())
    }

    fn wants_input(&self) -> bool {
        self.pending.is_none()
    }

    fn process_input(
        &mut self,
        queues: &mut [Queue],
        mem: &GuestMemoryMmap,
    ) -> Result<bool, VirtioError> {
        let mut buf = vec![0u8; MAX_FRAME];
        match self.backend.recv(&mut buf) {
            Ok(n) if n >= VNET_HDR_LEN => {
                buf.truncate(n);
                self.pending = Some(buf);
            }
            _ => return Ok(false),
        }
        match queues.get_mut(RX_QUEUE) {
            Some(rx) if rx.ready() => self.deliver(rx, mem),
            _ => Ok(false),
        }
    }

    fn reset(&mut self) {
        self.pending = None;
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{TestDriver, BUFFERS};
    use super::*;
    use std::os::unix::net::UnixDatagram;

    /// One end of a datagram socket pair stands in for the tap.
    struct Peer(UnixDatagram);
    impl AsRawFd for Peer {
        fn as_raw_fd(&self) -> RawFd {
            self.0.as_raw_fd()
        }
    }
    impl FrameBackend for Peer {
        fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.0.recv(buf)
        }
        fn send(&mut self, frame: &[u8]) -> io::Result<usize> {
            self.0.send(frame)
        }
    }

    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 9];

    fn net() -> (TestDriver, UnixDatagram) {
        let (a, b) = UnixDatagram::pair().unwrap();
        let mut d = TestDriver::new(Box::new(Net::new(Peer(a), MAC)));
        d.init(VIRTIO_NET_F_MAC);
        (d, b)
    }

    #[test]
    fn config_holds_the_mac() {
        let (mut d, _peer) = net();
        let mut mac = [0u8; 6];
        d.transport.read(super::super::mmio::reg::CONFIG, &mut mac);
        assert_eq!(mac, MAC);
    }

    #[test]
    fn transmit_sends_header_and_frame() {
        let (mut d, peer) = net();
        let mut frame = vec![0u8; VNET_HDR_LEN];
        frame.extend_from_slice(&[0xff; 6]);
        frame.extend_from_slice(&MAC);
        frame.extend_from_slice(&[0x88, 0xb5, 1, 2, 3]);
        // Header and frame in separate descriptors, as Linux may do.
        d.write_bytes(BUFFERS, &frame[..VNET_HDR_LEN]);
        d.write_bytes(BUFFERS + 0x100, &frame[VNET_HDR_LEN..]);
        d.add_chain(
            TX_QUEUE,
            &[
                (BUFFERS, VNET_HDR_LEN as u32, false),
                (BUFFERS + 0x100, (frame.len() - VNET_HDR_LEN) as u32, false),
            ],
        );
        d.notify(TX_QUEUE);
        assert_eq!(d.used(TX_QUEUE).len(), 1);
        let mut got = [0u8; 128];
        let n = peer.recv(&mut got).unwrap();
        assert_eq!(&got[..n], &frame[..]);
    }

    #[test]
    fn receive_fills_one_buffer_per_frame() {
        let (mut d, peer) = net();
        let mut frame = vec![0u8; VNET_HDR_LEN];
        frame.extend_from_slice(&MAC);
        frame.extend_from_slice(&[7; 50]);
        peer.send(&frame).unwrap();
        d.transport.input_ready();
        assert!(d.used(RX_QUEUE).is_empty(), "no buffer yet: frame kept");
        d.add_chain(RX_QUEUE, &[(BUFFERS, 1526, true)]);
        d.notify(RX_QUEUE);
        assert_eq!(d.used(RX_QUEUE), vec![(0, frame.len() as u32)]);
        assert_eq!(d.read_bytes(BUFFERS, frame.len()), frame);
    }

    #[test]
    fn short_or_oversized_frames_are_dropped() {
        let (mut d, peer) = net();
        // A transmit chain shorter than the header.
        d.add_chain(TX_QUEUE, &[(BUFFERS, 4, false)]);
        d.notify(TX_QUEUE);
        assert_eq!(d.used(TX_QUEUE).len(), 1);
        // A receive buffer too small for the frame.
        peer.send(&[0u8; 200]).unwrap();
        d.add_chain(RX_QUEUE, &[(BUFFERS, 64, true)]);
        d.notify(RX_QUEUE);
        d.transport.input_ready();
        assert_eq!(d.used(RX_QUEUE), vec![(0, 0)]);
        assert!(d.transport.failure().is_none());
    }
}
