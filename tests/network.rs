//! Networks and published ports, for containers and VMs.
//!
//! Safety: every test runs sbx inside a network namespace it makes itself
//! (`ip netns add sbxtest-…`, each command through `ip netns exec`), so the
//! bridges, veths, taps and published ports live there and never touch the
//! host's own interfaces; the namespace is emptied and deleted afterwards,
//! even when the test fails. Only private addresses are used, nothing is
//! NATed or routed out.

mod common;

use std::process::Output;

use common::netns::NetTest;
use common::{stderr, stdout};

const WEB1: &str =
    "mkdir -p /www && echo hello-from-web1 > /www/index.html && exec httpd -f -p 80 -h /www";
const WEB2: &str =
    "mkdir -p /www && echo hello-from-web2 > /www/index.html && exec httpd -f -p 80 -h /www";

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
