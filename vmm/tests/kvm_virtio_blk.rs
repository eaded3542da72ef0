//! kvm engine: a test guest drives virtio-blk as a driver does — reads a
//! sector the test wrote, writes one the test reads back, flushes, asks for
//! the ID, and gets IOERR past the end — with completions signalled through
//! the device's irqfd.

mod common;

use std::time::Duration;

use sbx_vmm::config::Disk;
use sbx_vmm::kvm::VmExit;

const SECTORS: usize = 64;

#[test]
fn guest_reads_and_writes_sectors() {
    common::require_kvm();
    let dir = common::scratch("virtio-blk");
    let disk = dir.join("disk.img");
    let mut image = vec![0u8; SECTORS * 512];
    image[..17].copy_from_slice(b"sbx-disk-sector-0");
    std::fs::write(&disk, &image).unwrap();

    let mut config = common::config(common::payload("virtio_blk"), &dir.join("serial.log"));
    config.disks.push(Disk {
        path: disk.clone(),
        read_only: false,
    });
    let (result, serial) = common::boot(config, Duration::from_secs(30));
    let report = result.unwrap_or_else(|e| panic!("run failed: {e}\nserial:\n{serial}"));
    assert_eq!(report.exit, VmExit::ExitCode(0), "serial:\n{serial}");
    assert!(
        report.device_failures.is_empty(),
        "{:?}",
        report.device_failures
    );
    assert!(
        serial.contains(&format!("capacity (sectors): {SECTORS:016x}")),
        "serial:\n{serial}"
    );
    assert!(serial.contains("device id: disk.img"), "serial:\n{serial}");

    let after = std::fs::read(&disk).unwrap();
    let written = b"written by the sbx test guest";
    assert_eq!(&after[512..512 + written.len()], written);
    assert_eq!(after[..512], image[..512], "sector 0 must be untouched");
    assert!(
        after[1024..].iter().all(|b| *b == 0),
        "only sector 1 written"
    );
}
