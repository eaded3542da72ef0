//! virtio devices over the MMIO transport (virtio 1.2, 4.2): one trait each
//! device implements, and the feature and status bits they share.

pub mod block;
pub mod console;
pub mod mmio;
pub mod net;
pub mod tap;
#[cfg(test)]
pub mod testing;

use std::os::fd::RawFd;

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;

/// Feature bits (virtio 1.2, 6).
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;

/// Device types (virtio 1.2, 5).
pub const TYPE_NET: u32 = 1;
pub const TYPE_BLOCK: u32 = 2;
pub const TYPE_CONSOLE: u32 = 3;

/// Device status bits (virtio 1.2, 2.1).
pub mod status {
    pub const ACKNOWLEDGE: u32 = 1;
    pub const DRIVER: u32 = 2;
    pub const DRIVER_OK: u32 = 4;
    pub const FEATURES_OK: u32 = 8;
    pub const DEVICE_NEEDS_RESET: u32 = 64;
    pub const FAILED: u32 = 128;
}

/// Interrupt status bits (virtio 1.2, 4.2.2).
pub const INT_USED_RING: u32 = 1;
pub const INT_CONFIG_CHANGE: u32 = 2;

/// Something a driver did that the device cannot go on from. The transport
/// marks the device as needing reset; the VMM carries on.
#[derive(Debug, thiserror::Error)]
pub enum VirtioError {
    #[error("queue {queue}: {source}")]
    Queue {
        queue: usize,
        source: virtio_queue::Error,
    },
    #[error("queue {queue}: descriptor chain: {source}")]
    Chain {
        queue: usize,
        source: virtio_queue::Error,
    },
}

/// What a virtio device implements; the MMIO transport does the rest.
pub trait VirtioDevice: Send {
    /// Device ID (virtio 1.2, 5).
    fn device_type(&self) -> u32;
    /// Feature bits offered to the driver.
    fn features(&self) -> u64;
    /// Largest size of each queue, in queue order.
    fn queue_max_sizes(&self) -> &[u16];
    /// Device configuration space; bytes past its end read as zero.
    fn config(&self) -> Vec<u8>;
    /// The driver set DRIVER_OK with these features.
    fn activate(&mut self, _acked_features: u64) {}
    /// The driver made buffers available on `queue`. Returns true when
    /// buffers were used (the transport then interrupts the driver).
    fn process_queue(
        &mut self,
        queue: usize,
        queues: &mut [Queue],
        mem: &GuestMemoryMmap,
    ) -> Result<bool, VirtioError>;
    /// A host descriptor whose input the device feeds to the guest.
    fn input_fd(&self) -> Option<RawFd> {
        None
    }
    /// True while the device can take more input from `input_fd`.
    fn wants_input(&self) -> bool {
        false
    }
    /// `input_fd` is readable. Returns true when buffers were used.
    fn process_input(
        &mut self,
        _queues: &mut [Queue],
        _mem: &GuestMemoryMmap,
    ) -> Result<bool, VirtioError> {
        Ok(false)
    }
    /// The driver reset the device: drop in-flight state.
    fn reset(&mut self) {}
}

/// Copies `config[offset..]` into `data`, zero past the end.
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    for (i, byte) in data.iter_mut().enumerate() {
        *byte = usize::try_from(offset)
            .ok()
            .and_then(|o| o.checked_add(i))
            .and_then(|o| config.get(o))
            .copied()
            .unwrap_or(0);
    }
}
