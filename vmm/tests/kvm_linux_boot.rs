//! kvm engine: the guest kernel (guest-kernel/build.sh) boots on sbx's own
//! VMM through early boot, probes the virtio-mmio disk as vda, and reaches
//! "Run /init". Under PVM (no VT-x/AMD-V) the kernel's code is emulated
//! instruction by instruction: this takes minutes, and the test stops the
//! VM once /init is reached.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use sbx_vmm::config::Disk;
use sbx_vmm::kvm::Vmm;

const KERNEL: &str = "/var/cache/sbx/kernel/current/vmlinux";
const DEADLINE: Duration = Duration::from_secs(540);
const DISK_SECTORS: u64 = 16384;

/// A newc cpio archive holding one executable file, /init.
fn initramfs_with_init(content: &[u8]) -> Vec<u8> {
    fn entry(out: &mut Vec<u8>, ino: u32, mode: u32, name: &str, data: &[u8]) {
        let header = format!(
            "070701{ino:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            0, 0, 1, 0, data.len(), 0, 0, 0, 0, name.len() + 1, 0
        );
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
        out.extend_from_slice(data);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
    }
    let mut out = Vec::new();
    entry(&mut out, 1, 0o100755, "init", content);
    entry(&mut out, 0, 0, "TRAILER!!!", &[]);
    out
}

#[test]
fn linux_boots_to_init_on_the_kvm_engine() {
    common::require_kvm();
    let kernel = std::env::var_os("SBX_KERNEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(KERNEL));
    assert!(
        kernel.exists(),
        "no guest kernel at {}: build it with guest-kernel/build.sh (or set SBX_KERNEL)",
        kernel.display()
    );
    let dir = common::scratch("linux-boot");
    let disk = dir.join("disk.img");
    std::fs::write(&disk, vec![0u8; (DISK_SECTORS * 512) as usize]).unwrap();
    let initramfs = dir.join("initramfs.cpio");
    // /init is the hello test guest: not a Linux program, but "Run /init"
    // is printed before the kernel looks at it.
    let init = std::fs::read(common::payload("hello")).unwrap();
    std::fs::write(&initramfs, initramfs_with_init(&init)).unwrap();
    let log = dir.join("serial.log");

    let mut config = common::config(kernel, &log);
    config.initramfs = Some(initramfs);
    config.memory_mib = 256;
    // Under PVM the engine adds what keeps Linux off XSAVE, CX16, POPCNT,
    // SMAP and FSGSBASE.
    config.cmdline = "console=ttyS0 reboot=k panic=-1".into();
    config.disks.push(Disk {
        path: disk,
        read_only: true,
    });
    let started = Instant::now();
    let vmm = Vmm::new(config).unwrap_or_else(|e| panic!("build the VM: {e}"));
    let stopper = vmm.stopper();
    let vm = std::thread::spawn(move || vmm.run());

    let mut reached = None;
    while started.elapsed() < DEADLINE && !vm.is_finished() {
        let serial = std::fs::read_to_string(&log).unwrap_or_default();
        if serial.contains("Run /init") {
            reached = Some(started.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    stopper.stop();
    let result = vm.join().expect("the VMM thread panicked");
    let serial = std::fs::read_to_string(&log).unwrap_or_default();
    let Some(elapsed) = reached else {
        panic!(
            "the kernel did not reach \"Run /init\" in {DEADLINE:?} (VMM result: {result:?})\n\
             serial:\n{serial}"
        );
    };
    println!("reached \"Run /init\" after {:.1} s", elapsed.as_secs_f64());
    assert!(serial.contains("Linux version"), "serial:\n{serial}");
    let vda = format!("[vda] {DISK_SECTORS} 512-byte logical blocks");
    assert!(serial.contains(&vda), "no {vda:?} in serial:\n{serial}");
}
