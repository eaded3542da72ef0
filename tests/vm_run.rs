//! `sbx run --isolation=vm`: the same image in a microVM. On these hosts
//! (PVM, no hardware virtualization) this runs through the qemu engine
//! with TCG; where KVM is real, through QEMU on KVM until the kvm engine
//! boots the Linux guest.
//!
//! Needs the guest kernel from guest-kernel/build.sh (scripts/setup test
//! builds it) and qemu-system-x86_64.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::TestRoot;

/// No VM run here may take longer: a hung CLI fails the test.
const RUN_LIMIT: Duration = Duration::from_secs(120);

fn kernel_dir() -> PathBuf {
    std::env::var_os("SBX_KERNEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/sbx/kernel"))
        .join("current")
}

/// The VM tests fail, loudly, without the guest kernel.
fn require_kernel() {
    let vmlinux = kernel_dir().join("vmlinux");
    assert!(
        vmlinux.is_file(),
        "the guest kernel is not built ({} is missing): run guest-kernel/build.sh \
         (scripts/setup test does) before the VM tests",
        vmlinux.display()
    );
}

struct Run {
    code: i32,
    out: String,
    err: String,
    took: Duration,
}

impl Run {
    /// stderr without the line that says which engine was chosen.
    fn errors(&self) -> Vec<&str> {
        self.err
            .lines()
            .filter(|l| !l.starts_with("sbx: vm engine "))
            .collect()
    }
}

/// `sbx run --rm --isolation=vm ARGS`, with env, stdin, and a deadline.
fn vm_run_with(root: &TestRoot, args: &[&str], env: &[(&str, &str)], stdin: Option<&[u8]>) -> Run {
    require_kernel();
    let mut full = vec!["run", "--rm", "--isolation=vm"];
    full.extend_from_slice(args);
    let mut cmd: Command = root.cmd(&full);
    cmd.envs(env.iter().copied())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().expect("spawning sbx");
    if let Some(data) = stdin {
        let mut w = child.stdin.take().unwrap();
        let data = data.to_vec();
        std::thread::spawn(move || {
            use std::io::Write;
            let _ = w.write_all(&data);
        });
    }
    let mut out_pipe = child.stdout.take().unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out_pipe.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("sbx run {args:?} hung for {RUN_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let run = Run {
        code: status.code().unwrap_or(-1),
        out: out_t.join().unwrap(),
        err: err_t.join().unwrap(),
        took: start.elapsed(),
    };
    assert!(!run.err.contains("panicked"), "sbx panicked: {}", run.err);
    run
}

fn vm_run(root: &TestRoot, args: &[&str]) -> Run {
    vm_run_with(root, args, &[], None)
}

#[test]
fn guest_kernel_streams_apart_and_exit_code() {
    let root = &TestRoot::new();
    let r = vm_run(
        root,
        &[
            "busybox",
            "sh",
            "-c",
            "uname -r; echo out; echo err >&2; exit 3",
        ],
    );
    assert_eq!(r.code, 3, "stderr: {}", r.err);
    let guest = std::fs::read_to_string(kernel_dir().join("version")).unwrap();
    let host = nix::sys::utsname::uname().unwrap();
    let host = host.release().to_string_lossy().into_owned();
    let lines: Vec<&str> = r.out.lines().collect();
    assert_eq!(lines, [guest.trim(), "out"], "stdout: {:?}", r.out);
    assert_ne!(lines[0], host, "uname -r must be the guest kernel's");
    assert_eq!(r.errors(), ["err"], "stderr: {:?}", r.err);
    assert!(
        r.err
            .lines()
            .filter(|l| l.starts_with("sbx: vm engine "))
            .count()
            <= 1,
        "at most one line says which engine: {:?}",
        r.err
    );
}

#[test]
fn cpus_and_memory() {
    let root = &TestRoot::new();
    let r = vm_run(
        root,
        &[
            "--cpus",
            "2",
            "--memory",
            "256m",
            "busybox",
            "sh",
            "-c",
            "nproc; grep MemTotal /proc/meminfo",
        ],
    );
    assert_eq!(r.code, 0, "stderr: {}", r.err);
    let lines: Vec<&str> = r.out.lines().collect();
    assert_eq!(lines[0], "2");
    let kib: u64 = lines[1].split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(
        (200 * 1024..=256 * 1024).contains(&kib),
        "MemTotal {kib} kB is not near 256 MiB"
    );
    // --cpus rounds up to whole vCPUs.
    let r = vm_run(root, &["--cpus", "1.5", "busybox", "nproc"]);
    assert_eq!(r.out.trim(), "2", "stderr: {}", r.err);
}

#[test]
fn env_workdir_user_hostname() {
    let root = &TestRoot::new();
    let env_file = root.path().join("vm.env");
    std::fs::write(&env_file, "# comment\nFROM_FILE=file\n").unwrap();
    let env_file = env_file.display().to_string();
    let r = vm_run(
        root,
        &[
            "-e",
            "FOO=bar baz",
            "--env-file",
            &env_file,
            "-w",
            "/tmp",
            "-u",
            "nobody",
            "--hostname",
            "vmhost",
            "busybox",
            "sh",
            "-c",
            "echo \"$FOO|$FROM_FILE|$HOME\"; pwd; id -u; id -g; hostname; cat /etc/hostname",
        ],
    );
    assert_eq!(r.code, 0, "stderr: {}", r.err);
    let lines: Vec<&str> = r.out.lines().collect();
    assert_eq!(lines[0], "bar baz|file|/nonexistent");
    assert_eq!(lines[1], "/tmp");
    assert_eq!(lines[2], "65534");
    assert_eq!(lines[3], "65534");
    assert_eq!(lines[4], "vmhost");
    assert_eq!(lines[5], "vmhost");
    let r = vm_run(
        root,
        &["-u", "1234:4321", "busybox", "sh", "-c", "id -u; id -g"],
    );
    assert_eq!(r.out, "1234\n4321\n", "stderr: {}", r.err);
}

#[test]
fn read_only_root_blocks_writes() {
    let root = &TestRoot::new();
    let r = vm_run(
        root,
        &[
            "--read-only",
            "busybox",
            "sh",
            "-c",
            "echo x > /etc/new && echo wrote; echo x > /tmp/new && echo wrote-tmp; exit 0",
        ],
    );
    assert_eq!(r.code, 0, "stderr: {}", r.err);
    assert!(
        !r.out.contains("wrote"),
        "--read-only allowed a write: {}",
        r.out
    );
    assert!(r.err.contains("Read-only file system"), "stderr: {}", r.err);
    // Without it the writable layer takes writes (and is gone next run).
    let r = vm_run(
        root,
        &["busybox", "sh", "-c", "echo x > /etc/new && cat /etc/new"],
    );
    assert_eq!(r.out, "x\n", "stderr: {}", r.err);
    let r = vm_run(
        root,
        &[
            "busybox",
            "sh",
            "-c",
            "test -e /etc/new && echo leaked; true",
        ],
    );
    assert_eq!(r.out, "", "the writable layer outlived its VM");
}

#[test]
fn stdin_signals_and_exec_failures() {
    let root = &TestRoot::new();
    let r = vm_run_with(
        root,
        &["-i", "busybox", "sh", "-c", "wc -c; echo done"],
        &[],
        Some(b"twelve bytes"),
    );
    assert_eq!(r.code, 0, "stderr: {}", r.err);
    assert_eq!(r.out.split_whitespace().collect::<Vec<_>>(), ["12", "done"]);
    // Without -i the workload reads /dev/null.
    let r = vm_run(root, &["busybox", "sh", "-c", "cat; echo eof"]);
    assert_eq!(r.out, "eof\n");

    let r = vm_run(root, &["busybox", "sh", "-c", "kill -TERM $$; sleep 5"]);
    assert_eq!(r.code, 143, "a signal's exit code is 128+n: {}", r.err);

    let r = vm_run(root, &["busybox", "no-such-command"]);
    assert_eq!(r.code, 127);
    assert_eq!(
        r.errors(),
        ["sbx: exec: \"no-such-command\": executable file not found in $PATH"]
    );
    let r = vm_run(root, &["busybox", "/etc/passwd"]);
    assert_eq!(r.code, 126);
    assert_eq!(r.errors(), ["sbx: exec \"/etc/passwd\": permission denied"]);
}

/// Consoles carry bulk data whole, both ways: QEMU drops console output its
/// host end cannot take at once, which the output window prevents.
#[test]
fn large_streams_arrive_whole() {
    let root = &TestRoot::new();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let data: Vec<u8> = (0..3_000_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    require_kernel();
    let mut cmd = root.cmd(&["run", "--rm", "-i", "--isolation=vm", "busybox", "cat"]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut w = child.stdin.take().unwrap();
    let input = data.clone();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let _ = w.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len(), data.len(), "bytes lost or added");
    assert!(out.stdout == data, "the bytes came back changed");

    let r = vm_run(
        root,
        &[
            "busybox",
            "sh",
            "-c",
            "head -c 20000000 /dev/zero; echo end >&2",
        ],
    );
    assert_eq!(r.code, 0, "stderr: {}", r.err);
    assert_eq!(r.out.len(), 20_000_000);
    assert_eq!(r.errors(), ["end"]);
}

#[test]
fn guest_panic_is_a_clear_error() {
    let root = &TestRoot::new();
    let r = vm_run_with(
        root,
        &["busybox", "true"],
        &[("SBX_VM_FAULT", "init-exit")],
        None,
    );
    assert_ne!(r.code, 0);
    let errors = r.errors();
    assert_eq!(errors.len(), 1, "one line: {:?}", r.err);
    assert!(
        errors[0].contains("the VM stopped") && errors[0].contains("Kernel panic"),
        "the error quotes the serial console's panic: {}",
        errors[0]
    );
}

#[test]
fn hung_guest_ends_at_timeout() {
    let root = &TestRoot::new();
    let r = vm_run(root, &["--timeout", "3", "busybox", "sleep", "1000"]);
    assert_eq!(r.code, 137, "stderr: {}", r.err);
    assert!(r.err.contains("timeout"), "stderr: {}", r.err);
    assert!(r.took < Duration::from_secs(60), "took {:?}", r.took);
}

#[test]
fn missing_or_corrupt_kernel_and_missing_qemu() {
    let root = &TestRoot::new();
    let junk = root.path().join("junk-kernel");
    std::fs::write(&junk, vec![0x42u8; 4096]).unwrap();
    let junk = junk.display().to_string();
    for (args, env, expect) in [
        (
            vec!["--kernel", "/nonexistent/vmlinux", "busybox", "true"],
            vec![],
            "guest-kernel/build.sh",
        ),
        (
            vec!["--kernel", junk.as_str(), "busybox", "true"],
            vec![],
            "is not a Linux x86_64 kernel image",
        ),
        (
            vec!["busybox", "true"],
            vec![("SBX_QEMU", "/nonexistent/qemu-system-x86_64")],
            "qemu-system-x86",
        ),
        (
            vec!["--vm-engine=kvm", "busybox", "true"],
            vec![],
            "--vm-engine=kvm",
        ),
    ] {
        let r = vm_run_with(root, &args, &env, None);
        assert_eq!(r.code, 125, "{args:?}: {}", r.err);
        let lines: Vec<&str> = r.err.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: one line: {:?}", r.err);
        assert!(lines[0].contains(expect), "{args:?}: {:?}", lines[0]);
    }
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

fn mounts_with(marker: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(marker))
        .map(String::from)
        .collect()
}

#[test]
fn five_runs_leave_nothing_behind() {
    let root = TestRoot::new();
    let marker = root.path().display().to_string();
    let first = vm_run_with(&root, &["busybox", "true"], &[], None);
    assert_eq!(first.code, 0, "stderr: {}", first.err);
    // The cached root disk and initramfs are meant to stay.
    let before = tree(root.path());
    for i in 0..5 {
        let r = vm_run_with(
            &root,
            &[
                "busybox",
                "sh",
                "-c",
                &format!("echo run-{i} > /tmp/f; cat /tmp/f"),
            ],
            &[],
            None,
        );
        assert_eq!(r.out, format!("run-{i}\n"), "stderr: {}", r.err);
    }
    // And a killed one.
    let r = vm_run_with(
        &root,
        &["--timeout", "2", "busybox", "sleep", "100"],
        &[],
        None,
    );
    assert_eq!(r.code, 137);
    assert_eq!(tree(root.path()), before, "files left behind");
    assert_eq!(
        processes_with(&marker),
        Vec::<String>::new(),
        "processes left behind"
    );
    assert_eq!(
        mounts_with(&marker),
        Vec::<String>::new(),
        "mounts left behind"
    );
    let vm_files: Vec<String> = before
        .iter()
        .filter(|p| p.starts_with("vm/"))
        .cloned()
        .collect();
    assert!(
        vm_files.iter().all(|p| p == "vm/disks"
            || (p.starts_with("vm/disks/") && p.ends_with(".ext4"))
            || (p.starts_with("vm/initramfs-") && p.ends_with(".cpio"))),
        "only the cached root disk and initramfs stay: {vm_files:?}"
    );
}
