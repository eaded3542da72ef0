//! Devices the VMM emulates: legacy PC ports and virtio-mmio devices.

pub mod i8042;
pub mod irq;
pub mod rtc;
pub mod serial;
pub mod virtio;
