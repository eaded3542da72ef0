//! Fixtures for the kvm engine tests: /dev/kvm checks, test guests
//! assembled from vmm/payloads with binutils, configs, runs with a deadline.
#![allow(dead_code)]

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use sbx_vmm::config::VmConfig;
use sbx_vmm::kvm::{KvmError, RunReport, Vmm};

/// Fails the test (never skips it) when KVM cannot be used here.
pub fn require_kvm() {
    if let Err(e) = OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        panic!(
            "the kvm engine tests need read-write /dev/kvm (run them as root on a host with \
             KVM): open /dev/kvm: {e}"
        );
    }
}

fn payload_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("payloads")
}

/// Assembles and links test guest `name` (vmm/payloads/NAME.S) into an ELF.
pub fn payload(name: &str) -> PathBuf {
    let src = payload_dir();
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("payloads");
    std::fs::create_dir_all(&out).expect("create the payload build directory");
    let obj = out.join(format!("{name}.o"));
    let elf = out.join(format!("{name}.elf"));
    let run = |cmd: &mut Command, what: &str| {
        let output = cmd
            .output()
            .unwrap_or_else(|e| panic!("{what}: {e} (binutils `as` and `ld` are needed)"));
        assert!(
            output.status.success(),
            "{what} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    run(
        Command::new("as")
            .args(["--64", "-I"])
            .arg(&src)
            .arg("-o")
            .arg(&obj)
            .arg(src.join(format!("{name}.S"))),
        &format!("assemble {name}.S"),
    );
    run(
        Command::new("ld")
            .args([
                "-m",
                "elf_x86_64",
                "--no-warn-rwx-segments",
                "-nostdlib",
                "-T",
            ])
            .arg(src.join("payload.ld"))
            .arg("-o")
            .arg(&elf)
            .arg(&obj),
        &format!("link {name}"),
    );
    elf
}

/// A unique scratch directory for one test.
pub fn scratch(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("kvm-tests")
        .join(format!("{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the test scratch directory");
    dir
}

/// A config booting `kernel` with its serial output in `serial_log`.
pub fn config(kernel: PathBuf, serial_log: &Path) -> VmConfig {
    VmConfig {
        kernel,
        initramfs: None,
        cmdline: String::new(),
        memory_mib: 64,
        vcpus: 1,
        disks: Vec::new(),
        consoles: Vec::new(),
        nets: Vec::new(),
        serial_log: Some(serial_log.to_owned()),
    }
}

/// Runs the VM; stops it if it has not ended after `deadline`.
pub fn run_with_deadline(vmm: Vmm, deadline: Duration) -> Result<RunReport, KvmError> {
    let stopper = vmm.stopper();
    let (tx, rx) = mpsc::channel();
    let runner = std::thread::spawn(move || {
        let r = vmm.run();
        let _ = tx.send(());
        r
    });
    if rx.recv_timeout(deadline).is_err() {
        stopper.stop();
    }
    runner.join().expect("the VMM thread panicked")
}

/// Boots `config` and returns its report and serial output.
pub fn boot(config: VmConfig, deadline: Duration) -> (Result<RunReport, KvmError>, String) {
    let log = config.serial_log.clone().expect("a serial log path");
    let result = Vmm::new(config).and_then(|vmm| run_with_deadline(vmm, deadline));
    let serial = std::fs::read_to_string(&log).unwrap_or_default();
    (result, serial)
}
