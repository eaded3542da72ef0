//! `sbx run --isolation=container`: what the workload sees and how it ends.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{run, stderr, stdout, TestRoot};

#[test]
fn stdout_and_stderr_apart_and_exit_code() {
    let r = &TestRoot::new();
    let (code, out, err) = run(
        r,
        &["busybox", "sh", "-c", "echo out; echo err >&2; exit 3"],
    );
    assert_eq!(code, 3);
    assert_eq!(out, "out\n");
    assert_eq!(err, "err\n");
}

#[test]
fn explicit_isolation_flag_and_signal_exit_code() {
    let r = &TestRoot::new();
    let (code, _, _) = run(
        r,
        &["--isolation=container", "busybox", "sh", "-c", "kill -9 $$"],
    );
    // PID 1 ignores signals it has no handler for, even SIGKILL from
    // inside; a child shell is not PID 1.
    let (code2, _, _) = run(r, &["busybox", "sh", "-c", "sh -c 'kill -9 $$'; echo $?"]);
    assert!(
        code == 0 || code == 137,
        "kill -9 of PID 1 from inside: {code}"
    );
    assert_eq!(code2, 0);
}

#[test]
fn pid1_hostname_network_and_masks() {
    let r = &TestRoot::new();
    let (code, out, err) = run(
        r,
        &[
            "busybox",
            "sh",
            "-c",
            "echo pid=$$; hostname; ls /sys/class/net; cat /proc/kcore /proc/keys /proc/timer_list 2>/dev/null | wc -c; cat /proc/1/cmdline | tr '\\0' ' '; echo",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "pid=1");
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    assert_ne!(lines[1], host, "the sandbox must have its own hostname");
    assert_eq!(lines[1].len(), 12, "default hostname is the short id");
    assert_eq!(lines[2], "lo", "--network none (the default) shows only lo");
    assert_eq!(
        lines[3].trim(),
        "0",
        "/proc/kcore, /proc/keys, /proc/timer_list are masked"
    );
    assert!(
        lines[4].starts_with("sh -c"),
        "PID 1 is the workload: {}",
        lines[4]
    );
}

#[test]
fn loopback_is_up_and_host_network_is_shared() {
    let r = &TestRoot::new();
    let (code, out, _) = run(
        r,
        &[
            "busybox",
            "cat",
            "/sys/class/net/lo/operstate",
            "/sys/class/net/lo/flags",
        ],
    );
    assert_eq!(code, 0);
    let flags =
        u32::from_str_radix(out.lines().nth(1).unwrap().trim_start_matches("0x"), 16).unwrap();
    assert_eq!(flags & 1, 1, "lo is up");
    let (code, out, _) = run(r, &["--network", "host", "busybox", "ls", "/sys/class/net"]);
    assert_eq!(code, 0);
    let host: Vec<String> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    for iface in host {
        assert!(
            out.split_whitespace().any(|i| i == iface),
            "host interface {iface} visible with --network host"
        );
    }
}

#[test]
fn privileged_operations_fail() {
    let r = &TestRoot::new();
    let (code, _, err) = run(r, &["busybox", "mount", "-o", "remount,rw", "/sys"]);
    assert_ne!(code, 0, "remounting /sys read-write must fail");
    assert!(!err.is_empty());
    let (code, _, _) = run(
        r,
        &["busybox", "sh", "-c", "reboot -f; sleep 1; echo still-here"],
    );
    let (_, out, _) = run(
        r,
        &[
            "busybox",
            "sh",
            "-c",
            "reboot -f 2>/dev/null; echo still-here",
        ],
    );
    assert_eq!(
        out.trim(),
        "still-here",
        "reboot -f must fail inside the sandbox (exit {code})"
    );
    let (code, _, _) = run(
        r,
        &["busybox", "sh", "-c", "echo 1 > /proc/sys/kernel/panic"],
    );
    assert_ne!(code, 0, "/proc/sys is read-only");
}

#[test]
fn capabilities_seccomp_and_no_new_privs() {
    let r = &TestRoot::new();
    let (code, out, err) = run(r, &["busybox", "cat", "/proc/self/status"]);
    assert_eq!(code, 0, "{err}");
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("{name} missing from /proc/self/status"))
    };
    let docker_default = format!("{:016x}", sbx_container_default_caps());
    assert_eq!(field("CapEff"), docker_default);
    assert_eq!(field("CapPrm"), docker_default);
    assert_eq!(field("CapBnd"), docker_default);
    assert_eq!(field("CapInh"), "0000000000000000");
    assert_eq!(field("Seccomp"), "2");
    assert_eq!(field("NoNewPrivs"), "1");
    // A non-root user holds no effective capabilities (as Docker ≥ 20.10).
    let (_, out, _) = run(
        r,
        &[
            "-u",
            "1000",
            "busybox",
            "grep",
            "CapEff",
            "/proc/self/status",
        ],
    );
    assert_eq!(out.split_whitespace().nth(1), Some("0000000000000000"));
}

/// Docker's 14 default capabilities as /proc shows them.
fn sbx_container_default_caps() -> u64 {
    0x00000000a80425fb
}

#[test]
fn memory_limit_kills_with_137() {
    let r = &TestRoot::new();
    let (code, _, err) = run(
        r,
        &[
            "--memory",
            "32m",
            "busybox",
            "dd",
            "if=/dev/zero",
            "of=/dev/null",
            "bs=100M",
            "count=1",
        ],
    );
    assert_eq!(
        code, 137,
        "a 100 MiB allocation under --memory 32m is OOM-killed: {err}"
    );
    let (code, _, err) = run(
        r,
        &[
            "--memory",
            "64m",
            "busybox",
            "dd",
            "if=/dev/zero",
            "of=/dev/null",
            "bs=16M",
            "count=1",
        ],
    );
    assert_eq!(code, 0, "a 16 MiB allocation fits in 64m: {err}");
}

#[test]
fn pids_limit_stops_a_fork_bomb() {
    let r = &TestRoot::new();
    // A bounded bomb: up to 40 background sleeps, printing how many got
    // through; the shell dies at its first failed fork.
    let (code, out, err) = run(
        r,
        &[
            "--pids-limit",
            "10",
            "--timeout",
            "60",
            "busybox",
            "sh",
            "-c",
            "i=0; while [ $i -lt 40 ]; do sleep 3 & i=$((i+1)); echo $i; done",
        ],
    );
    let started: u32 = out
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        started < 10,
        "at most 10 tasks, but {started} sleeps started (exit {code}): {err}"
    );
    assert!(
        started > 0,
        "some sleeps start below the limit: {out:?} {err}"
    );
    assert!(err.contains("can't fork"), "fork failures reported: {err}");
}

#[test]
fn read_only_root_blocks_writes() {
    let r = &TestRoot::new();
    let (code, _, err) = run(r, &["--read-only", "busybox", "touch", "/newfile"]);
    assert_ne!(code, 0);
    assert!(err.contains("Read-only file system"), "{err}");
    // /dev/shm and /tmp-less writes: tmpfs mounts stay writable.
    let (code, _, err) = run(r, &["--read-only", "busybox", "touch", "/dev/shm/ok"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, _) = run(r, &["busybox", "touch", "/newfile"]);
    assert_eq!(code, 0, "without --read-only the root is writable");
}

#[test]
fn env_workdir_user_hostname_flags() {
    let r = &TestRoot::new();
    let env_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(env_file.path(), "# comment\nFROM_FILE=yes\n\nSHARED=file\n").unwrap();
    let (code, out, err) = run(
        r,
        &[
            "-e",
            "GREETING=hello world",
            "--env-file",
            env_file.path().to_str().unwrap(),
            "-e",
            "SHARED=flag",
            "-w",
            "/tmp/work",
            "-u",
            "1000:100",
            "--hostname",
            "box1",
            "busybox",
            "sh",
            "-c",
            "echo $GREETING; echo $FROM_FILE; echo $SHARED; pwd; id -u; id -g; hostname; cat /etc/hostname; grep box1 /etc/hosts | cut -f2; echo $HOME",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "hello world",
            "yes",
            "flag",
            "/tmp/work",
            "1000",
            "100",
            "box1",
            "box1",
            "box1",
            "/home/user"
        ]
    );
    let (code, out, _) = run(r, &["-u", "nobody", "busybox", "id", "-un"]);
    assert_eq!((code, out.trim()), (0, "nobody"));
    let (code, _, err) = run(r, &["-u", "ghost", "busybox", "true"]);
    assert_ne!(code, 0);
    assert!(err.contains("ghost"), "{err}");
}

#[test]
fn image_config_is_honoured() {
    let r = common::TestRoot::new();
    // A second image with ENTRYPOINT, CMD, ENV, WORKDIR and USER, made by
    // re-importing busybox's layer with --change.
    assert_eq!(
        run(&r, &["busybox", "true"]).0,
        0,
        "unpacks busybox's layer"
    );
    let saved = r.path().join("bb.tar");
    let layer = std::fs::read_dir(r.path().join("layers/sha256"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let st = std::process::Command::new("tar")
        .args([
            "-C",
            layer.to_str().unwrap(),
            "-cf",
            saved.to_str().unwrap(),
            ".",
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let o = r.sbx(&[
        "import",
        "-c",
        "ENTRYPOINT [\"/bin/sh\", \"-c\"]",
        "-c",
        "CMD [\"echo cmd $MODE $(pwd) $(id -u)\"]",
        "-c",
        "ENV MODE=configured",
        "-c",
        "WORKDIR /srv",
        "-c",
        "USER 1000",
        saved.to_str().unwrap(),
        "configured:v1",
    ]);
    assert!(o.status.success(), "import: {}", stderr(&o));
    let (code, out, err) = run(&r, &["configured:v1"]);
    assert_eq!((code, out.trim()), (0, "cmd configured /srv 1000"), "{err}");
    // CMD replaced by arguments, ENTRYPOINT kept.
    let (_, out, _) = run(&r, &["configured:v1", "echo args"]);
    assert_eq!(out.trim(), "args");
    // --entrypoint replaces the entrypoint and drops the image's CMD.
    let (_, out, _) = run(&r, &["--entrypoint", "echo", "configured:v1", "plain"]);
    assert_eq!(out.trim(), "plain");
}

#[test]
fn tty_gives_a_real_pty() {
    let r = &TestRoot::new();
    let (code, out, err) = run(
        r,
        &[
            "-t",
            "busybox",
            "sh",
            "-c",
            "tty; test -t 1 && echo is-a-tty",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("/dev/pts/0"), "{out:?}");
    assert!(out.contains("is-a-tty"), "{out:?}");
    let (_, out, _) = run(r, &["busybox", "sh", "-c", "test -t 1 || echo no-tty"]);
    assert_eq!(out.trim(), "no-tty");
}

#[test]
fn stdin_with_interactive() {
    let r = &TestRoot::new();
    let mut child = r
        .cmd(&[
            "run",
            "--rm",
            "-i",
            "busybox",
            "sh",
            "-c",
            "read line; echo got:$line",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"ping\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(stdout(&out).trim(), "got:ping");
    // Without -i the workload's stdin is empty.
    let (_, out, _) = run(r, &["busybox", "sh", "-c", "cat; echo end"]);
    assert_eq!(out.trim(), "end");
}

#[test]
fn sigterm_and_sigint_are_forwarded() {
    let r = &TestRoot::new();
    for (sig, code) in [(libc::SIGTERM, 42), (libc::SIGINT, 43)] {
        let mut child = r
            .cmd(&[
                "run",
                "--rm",
                "busybox",
                "sh",
                "-c",
                "trap 'echo got TERM; exit 42' TERM; trap 'echo got INT; exit 43' INT; echo ready; while true; do sleep 0.05; done",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        assert_eq!(lines.next().unwrap().unwrap(), "ready");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::try_from(sig).unwrap(),
        )
        .unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(code));
        assert!(lines.next().unwrap().unwrap().starts_with("got"));
    }
}

#[test]
fn timeout_kills_the_sandbox() {
    let r = &TestRoot::new();
    let start = Instant::now();
    let (code, _, err) = run(r, &["--timeout", "1", "busybox", "sleep", "30"]);
    assert_eq!(code, 137);
    assert!(err.contains("timeout"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(20));
}

#[test]
fn names_are_unique_and_records_kept_without_rm() {
    let r = common::TestRoot::new();
    let o = r.sbx(&["run", "--name", "web", "busybox", "true"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = r.sbx(&["run", "--name", "web", "busybox", "true"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("already in use"), "{}", stderr(&o));
    let o = r.sbx(&["run", "--rm", "--name", "bad/name", "busybox", "true"]);
    assert!(!o.status.success());
}
