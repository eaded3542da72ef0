//! Where things live in guest physical memory and in the I/O port space.
//!
//! Low memory follows the x86 boot conventions Firecracker and QEMU use;
//! every address is a guest physical address in bytes unless said otherwise.

/// The boot GDT: null, 64-bit code (selector 0x08), data (0x10), TSS (0x18).
pub const BOOT_GDT_START: u64 = 0x500;
/// An empty IDT: the guest installs its own before enabling interrupts.
pub const BOOT_IDT_START: u64 = 0x520;
/// The Linux zero page (`struct boot_params`), passed in RSI.
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack pointer of the boot vCPU (grows down below the zero page gap).
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Identity page tables: PML4, one PDPT, four page directories of 2 MiB
/// pages mapping the first 4 GiB (RAM, the MMIO gap, the APICs).
pub const PML4_START: u64 = 0x9000;
pub const PDPT_START: u64 = 0xa000;
pub const PD_START: u64 = 0xb000;
/// Number of page directories (each maps 1 GiB).
pub const PD_COUNT: u64 = 4;
/// The kernel command line (NUL-terminated).
pub const CMDLINE_START: u64 = 0x20000;
/// Room for the command line, terminating NUL included.
pub const CMDLINE_MAX_SIZE: usize = 4096;
/// Start of the extended BIOS data area: the MP table goes here, where
/// Linux scans for it (last KiB of base memory).
pub const EBDA_START: u64 = 0x9fc00;
/// The legacy hole (VGA, option ROMs, BIOS) ends where high memory starts.
pub const HIGH_MEMORY_START: u64 = 0x10_0000;

/// The 32-bit MMIO gap: guest RAM is split around it.
pub const MMIO_GAP_START: u64 = 0xc000_0000;
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;
/// virtio-mmio devices, one 4 KiB window each, from here up.
pub const VIRTIO_MMIO_START: u64 = 0xd000_0000;
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// I/O APIC and local APIC (emulated by KVM's in-kernel irqchip).
pub const IOAPIC_START: u64 = 0xfec0_0000;
pub const APIC_START: u64 = 0xfee0_0000;

/// Legacy interrupt lines: the COM1 serial port, then one per virtio device.
pub const SERIAL_IRQ: u32 = 4;
pub const VIRTIO_IRQ_BASE: u32 = 5;
/// IRQs the I/O APIC routes (pins 0..=23).
pub const IRQ_MAX: u32 = 23;

/// COM1: an 8250 UART, 8 ports.
pub const SERIAL_PORT: u16 = 0x3f8;
pub const SERIAL_PORT_LEN: u16 = 8;
/// i8042 keyboard controller: data (0x60) and command/status (0x64).
pub const I8042_DATA_PORT: u16 = 0x60;
pub const I8042_COMMAND_PORT: u16 = 0x64;
/// CMOS RTC: index (0x70) and data (0x71).
pub const RTC_INDEX_PORT: u16 = 0x70;
pub const RTC_DATA_PORT: u16 = 0x71;
/// Test-guest exit port, as QEMU's `isa-debug-exit` (iobase 0x501): a byte
/// written here ends the VM with that exit code.
pub const EXIT_PORT: u16 = 0x501;

/// Highest number of virtio-mmio devices: one IRQ each from VIRTIO_IRQ_BASE.
pub const MAX_VIRTIO_DEVICES: usize = (IRQ_MAX - VIRTIO_IRQ_BASE + 1) as usize;

/// The MMIO window of virtio device `index`.
pub fn virtio_mmio_base(index: usize) -> u64 {
    VIRTIO_MMIO_START + index as u64 * VIRTIO_MMIO_SIZE
}

/// The IRQ (GSI) of virtio device `index`, skipping none: 5, 6, 7, ...
pub fn virtio_irq(index: usize) -> u32 {
    VIRTIO_IRQ_BASE + index as u32
}
