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
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

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

/// One process run to its end: spawn → wait4 returned, its stdout, exit
/// status and peak RSS (wait4's rusage).
#[derive(Debug, Clone)]
pub struct Exited {
    pub wall: Duration,
    pub status: ExitStatus,
    pub stdout: String,
    pub max_rss_kib: u64,
    /// CLOCK_MONOTONIC just before the spawn (ns), to place figures the
    /// process prints on the same clock.
    pub spawned_ns: u64,
}

/// Set on a re-executed bench binary that runs its arguments as a command
/// ([`maybe_reap`]).
const REAP_ENV: &str = "SBX_BENCH_REAP";

/// Run `cmd` (stdin null, stdout captured, stderr dropped) to its end and
/// time spawn → reaped, through a reaper: this bench binary re-executed,
/// which spawns `cmd` and waits for it with wait4(2). Why not wait4 here:
/// a child's ru_maxrss counts the memory of the process it was forked from
/// (the kernel folds the old mm's high-water mark in at exec), and the
/// bench harness is bigger than the VMMs it measures; the reaper is not
/// (about 1–2 MiB before it spawns).
pub fn spawn_to_exit(cmd: &Command) -> Result<Exited, String> {
    let program = Path::new(cmd.get_program()).display().to_string();
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut reaper = Command::new(exe);
    reaper
        .env(REAP_ENV, "1")
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => reaper.env(k, v),
            None => reaper.env_remove(k),
        };
    }
    let out = reaper
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("start the reaper for {program}: {e}"))?;
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .find_map(|l| l.strip_prefix("sbx-bench-reap "))
        .ok_or_else(|| {
            format!(
                "{program}: the reaper said {:?} ({})",
                err.trim(),
                out.status
            )
        })?;
    let get = |k: &str| -> Option<i64> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
    };
    use std::os::unix::process::ExitStatusExt;
    Ok(Exited {
        wall: Duration::from_nanos(get("wall_ns").unwrap_or(0) as u64),
        status: ExitStatus::from_raw(get("status").unwrap_or(-1) as i32),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        max_rss_kib: get("max_rss_kib").unwrap_or(0) as u64,
        spawned_ns: get("spawned_ns").unwrap_or(0) as u64,
    })
}

/// Call first thing in `main`: when this process is a reaper
/// ([`spawn_to_exit`]), run the command in its arguments (stdout shared,
/// stderr dropped), reap it with wait4(2), print `sbx-bench-reap
/// wall_ns=.. status=.. max_rss_kib=.. spawned_ns=..` on stderr and exit.
pub fn maybe_reap() {
    if std::env::var_os(REAP_ENV).is_none() {
        return;
    }
    let mut args = std::env::args_os().skip(1);
    let Some(program) = args.next() else {
        eprintln!("reaper: no command");
        std::process::exit(2);
    };
    let mut cmd = Command::new(&program);
    cmd.args(args)
        .env_remove(REAP_ENV)
        .stdin(Stdio::null())
        .stderr(Stdio::null());
    let spawned_ns = launcher::monotonic_ns();
    let start = Instant::now();
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("reaper: start {}: {e}", program.to_string_lossy());
            std::process::exit(1);
        }
    };
    let pid = child.id() as libc::pid_t;
    let mut raw = 0;
    // SAFETY: all-zero is a valid rusage; wait4(2) fills it and `raw`.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `pid` is our unreaped child; both pointers are to locals.
        let r = unsafe { libc::wait4(pid, &mut raw, 0, &mut usage) };
        if r == pid {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            eprintln!("reaper: wait4: {e}");
            std::process::exit(1);
        }
    }
    let wall = start.elapsed();
    // Linux reports ru_maxrss in KiB.
    eprintln!(
        "sbx-bench-reap wall_ns={} status={raw} max_rss_kib={} spawned_ns={spawned_ns}",
        wall.as_nanos(),
        usage.ru_maxrss
    );
    std::process::exit(0);
}

/// The median of `v` (0 when empty).
pub fn median(v: &[u64]) -> u64 {
    let mut v = v.to_vec();
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
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
