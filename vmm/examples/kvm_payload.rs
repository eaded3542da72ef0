//! Runs one guest on the kvm engine and prints what it cost, as one line
//! of `key=value` pairs: phase times from process start, the exit, peak
//! RSS, and how much of it was guest RAM. A small launcher on purpose: the
//! VMM's own footprint is what is left.
//!
//! Usage: kvm_payload KERNEL [MEMORY_MIB]

use std::time::Instant;

use sbx_vmm::config::VmConfig;
use sbx_vmm::kvm::Vmm;

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    let start = Instant::now();
    let mut args = std::env::args().skip(1);
    let Some(kernel) = args.next() else {
        eprintln!("usage: kvm_payload KERNEL [MEMORY_MIB]");
        std::process::exit(2);
    };
    let memory_mib = args.next().and_then(|m| m.parse().ok()).unwrap_or(64);
    let config = VmConfig {
        kernel: kernel.into(),
        initramfs: None,
        cmdline: String::new(),
        memory_mib,
        vcpus: 1,
        disks: Vec::new(),
        consoles: Vec::new(),
        nets: Vec::new(),
        serial_log: None,
    };
    let report = match Vmm::new_at(config, start).and_then(Vmm::run) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kvm_payload: {e}");
            std::process::exit(1);
        }
    };
    let ms = |d: Option<std::time::Duration>| d.map_or(-1.0, |d| d.as_secs_f64() * 1e3);
    let p = report.phases;
    let hwm = status_kib("VmHWM:");
    let guest = report.guest_resident_bytes / 1024;
    println!(
        "exit={:?} first_run_ms={:.3} first_io_ms={:.3} exit_ms={:.3} total_ms={:.3} \
         max_rss_kib={hwm} guest_kib={guest} vmm_rss_kib={}",
        report.exit,
        ms(p.first_run),
        ms(p.first_io),
        ms(p.exit),
        start.elapsed().as_secs_f64() * 1e3,
        hwm.saturating_sub(guest)
    );
}
