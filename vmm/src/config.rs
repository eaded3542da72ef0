//! What an engine is asked to boot: the same for the kvm and qemu engines.
//!
//! The guest contract: a kernel, an initramfs holding sbx's guest init, a
//! kernel command line, and virtio-mmio devices. Engines differ only in who
//! emulates the devices.

use std::os::fd::OwnedFd;
use std::path::PathBuf;

/// One virtio-blk disk.
#[derive(Debug, Clone)]
pub struct Disk {
    pub path: PathBuf,
    pub read_only: bool,
}

/// A virtio-console device with one port, connected to a host descriptor
/// pair. Guest side: `/dev/hvcN`, N in the order of `VmConfig::consoles`.
#[derive(Debug)]
pub struct Console {
    /// What the guest writes arrives here (None: discarded).
    pub to_host: Option<OwnedFd>,
    /// What the guest reads comes from here (None: nothing, ever).
    pub from_host: Option<OwnedFd>,
}

/// A virtio-net device backed by a tap interface the caller created.
#[derive(Debug, Clone)]
pub struct Net {
    pub tap: String,
    pub mac: [u8; 6],
}

#[derive(Debug)]
pub struct VmConfig {
    pub kernel: PathBuf,
    pub initramfs: Option<PathBuf>,
    /// Kernel command line without the virtio-mmio device entries: an engine
    /// appends those for the devices it places.
    pub cmdline: String,
    pub memory_mib: u64,
    pub vcpus: u8,
    pub disks: Vec<Disk>,
    pub consoles: Vec<Console>,
    pub nets: Vec<Net>,
    /// Where the 8250 serial port's output (kernel messages) goes.
    pub serial_log: Option<PathBuf>,
}
