//! The i8042 keyboard controller, for its one use in a VM: the CPU reset
//! command (0xfe on port 0x64), which is how a guest asks to end.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use vm_superio::I8042Device;

use crate::kvm::layout::I8042_DATA_PORT;

/// Records that the guest pulsed the reset line.
#[derive(Debug, Clone, Default)]
pub struct ResetFlag(Arc<AtomicBool>);

impl ResetFlag {
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

impl vm_superio::Trigger for ResetFlag {
    type E = std::convert::Infallible;

    fn trigger(&self) -> Result<(), Self::E> {
        self.0.store(true, Ordering::SeqCst);
        Ok(())
    }
}

/// The controller on ports 0x60..=0x64.
pub struct I8042 {
    device: I8042Device<ResetFlag>,
    reset: ResetFlag,
}

impl Default for I8042 {
    fn default() -> Self {
        let reset = ResetFlag::default();
        I8042 {
            device: I8042Device::new(reset.clone()),
            reset,
        }
    }
}

impl I8042 {
    pub fn read(&mut self, port: u16) -> u8 {
        self.device.read((port - I8042_DATA_PORT) as u8)
    }

    /// Returns true when this write asked for a CPU reset.
    pub fn write(&mut self, port: u16, value: u8) -> bool {
        // The trigger is infallible.
        let _ = self.device.write((port - I8042_DATA_PORT) as u8, value);
        self.reset.is_set()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kvm::layout::I8042_COMMAND_PORT;

    #[test]
    fn reset_command_is_reported() {
        let mut i = I8042::default();
        assert!(!i.write(I8042_COMMAND_PORT, 0x20));
        assert!(!i.write(I8042_DATA_PORT, 0xfe));
        assert!(i.write(I8042_COMMAND_PORT, 0xfe));
    }
}
