//! What every bench shares: the root check, the private mount namespace the
//! runtimes are compared in, a temporary sbx root with the busybox image,
//! and small process helpers. Peers live in `peers.rs`, guests in
//! `guest.rs`, memory accounting in `memory.rs`.
#![allow(dead_code)]

pub mod guest;
pub mod idle;
pub mod launcher;
pub mod memory;
pub mod peers;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

pub const SBX: &str = env!("CARGO_BIN_EXE_sbx");
const CGROUP2_HYBRID: &str = "/sys/fs/cgroup/unified";

/// Exit with one clear line unless running as root.
pub fn require_root(bench: &str) {
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "{bench}: needs root (namespaces, mounts, cgroups, /dev/kvm): run it with sudo or as root"
        );
        std::process::exit(1);
    }
}

/// Root check, private mount namespace, a scratch directory and an sbx
/// root with busybox in it: what each bench's `main` starts with.
pub struct Env {
    pub work: tempfile::TempDir,
    pub sbx_root: PathBuf,
    /// `sbx run --rm busybox true` works (container).
    pub sbx_container: bool,
    /// `sbx run --rm --isolation=vm busybox true` works.
    pub sbx_vm: bool,
}

impl Env {
    pub fn setup(bench: &str) -> Env {
        require_root(bench);
        if let Err(e) = private_mount_namespace() {
            eprintln!("{bench}: setting up a private mount namespace: {e}");
            std::process::exit(1);
        }
        let work = tempfile::Builder::new()
            .prefix("sbx-bench-")
            .tempdir()
            .expect("creating a temporary directory");
        let sbx_root = work.path().join("root");
        let sbx_container = prepare_sbx(&sbx_root);
        let sbx_vm = sbx_container && check_sbx_vm(&sbx_root);
        Env {
            work,
            sbx_root,
            sbx_container,
            sbx_vm,
        }
    }

    pub fn path(&self) -> &Path {
        self.work.path()
    }

    pub fn sbx(&self) -> Command {
        sbx(&self.sbx_root)
    }
}

/// Unshare the mount namespace, make every mount private, and unmount the
/// hybrid cgroup2 mount if there is one: Debian's crun 1.8 does not start on
/// these hybrid-cgroup hosts otherwise, and every runtime is measured in
/// the same environment.
pub fn private_mount_namespace() -> nix::Result<()> {
    unshare(CloneFlags::CLONE_NEWNS)?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )?;
    let mounted = fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(CGROUP2_HYBRID));
    if mounted {
        umount2(CGROUP2_HYBRID, MntFlags::MNT_DETACH)?;
    }
    Ok(())
}

pub fn sbx(root: &Path) -> Command {
    let mut cmd = Command::new(SBX);
    cmd.arg("--root").arg(root).env_remove("SBX_ROOT");
    cmd
}

/// Bootstrap the busybox image and run it once; false (with one line on
/// stderr) if sbx cannot run it yet.
fn prepare_sbx(root: &Path) -> bool {
    for args in [
        &["image", "bootstrap", "busybox"][..],
        &["run", "--rm", "busybox", "true"][..],
    ] {
        if let Err(e) = try_run(sbx(root).args(args)) {
            eprintln!("skipping sbx: {e}");
            return false;
        }
    }
    true
}

/// One VM run, which also builds the image's root disk.
fn check_sbx_vm(root: &Path) -> bool {
    match try_run(sbx(root).args(["run", "--rm", "--isolation=vm", "busybox", "true"])) {
        Ok(()) => true,
        Err(e) => {
            eprintln!("skipping sbx --isolation=vm: {e}");
            false
        }
    }
}

/// Run to completion with no stdin or stdout; the last line of stderr in
/// the error.
pub fn try_run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy()).collect();
    Err(format!(
        "`{} {}` failed ({}): {}",
        Path::new(cmd.get_program()).display(),
        args.join(" "),
        out.status,
        err.lines().last().unwrap_or("").trim()
    ))
}

/// Run to completion with no stdio; panic if it fails.
pub fn run_ok(cmd: &mut Command) {
    if let Err(e) = try_run(cmd) {
        panic!("{e}");
    }
}

pub fn find_in_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain(["/usr/sbin".into(), "/usr/bin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Where figures go: `$CARGO_TARGET_DIR`, else `target/` of the workspace.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// The 1-minute load average, to say how quiet the machine was.
pub fn load_average() -> f64 {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split(' ').next().and_then(|v| v.parse().ok()))
        .unwrap_or(-1.0)
}

/// The HEAD commit of the workspace, `-dirty` when the tree has changes
/// (empty if unknown).
pub fn commit() -> String {
    Command::new("git")
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "describe",
            "--always",
            "--dirty",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Boot phases `sbx run --isolation=vm` reports with `SBX_DEBUG=1`, in ms
/// from the VMM's start (the guest kernel's on the guest clock).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct VmPhases {
    pub prepare_ms: f64,
    pub vmm_to_init_ms: f64,
    pub guest_kernel_ms: f64,
    pub vmm_to_init_ready_ms: f64,
    pub vmm_to_workload_ms: f64,
}

impl VmPhases {
    /// Parse the `sbx: vm: engine ...; prepare X ms, vmm start → init ...`
    /// line.
    pub fn parse(stderr: &str) -> Option<VmPhases> {
        let line = stderr.lines().find(|l| l.contains("vmm start → init"))?;
        let after = |key: &str| -> Option<f64> {
            let rest = &line[line.find(key)? + key.len()..];
            rest.trim_start().split(' ').next()?.parse().ok()
        };
        Some(VmPhases {
            prepare_ms: after("prepare")?,
            vmm_to_init_ms: after("vmm start → init")?,
            guest_kernel_ms: after("(guest kernel").unwrap_or(0.0),
            vmm_to_init_ready_ms: after("→ init ready").unwrap_or(0.0),
            vmm_to_workload_ms: after("→ workload").unwrap_or(0.0),
        })
    }
}

/// One `sbx run --rm --isolation=vm busybox true` with its boot phases.
pub fn sbx_vm_run(root: &Path) -> Result<VmPhases, String> {
    let out = sbx(root)
        .args(["run", "--rm", "--isolation=vm", "busybox", "true"])
        .env("SBX_DEBUG", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| e.to_string())?;
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!(
            "sbx run --isolation=vm failed ({}): {}",
            out.status,
            err.trim()
        ));
    }
    VmPhases::parse(&err).ok_or_else(|| "sbx printed no boot phases with SBX_DEBUG=1".into())
}

/// `cargo bench -- NAME` passes NAME to every bench: a harness-less bench
/// whose name does not contain it skips itself.
pub fn filtered_out(bench: &str) -> bool {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    !filters.is_empty() && !filters.iter().any(|f| bench.contains(f.as_str()))
}

/// `--quick` was passed (`cargo bench -- --quick`).
pub fn quick() -> bool {
    std::env::args().any(|a| a == "--quick")
}
