//! kvm engine: two vCPUs, the second woken by INIT/SIPI from the first
//! through the in-kernel local APIC; both print.

mod common;

use std::time::Duration;

use sbx_vmm::kvm::VmExit;

#[test]
fn two_vcpus_both_print() {
    common::require_kvm();
    let dir = common::scratch("smp");
    let mut config = common::config(common::payload("smp"), &dir.join("serial.log"));
    config.vcpus = 2;
    let (result, serial) = common::boot(config, Duration::from_secs(30));
    let report = result.unwrap_or_else(|e| panic!("run failed: {e}\nserial:\n{serial}"));
    assert_eq!(report.exit, VmExit::ExitCode(0), "serial:\n{serial}");
    for line in ["cpu 0: up\n", "cpu 1: up\n", "cpu 0: saw cpu 1\n"] {
        assert!(
            serial.contains(line),
            "missing {line:?} in serial:\n{serial}"
        );
    }
}
