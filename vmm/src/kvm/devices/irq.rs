//! An interrupt line: an EventFd the VM registered as an irqfd for a GSI,
//! so a device thread raises a guest interrupt without a VM exit.

use std::io;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// The host side of one irqfd.
#[derive(Debug)]
pub struct IrqLine {
    gsi: u32,
    evt: EventFd,
}

impl IrqLine {
    pub fn new(gsi: u32) -> io::Result<Self> {
        Ok(IrqLine {
            gsi,
            evt: EventFd::new(EFD_NONBLOCK)?,
        })
    }

    pub fn gsi(&self) -> u32 {
        self.gsi
    }

    /// The EventFd to register with KVM_IRQFD.
    pub fn eventfd(&self) -> &EventFd {
        &self.evt
    }

    /// Raises the interrupt (an edge on the GSI).
    pub fn trigger(&self) -> io::Result<()> {
        self.evt.write(1)
    }

    pub fn try_clone(&self) -> io::Result<Self> {
        Ok(IrqLine {
            gsi: self.gsi,
            evt: self.evt.try_clone()?,
        })
    }
}

impl vm_superio::Trigger for IrqLine {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        IrqLine::trigger(self)
    }
}
