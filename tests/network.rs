//! Networks and published ports, for containers and VMs.
//!
//! Safety: every test runs sbx inside a network namespace it makes itself
//! (`ip netns add sbxtest-…`, each command through `ip netns exec`), so the
//! bridges, veths, taps and published ports live there and never touch the
//! host's own interfaces; the namespace is emptied and deleted afterwards,
//! even when the test fails. Only private addresses are used, nothing is
//! NATed or routed out.

mod common;

use std::io::{Read, Write};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{stderr, stdout, TestRoot, SBX};

const WEB1: &str =
    "mkdir -p /www && echo hello-from-web1 > /www/index.html && exec httpd -f -p 80 -h /www";
const WEB2: &str =
    "mkdir -p /www && echo hello-from-web2 > /www/index.html && exec httpd -f -p 80 -h /www";

/// A private network namespace, and an sbx root whose commands all run in
/// it. Dropping it removes the sandboxes, ends what is left in the
/// namespace, and deletes it.
struct NetTest {
    ns: String,
    root: TestRoot,
}

impl NetTest {
    fn new() -> NetTest {
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
    fn in_ns(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running ip netns exec")
    }

    fn sbx(&self, args: &[&str]) -> Output {
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
    fn ok(&self, args: &[&str]) -> String {
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
    fn eventually(&self, args: &[&str]) -> String {
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
    fn links(&self) -> Vec<String> {
        let o = self.in_ns(&["ip", "-o", "link", "show"]);
        stdout(&o)
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .filter(|n| n != "lo")
            .collect()
    }

    /// Processes still in the namespace (monitors, proxies, VMMs).
    fn pids(&self) -> Vec<String> {
        let o = Command::new("ip")
            .args(["netns", "pids", &self.ns])
            .output()
            .expect("ip netns pids");
        stdout(&o).split_whitespace().map(str::to_string).collect()
    }

    /// Wait until the namespace holds no link but lo and no process.
    fn assert_empty(&self) {
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
    fn http_get(&self, port: u16) -> Result<String, String> {
        let path = format!("/run/netns/{}", self.ns);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).map_err(|e| e.to_string())?;
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| e.to_string())?;
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port))
                .map_err(|e| format!("connect 127.0.0.1:{port}: {e}"))?;
            s.set_read_timeout(Some(Duration::from_secs(15))).ok();
            s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
                .map_err(|e| e.to_string())?;
            let mut reply = String::new();
            s.read_to_string(&mut reply).map_err(|e| e.to_string())?;
            Ok(reply.split("\r\n\r\n").nth(1).unwrap_or("").to_string())
        })
        .join()
        .unwrap_or_else(|_| Err("the GET thread panicked".into()))
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

fn one_line_error(o: &Output) -> String {
    let err = stderr(o);
    assert!(
        !o.status.success(),
        "expected a failure, got: {}",
        stdout(o)
    );
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err:?}");
    err
}

#[test]
fn containers_and_vms_on_one_network_reach_each_other_by_name() {
    let t = NetTest::new();
    t.ok(&["network", "create", "mynet"]);
    t.ok(&["network", "create", "other"]);
    t.ok(&[
        "run",
        "-d",
        "--network",
        "mynet",
        "--name",
        "web1",
        "busybox",
        "sh",
        "-c",
        WEB1,
    ]);
    t.ok(&[
        "run",
        "-d",
        "--isolation=vm",
        "--network",
        "mynet",
        "--name",
        "web2",
        "--network-alias",
        "www",
        "busybox",
        "sh",
        "-c",
        WEB2,
    ]);
    // Container → VM, by name and by alias (web1's hosts file was
    // rewritten when web2 joined).
    let out = t.eventually(&["exec", "web1", "wget", "-qO-", "http://web2/"]);
    assert_eq!(out.trim(), "hello-from-web2");
    let out = t.ok(&["exec", "web1", "wget", "-qO-", "http://www/"]);
    assert_eq!(out.trim(), "hello-from-web2");
    // A one-shot container → both.
    let out = t.ok(&[
        "run",
        "--rm",
        "--network",
        "mynet",
        "busybox",
        "sh",
        "-c",
        "wget -qO- http://web1/ && wget -qO- http://web2/",
    ]);
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["hello-from-web1", "hello-from-web2"]
    );
    // A one-shot VM → the container.
    let out = t.ok(&[
        "run",
        "--rm",
        "--isolation=vm",
        "--network",
        "mynet",
        "busybox",
        "wget",
        "-qO-",
        "http://web1/",
    ]);
    assert_eq!(out.trim(), "hello-from-web1");

    // Another network reaches neither, by name or by address.
    let inspect: serde_json::Value =
        serde_json::from_str(&t.ok(&["network", "inspect", "mynet"])).unwrap();
    let addrs: Vec<String> = inspect[0]["sandboxes"]
        .as_object()
        .unwrap()
        .values()
        .map(|s| {
            s["ipv4_address"]
                .as_str()
                .unwrap()
                .split('/')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(addrs.len(), 2);
    let script = format!(
        "for h in web1 web2 {}; do timeout 5 wget -qO- http://$h/ && echo REACHED $h; done; true",
        addrs.join(" ")
    );
    let out = t.ok(&[
        "run",
        "--rm",
        "--network",
        "other",
        "busybox",
        "sh",
        "-c",
        &script,
    ]);
    assert!(!out.contains("REACHED"), "{out}");
    let out = t.ok(&[
        "run",
        "--rm",
        "--isolation=vm",
        "--network",
        "other",
        "busybox",
        "sh",
        "-c",
        &script,
    ]);
    assert!(!out.contains("REACHED"), "{out}");

    t.ok(&["rm", "-f", "web1", "web2"]);
    t.ok(&["network", "rm", "mynet", "other"]);
    t.assert_empty();
}

#[test]
fn published_ports_for_a_container_and_a_vm() {
    let t = NetTest::new();
    t.ok(&[
        "run",
        "-d",
        "--name",
        "web1",
        "-p",
        "127.0.0.1:18080:80",
        "busybox",
        "sh",
        "-c",
        WEB1,
    ]);
    t.ok(&[
        "run",
        "-d",
        "--isolation=vm",
        "--name",
        "web2",
        "-p",
        "127.0.0.1:18081:80",
        "busybox",
        "sh",
        "-c",
        WEB2,
    ]);
    assert_eq!(t.http_get(18080).unwrap().trim(), "hello-from-web1");
    assert_eq!(t.http_get(18081).unwrap().trim(), "hello-from-web2");
    assert_eq!(t.ok(&["port", "web1"]).trim(), "80/tcp -> 127.0.0.1:18080");
    assert_eq!(t.ok(&["port", "web2", "80"]).trim(), "127.0.0.1:18081");
    let ps = t.ok(&["ps"]);
    assert!(
        ps.contains("127.0.0.1:18080->80/tcp") && ps.contains("127.0.0.1:18081->80/tcp"),
        "{ps}"
    );
    let inspect: serde_json::Value = serde_json::from_str(&t.ok(&["inspect", "web2"])).unwrap();
    assert_eq!(
        inspect[0]["network_settings"]["ports"]["80/tcp"][0]["host_port"],
        "18081"
    );

    // Stopped and started again (a new monitor binds the port itself).
    t.ok(&["stop", "-t", "1", "web1"]);
    assert!(t.http_get(18080).is_err());
    t.ok(&["start", "web1"]);
    assert_eq!(t.http_get(18080).unwrap().trim(), "hello-from-web1");

    // A taken port: one line, and nothing was created.
    let before = t.ok(&["ps", "-aq"]).lines().count();
    let o = t.sbx(&["run", "-d", "-p", "127.0.0.1:18080:80", "busybox", "true"]);
    let err = one_line_error(&o);
    assert!(
        err.contains("18080") && err.contains("already in use"),
        "{err}"
    );
    assert_eq!(t.ok(&["ps", "-aq"]).lines().count(), before);

    // -P: the image's EXPOSEd port, on a free host port.
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), "FROM busybox\nEXPOSE 80\n").unwrap();
    t.ok(&["build", "-t", "webimg", ctx.path().to_str().unwrap()]);
    t.ok(&[
        "run", "-d", "--name", "web3", "-P", "webimg", "sh", "-c", WEB1,
    ]);
    let host = t.ok(&["port", "web3", "80/tcp"]);
    let port: u16 = host.trim().rsplit(':').next().unwrap().parse().unwrap();
    assert_eq!(t.http_get(port).unwrap().trim(), "hello-from-web1");

    t.ok(&["rm", "-f", "web1", "web2", "web3"]);
    t.assert_empty();
    assert!(t.http_get(18080).is_err());
}

#[test]
fn network_verbs_and_connecting_a_running_container() {
    let t = NetTest::new();
    let id = t.ok(&[
        "network",
        "create",
        "--subnet",
        "10.123.0.0/24",
        "--gateway",
        "10.123.0.1",
        "n1",
    ]);
    assert_eq!(id.trim().len(), 64);
    t.ok(&["network", "create", "n2"]);
    t.ok(&["network", "create", "unused"]);
    let err = one_line_error(&t.sbx(&["network", "create", "n1"]));
    assert!(err.contains("already exists"), "{err}");
    let err = one_line_error(&t.sbx(&["network", "create", "--subnet", "10.123.0.0/16", "x"]));
    assert!(err.contains("overlaps"), "{err}");
    let ls = t.ok(&["network", "ls"]);
    for n in [
        "bridge",
        "host",
        "none",
        "n1",
        "n2",
        "unused",
        "10.123.0.0/24",
    ] {
        assert!(ls.contains(n), "{n} not in {ls}");
    }
    let inspect: serde_json::Value =
        serde_json::from_str(&t.ok(&["network", "inspect", "n1"])).unwrap();
    assert_eq!(inspect[0]["ipam"]["subnet"], "10.123.0.0/24");
    assert_eq!(inspect[0]["ipam"]["gateway"], "10.123.0.1");

    t.ok(&[
        "run",
        "-d",
        "--network",
        "n1",
        "--name",
        "a",
        "busybox",
        "sh",
        "-c",
        WEB1,
    ]);
    t.ok(&[
        "run",
        "-d",
        "--network",
        "n2",
        "--name",
        "b",
        "busybox",
        "sh",
        "-c",
        WEB2,
    ]);
    t.eventually(&["exec", "b", "wget", "-qO-", "http://127.0.0.1/"]);
    let ip_a = t.ok(&["exec", "a", "ip", "-4", "-o", "addr", "show", "eth0"]);
    assert!(ip_a.contains("10.123.0.2/24"), "{ip_a}");
    let err = one_line_error(&t.sbx(&["network", "rm", "n1"]));
    assert!(err.contains("in use") && err.contains('a'), "{err}");

    // a cannot reach b until it is connected to n2; then by name.
    let out = t.sbx(&[
        "exec",
        "a",
        "sh",
        "-c",
        "timeout 5 wget -qO- http://b/ && echo REACHED",
    ]);
    assert!(!stdout(&out).contains("REACHED"));
    t.ok(&["network", "connect", "n2", "a"]);
    let addrs = t.ok(&["exec", "a", "ip", "-4", "-o", "addr", "show"]);
    assert!(addrs.contains("eth1"), "{addrs}");
    let out = t.eventually(&["exec", "a", "wget", "-qO-", "http://b/"]);
    assert_eq!(out.trim(), "hello-from-web2");
    // b learnt a's name when a joined.
    let out = t.ok(&["exec", "b", "wget", "-qO-", "http://a/"]);
    assert_eq!(out.trim(), "hello-from-web1");
    t.ok(&["network", "disconnect", "n2", "a"]);
    let addrs = t.ok(&["exec", "a", "ip", "-4", "-o", "addr", "show"]);
    assert!(!addrs.contains("eth1"), "{addrs}");

    let pruned = t.ok(&["network", "prune"]);
    assert!(
        pruned.contains("unused") && !pruned.contains("n1"),
        "{pruned}"
    );
    t.ok(&["rm", "-f", "a", "b"]);
    t.ok(&["network", "rm", "n1", "n2"]);
    let ls = t.ok(&["network", "ls", "-q"]);
    assert!(!ls.contains("n1") && !ls.contains("unused"), "{ls}");
    assert!(one_line_error(&t.sbx(&["network", "rm", "bridge"])).contains("pre-defined"));
    t.assert_empty();
}
