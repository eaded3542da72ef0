//! Pull, push, login and logout end to end against real registries
//! (Debian's docker-registry on 127.0.0.1), with skopeo as the independent
//! client: round trips anonymous and with basic auth, a wrong password, a
//! tampered blob refused with the store unchanged, interop both ways, and
//! an image index from which linux/amd64 is picked.

mod common;
mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use common::{stderr, stdout, TestRoot};
use support::Registry;

/// A temp sbx root plus a temp auth file, so no test reads or writes the
/// user's credentials.
struct Env {
    root: TestRoot,
    auth: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            root: TestRoot::new(),
            auth: tempfile::tempdir().unwrap(),
        }
    }

    fn auth_file(&self) -> PathBuf {
        self.auth.path().join("auth.json")
    }

    fn run(&self, args: &[&str], stdin: Option<&str>, envs: &[(&str, &str)]) -> Output {
        let mut cmd = self.root.cmd(args);
        cmd.env("SBX_AUTH_FILE", self.auth_file())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("running sbx");
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).unwrap();
        }
        drop(input);
        let out = child.wait_with_output().unwrap();
        assert!(
            !stderr(&out).contains("panicked"),
            "sbx panicked: {}",
            stderr(&out)
        );
        out
    }

    /// Run and expect success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        self.ok_with(args, None, &[])
    }

    fn ok_with(&self, args: &[&str], stdin: Option<&str>, envs: &[(&str, &str)]) -> String {
        let out = self.run(args, stdin, envs);
        assert!(out.status.success(), "sbx {args:?}: {}", stderr(&out));
        stdout(&out)
    }

    /// Run and expect failure with one clear line on stderr mentioning `needle`.
    fn fails(&self, args: &[&str], stdin: Option<&str>, needle: &str) -> String {
        let out = self.run(args, stdin, &[]);
        let err = stderr(&out);
        assert!(
            !out.status.success(),
            "sbx {args:?} should fail: {}",
            stdout(&out)
        );
        assert_eq!(err.lines().count(), 1, "one line on stderr, got {err:?}");
        assert!(
            err.contains(needle),
            "sbx {args:?}: {err:?} should mention {needle:?}"
        );
        err
    }

    /// An empty store: the bootstrapped busybox removed.
    fn emptied(self) -> Env {
        self.ok(&["rmi", "busybox"]);
        assert_eq!(self.ok(&["images", "--format", "json"]).trim(), "[]");
        self
    }
}

/// The digest from `NAME: digest: sha256:… size: N`.
fn pushed_digest(out: &str) -> (String, u64) {
    let line = out.lines().find(|l| l.contains(": digest: ")).expect(out);
    let mut words = line.split_whitespace();
    let digest = words
        .find(|w| w.starts_with("sha256:"))
        .unwrap()
        .to_string();
    let size = words.nth(1).unwrap().parse().unwrap();
    (digest, size)
}

fn image_id(env: &Env, name: &str) -> String {
    let images: serde_json::Value =
        serde_json::from_str(&env.ok(&["images", "--format", "json"])).unwrap();
    let (repo, tag) = name.rsplit_once(':').unwrap();
    images
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["repository"] == repo && i["tag"] == tag)
        .unwrap_or_else(|| panic!("{name} in {images}"))["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Every file under `dir` with its length and content, for before/after.
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let t = e.file_type().unwrap();
            let rel = p.strip_prefix(dir).unwrap().to_path_buf();
            if t.is_dir() {
                out.insert(rel, b"<dir>".to_vec());
                stack.push(p);
            } else if t.is_file() {
                out.insert(rel, std::fs::read(&p).unwrap());
            } else {
                out.insert(rel, b"<other>".to_vec());
            }
        }
    }
    out
}

fn skopeo(args: &[&str]) -> String {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo is installed");
    assert!(out.status.success(), "skopeo {args:?}: {}", stderr(&out));
    stdout(&out)
}

#[test]
fn anonymous_push_rmi_pull_run() {
    let reg = Registry::start();
    let env = Env::new();
    let name = format!("{}/team/busybox:1", reg.host());
    env.ok(&["tag", "busybox", &name]);
    // Small chunks: the layer goes up in many PATCHes.
    let t = Instant::now();
    let out = env.ok_with(&["push", &name], None, &[("SBX_PUSH_CHUNK_SIZE", "65536")]);
    let push_ms = t.elapsed().as_millis();
    assert!(out.contains("Pushed"), "{out}");
    let (digest, _) = pushed_digest(&out);
    // A second push finds every blob there already (HEAD before upload).
    let again = env.ok(&["push", &name]);
    assert!(
        again.contains("Layer already exists") && !again.contains("Pushed"),
        "{again}"
    );
    assert_eq!(pushed_digest(&again).0, digest);

    env.ok(&["rmi", &name, "busybox"]);
    assert_eq!(env.ok(&["images", "--format", "json"]).trim(), "[]");
    let t = Instant::now();
    let out = env.ok(&["pull", &name]);
    let pull_ms = t.elapsed().as_millis();
    assert!(out.contains(&format!("Digest: {digest}")), "{out}");
    assert!(out.contains("Pull complete"), "{out}");
    let (code, out, err) = common::run(&env.root, &[&name, "echo", "hi"]);
    assert_eq!((code, out.as_str()), (0, "hi\n"), "{err}");
    // Pulling again: nothing new.
    let out = env.ok(&["pull", &name]);
    assert!(out.contains("Image is up to date"), "{out}");
    eprintln!("figures: push busybox {push_ms} ms (64 KiB chunks), pull {pull_ms} ms");

    // A name that is not there is one clear line.
    env.fails(
        &["pull", &format!("{}/team/nope:1", reg.host())],
        None,
        "not found",
    );
}

#[test]
fn basic_auth_login_push_pull_run() {
    let reg = Registry::with_htpasswd("alice", "s3cret");
    let env = Env::new();
    let host = reg.host();
    let name = format!("{host}/team/busybox:1");
    env.ok(&["tag", "busybox", &name]);
    env.fails(&["push", &name], None, &format!("sbx login {host}"));

    let err = env.fails(
        &["login", "-u", "alice", "--password-stdin", &host],
        Some("wrong\n"),
        "refused the credentials",
    );
    assert!(!err.contains("wrong") && !err.contains("s3cret"), "{err}");
    assert!(!env.auth_file().exists(), "a refused login stores nothing");

    let out = env.ok_with(
        &["login", "-u", "alice", "--password-stdin", &host],
        Some("s3cret\n"),
        &[],
    );
    assert!(out.contains("Login Succeeded"), "{out}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(env.auth_file())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.auth_file()).unwrap()).unwrap();
    assert_eq!(json["auths"][&host]["auth"], "YWxpY2U6czNjcmV0");

    env.ok(&["push", &name]);
    env.ok(&["rmi", &name, "busybox"]);
    env.ok(&["pull", &name]);
    let (code, out, err) = common::run(&env.root, &[&name, "echo", "hi"]);
    assert_eq!((code, out.as_str()), (0, "hi\n"), "{err}");

    let out = env.ok(&["logout", &host]);
    assert!(out.contains("Removing login credentials"), "{out}");
    env.fails(&["pull", &name], None, "requires authentication");
    // A wrong password kept in auth.json is refused at pull too.
    std::fs::write(
        env.auth_file(),
        format!(r#"{{"auths":{{"{host}":{{"auth":"YWxpY2U6d3Jvbmc="}}}}}}"#),
    )
    .unwrap();
    env.fails(&["pull", &name], None, "refused the credentials");
}

#[test]
fn tampered_blob_is_refused_and_store_unchanged() {
    let reg = Registry::start();
    let pusher = Env::new();
    let name = format!("{}/team/busybox:1", reg.host());
    pusher.ok(&["tag", "busybox", &name]);
    pusher.ok(&["push", &name]);
    let puller = Env::new().emptied();

    // Flip the layer's bytes in the registry's storage (same length).
    let manifest: serde_json::Value = serde_json::from_str(&skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{name}"),
    ]))
    .unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    let data = reg.blob_data(layer.strip_prefix("sha256:").unwrap());
    let mut bytes = std::fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&data, &bytes).unwrap();

    let before = tree(puller.root.path());
    puller.fails(&["pull", &name], None, "does not match its digest");
    let after = tree(puller.root.path());
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "the store's files changed"
    );
    assert!(before == after, "the store's contents changed");
}

#[test]
fn skopeo_reads_what_sbx_pushes() {
    let reg = Registry::start();
    let env = Env::new();
    let name = format!("{}/team/app:v1", reg.host());
    env.ok(&["tag", "busybox", &name]);
    let (digest, _) = pushed_digest(&env.ok(&["push", &name]));
    let info: serde_json::Value = serde_json::from_str(&skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{name}"),
    ]))
    .unwrap();
    assert_eq!(info["Digest"], digest.as_str());
    assert_eq!(info["Os"], "linux");
    let out = tempfile::tempdir().unwrap();
    let dest = format!("oci:{}:app", out.path().display());
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{name}"),
        &dest,
    ]);
    // skopeo compresses layers on the way into a layout; the config (the
    // image id) comes through byte for byte.
    let pushed_config = skopeo(&[
        "inspect",
        "--config",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{name}"),
    ]);
    assert_eq!(
        skopeo(&["inspect", "--config", "--raw", &dest]),
        pushed_config
    );
    assert_eq!(
        format!("sha256:{}", hex_sha256(pushed_config.as_bytes())),
        image_id(&env, &name)
    );
}

#[test]
fn sbx_pulls_and_runs_what_skopeo_pushes() {
    let reg = Registry::start();
    let source = Env::new();
    let name = format!("{}/x/y:z", reg.host());
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:busybox:latest", source.root.path().display()),
        &format!("docker://{name}"),
    ]);
    let env = Env::new().emptied();
    let out = env.ok(&["pull", &name]);
    assert!(out.contains("Pull complete"), "{out}");
    let (code, out, err) = common::run(&env.root, &[&name, "echo", "from skopeo"]);
    assert_eq!((code, out.as_str()), (0, "from skopeo\n"), "{err}");
    // Docker schema2 too, stored as it came (digest preserved).
    let v2 = format!("{}/x/docker:v2s2", reg.host());
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--format=v2s2",
        &format!("oci:{}:busybox:latest", source.root.path().display()),
        &format!("docker://{v2}"),
    ]);
    let info: serde_json::Value = serde_json::from_str(&skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{v2}"),
    ]))
    .unwrap();
    let out = env.ok(&["pull", &v2]);
    assert!(
        out.contains(&format!("Digest: {}", info["Digest"].as_str().unwrap())),
        "{out}"
    );
    let (code, out, err) = common::run(&env.root, &[&v2, "echo", "v2s2"]);
    assert_eq!((code, out.as_str()), (0, "v2s2\n"), "{err}");
}

#[test]
fn index_pull_picks_linux_amd64() {
    let reg = Registry::start();
    let env = Env::new();
    let host = reg.host();
    // linux/amd64: busybox; "linux/arm64": another image with no shell.
    let amd64 = format!("{host}/x/multi:amd64");
    env.ok(&["tag", "busybox", &amd64]);
    let (amd64_digest, amd64_size) = pushed_digest(&env.ok(&["push", &amd64]));
    let amd64_id = image_id(&env, &amd64);
    let tarball = env.root.path().join("other.tar");
    let mut tar = tar::Builder::new(std::fs::File::create(&tarball).unwrap());
    let mut h = tar::Header::new_gnu();
    h.set_size(5);
    h.set_mode(0o644);
    h.set_cksum();
    tar.append_data(&mut h, "arch", &b"arm64"[..]).unwrap();
    tar.into_inner().unwrap();
    let arm64 = format!("{host}/x/multi:arm64");
    env.ok(&["import", tarball.to_str().unwrap(), &arm64]);
    let (arm64_digest, arm64_size) = pushed_digest(&env.ok(&["push", &arm64]));
    let entry = |d: &str, size: u64, arch: &str, variant: &str| {
        format!(
            r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{d}","size":{size},"platform":{{"architecture":"{arch}","os":"linux"{variant}}}}}"#
        )
    };
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{},{}]}}"#,
        entry(&arm64_digest, arm64_size, "arm64", r#","variant":"v8""#),
        entry(&amd64_digest, amd64_size, "amd64", "")
    );
    let status = reg.put_manifest(
        "x/multi",
        "latest",
        "application/vnd.oci.image.index.v1+json",
        index.as_bytes(),
    );
    assert_eq!(status, 201, "PUT index");

    let env = Env::new().emptied();
    let multi = format!("{host}/x/multi:latest");
    let out = env.ok(&["pull", &multi]);
    let index_digest = format!("sha256:{}", hex_sha256(index.as_bytes()));
    assert!(out.contains(&format!("Digest: {index_digest}")), "{out}");
    assert_eq!(image_id(&env, &multi), amd64_id);
    let (code, out, err) = common::run(&env.root, &[&multi, "echo", "amd64"]);
    assert_eq!((code, out.as_str()), (0, "amd64\n"), "{err}");
}

fn hex_sha256(bytes: &[u8]) -> String {
    let out = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(bytes)?;
            c.wait_with_output()
        })
        .unwrap();
    stdout(&out).split_whitespace().next().unwrap().to_string()
}
