//! Helpers for the end-to-end tests: a temporary sbx root with the built-in
//! busybox image, and a way to run the real `sbx` binary against it.

#![allow(dead_code)]

pub mod netns;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub const SBX: &str = env!("CARGO_BIN_EXE_sbx");

/// Tests that need root fail loudly without it rather than pass silently.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (namespaces, cgroups, mounts): run the suite as root, as CI does"
    );
}

pub struct TestRoot {
    dir: tempfile::TempDir,
}

impl TestRoot {
    /// A fresh root holding only the bootstrapped busybox image.
    pub fn new() -> TestRoot {
        require_root();
        let dir = tempfile::Builder::new()
            .prefix("sbx-test-")
            .tempdir()
            .expect("tempdir");
        let t = TestRoot { dir };
        let out = t.sbx(&["image", "bootstrap", "busybox"]);
        assert!(
            out.status.success(),
            "bootstrap failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        t
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(SBX);
        c.arg("--root").arg(self.dir.path()).args(args);
        c.stdin(Stdio::null());
        c
    }

    pub fn sbx(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("running sbx")
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Run in a container and return (exit code, stdout, stderr).
pub fn run(root: &TestRoot, args: &[&str]) -> (i32, String, String) {
    let mut full = vec!["run", "--rm"];
    full.extend_from_slice(args);
    let o = root.sbx(&full);
    let code = o.status.code().unwrap_or(-1);
    let (out, err) = (stdout(&o), stderr(&o));
    assert!(!err.contains("panicked"), "sbx panicked: {err}");
    (code, out, err)
}

/// Every directory under the sbx cgroup parents, across hierarchies.
pub fn sbx_cgroups() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for base in [
        "/sys/fs/cgroup/sbx",
        "/sys/fs/cgroup/memory/sbx",
        "/sys/fs/cgroup/cpu/sbx",
        "/sys/fs/cgroup/pids/sbx",
    ] {
        if let Ok(entries) = std::fs::read_dir(base) {
            for e in entries.flatten() {
                if e.path().is_dir() {
                    out.push(e.path());
                }
            }
        }
    }
    out
}
