//! kvm engine: the CPUID a guest sees — its APIC ID and the hypervisor bit.
//! (Under PVM the guest sees the host's leaf-1 feature flags whatever the
//! VMM sets; the engine hides those from Linux on its command line.)

mod common;

use std::time::Duration;

use sbx_vmm::kvm::arch::cpuid::CpuidPolicy;
use sbx_vmm::kvm::VmExit;

fn field(serial: &str, name: &str) -> u64 {
    let line = serial
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .unwrap_or_else(|| panic!("no {name} in serial:\n{serial}"));
    u64::from_str_radix(line.trim(), 16).unwrap()
}

#[test]
fn guest_sees_the_cpuid_policy() {
    common::require_kvm();
    let dir = common::scratch("cpuid");
    let config = common::config(common::payload("cpuid"), &dir.join("serial.log"));
    let (result, serial) = common::boot(config, Duration::from_secs(20));
    let report = result.unwrap_or_else(|e| panic!("run failed: {e}\nserial:\n{serial}"));
    assert_eq!(report.exit, VmExit::ExitCode(0), "serial:\n{serial}");
    let ecx = field(&serial, "cpuid.1.ecx=");
    let ebx = field(&serial, "cpuid.1.ebx=");
    assert_eq!(ebx >> 24, 0, "APIC ID of vCPU 0");
    assert_ne!(ecx & (1 << 31), 0, "hypervisor bit");
    if CpuidPolicy::detect() == CpuidPolicy::Host {
        // Outside PVM the VMM's CPUID is what the guest sees: one logical CPU.
        assert_eq!((ebx >> 16) & 0xff, 1, "logical CPU count");
    }
}
