//! Volumes, bind mounts and tmpfs under both isolation levels: a named
//! volume (an ext4 disk image) written by a container and read by a VM
//! and back; the `volume` verbs; bind mounts (rw, ro); tmpfs; anonymous
//! volumes for an image's VOLUME; refusals; nothing left on the host.
//!
//! The VM tests need the guest kernel (scripts/setup test builds it) and
//! qemu-system-x86_64, as tests/vm_run.rs does.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use common::{stderr, stdout, TestRoot};

fn require_kernel() {
    let vmlinux = std::env::var_os("SBX_KERNEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/sbx/kernel"))
        .join("current/vmlinux");
    assert!(
        vmlinux.is_file(),
        "the guest kernel is not built ({} is missing): run guest-kernel/build.sh \
         (scripts/setup test does) before the VM tests",
        vmlinux.display()
    );
}

/// stderr without the line that says which VM engine was chosen.
fn errors(o: &Output) -> Vec<String> {
    stderr(o)
        .lines()
        .filter(|l| !l.starts_with("sbx: vm engine "))
        .map(str::to_string)
        .collect()
}

/// `sbx run --rm [--isolation=vm] ARGS`, checked to succeed; its stdout.
fn run_ok(root: &TestRoot, vm: bool, args: &[&str]) -> String {
    if vm {
        require_kernel();
    }
    let mut full = vec!["run", "--rm"];
    if vm {
        full.push("--isolation=vm");
    }
    full.extend_from_slice(args);
    let o = root.sbx(&full);
    assert!(
        o.status.success(),
        "sbx {full:?} failed ({:?}): {}",
        o.status,
        stderr(&o)
    );
    assert!(errors(&o).is_empty(), "stderr: {}", stderr(&o));
    stdout(&o)
}

/// A command that must fail with exit 125 and exactly one line on stderr
/// (besides the VM engine's); that line.
fn fails_one_line(root: &TestRoot, args: &[&str]) -> String {
    let o = root.sbx(args);
    assert_eq!(o.status.code(), Some(125), "{args:?}: {}", stderr(&o));
    let lines = errors(&o);
    assert_eq!(lines.len(), 1, "{args:?}: not one line: {lines:?}");
    assert!(!lines[0].contains("panicked"));
    lines[0].clone()
}

/// Loop devices backed by a file under `root`, and host mounts of paths
/// under it.
fn leftovers(root: &Path) -> Vec<String> {
    let root = root.to_string_lossy().into_owned();
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/sys/block") {
        for e in entries.flatten() {
            let backing = e.path().join("loop/backing_file");
            if let Ok(b) = std::fs::read_to_string(backing) {
                if b.contains(&root) {
                    out.push(format!("{}: {}", e.file_name().to_string_lossy(), b.trim()));
                }
            }
        }
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    out.extend(
        mounts
            .lines()
            .filter(|l| l.contains(&root))
            .map(str::to_string),
    );
    out
}

/// Nothing of this root's volumes stays attached or mounted (loop devices
/// are detached asynchronously: allow them a moment).
fn assert_nothing_left(root: &TestRoot) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = leftovers(root.path());
        if left.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            panic!("left behind on the host: {left:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn volume_names(root: &TestRoot) -> Vec<String> {
    let o = root.sbx(&["volume", "ls", "-q"]);
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o).lines().map(str::to_string).collect()
}

#[test]
fn named_volume_is_shared_by_container_and_vm() {
    let root = &TestRoot::new();
    // Created on first use by the container.
    run_ok(
        root,
        false,
        &[
            "-v",
            "shared:/data",
            "busybox",
            "sh",
            "-c",
            "echo from-container > /data/c",
        ],
    );
    assert_eq!(volume_names(root), ["shared"]);
    let out = run_ok(
        root,
        true,
        &[
            "-v",
            "shared:/data",
            "busybox",
            "sh",
            "-c",
            "cat /data/c; echo from-vm > /data/v",
        ],
    );
    assert_eq!(out, "from-container\n");
    let out = run_ok(
        root,
        false,
        &[
            "-v",
            "shared:/srv/x:ro",
            "busybox",
            "cat",
            "/srv/x/v",
            "/srv/x/c",
        ],
    );
    assert_eq!(out, "from-vm\nfrom-container\n");
    // The VM sees it read-only too.
    let out = run_ok(
        root,
        true,
        &[
            "-v",
            "shared:/data:ro",
            "busybox",
            "sh",
            "-c",
            "cat /data/v; touch /data/new 2>&1 || true",
        ],
    );
    assert!(out.starts_with("from-vm\n"), "{out}");
    assert!(out.contains("Read-only file system"), "{out}");
    assert_eq!(volume_names(root), ["shared"]);
    assert_nothing_left(root);
}

#[test]
fn volume_verbs() {
    let root = &TestRoot::new();
    let o = root.sbx(&[
        "volume", "create", "--opt", "size=64m", "--label", "team=a", "v1",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "v1\n");
    let line = fails_one_line(root, &["volume", "create", "v1"]);
    assert!(line.contains("already exists"), "{line}");
    fails_one_line(root, &["volume", "create", "--opt", "color=red", "v2"]);
    fails_one_line(root, &["volume", "create", "../x"]);

    let o = root.sbx(&["volume", "inspect", "v1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let v = &v[0];
    assert_eq!(v["name"], "v1");
    assert_eq!(v["driver"], "local");
    assert_eq!(v["format"], "ext4");
    assert_eq!(v["size"], 64u64 << 20);
    assert_eq!(v["labels"]["team"], "a");
    assert!(v["created"].is_string());
    let image = PathBuf::from(v["mountpoint"].as_str().unwrap());
    assert!(image.starts_with(root.path()) && image.is_file());
    fails_one_line(root, &["volume", "inspect", "nope"]);

    let o = root.sbx(&["volume", "ls", "--format", "json"]);
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["name"], "v1");
    let table = stdout(&root.sbx(&["volume", "ls"]));
    assert!(table.lines().nth(1).unwrap().ends_with(" v1"), "{table}");

    // In use: refused while a sandbox runs with it, by rm and by another
    // sandbox of either isolation.
    let marks = tempfile::tempdir().unwrap();
    let m = format!("{}:/m", marks.path().display());
    let mut bg: Child = root
        .cmd(&[
            "run",
            "--rm",
            "-v",
            "v1:/data",
            "-v",
            &m,
            "busybox",
            "sh",
            "-c",
            "touch /m/ready; sleep 60",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !marks.path().join("ready").exists() {
        assert!(
            Instant::now() < deadline,
            "the background sandbox never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let line = fails_one_line(root, &["volume", "rm", "v1"]);
    assert!(line.contains("v1") && line.contains("used by"), "{line}");
    let line = fails_one_line(root, &["volume", "rm", "-f", "v1"]);
    assert!(line.contains("in use"), "{line}");
    let line = fails_one_line(root, &["run", "--rm", "-v", "v1:/d", "busybox", "true"]);
    assert!(line.contains("one sandbox at a time"), "{line}");
    require_kernel();
    let line = fails_one_line(
        root,
        &[
            "run",
            "--rm",
            "--isolation=vm",
            "-v",
            "v1:/d",
            "busybox",
            "true",
        ],
    );
    assert!(line.contains("one sandbox at a time"), "{line}");
    let o = root.sbx(&["volume", "prune"]);
    assert!(o.status.success());
    assert_eq!(volume_names(root), ["v1"]);
    bg.kill().unwrap();
    bg.wait().unwrap();
    assert_nothing_left(root);

    // The killed run left its record, which still names v1: prune keeps
    // it, rm refuses it, rm -f removes it.
    let o = root.sbx(&["volume", "create", "unused"]);
    assert!(o.status.success());
    let o = root.sbx(&["volume", "prune"]);
    assert!(stdout(&o).contains("unused"), "{}", stdout(&o));
    assert_eq!(volume_names(root), ["v1"]);
    fails_one_line(root, &["volume", "rm", "v1"]);
    let o = root.sbx(&["volume", "rm", "-f", "v1", "gone-already"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(volume_names(root).is_empty());
    assert!(!image.exists());
    let line = fails_one_line(root, &["volume", "rm", "v1"]);
    assert!(line.contains("no such volume"), "{line}");
}

#[test]
fn bind_mounts_rw_and_ro() {
    let root = &TestRoot::new();
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("in"), "host file\n").unwrap();
    let rw = format!("{}:/rw", host.path().display());
    let ro = format!(
        "type=bind,source={},target=/deep/ro,readonly",
        host.path().display()
    );
    let out = run_ok(
        root,
        false,
        &[
            "-v",
            &rw,
            "--mount",
            &ro,
            "busybox",
            "sh",
            "-c",
            "cat /rw/in; echo written > /rw/out; cat /deep/ro/out; \
             { echo x > /deep/ro/no; } 2>/dev/null || echo EROFS-$?; \
             grep -c ' /deep/ro .*ro,' /proc/mounts",
        ],
    );
    assert_eq!(out, "host file\nwritten\nEROFS-1\n1\n");
    assert_eq!(
        std::fs::read_to_string(host.path().join("out")).unwrap(),
        "written\n"
    );
    assert!(!host.path().join("no").exists());
    // The error the write gets is EROFS.
    let file = format!("{}:/f.txt:ro", host.path().join("in").display());
    let o = root.sbx(&[
        "run",
        "--rm",
        "-v",
        &file,
        "busybox",
        "sh",
        "-c",
        "echo y >> /f.txt",
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("Read-only file system"),
        "{}",
        stderr(&o)
    );
    assert_nothing_left(root);
}

#[test]
fn tmpfs_in_container_and_vm() {
    let root = &TestRoot::new();
    for vm in [false, true] {
        let out = run_ok(
            root,
            vm,
            &[
                "--tmpfs",
                "/scratch:size=8m",
                "--mount",
                "type=tmpfs,target=/t2,tmpfs-mode=700",
                "busybox",
                "sh",
                "-c",
                "echo hi > /scratch/f && cat /scratch/f; grep -E ' /(scratch|t2) ' /proc/mounts | cut -d' ' -f1-3 | sort; stat -c %a /t2",
            ],
        );
        assert_eq!(
            out, "hi\ntmpfs /scratch tmpfs\ntmpfs /t2 tmpfs\n700\n",
            "vm: {vm}"
        );
        let o = root.sbx(&[
            "run",
            "--rm",
            "--tmpfs",
            "/s:size=8m",
            "busybox",
            "grep",
            " /s ",
            "/proc/mounts",
        ]);
        assert!(stdout(&o).contains("size=8192k"), "{}", stdout(&o));
    }
    assert_nothing_left(root);
}

/// An image with `VOLUME ["/data"]`, imported from busybox's own layer.
fn image_with_volume(root: &TestRoot) {
    // Layers are unpacked on first use.
    run_ok(root, false, &["busybox", "true"]);
    let layers = root.path().join("layers/sha256");
    let layer = std::fs::read_dir(&layers)
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    let tar = root.path().join("rootfs.tar");
    let ok = std::process::Command::new("tar")
        .arg("-C")
        .arg(&layer)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let o = root.sbx(&[
        "import",
        "-c",
        r#"VOLUME ["/data"]"#,
        tar.to_str().unwrap(),
        "withvol",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn anonymous_volumes_for_image_volume_paths() {
    let root = &TestRoot::new();
    image_with_volume(root);
    for vm in [false, true] {
        let out = run_ok(
            root,
            vm,
            &["withvol", "sh", "-c", "grep -c ' /data ext4 ' /proc/mounts"],
        );
        assert_eq!(out, "1\n", "vm: {vm}");
        // --rm took the anonymous volume with it.
        assert!(volume_names(root).is_empty(), "vm: {vm}");
    }
    // A named volume over the image's path replaces the anonymous one.
    run_ok(
        root,
        false,
        &["-v", "mine:/data", "withvol", "touch", "/data/x"],
    );
    assert_eq!(volume_names(root), ["mine"]);
    // Without --rm it stays with its sandbox; rm -v removes both.
    let o = root.sbx(&["run", "--name", "keep", "withvol", "touch", "/data/y"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let names = volume_names(root);
    assert_eq!(names.len(), 2, "{names:?}");
    let anon = names.iter().find(|n| *n != "mine").unwrap().clone();
    assert_eq!(anon.len(), 64);
    let o = root.sbx(&["volume", "inspect", &anon]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["anonymous"], true);
    let o = root.sbx(&["rm", "-v", "keep"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(volume_names(root), ["mine"]);
    // A detached --rm sandbox's monitor removes its anonymous volume.
    let o = root.sbx(&["run", "-d", "--rm", "withvol", "touch", "/data/w"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let deadline = Instant::now() + Duration::from_secs(20);
    while volume_names(root) != ["mine"] {
        assert!(Instant::now() < deadline, "left: {:?}", volume_names(root));
        std::thread::sleep(Duration::from_millis(50));
    }
    // -v /path alone: an anonymous volume too.
    run_ok(
        root,
        false,
        &["-v", "/cache", "busybox", "touch", "/cache/z"],
    );
    assert_eq!(volume_names(root), ["mine"]);
    assert_nothing_left(root);
}

#[test]
fn refusals_are_one_line() {
    let root = &TestRoot::new();
    require_kernel();
    let host = tempfile::tempdir().unwrap();
    let bind = format!("{}:/x", host.path().display());
    let line = fails_one_line(
        root,
        &[
            "run",
            "--rm",
            "--isolation=vm",
            "-v",
            &bind,
            "busybox",
            "true",
        ],
    );
    assert!(
        line.contains("not supported yet") && line.contains("named volume"),
        "{line}"
    );
    for (args, says) in [
        (&["-v", "relative/dir:/x"][..], "relative host path"),
        (&["-v", ":/x"][..], "source is empty"),
        (&["--mount", "type=nope,target=/x"][..], "unknown type"),
        (&["-v", "/does/not/exist:/x"][..], "does not exist"),
        (&["-v", "v:relative"][..], "absolute path"),
        (&["--tmpfs", "/t:size=lots"][..], "invalid size"),
        (&["-v", "a:/x", "-v", "b:/x"][..], "duplicate mount point"),
    ] {
        let mut full = vec!["run", "--rm"];
        full.extend_from_slice(args);
        full.extend_from_slice(&["busybox", "true"]);
        let line = fails_one_line(root, &full);
        assert!(line.contains(says), "{args:?}: {line}");
    }
    // Nothing was created by the refused runs.
    assert!(volume_names(root).is_empty());
    let sandboxes = std::fs::read_dir(root.path().join("sandboxes"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(sandboxes, 0);
    assert_nothing_left(root);
}
