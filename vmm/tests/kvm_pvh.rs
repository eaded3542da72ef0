//! One guest, two VMMs: vmm/payloads/pvh.S boots on the kvm engine at its
//! ELF entry (64-bit) and under `qemu-system-x86_64 -M microvm` at the
//! 32-bit entry of its Xen PVH note; both print the same line and exit
//! through the exit port (0x501). The QEMU half runs when QEMU is installed
//! (`SBX_QEMU` or `qemu-system-x86_64` in PATH) and is skipped, with one
//! line, otherwise. The vm_boot bench times the pair (`payload_start_to_exit`).

mod common;

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use linux_loader::loader::{Elf, KernelLoader, PvhBootCapability};
use sbx_vmm::kvm::VmExit;
use vm_memory::{GuestAddress, GuestMemoryMmap};

const LINE: &str = "hello from an sbx pvh guest\n";

/// The payload, assembled once for the tests of this binary (they run in
/// parallel and would otherwise link the same file at the same time).
fn pvh() -> PathBuf {
    static ELF: OnceLock<PathBuf> = OnceLock::new();
    ELF.get_or_init(|| common::payload("pvh")).clone()
}

#[test]
fn pvh_payload_carries_both_entries() {
    let elf = pvh();
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap();
    let loaded = Elf::load(&mem, None, &mut File::open(&elf).unwrap(), None).unwrap();
    let PvhBootCapability::PvhEntryPresent(pvh) = loaded.pvh_boot_cap else {
        panic!(
            "no XEN_ELFNOTE_PHYS32_ENTRY note: {:?}",
            loaded.pvh_boot_cap
        );
    };
    let entry64 = loaded.kernel_load;
    assert_eq!(
        entry64,
        GuestAddress(0x10_0000),
        "e_entry is lib.S's _start"
    );
    assert_ne!(pvh, entry64, "the PVH entry is its own 32-bit code");
    assert!(
        pvh.0 > entry64.0 && pvh.0 < loaded.kernel_end,
        "PVH entry {pvh:?} inside the image"
    );
}

#[test]
fn pvh_payload_on_the_kvm_engine() {
    common::require_kvm();
    let dir = common::scratch("pvh");
    let config = common::config(pvh(), &dir.join("serial.log"));
    let (result, serial) = common::boot(config, Duration::from_secs(20));
    let report = result.unwrap_or_else(|e| panic!("run failed: {e}\nserial:\n{serial}"));
    assert_eq!(report.exit, VmExit::ExitCode(0), "serial:\n{serial}");
    assert_eq!(serial, LINE);
    println!("kvm engine: {}", report.phases);
}

/// `qemu-system-x86_64 -M microvm` on the payload: the same line on its
/// serial (stdio), and isa-debug-exit's status for a 0 written to 0x501,
/// (0 << 1) | 1 = 1.
#[test]
fn pvh_payload_under_qemu_microvm() {
    let qemu = match sbx_vmm::qemu::binary() {
        Ok(q) => q,
        Err(e) => {
            eprintln!("skipping the QEMU half: {e}");
            return;
        }
    };
    let elf = pvh();
    // KVM as the bench uses it; TCG only where QEMU cannot open /dev/kvm.
    let (stdout, status, stderr, took) = match qemu_microvm(&qemu, &elf, "kvm") {
        r if r.1 != Some(1) && r.2.contains("kvm") => {
            eprintln!(
                "QEMU could not use KVM here ({}); running it with TCG",
                r.2.trim()
            );
            qemu_microvm(&qemu, &elf, "tcg")
        }
        r => r,
    };
    assert_eq!(
        (stdout.as_str(), status),
        (LINE, Some(1)),
        "qemu stderr: {stderr}"
    );
    println!(
        "qemu microvm: spawn → exit {:.1} ms",
        took.as_secs_f64() * 1e3
    );
}

/// Runs QEMU on `elf` with a 20 s deadline: stdout, exit code (None if
/// killed), stderr, wall time.
fn qemu_microvm(qemu: &Path, elf: &Path, accel: &str) -> (String, Option<i32>, String, Duration) {
    let mut cmd = Command::new(qemu);
    cmd.args([
        "-M",
        "microvm,x-option-roms=off,isa-serial=on,rtc=off,pit=off,pic=off",
    ])
    .args(["-accel", accel]);
    if accel == "kvm" {
        // Plain `-cpu host` aborts on MSR 0x10a under PVM.
        cmd.args(["-cpu", "host,-arch-capabilities"]);
    }
    cmd.args(["-nodefaults", "-no-user-config", "-display", "none"])
        .args(["-serial", "stdio", "-m", "16M"])
        .args(["-device", "isa-debug-exit,iobase=0x501,iosize=2"])
        .arg("-kernel")
        .arg(elf)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().expect("start qemu");
    let deadline = start + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for qemu") {
            break s.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let took = start.elapsed();
    let mut out = String::new();
    let mut err = String::new();
    let _ = child.stdout.take().unwrap().read_to_string(&mut out);
    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
    (out, status, err, took)
}
