//! Detached microVMs: `sbx exec` through the monitor and the guest init's
//! control port (streams apart, exit code, env/workdir/user, stdin), ps,
//! logs and inspect of a VM, `stop -t` of a workload that ignores SIGTERM,
//! exec into a stopped VM, and `rm -f` leaving nothing behind.
//!
//! Needs the guest kernel (scripts/setup test builds it) and QEMU.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
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

/// A test root whose sandboxes are removed even when the test fails.
struct Root(TestRoot);

impl std::ops::Deref for Root {
    type Target = TestRoot;
    fn deref(&self) -> &TestRoot {
        &self.0
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let ids = stdout(&self.0.sbx(&["ps", "-a", "-q", "--no-trunc"]));
        for id in ids.lines() {
            let _ = self.0.sbx(&["rm", "-f", id]);
        }
    }
}

fn root() -> Root {
    require_kernel();
    Root(TestRoot::new())
}

fn ok(r: &TestRoot, args: &[&str]) -> String {
    let o = r.sbx(args);
    assert!(
        o.status.success(),
        "sbx {args:?} failed ({:?}): {}",
        o.status.code(),
        stderr(&o)
    );
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    stdout(&o)
}

fn detach_vm(r: &TestRoot, args: &[&str]) -> String {
    let mut full = vec!["run", "-d", "--isolation=vm"];
    full.extend_from_slice(args);
    let id = ok(r, &full).trim().to_string();
    assert_eq!(id.len(), 64, "run -d prints the full id: {id:?}");
    id
}

/// (code, stdout, stderr) of `sbx exec ARGS`.
fn exec(r: &TestRoot, args: &[&str]) -> (i32, String, String) {
    let mut full = vec!["exec"];
    full.extend_from_slice(args);
    let o = r.sbx(&full);
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    (o.status.code().unwrap_or(-1), stdout(&o), stderr(&o))
}

/// Processes whose command line mentions `marker`.
fn processes_with(marker: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| {
            let c = std::fs::read(e.path().join("cmdline")).ok()?;
            let c = String::from_utf8_lossy(&c).replace('\0', " ");
            c.contains(marker).then_some(c)
        })
        .collect()
}

fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(entries) = std::fs::read_dir(&d) {
            for e in entries.flatten() {
                let p = e.path();
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    stack.push(p);
                }
            }
        }
    }
    out.sort();
    out
}

#[test]
fn exec_into_a_detached_vm_and_remove_it() {
    let r = root();
    let id = detach_vm(
        &r,
        &[
            "--name",
            "vmx",
            "busybox",
            "sh",
            "-c",
            "echo booted; sleep 300",
        ],
    );

    let (code, out, err) = exec(&r, &["vmx", "sh", "-c", "echo out; echo err >&2; exit 7"]);
    assert_eq!((code, out.as_str()), (7, "out\n"), "stderr: {err}");
    assert_eq!(err, "err\n");

    let (code, out, err) = exec(
        &r,
        &[
            "-e",
            "X=1",
            "-w",
            "/tmp",
            "-u",
            "1000",
            "vmx",
            "sh",
            "-c",
            "echo $X; pwd; id -u",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "1\n/tmp\n1000\n");

    // Input with -i, and more output than one window.
    let mut child = r
        .cmd(&[
            "exec",
            "-i",
            "vmx",
            "sh",
            "-c",
            "wc -c; head -c 300000 /dev/zero | wc -c",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || input.write_all(&vec![b'x'; 200_000]));
    let o = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert_eq!(stdout(&o), "200000\n300000\n", "{}", stderr(&o));
    let (code, out, _) = exec(&r, &["vmx", "sh", "-c", "head -c 300000 /dev/zero"]);
    assert_eq!((code, out.len()), (0, 300_000));

    // Not found: Docker's 127, one line.
    let (code, _, err) = exec(&r, &["vmx", "no-such-command"]);
    assert_eq!(code, 127, "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");

    // ps, logs, inspect.
    let ps = ok(&r, &["ps"]);
    assert!(
        ps.lines()
            .any(|l| l.contains("vmx") && l.contains(&id[..12])),
        "{ps}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ok(&r, &["logs", "vmx"]).contains("booted") {
        assert!(Instant::now() < deadline, "no log line from the VM");
        std::thread::sleep(Duration::from_millis(200));
    }
    let v: serde_json::Value = serde_json::from_str(&ok(&r, &["inspect", "vmx"])).unwrap();
    let text = v.to_string();
    assert!(text.contains("\"engine\""), "{text}");
    assert!(text.contains("vmm_to_workload_ms"), "{text}");
    assert_eq!(v[0]["state"]["status"], "running", "{text}");

    // rm -f: no VMM left, nothing on disk but the caches.
    let marker = r.path().display().to_string();
    assert!(!processes_with(&marker).is_empty(), "the VMM runs");
    ok(&r, &["rm", "-f", "vmx"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !processes_with(&marker).is_empty() {
        assert!(
            Instant::now() < deadline,
            "processes left: {:?}",
            processes_with(&marker)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let left: Vec<String> = tree(r.path())
        .into_iter()
        .filter(|p| p.starts_with("sandboxes/") || p.starts_with("tmp/"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn stop_kills_a_vm_that_ignores_sigterm_and_exec_then_fails_plainly() {
    let r = root();
    detach_vm(
        &r,
        &[
            "--name",
            "stubborn",
            "busybox",
            "sh",
            "-c",
            "trap '' TERM; echo ready; while :; do sleep 1; done",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ok(&r, &["logs", "stubborn"]).contains("ready") {
        assert!(Instant::now() < deadline, "the workload never started");
        std::thread::sleep(Duration::from_millis(200));
    }
    let t0 = Instant::now();
    ok(&r, &["stop", "-t", "2", "stubborn"]);
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(10),
        "stop -t 2 took {took:?}"
    );
    let (code, _, err) = exec(&r, &["stubborn", "true"]);
    assert_ne!(code, 0);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("not running"), "{err}");
}
