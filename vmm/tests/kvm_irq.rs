//! kvm engine: a device interrupt raised through an irqfd (the UART's IRQ 4)
//! reaches the guest's IDT handler through the in-kernel PIC.

mod common;

use std::time::Duration;

use sbx_vmm::kvm::VmExit;

#[test]
fn irqfd_interrupt_reaches_the_guest_handler() {
    common::require_kvm();
    let dir = common::scratch("irq");
    let config = common::config(common::payload("irq"), &dir.join("serial.log"));
    let (result, serial) = common::boot(config, Duration::from_secs(30));
    let report = result.unwrap_or_else(|e| panic!("run failed: {e}\nserial:\n{serial}"));
    assert_eq!(report.exit, VmExit::ExitCode(0), "serial:\n{serial}");
    assert!(
        serial.contains("irq 4 delivered to vector 0x24"),
        "serial:\n{serial}"
    );
}
