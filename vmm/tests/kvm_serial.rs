//! kvm engine: a test guest prints on the serial port and ends the VM
//! through the i8042 reset.

mod common;

use std::time::Duration;

use sbx_vmm::kvm::VmExit;

#[test]
fn serial_output_and_i8042_reset() {
    common::require_kvm();
    let dir = common::scratch("serial");
    let config = common::config(common::payload("hello"), &dir.join("serial.log"));
    let (result, serial) = common::boot(config, Duration::from_secs(20));
    let report = result.unwrap_or_else(|e| panic!("run failed: {e}\nserial:\n{serial}"));
    assert_eq!(report.exit, VmExit::Reset, "serial:\n{serial}");
    assert_eq!(serial, "hello from an sbx test guest\n");
    let p = report.phases;
    assert!(p.first_run.is_some() && p.first_io.is_some() && p.exit.is_some());
    println!("phases: {p}");
}
