//! A small launcher for the kvm engine: the bench binary re-executes itself
//! with `SBX_BENCH_KVM_PAYLOAD=ELF`, boots that payload with
//! `sbx_vmm::kvm::Vmm` and prints one line of `key=value` figures. A
//! process of its own, so its start-up and its RSS are the VMM's (as in
//! vmm/examples/kvm_payload.rs), not the bench harness's.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sbx_vmm::config::VmConfig;
use sbx_vmm::kvm::Vmm;

const ENV: &str = "SBX_BENCH_KVM_PAYLOAD";
/// Where the launcher writes the guest's serial output (else nowhere).
const SERIAL_ENV: &str = "SBX_BENCH_KVM_SERIAL";
/// Guest RAM given to the payload.
pub const PAYLOAD_MEMORY_MIB: u64 = 64;

/// CLOCK_MONOTONIC in ns: comparable across processes.
pub fn monotonic_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime(2) writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// Call first thing in `main`: when this process is the launcher, run the
/// payload, print its figures and exit.
pub fn maybe_run() {
    let Some(payload) = std::env::var_os(ENV) else {
        return;
    };
    let main_ns = monotonic_ns();
    let start = Instant::now();
    let config = VmConfig {
        kernel: payload.into(),
        initramfs: None,
        cmdline: String::new(),
        memory_mib: PAYLOAD_MEMORY_MIB,
        vcpus: 1,
        disks: Vec::new(),
        consoles: Vec::new(),
        nets: Vec::new(),
        serial_log: std::env::var_os(SERIAL_ENV).map(Into::into),
    };
    let report = match Vmm::new_at(config, start).and_then(Vmm::run) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kvm launcher: {e}");
            std::process::exit(1);
        }
    };
    let abs = |d: Option<Duration>| d.map_or(0, |d| main_ns + d.as_nanos() as u64);
    let p = report.phases;
    println!(
        "main_ns={main_ns} first_run_ns={} first_io_ns={} exit_ns={} max_rss_kib={} guest_kib={} exit={:?}",
        abs(p.first_run),
        abs(p.first_io),
        abs(p.exit),
        super::memory::own_hwm_kib(),
        report.guest_resident_bytes / 1024,
        report.exit,
    );
    std::process::exit(0);
}

/// Figures of one launcher run; times from just before the spawn.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct LaunchFigures {
    pub to_main: Duration,
    pub to_first_run: Duration,
    pub to_first_io: Duration,
    pub to_exit: Duration,
    pub returned: Duration,
    pub max_rss_kib: u64,
    pub guest_kib: u64,
}

impl LaunchFigures {
    pub fn vmm_rss_kib(&self) -> u64 {
        self.max_rss_kib.saturating_sub(self.guest_kib)
    }
}

/// Spawn → exit of one launcher on `payload`, measured as a peer VMM is
/// ([`super::spawn_to_exit`]: until wait4 returns, peak RSS from its
/// rusage), the guest's serial on the launcher's stdout as QEMU's
/// `-serial stdio` puts it there. Fails unless the guest printed `expect`
/// and wrote 0 to the exit port.
pub fn launch_to_exit(payload: &std::path::Path, expect: &str) -> Result<super::Exited, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(exe);
    // A pipe here (the reaper's captured stdout): opening it anew is safe.
    cmd.env(ENV, payload).env(SERIAL_ENV, "/dev/stdout");
    let run = super::spawn_to_exit(&cmd)?;
    if !run.status.success()
        || !run.stdout.contains("exit=ExitCode(0)")
        || !run.stdout.contains(expect)
    {
        return Err(format!(
            "kvm launcher: {} ({}), stdout: {}",
            payload.display(),
            run.status,
            run.stdout.trim()
        ));
    }
    Ok(run)
}

/// Spawn this executable as the launcher on `payload`.
pub fn launch(payload: &std::path::Path) -> Result<LaunchFigures, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let t0 = monotonic_ns();
    let start = Instant::now();
    let out = Command::new(exe)
        .env(ENV, payload)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| e.to_string())?;
    let returned = start.elapsed();
    if !out.status.success() {
        return Err(format!(
            "kvm launcher failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let line = String::from_utf8_lossy(&out.stdout);
    let get = |k: &str| -> u64 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let since = |ns: u64| Duration::from_nanos(ns.saturating_sub(t0));
    Ok(LaunchFigures {
        to_main: since(get("main_ns")),
        to_first_run: since(get("first_run_ns")),
        to_first_io: since(get("first_io_ns")),
        to_exit: since(get("exit_ns")),
        returned,
        max_rss_kib: get("max_rss_kib"),
        guest_kib: get("guest_kib"),
    })
}
