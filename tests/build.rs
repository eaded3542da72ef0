//! `sbx build`: every instruction, the layer cache, multi-stage builds, bad
//! Dockerfiles and the Flask example.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{stderr, stdout, TestRoot};
use serde_json::Value;

/// A build context in a temp dir.
fn context(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in files {
        let path = dir.path().join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }
    dir
}

fn build(r: &TestRoot, args: &[&str], ctx: &Path) -> (bool, String, String) {
    let mut full = vec!["build"];
    full.extend_from_slice(args);
    let ctx = ctx.to_str().unwrap();
    full.push(ctx);
    let o = r.sbx(&full);
    let (out, err) = (stdout(&o), stderr(&o));
    assert!(!err.contains("panicked"), "sbx panicked: {err}");
    (o.status.success(), out, err)
}

fn blobs(r: &TestRoot) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(r.path().join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

fn blob(r: &TestRoot, digest: &str) -> Value {
    let hex = digest.trim_start_matches("sha256:");
    serde_json::from_slice(&fs::read(r.path().join("blobs/sha256").join(hex)).unwrap()).unwrap()
}

/// (manifest, config) of a named image, read from the OCI layout.
fn image(r: &TestRoot, name: &str) -> (Value, Value) {
    let index: Value =
        serde_json::from_slice(&fs::read(r.path().join("index.json")).unwrap()).unwrap();
    let desc = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == name)
        .unwrap_or_else(|| panic!("no image {name} in index.json"));
    let manifest = blob(r, desc["digest"].as_str().unwrap());
    let config = blob(r, manifest["config"]["digest"].as_str().unwrap());
    (manifest, config)
}

fn run(r: &TestRoot, args: &[&str]) -> String {
    let (code, out, err) = common::run(r, args);
    assert_eq!(code, 0, "{args:?}: {err}");
    out
}

const ALL: &str = r#"# syntax=docker/dockerfile:1
ARG BASE=busybox
FROM ${BASE} AS builder
ARG MSG=from-builder
RUN ["/bin/sh", "-c", "mkdir -p /out && echo $MSG > /out/made && echo big > /out/only-in-builder"]
RUN rm /bin/true

FROM busybox
LABEL org.example.title="all instructions" \
      version=1
ARG WHO=world
ENV GREETING="hello $WHO" \
    APP=/srv/app
WORKDIR $APP
# a comment between instructions
COPY --chown=1000:1000 conf/ ./conf/
COPY *.txt notes/
ADD bundle.tar /srv/unpacked/
COPY --from=builder /out/made /srv/app/made
SHELL ["/bin/sh", "-c"]
RUN echo "$GREETING" > greeting \
    && rm /bin/false \
    && echo built-with-$WHO > args
USER 1000:1000
EXPOSE 8080 53/udp
VOLUME /data
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --retries=3 CMD wget -q -O- localhost:8080 || exit 1
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["cat greeting"]
"#;

fn tar_with(name: &str, text: &str) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(text.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, name, text.as_bytes()).unwrap();
    b.into_inner().unwrap()
}

#[test]
fn every_instruction_builds_and_runs() {
    let r = &TestRoot::new();
    let ctx = context(&[
        ("Dockerfile", ALL),
        ("conf/app.conf", "key=value\n"),
        ("a.txt", "A\n"),
        ("b.txt", "B\n"),
        ("secret.txt", "do not copy\n"),
        (".dockerignore", "secret.txt\n"),
    ]);
    fs::write(
        ctx.path().join("bundle.tar"),
        tar_with("inside/file", "from tar\n"),
    )
    .unwrap();
    let (ok, out, err) = build(r, &["-t", "all:1", "--build-arg", "WHO=sbx"], ctx.path());
    assert!(ok, "build failed: {out}\n{err}");

    // What the workload sees.
    let got = run(r, &["all:1", "id -u; id -g; pwd; cat greeting args made; echo $GREETING; cat conf/app.conf; stat -c %u conf/app.conf; ls notes; cat /srv/unpacked/inside/file; test -e /bin/false || echo false-removed; test -e /bin/true && echo true-kept"]);
    assert_eq!(
        got,
        "1000\n1000\n/srv/app\nhello sbx\nbuilt-with-sbx\nfrom-builder\nhello sbx\nkey=value\n1000\na.txt\nb.txt\nfrom tar\nfalse-removed\ntrue-kept\n",
        "{err}"
    );
    // The default command: ENTRYPOINT + CMD.
    assert_eq!(run(r, &["all:1"]), "hello sbx\n");

    // The config as stored.
    let (manifest, config) = image(r, "all:1");
    let c = &config["config"];
    let env: Vec<&str> = c["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(env.contains(&"GREETING=hello sbx"), "{env:?}");
    assert!(env.contains(&"APP=/srv/app"), "{env:?}");
    assert!(
        !env.iter().any(|e| e.starts_with("WHO=")),
        "ARGs are not in the image's env"
    );
    assert_eq!(c["WorkingDir"], "/srv/app");
    assert_eq!(c["User"], "1000:1000");
    assert_eq!(c["Entrypoint"], serde_json::json!(["/bin/sh", "-c"]));
    assert_eq!(c["Cmd"], serde_json::json!(["cat greeting"]));
    assert_eq!(c["Labels"]["org.example.title"], "all instructions");
    assert_eq!(c["Labels"]["version"], "1");
    assert!(c["ExposedPorts"].get("8080/tcp").is_some(), "{c}");
    assert!(c["ExposedPorts"].get("53/udp").is_some(), "{c}");
    assert!(c["Volumes"].get("/data").is_some(), "{c}");
    assert_eq!(c["StopSignal"], "SIGTERM");
    assert_eq!(c["Healthcheck"]["Test"][0], "CMD-SHELL");
    assert_eq!(c["Healthcheck"]["Interval"], 30_000_000_000u64);
    assert_eq!(c["Healthcheck"]["Retries"], 3);
    assert_eq!(c["Shell"], serde_json::json!(["/bin/sh", "-c"]));
    // busybox's one layer + COPY, COPY, ADD, COPY --from, RUN (WORKDIR
    // /srv/app is made by a layer of its own too).
    let layers = manifest["layers"].as_array().unwrap().len();
    assert_eq!(layers, 7, "{manifest}");
    let history = config["history"].as_array().unwrap();
    let empty = history.iter().filter(|h| h["empty_layer"] == true).count();
    assert_eq!(history.len() - empty, layers, "one history entry per layer");
    // Nothing left behind by the RUN steps.
    assert_eq!(fs::read_dir(r.path().join("sandboxes")).unwrap().count(), 0);
}

#[test]
fn rebuild_is_cached_and_a_changed_source_rebuilds_from_there() {
    let r = &TestRoot::new();
    let df = "FROM busybox\nCOPY one.txt /one.txt\nRUN cat /one.txt > /copy1\nCOPY two.txt /two.txt\nRUN cat /two.txt > /copy2\nCMD [\"cat\", \"/copy1\", \"/copy2\"]\n";
    let ctx = context(&[("Dockerfile", df), ("one.txt", "1\n"), ("two.txt", "2\n")]);
    let (ok, out, err) = build(r, &["-t", "c:1"], ctx.path());
    assert!(ok, "{out}{err}");
    assert!(!out.contains("CACHED"), "{out}");
    let before = blobs(r);
    let id = image(r, "c:1").0["config"]["digest"].clone();

    let t = Instant::now();
    let (ok, out, err) = build(r, &["-t", "c:1"], ctx.path());
    eprintln!("cached rebuild: {:?}", t.elapsed());
    assert!(ok, "{out}{err}");
    for line in out
        .lines()
        .filter(|l| l.contains("/6]") && !l.contains("FROM"))
    {
        assert!(line.starts_with("=> CACHED ["), "not cached: {line}\n{out}");
    }
    assert_eq!(out.matches("CACHED").count(), 5, "{out}");
    assert_eq!(blobs(r), before, "a cached rebuild writes no new blob");
    assert_eq!(image(r, "c:1").0["config"]["digest"], id, "same image id");

    // Change the second COPY's source: steps 4.. rebuild, 2 and 3 do not.
    fs::write(ctx.path().join("two.txt"), "two\n").unwrap();
    let (ok, out, err) = build(r, &["-t", "c:1"], ctx.path());
    assert!(ok, "{out}{err}");
    let cached: Vec<&str> = out.lines().filter(|l| l.starts_with("=> CACHED")).collect();
    assert_eq!(cached.len(), 2, "{out}");
    assert!(cached[0].contains("[2/6] COPY one.txt"), "{out}");
    assert!(cached[1].contains("[3/6] RUN"), "{out}");
    assert!(out.contains("=> [4/6] COPY two.txt"), "{out}");
    assert!(out.contains("=> [5/6] RUN"), "{out}");
    assert_eq!(run(r, &["c:1"]), "1\ntwo\n");

    // --no-cache runs everything again.
    let (ok, out, _) = build(r, &["-t", "c:1", "--no-cache"], ctx.path());
    assert!(ok);
    assert!(!out.contains("CACHED"), "{out}");
}

#[test]
fn multi_stage_keeps_only_the_last_stage() {
    let r = &TestRoot::new();
    let df = "FROM busybox AS build\nRUN dd if=/dev/zero of=/big bs=1k count=512 2>/dev/null && echo artifact > /artifact\nRUN echo more > /more\n\nFROM busybox\nCOPY --from=build /artifact /artifact\nCMD [\"cat\", \"/artifact\"]\n";
    let ctx = context(&[("Dockerfile", df)]);
    let (ok, out, err) = build(r, &["-t", "ms:1"], ctx.path());
    assert!(ok, "{out}{err}");
    let (manifest, config) = image(r, "ms:1");
    let busybox = image(r, "busybox:latest").0;
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2, "busybox + the COPY: {manifest}");
    assert_eq!(layers[0], busybox["layers"][0]);
    assert!(
        layers[1]["size"].as_u64().unwrap() < 64 << 10,
        "the 512 KiB file stays in the build stage"
    );
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 2);
    assert_eq!(run(r, &["ms:1"]), "artifact\n");
    assert_eq!(
        run(r, &["ms:1", "sh", "-c", "test -e /big || echo no-big"]),
        "no-big\n"
    );

    // --target builds an earlier stage.
    let (ok, out, err) = build(r, &["-t", "ms:build", "--target", "build"], ctx.path());
    assert!(ok, "{out}{err}");
    assert_eq!(
        image(r, "ms:build").0["layers"].as_array().unwrap().len(),
        3
    );
}

#[test]
fn bad_dockerfile_is_one_line_with_file_and_line_and_leaves_nothing() {
    let r = &TestRoot::new();
    let before = blobs(r);
    for (df, want) in [
        (
            "FROM busybox\nRUN true\nFROBNICATE now\n",
            "Dockerfile:3: unknown instruction 'FROBNICATE'",
        ),
        (
            "FROM busybox\n\nCOPY --frm=x a b\n",
            "Dockerfile:3: unknown flag --frm",
        ),
        ("# just a comment\nRUN true\n", "Dockerfile:2: "),
        ("FROM busybox\nRUN <<EOF\necho hi\n", "Dockerfile:"),
    ] {
        let ctx = context(&[("Dockerfile", df)]);
        let (ok, out, err) = build(r, &["-t", "bad:1"], ctx.path());
        assert!(!ok, "{df:?} built: {out}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(err.starts_with(&format!("sbx: {want}")), "{df:?}: {err}");
    }
    // A step that fails names its line too.
    let ctx = context(&[("Dockerfile", "FROM busybox\nCOPY missing.txt /\n")]);
    let (ok, _, err) = build(r, &["-t", "bad:1"], ctx.path());
    assert!(!ok);
    assert!(err.starts_with("sbx: Dockerfile:2: missing.txt"), "{err}");
    let ctx = context(&[("Dockerfile", "FROM busybox\nRUN echo oops >&2; exit 3\n")]);
    let (ok, _, err) = build(r, &["-t", "bad:1"], ctx.path());
    assert!(!ok);
    assert!(err.contains("oops"), "{err}");
    assert!(
        err.lines()
            .last()
            .unwrap()
            .starts_with("sbx: Dockerfile:2: RUN "),
        "{err}"
    );
    assert!(err.contains("exit code 3"), "{err}");

    assert_eq!(blobs(r), before, "no blob written");
    assert_eq!(fs::read_dir(r.path().join("sandboxes")).unwrap().count(), 0);
    let tmp = r.path().join("tmp");
    assert!(!tmp.exists() || fs::read_dir(&tmp).unwrap().count() == 0);
    assert!(common::stdout(&r.sbx(&["images"]))
        .lines()
        .all(|l| !l.starts_with("bad")));
}

#[test]
fn vm_isolation_builds() {
    // Each RUN step in a microVM; tests/vm_build.rs checks the layers.
    let r = &TestRoot::new();
    let ctx = context(&[("Dockerfile", "FROM busybox\nRUN echo vm > /built-in\n")]);
    let (ok, out, err) = build(r, &["--isolation=vm", "-t", "v:1"], ctx.path());
    assert!(ok, "{err}\n{out}");
    assert_eq!(run(r, &["v:1", "cat", "/built-in"]), "vm\n");
}

/// Builds (or reuses) the sbx-python:3 base with the project's script.
fn python_base(r: &TestRoot) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/python-base");
    let o = std::process::Command::new(&script)
        .arg(common::SBX)
        .env("SBX_ROOT", r.path())
        .output()
        .expect("running scripts/python-base");
    assert!(
        o.status.success(),
        "scripts/python-base failed (it needs the Debian mirror the first time): {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn get(port: u16) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

/// Interrupts and reaps the server however the test ends.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn flask_example_builds_and_serves_hello_world() {
    let r = &TestRoot::new();
    python_base(r);
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/flask-hello");
    let t = Instant::now();
    let (ok, out, err) = build(r, &["-t", "sbx-python-flask-image"], &example);
    eprintln!("flask build: {:?}", t.elapsed());
    assert!(ok, "{out}{err}");
    assert!(out.contains("requirements satisfied"), "{out}");
    let t = Instant::now();
    let (ok, out, _) = build(r, &["-t", "sbx-python-flask-image"], &example);
    eprintln!("flask cached rebuild: {:?}", t.elapsed());
    assert!(ok && out.matches("CACHED").count() >= 5, "{out}");

    let port = free_port();
    let child = r
        .cmd(&[
            "run",
            "--rm",
            "--network",
            "host",
            "--timeout",
            "120",
            "-e",
            &format!("FLASK_RUN_PORT={port}"),
            "sbx-python-flask-image",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("sbx run");
    let _server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    let body = loop {
        if let Some(b) = get(port) {
            break b;
        }
        assert!(
            Instant::now() < deadline,
            "the Flask app did not answer on port {port}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(body.starts_with("HTTP/1."), "{body}");
    assert!(body.ends_with("Hello World!"), "{body}");
}
