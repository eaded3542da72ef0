//! Detached sandboxes and the lifecycle verbs: run -d, ps, logs, stop,
//! start, kill, wait, rm, inspect, exec, restart policies, system prune,
//! and what happens when a monitor is killed.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{sbx_cgroups, stderr, stdout, TestRoot};

/// A test root whose sandboxes are removed (`rm -f`) even when the test
/// fails, so no monitor outlives it.
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
    Root(TestRoot::new())
}

/// Run sbx, assert success, return stdout.
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

fn detach(r: &TestRoot, args: &[&str]) -> String {
    let mut full = vec!["run", "-d"];
    full.extend_from_slice(args);
    let id = ok(r, &full).trim().to_string();
    assert_eq!(id.len(), 64, "run -d prints the full id: {id:?}");
    id
}

fn ps_json(r: &TestRoot, extra: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec!["ps", "--format", "json"];
    args.extend_from_slice(extra);
    ok(r, &args)
        .lines()
        .map(|l| serde_json::from_str(l).expect("ps json line"))
        .collect()
}

fn inspect(r: &TestRoot, id: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(&ok(r, &["inspect", id])).unwrap();
    v[0].clone()
}

fn state_of(r: &TestRoot, id: &str) -> String {
    inspect(r, id)["state"]["status"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Poll `f` for up to `secs`.
fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// A process that is gone or a zombie (this host's init may not reap).
fn dead(pid: i64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => {
            let state = s.rsplit_once(") ").map(|(_, r)| &r[..1]).unwrap_or("");
            state == "Z" || state == "X"
        }
    }
}

fn sandbox_dir(r: &TestRoot, id: &str) -> PathBuf {
    r.path().join("sandboxes").join(id)
}

#[test]
fn detached_lifecycle_ps_logs_stop_start_rm() {
    let r = &root();
    let id = detach(
        r,
        &[
            "--name",
            "web",
            "busybox",
            "sh",
            "-c",
            "echo one; echo two >&2; sleep 0.2; echo three; exec sleep 1000",
        ],
    );
    // ps: table and json.
    let table = ok(r, &["ps"]);
    assert!(table.contains(&id[..12]), "{table}");
    assert!(table.contains("web") && table.contains("Up "), "{table}");
    assert!(table.contains("container"), "{table}");
    let rows = ps_json(r, &[]);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["ID"], &id[..12]);
    assert_eq!(rows[0]["Names"], "web");
    assert_eq!(rows[0]["State"], "running");
    assert_eq!(ok(r, &["ps", "-q"]).trim(), &id[..12]);
    assert_eq!(ps_json(r, &["--filter", "name=web"]).len(), 1);
    assert_eq!(ps_json(r, &["--filter", "name=nope"]).len(), 0);
    assert_eq!(ps_json(r, &["--filter", "ancestor=busybox"]).len(), 1);
    assert_eq!(ps_json(r, &["--filter", "status=exited"]).len(), 0);

    // Names are unique.
    let o = r.sbx(&["run", "-d", "--name", "web", "busybox", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("already in use"), "{}", stderr(&o));

    // logs: streams apart, --tail, -t; by name, id and prefix.
    assert!(eventually(5, || r.sbx(&["logs", "web"]).stdout == b"one\nthree\n"));
    let o = r.sbx(&["logs", "web"]);
    assert_eq!(stdout(&o), "one\nthree\n");
    assert_eq!(stderr(&o), "two\n");
    let o = r.sbx(&["logs", "--tail", "1", &id[..8]]);
    assert_eq!(stdout(&o), "three\n");
    assert_eq!(stderr(&o), "");
    let o = r.sbx(&["logs", "-t", &id]);
    let first = stdout(&o).lines().next().unwrap().to_string();
    let (ts, text) = first.split_once(' ').unwrap();
    assert_eq!(text, "one");
    assert!(
        chrono::DateTime::parse_from_rfc3339(ts).is_ok(),
        "timestamp {ts:?}"
    );

    // stop → Exited (code) in ps -a, not in ps.
    ok(r, &["stop", "-t", "1", "web"]);
    assert!(ps_json(r, &[]).is_empty());
    let rows = ps_json(r, &["-a"]);
    assert_eq!(rows[0]["State"], "exited");
    let status = rows[0]["Status"].as_str().unwrap();
    // PID 1 has no handler for SIGTERM: SIGKILL after the 1 s.
    assert!(status.starts_with("Exited (137)"), "{status}");
    assert_eq!(ps_json(r, &["-a", "--filter", "status=exited"]).len(), 1);

    // start: running again, same upper dir (a file written before stays).
    ok(r, &["start", "web"]);
    assert_eq!(state_of(r, "web"), "running");
    ok(r, &["exec", "web", "sh", "-c", "echo kept > /marker"]);
    ok(r, &["stop", "-t", "0", "web"]);
    ok(r, &["start", "web"]);
    assert_eq!(ok(r, &["exec", "web", "cat", "/marker"]), "kept\n");
    // The log kept both runs.
    assert_eq!(stdout(&r.sbx(&["logs", "web"])).matches("one\n").count(), 3);

    // rm refuses a running sandbox; -f removes it and everything it had.
    let pid = inspect(r, "web")["state"]["pid"].as_i64().unwrap();
    let o = r.sbx(&["rm", "web"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("running"), "{}", stderr(&o));
    ok(r, &["rm", "-f", "web"]);
    assert!(dead(pid), "the workload is gone");
    assert!(!sandbox_dir(r, &id).exists());
    assert!(!r.path().join("names/web").exists());
    assert!(ok(r, &["ps", "-a", "-q"]).is_empty());
    // The name is free again.
    let id2 = detach(r, &["--name", "web", "busybox", "sleep", "100"]);
    ok(r, &["rm", "-f", &id2]);
}

#[test]
fn stop_timeout_kills_a_workload_that_ignores_sigterm() {
    let r = &root();
    let id = detach(
        r,
        &[
            "busybox",
            "sh",
            "-c",
            "trap '' TERM; while true; do sleep 1; done",
        ],
    );
    let t = Instant::now();
    ok(r, &["stop", "-t", "2", &id]);
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took <= Duration::from_secs(8),
        "stop -t 2 took {took:?}"
    );
    assert_eq!(ok(r, &["wait", &id]).trim(), "137");
    ok(r, &["rm", &id]);
}

#[test]
fn exec_runs_in_the_sandbox_with_flags_and_exit_code() {
    let r = &root();
    let id = detach(r, &["busybox", "sleep", "1000"]);
    let o = r.sbx(&["exec", &id[..12], "sh", "-c", "exit 7"]);
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    let out = ok(r, &["exec", &id, "cat", "/proc/1/cmdline"]);
    assert_eq!(out, "sleep\x001000\x00");
    let out = ok(
        r,
        &[
            "exec",
            "-e",
            "FOO=bar",
            "-w",
            "/tmp",
            "-u",
            "nobody",
            &id,
            "sh",
            "-c",
            "echo $FOO; pwd; id -u; hostname",
        ],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..3], ["bar", "/tmp", "65534"]);
    assert_eq!(lines[3], &id[..12], "the sandbox's own hostname");
    let o = r.sbx(&["exec", &id, "nosuch"]);
    assert_eq!(o.status.code(), Some(127));
    ok(r, &["kill", &id]);
    assert_eq!(ok(r, &["wait", &id]).trim(), "137");
    let o = r.sbx(&["exec", &id, "true"]);
    assert_ne!(o.status.code(), Some(0));
    let err = stderr(&o);
    assert!(
        err.contains("not running") && err.lines().count() == 1,
        "{err}"
    );
    ok(r, &["rm", &id]);
}

#[test]
fn restart_policies() {
    let r = &root();
    let id = detach(
        r,
        &[
            "--restart=on-failure:2",
            "busybox",
            "sh",
            "-c",
            "echo attempt; exit 3",
        ],
    );
    assert!(eventually(10, || {
        let v = inspect(r, &id);
        v["state"]["status"] == "exited" && v["state"]["restart_count"] == 2
    }));
    std::thread::sleep(Duration::from_millis(500));
    let v = inspect(r, &id);
    assert_eq!(v["state"]["restart_count"], 2, "{v}");
    assert_eq!(v["state"]["exit_code"], 3);
    assert_eq!(stdout(&r.sbx(&["logs", &id])), "attempt\n".repeat(3));

    let id2 = detach(
        r,
        &[
            "--restart=always",
            "busybox",
            "sh",
            "-c",
            "echo up; sleep 0.1",
        ],
    );
    assert!(eventually(10, || inspect(r, &id2)["state"]
        ["restart_count"]
        .as_u64()
        .unwrap()
        >= 3));
    ok(r, &["stop", &id2]);
    let count = inspect(r, &id2)["state"]["restart_count"].as_u64().unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let v = inspect(r, &id2);
    assert_eq!(v["state"]["status"], "exited", "{v}");
    assert_eq!(v["state"]["restart_count"].as_u64().unwrap(), count);

    let o = r.sbx(&["run", "--restart=always", "busybox", "true"]);
    assert_eq!(o.status.code(), Some(125), "--restart without -d");
    let o = r.sbx(&["run", "-d", "--rm", "--restart=always", "busybox", "true"]);
    assert_eq!(o.status.code(), Some(125));
    let o = r.sbx(&["run", "-d", "--restart=sometimes", "busybox", "true"]);
    assert_eq!(o.status.code(), Some(125));
    ok(r, &["rm", &id, &id2]);
}

#[test]
fn a_killed_monitor_shows_as_exited_and_takes_its_workload() {
    let r = &root();
    let id = detach(r, &["--memory", "64m", "busybox", "sleep", "1000"]);
    let dir = sandbox_dir(r, &id);
    let life: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("lifecycle.json")).unwrap()).unwrap();
    let monitor = life["monitor_pid"].as_i64().unwrap();
    let pid = inspect(r, &id)["state"]["pid"].as_i64().unwrap();
    assert!(!dead(pid));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(monitor as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(
        eventually(5, || dead(pid)),
        "the workload dies with its monitor"
    );
    let rows = ps_json(r, &["-a"]);
    assert_eq!(rows[0]["State"], "exited", "{rows:?}");
    assert!(ps_json(r, &[]).is_empty());
    let v = inspect(r, &id);
    assert_eq!(v["state"]["running"], false);
    assert!(v["state"]["error"].as_str().unwrap().contains("monitor"));
    // rm releases what the monitor could not (its cgroup).
    ok(r, &["rm", &id]);
    assert!(!dir.exists());
    assert!(
        !sbx_cgroups().iter().any(|c| c.ends_with(&id)),
        "cgroups of {id} left behind"
    );
}

#[test]
fn wait_inspect_and_prune() {
    let r = &root();
    let quick = detach(
        r,
        &[
            "--name",
            "quick",
            "busybox",
            "sh",
            "-c",
            "sleep 0.3; exit 5",
        ],
    );
    assert_eq!(ok(r, &["wait", "quick"]).trim(), "5");
    let long = detach(
        r,
        &[
            "-e",
            "A=1",
            "-w",
            "/tmp",
            "--hostname",
            "box",
            "--memory",
            "64m",
            "busybox",
            "sleep",
            "1000",
        ],
    );
    let v = inspect(r, &long);
    assert_eq!(v["id"], long.as_str());
    assert_eq!(v["state"]["status"], "running");
    assert_eq!(v["state"]["running"], true);
    assert!(v["state"]["pid"].as_i64().unwrap() > 0);
    assert!(v["state"]["started_at"].is_string());
    assert_eq!(v["state"]["restart_count"], 0);
    assert_eq!(v["config"]["image"], "busybox:latest");
    assert_eq!(v["config"]["cmd"], serde_json::json!(["sleep", "1000"]));
    assert!(v["config"]["env"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("A=1")));
    assert_eq!(v["config"]["workdir"], "/tmp");
    assert_eq!(v["config"]["user"], "");
    assert_eq!(v["config"]["hostname"], "box");
    assert_eq!(v["config"]["limits"]["memory"], 64 << 20);
    assert_eq!(v["isolation"], "container");
    assert_eq!(v["mounts"], serde_json::json!([]));
    assert_eq!(v["network_settings"]["mode"], "none");
    let q = inspect(r, "quick");
    assert_eq!(q["state"]["exit_code"], 5);
    assert!(q["state"]["finished_at"].is_string());
    assert_eq!(q["name"], "quick");

    let out = ok(r, &["system", "prune"]);
    assert!(out.contains(&quick), "{out}");
    assert!(!sandbox_dir(r, &quick).exists());
    assert!(sandbox_dir(r, &long).exists(), "a running sandbox stays");
    assert_eq!(state_of(r, &long), "running");
    let df = ok(r, &["system", "df"]);
    assert!(df.contains("Images") && df.contains("Sandboxes"), "{df}");

    // Unknown ids and ambiguous input fail in one line.
    let o = r.sbx(&["stop", "nosuchbox"]);
    assert_ne!(o.status.code(), Some(0));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    ok(r, &["rm", "-f", &long]);
    assert!(!sbx_cgroups().iter().any(|c| c.ends_with(&long)));
    // -a removes the now unused image.
    let out = ok(r, &["system", "prune", "-a"]);
    assert!(out.contains("Deleted Images"), "{out}");
    assert!(!ok(r, &["images"]).contains("busybox"));
}

#[test]
fn run_d_reports_start_failures() {
    let r = &root();
    let o = r.sbx(&["run", "-d", "busybox", "nosuch-program"]);
    assert_eq!(o.status.code(), Some(127), "{}", stderr(&o));
    assert!(stdout(&o).is_empty());
    assert!(stderr(&o).contains("not found"), "{}", stderr(&o));
    assert!(ok(r, &["ps", "-a", "-q"]).is_empty(), "no record is left");
    // -d --rm: gone once it ends.
    let id = detach(r, &["--rm", "busybox", "true"]);
    assert!(eventually(5, || !sandbox_dir(r, &id).exists()));
}
