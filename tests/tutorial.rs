//! Docker's getting-started tutorial end to end with examples/flask-hello,
//! once in a container and once in a VM: build, run -d with a published
//! port, ps, an HTTP GET, logs, stop, rm, rmi. And `stop -t` of a VM whose
//! workload ignores SIGTERM.
//!
//! The tutorial tests run every sbx command in a private network namespace
//! of their own (see common::netns), so port 5000 and the default bridge
//! live there and never on the host; it is deleted afterwards even when the
//! test fails.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::netns::NetTest;
use common::{stderr, stdout, TestRoot};

/// Builds (or reuses) the sbx-python:3 base in `root` with the project's
/// script; its rootfs tarball is cached per machine, so only the first run
/// anywhere needs the Debian mirror.
fn python_base(root: &TestRoot) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/python-base");
    let o = std::process::Command::new(&script)
        .arg(common::SBX)
        .env("SBX_ROOT", root.path())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running scripts/python-base");
    assert!(
        o.status.success(),
        "scripts/python-base failed (it needs the Debian mirror the first time): {}",
        stderr(&o)
    );
}

/// Poll `f` until it returns Some or `secs` pass.
fn poll<T>(secs: u64, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn tutorial(isolation: &str) {
    let t = NetTest::new();
    python_base(&t.root);
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/flask-hello");
    let example = example.to_str().unwrap();

    // docker build -t getting-started .
    let started = Instant::now();
    let out = t.ok(&["build", "-t", "flask-hello", example]);
    assert!(out.contains("requirements satisfied"), "{out}");
    eprintln!("[{isolation}] build: {:?}", started.elapsed());

    // docker run -dp 127.0.0.1:5000:5000 --name web getting-started
    let isolation_flag = format!("--isolation={isolation}");
    let started = Instant::now();
    let id = t.ok(&[
        "run",
        "-d",
        &isolation_flag,
        "-p",
        "127.0.0.1:5000:5000",
        "--name",
        "web",
        "flask-hello",
    ]);
    assert_eq!(id.trim().len(), 64, "run -d prints the full id: {id:?}");
    eprintln!("[{isolation}] run -d returned: {:?}", started.elapsed());

    // docker ps
    let ps = t.ok(&["ps"]);
    let line = ps
        .lines()
        .find(|l| l.contains("web"))
        .unwrap_or_else(|| panic!("web not in ps:\n{ps}"));
    assert!(line.contains("127.0.0.1:5000->5000/tcp"), "{ps}");
    assert!(line.contains("flask-hello"), "{ps}");
    assert_eq!(t.ok(&["port", "web"]).trim(), "5000/tcp -> 127.0.0.1:5000");
    let inspect: serde_json::Value = serde_json::from_str(&t.ok(&["inspect", "web"])).unwrap();
    assert_eq!(inspect[0]["isolation"], isolation);
    eprintln!("[{isolation}] backend: {}", inspect[0]["backend"]);

    // curl http://127.0.0.1:5000/ until the app is up (Python under TCG in
    // a VM takes a while to import Flask).
    let request = "GET / HTTP/1.1\r\nHost: 127.0.0.1:5000\r\nConnection: close\r\n\r\n";
    let mut last = String::new();
    let reply = poll(180, || match t.http_request(5000, request) {
        Ok(r) if r.contains("Hello World!") => Some(r),
        Ok(r) => {
            last = r;
            None
        }
        Err(e) => {
            last = e;
            None
        }
    })
    .unwrap_or_else(|| {
        let logs = t.sbx(&["logs", "web"]);
        panic!(
            "[{isolation}] the Flask app did not answer on 127.0.0.1:5000 (last: {last:?}); logs:\n{}{}",
            stdout(&logs),
            stderr(&logs)
        )
    });
    eprintln!(
        "[{isolation}] Flask answered {:?} after run -d",
        started.elapsed()
    );
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.ends_with("Hello World!"), "{reply}");

    // docker logs web: Flask logs the request on stderr.
    let logs = poll(20, || {
        let o = t.sbx(&["logs", "web"]);
        let all = format!("{}{}", stdout(&o), stderr(&o));
        all.contains("\"GET / HTTP/1.1\" 200").then_some(all)
    });
    assert!(
        logs.is_some(),
        "[{isolation}] the request is not in the logs:\n{}",
        stderr(&t.sbx(&["logs", "web"]))
    );

    // docker stop web; docker rm web; docker rmi getting-started
    let stopping = Instant::now();
    t.ok(&["stop", "web"]);
    eprintln!("[{isolation}] stop: {:?}", stopping.elapsed());
    assert!(
        stopping.elapsed() < Duration::from_secs(60),
        "stop took {:?}",
        stopping.elapsed()
    );
    assert!(t.ok(&["ps", "-q"]).trim().is_empty());
    let ps = t.ok(&["ps", "-a"]);
    assert!(ps.contains("web") && ps.contains("Exited"), "{ps}");
    assert!(t.http_get(5000).is_err(), "port 5000 still open after stop");
    t.ok(&["rm", "web"]);
    assert!(t.ok(&["ps", "-aq"]).trim().is_empty());
    t.ok(&["rmi", "flask-hello"]);
    let images = t.ok(&["images"]);
    assert!(!images.contains("flask-hello"), "{images}");
    t.assert_empty();
}

#[test]
fn tutorial_flask_hello_in_a_container() {
    tutorial("container");
}

#[test]
fn tutorial_flask_hello_in_a_vm() {
    tutorial("vm");
}

/// A test root whose sandboxes are removed even when the test fails.
struct Root(TestRoot);

impl Drop for Root {
    fn drop(&mut self) {
        let ids = stdout(&self.0.sbx(&["ps", "-a", "-q", "--no-trunc"]));
        for id in ids.lines() {
            let _ = self.0.sbx(&["rm", "-f", id]);
        }
    }
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

#[test]
fn vm_stop_timeout_kills_a_workload_that_ignores_sigterm() {
    let r = &Root(TestRoot::new());
    let r = &r.0;
    let id = ok(
        r,
        &[
            "run",
            "-d",
            "--isolation=vm",
            "busybox",
            "sh",
            "-c",
            "trap '' TERM; echo ready; while true; do sleep 1; done",
        ],
    );
    let id = id.trim();
    // The trap is set once the workload says so.
    let ready = poll(60, || {
        stdout(&r.sbx(&["logs", id]))
            .contains("ready")
            .then_some(())
    });
    assert!(ready.is_some(), "the VM workload never started");
    let t = Instant::now();
    ok(r, &["stop", "-t", "2", id]);
    let took = t.elapsed();
    eprintln!("vm stop -t 2: {took:?}");
    assert!(
        took >= Duration::from_millis(1500) && took <= Duration::from_secs(15),
        "stop -t 2 of a VM took {took:?}"
    );
    assert_eq!(ok(r, &["wait", id]).trim(), "137");
    ok(r, &["rm", id]);
}
