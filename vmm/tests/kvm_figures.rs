//! kvm engine figures (printed, never asserted on time): phase times of
//! the serial test guest over a few runs in this process. The VMM's own
//! RSS is measured by the launcher `cargo run --release -p sbx-vmm
//! --example kvm_payload -- PAYLOAD.elf`, which prints max RSS less guest RAM.

mod common;

use std::time::{Duration, Instant};

use sbx_vmm::kvm::{VmExit, Vmm};

#[test]
fn print_phase_times() {
    common::require_kvm();
    let dir = common::scratch("figures");
    let payload = common::payload("hello");
    for run in 0..5 {
        let config = common::config(payload.clone(), &dir.join("serial.log"));
        let start = Instant::now();
        let vmm = Vmm::new_at(config, start).expect("build the VM");
        let report = common::run_with_deadline(vmm, Duration::from_secs(20)).expect("run");
        let total = start.elapsed();
        assert_eq!(report.exit, VmExit::Reset);
        println!(
            "run {run}: {} · returned {:.3} ms · guest RAM touched {} KiB",
            report.phases,
            total.as_secs_f64() * 1e3,
            report.guest_resident_bytes / 1024
        );
    }
}
