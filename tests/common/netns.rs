//! A private network namespace for tests that make bridges, veths, taps or
//! published ports: every sbx command runs in it through `ip netns exec`,
//! HTTP is done from a thread that joined it, and it is emptied and deleted
//! when the test ends, even when it fails.

use std::io::{Read, Write};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::{stderr, stdout, TestRoot, SBX};

/// A private network namespace, and an sbx root whose commands all run in
/// it. Dropping it removes the sandboxes, ends what is left in the
/// namespace, and deletes it.
pub struct NetTest {
    pub ns: String,
    pub root: TestRoot,
}

impl NetTest {
    pub fn new() -> NetTest {
        static N: AtomicUsize = AtomicUsize::new(0);
        let root = TestRoot::new();
        let ns = format!(
            "sbxtest-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let ok = Command::new("ip")
            .args(["netns", "add", &ns])
            .status()
            .expect("running ip")
            .success();
        assert!(ok, "ip netns add {ns} failed");
        let t = NetTest { ns, root };
        t.in_ns(&["ip", "link", "set", "lo", "up"]);
        t
    }

    /// `ip netns exec NS ARGS…`
    pub fn in_ns(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running ip netns exec")
    }

    pub fn sbx(&self, args: &[&str]) -> Output {
        let root = self.root.path().to_str().expect("utf-8 root");
        let mut full = vec![SBX, "--root", root];
        full.extend_from_slice(args);
        let o = self.in_ns(&full);
        assert!(
            !stderr(&o).contains("panicked"),
            "sbx panicked: {}",
            stderr(&o)
        );
        o
    }

    /// sbx ARGS, which must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.sbx(args);
        assert!(
            o.status.success(),
            "sbx {args:?} failed ({:?}): {}{}",
            o.status,
            stdout(&o),
            stderr(&o)
        );
        stdout(&o)
    }

    /// sbx ARGS until it succeeds (a server that is still starting); its
    /// stdout.
    pub fn eventually(&self, args: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let o = self.sbx(args);
            if o.status.success() || Instant::now() > deadline {
                return self.ok(args);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The links in the namespace other than lo.
    pub fn links(&self) -> Vec<String> {
        let o = self.in_ns(&["ip", "-o", "link", "show"]);
        stdout(&o)
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .filter(|n| n != "lo")
            .collect()
    }

    /// Processes still in the namespace (monitors, proxies, VMMs).
    pub fn pids(&self) -> Vec<String> {
        let o = Command::new("ip")
            .args(["netns", "pids", &self.ns])
            .output()
            .expect("ip netns pids");
        stdout(&o).split_whitespace().map(str::to_string).collect()
    }

    /// Wait until the namespace holds no link but lo and no process.
    pub fn assert_empty(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (links, pids) = (self.links(), self.pids());
            if links.is_empty() && pids.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                let comms: Vec<String> = pids
                    .iter()
                    .map(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default())
                    .collect();
                panic!(
                    "left behind in {}: links {links:?}, processes {comms:?}",
                    self.ns
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// An HTTP GET of 127.0.0.1:port from inside the namespace (a thread
    /// that joined it); the body.
    pub fn http_get(&self, port: u16) -> Result<String, String> {
        self.http_request(port, "GET / HTTP/1.0\r\nHost: x\r\n\r\n")
            .map(|reply| reply.split("\r\n\r\n").nth(1).unwrap_or("").to_string())
    }

    /// Send `request` to 127.0.0.1:port from inside the namespace (a thread
    /// that joined it) and read until the server closes; the whole reply.
    pub fn http_request(&self, port: u16, request: &str) -> Result<String, String> {
        let path = format!("/run/netns/{}", self.ns);
        let request = request.to_string();
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).map_err(|e| e.to_string())?;
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| e.to_string())?;
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port))
                .map_err(|e| format!("connect 127.0.0.1:{port}: {e}"))?;
            s.set_read_timeout(Some(Duration::from_secs(15))).ok();
            s.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
            let mut reply = String::new();
            s.read_to_string(&mut reply).map_err(|e| e.to_string())?;
            Ok(reply)
        })
        .join()
        .unwrap_or_else(|_| Err("the HTTP thread panicked".into()))
    }
}

impl Drop for NetTest {
    fn drop(&mut self) {
        let listed = stdout(&self.sbx(&["ps", "-aq"]));
        let ids: Vec<&str> = listed.lines().map(str::trim).collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(ids);
            let _ = self.sbx(&args);
        }
        // Whatever still runs in the namespace was started by this test.
        for pid in self.pids() {
            if let Ok(p) = pid.parse::<i32>() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}
