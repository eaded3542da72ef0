//! Start→exit of `true`: `sbx run --rm busybox true` against its peers on the
//! same rootfs (crun and runc running an OCI bundle, when installed), with
//! `unshare -mpuin --fork true` as the floor.
//!
//! Needs root. `cargo bench --bench start_to_exit -- --quick` takes about a
//! minute. The bench bootstraps the busybox image into a temporary sbx root.
//!
//! Everything runs inside a private mount namespace of this process, with
//! /sys/fs/cgroup/unified unmounted: Debian's crun 1.8 does not start on
//! these hybrid-cgroup hosts otherwise, and sbx runs in the same environment
//! so the comparison is fair.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::Criterion;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use sbx_shared::paths::Root;

const SBX: &str = env!("CARGO_BIN_EXE_sbx");
const CGROUP2_HYBRID: &str = "/sys/fs/cgroup/unified";

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "start_to_exit: needs root (namespaces, mounts, cgroups): run it with sudo or as root"
        );
        std::process::exit(1);
    }
    if let Err(e) = private_mount_namespace() {
        eprintln!("start_to_exit: setting up a private mount namespace: {e}");
        std::process::exit(1);
    }

    let work = tempfile::Builder::new()
        .prefix("sbx-bench-")
        .tempdir()
        .expect("creating a temporary directory");
    let root = work.path().join("root");
    let sbx_ok = prepare_sbx(&root);
    let bundle = work.path().join("bundle");
    let bundle_ok = match make_bundle(&root, &bundle) {
        Ok(()) => true,
        Err(e) => {
            eprintln!("skipping crun and runc: cannot make the OCI bundle: {e}");
            false
        }
    };

    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let mut group = c.benchmark_group("start_to_exit");

    group.bench_function("baseline", |b| {
        b.iter(|| run_ok(Command::new("unshare").args(["-mpuin", "--fork", "true"])))
    });

    if sbx_ok {
        group.bench_function("sbx_container", |b| {
            b.iter(|| run_ok(sbx(&root).args(["run", "--rm", "busybox", "true"])))
        });
    }

    for runtime in ["crun", "runc"] {
        if !bundle_ok {
            break;
        }
        let Some(bin) = find_in_path(runtime) else {
            eprintln!("skipping {runtime}: not installed");
            continue;
        };
        if let Err(e) = oci_run(&bin, &bundle) {
            eprintln!("skipping {runtime}: {e}");
            continue;
        }
        group.bench_function(runtime, |b| b.iter(|| oci_run(&bin, &bundle).unwrap()));
    }

    group.finish();
    c.final_summary();
}

/// Unshare the mount namespace, make every mount private, and unmount the
/// hybrid cgroup2 mount if there is one.
fn private_mount_namespace() -> nix::Result<()> {
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

fn sbx(root: &Path) -> Command {
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
        match sbx(root).args(args).stdin(Stdio::null()).output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                let err = String::from_utf8_lossy(&out.stderr);
                let err = err.lines().last().unwrap_or("").trim();
                eprintln!(
                    "skipping sbx: `sbx {}` failed ({}): {err}",
                    args.join(" "),
                    out.status
                );
                return false;
            }
            Err(e) => {
                eprintln!("skipping sbx: cannot run {SBX}: {e}");
                return false;
            }
        }
    }
    true
}

/// An OCI bundle of the busybox rootfs: the image's unpacked layer if sbx
/// has one, else the same tree made from /bin/busybox. The config is
/// `crun spec`'s default with `true` as the process and a read-only root.
fn make_bundle(sbx_root: &Path, bundle: &Path) -> Result<(), String> {
    let rootfs = bundle.join("rootfs");
    fs::create_dir_all(bundle).map_err(|e| e.to_string())?;
    let layers: Vec<PathBuf> = fs::read_dir(Root::new(sbx_root).layers().join("sha256"))
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    if let [layer] = layers.as_slice() {
        let status = Command::new("cp")
            .arg("-a")
            .arg(layer)
            .arg(&rootfs)
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            return Err(format!("cp -a {} failed", layer.display()));
        }
    } else {
        busybox_tree(&rootfs)?;
    }

    let spec = Command::new(
        find_in_path("crun")
            .or_else(|| find_in_path("runc"))
            .ok_or("neither crun nor runc")?,
    )
    .arg("spec")
    .current_dir(bundle)
    .status()
    .map_err(|e| e.to_string())?;
    if !spec.success() {
        return Err("`crun spec` failed".into());
    }
    let path = bundle.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&fs::read(&path).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    config["process"]["args"] = serde_json::json!(["true"]);
    config["process"]["terminal"] = serde_json::json!(false);
    config["root"]["readonly"] = serde_json::json!(true);
    fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).map_err(|e| e.to_string())
}

/// bin/busybox and a symlink per applet, plus the mount points runtimes need.
fn busybox_tree(rootfs: &Path) -> Result<(), String> {
    let io = |e: std::io::Error| e.to_string();
    for d in [
        "bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp", "root",
    ] {
        fs::create_dir_all(rootfs.join(d)).map_err(io)?;
    }
    fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
        .map_err(|e| format!("/bin/busybox: {e} (apt-get install busybox-static)"))?;
    let list = Command::new("/bin/busybox")
        .arg("--list-full")
        .output()
        .map_err(io)?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let applet = applet.trim_start_matches('/');
        if applet.is_empty() || applet == "bin/busybox" || applet.contains("..") {
            continue;
        }
        let link = rootfs.join(applet);
        if let Some(parent) = link.parent() {
            fs::create_dir_all(parent).map_err(io)?;
        }
        let _ = std::os::unix::fs::symlink("/bin/busybox", link);
    }
    Ok(())
}

/// `RUNTIME run --bundle B <fresh id>`; the container is gone once it exits.
fn oci_run(bin: &Path, bundle: &Path) -> Result<(), String> {
    static N: AtomicU64 = AtomicU64::new(0);
    let id = format!(
        "sbx-bench-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let out = Command::new(bin)
        .args(["run", "--bundle"])
        .arg(bundle)
        .arg(&id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        return Ok(());
    }
    let _ = Command::new(bin)
        .args(["delete", "-f", &id])
        .stderr(Stdio::null())
        .status();
    let err = String::from_utf8_lossy(&out.stderr);
    Err(format!(
        "`{} run` failed ({}): {}",
        bin.display(),
        out.status,
        err.lines().last().unwrap_or("").trim()
    ))
}

/// Run a command to completion with no stdio; panic if it fails.
fn run_ok(cmd: &mut Command) {
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain(["/usr/sbin".into(), "/usr/bin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
