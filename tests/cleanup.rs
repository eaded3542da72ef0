//! Concurrency and clean-up: what `--rm` runs leave behind (nothing), and
//! how bad input fails (one line, non-zero, nothing left).
//!
//! Kept in its own test binary: it counts host-wide state (cgroups,
//! processes, mounts), so nothing else of sbx may run beside it.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use common::{sbx_cgroups, stderr, TestRoot};

/// The tests here count host-wide state: they take turns.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn mounts() -> usize {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .count()
}

/// Processes whose command line carries `marker`.
fn processes_with(marker: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(marker))
                .unwrap_or(false)
        })
        .count()
}

fn tree(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(entries) = std::fs::read_dir(&d) {
            for e in entries.flatten() {
                let p = e.path();
                out.insert(p.strip_prefix(dir).unwrap().display().to_string());
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    stack.push(p);
                }
            }
        }
    }
    out
}

#[test]
fn concurrent_rm_runs_leave_nothing_behind() {
    let _serial = serial();
    let r = TestRoot::new();
    // Warm the caches (seccomp filter) so the before-snapshot is stable.
    assert!(r.sbx(&["run", "--rm", "busybox", "true"]).status.success());
    let marker = "sbx-concurrency-marker";
    let cgroups_before = sbx_cgroups();
    let mounts_before = mounts();
    let sandboxes_before = tree(&r.path().join("sandboxes"));
    let marked_before = processes_with(marker);

    let children: Vec<_> = (0..20)
        .map(|i| {
            // Half with limits (so they use cgroups), half without.
            let mut args = vec!["run", "--rm"];
            if i % 2 == 0 {
                args.extend(["--memory", "64m", "--pids-limit", "50", "--cpus", "0.5"]);
            }
            let script = format!("echo {marker}-$((1+{i})); sleep 0.3; echo done");
            let mut c = r.cmd(&args);
            c.args(["busybox", "sh", "-c", &script]);
            c.stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            c.spawn().unwrap()
        })
        .collect();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "run {i} failed: {}", stderr(&out));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("{marker}-{}\ndone\n", i + 1),
        );
    }

    assert_eq!(sbx_cgroups(), cgroups_before, "cgroups left behind");
    assert_eq!(mounts(), mounts_before, "mounts left behind on the host");
    assert_eq!(
        tree(&r.path().join("sandboxes")),
        sandboxes_before,
        "sandbox dirs left behind"
    );
    assert_eq!(
        processes_with(marker),
        marked_before,
        "processes left behind"
    );
}

#[test]
fn limits_reach_the_cgroup_files() {
    let _serial = serial();
    let r = TestRoot::new();
    let mut child = r
        .cmd(&[
            "run",
            "--rm",
            "--memory",
            "48m",
            "--cpus",
            "0.5",
            "--pids-limit",
            "7",
            "busybox",
            "sleep",
            "5",
        ])
        .spawn()
        .unwrap();
    // Find this sandbox's cgroups from the host side.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let dirs = loop {
        let d = sbx_cgroups();
        if !d.is_empty() || std::time::Instant::now() > deadline {
            break d;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(!dirs.is_empty(), "no cgroup for a sandbox with limits");
    let read = |name: &str| -> Option<String> {
        dirs.iter()
            .find_map(|d| std::fs::read_to_string(d.join(name)).ok())
            .map(|s| s.trim().to_string())
    };
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        assert_eq!(read("memory.max").as_deref(), Some("50331648"));
        assert_eq!(read("cpu.max").as_deref(), Some("50000 100000"));
        assert_eq!(read("pids.max").as_deref(), Some("7"));
    } else {
        assert_eq!(read("memory.limit_in_bytes").as_deref(), Some("50331648"));
        assert_eq!(read("cpu.cfs_quota_us").as_deref(), Some("50000"));
        assert_eq!(read("cpu.cfs_period_us").as_deref(), Some("100000"));
        assert_eq!(read("pids.max").as_deref(), Some("7"));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = child.wait();
    // SIGKILL of the CLI takes the sandbox with it (parent-death signal);
    // its cgroups are then empty and can be removed by the next prune.
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(
        processes_with("sleep 5"),
        0,
        "the sandbox outlived a killed CLI"
    );
    for d in sbx_cgroups() {
        let _ = std::fs::remove_dir(d);
    }
}

/// One line on stderr, a non-zero exit, no panic, no sandbox left.
fn assert_clean_failure(r: &TestRoot, args: &[&str], expect: &str) -> i32 {
    let before = tree(&r.path().join("sandboxes"));
    let o = r.sbx(args);
    let err = stderr(&o);
    assert!(!o.status.success(), "{args:?} should fail");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "{args:?}: one line expected, got {err:?}"
    );
    assert!(
        err.contains(expect),
        "{args:?}: expected {expect:?} in {err:?}"
    );
    assert_eq!(
        tree(&r.path().join("sandboxes")),
        before,
        "{args:?} left a sandbox behind"
    );
    o.status.code().unwrap_or(-1)
}

#[test]
fn bad_input_fails_cleanly() {
    let _serial = serial();
    let r = TestRoot::new();
    assert_eq!(
        assert_clean_failure(&r, &["run", "--rm", "nosuchimage"], "no such image"),
        125
    );
    assert_eq!(
        assert_clean_failure(
            &r,
            &["run", "--rm", "--memory", "lots", "busybox", "true"],
            "invalid size"
        ),
        125
    );
    assert_eq!(
        assert_clean_failure(
            &r,
            &["run", "--rm", "--cpus", "-1", "busybox", "true"],
            "--cpus"
        ),
        125
    );
    assert_eq!(
        assert_clean_failure(
            &r,
            &["run", "--rm", "--pids-limit", "0", "busybox", "true"],
            "--pids-limit"
        ),
        125
    );
    assert_eq!(
        assert_clean_failure(
            &r,
            &["run", "--rm", "--ulimit", "nofile=x", "busybox", "true"],
            "ulimit"
        ),
        125
    );
    assert_eq!(
        assert_clean_failure(
            &r,
            &["run", "--rm", "--bogus-flag", "busybox", "true"],
            "--bogus-flag"
        ),
        125
    );
    assert_eq!(
        assert_clean_failure(
            &r,
            &["run", "--rm", "-w", "relative", "busybox", "true"],
            "absolute"
        ),
        125
    );
    assert_eq!(
        assert_clean_failure(
            &r,
            &["run", "--rm", "busybox", "no-such-command"],
            "executable file not found"
        ),
        127
    );
    assert_eq!(
        assert_clean_failure(
            &r,
            &["run", "--rm", "busybox", "/etc/passwd"],
            "permission denied"
        ),
        126
    );
    // Without --rm the failed start leaves no record either.
    assert_clean_failure(
        &r,
        &["run", "busybox", "no-such-command"],
        "executable file not found",
    );
}

#[test]
fn corrupt_blob_is_refused() {
    let _serial = serial();
    let r = TestRoot::new();
    // A fresh image whose layer has never been unpacked: corrupt its layer
    // blob in the store, then run it.
    assert!(r.sbx(&["run", "--rm", "busybox", "true"]).status.success());
    let layer_dir = std::fs::read_dir(r.path().join("layers/sha256"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let tarball = r.path().join("rootfs.tar");
    assert!(std::process::Command::new("tar")
        .args([
            "-C",
            layer_dir.to_str().unwrap(),
            "-cf",
            tarball.to_str().unwrap(),
            "--exclude=./bin/true",
            "."
        ])
        .status()
        .unwrap()
        .success());
    let o = r.sbx(&["import", tarball.to_str().unwrap(), "victim:1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // The config names the layer by diff-id; import stores layers
    // uncompressed, so that is also the layer blob's digest.
    let id = common::stdout(&o).trim().to_string();
    let blobs = r.path().join("blobs/sha256");
    let config: serde_json::Value = serde_json::from_slice(
        &std::fs::read(blobs.join(id.trim_start_matches("sha256:"))).unwrap(),
    )
    .unwrap();
    let diff_id = config["rootfs"]["diff_ids"][0]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:");
    let biggest = blobs.join(diff_id);
    let mut data = std::fs::read(&biggest).unwrap();
    let middle = data.len() / 2;
    data[middle] ^= 0xff;
    std::fs::write(&biggest, data).unwrap();
    let layers_before = tree(&r.path().join("layers"));
    assert_clean_failure(&r, &["run", "--rm", "victim:1", "true"], "sha256");
    assert_eq!(
        tree(&r.path().join("layers")),
        layers_before,
        "a half-unpacked layer was left"
    );
}
