//! The image verbs end to end through the `sbx` binary: import, images
//! (table and json), tag, save, rmi, load, skopeo reading the root, and
//! one clear stderr line for bad input.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const SBX: &str = env!("CARGO_BIN_EXE_sbx");

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (layers keep their owners and whiteouts are device nodes): run it as root"
    );
}

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        require_root();
        Env {
            dir: tempfile::Builder::new()
                .prefix("sbx-store-")
                .tempdir()
                .unwrap(),
        }
    }
    fn root(&self) -> std::path::PathBuf {
        self.dir.path().join("root")
    }
    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }
    fn sbx(&self, args: &[&str]) -> Output {
        self.sbx_stdin(args, None)
    }
    fn sbx_stdin(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut child = Command::new(SBX)
            .arg("--root")
            .arg(self.root())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(data) = stdin {
            input.write_all(data).unwrap();
        }
        drop(input);
        child.wait_with_output().unwrap()
    }
    /// Run and expect success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.sbx(args);
        assert!(
            out.status.success(),
            "sbx {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
    /// Run and expect one clear error line and a non-zero status.
    fn fails(&self, args: &[&str], needle: &str) {
        let out = self.sbx(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "sbx {args:?} should fail");
        assert_eq!(
            stderr.lines().count(),
            1,
            "one line on stderr, got {stderr:?}"
        );
        assert!(
            stderr.contains(needle),
            "sbx {args:?}: {stderr:?} should mention {needle:?}"
        );
    }
}

fn rootfs_tgz() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data, mode) in [
        ("bin/hello", &b"#!/bin/sh\necho hello\n"[..], 0o755),
        ("etc/motd", b"hi\n", 0o644),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, name, data).unwrap();
    }
    let tar = b.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}

fn images_json(env: &Env) -> Vec<serde_json::Value> {
    serde_json::from_str(&env.ok(&["images", "--format", "json"])).unwrap()
}

#[test]
fn import_images_tag_save_rmi_load() {
    let env = Env::new();
    let tgz = env.path("rootfs.tgz");
    std::fs::write(&tgz, rootfs_tgz()).unwrap();

    let id = env.ok(&[
        "import",
        tgz.to_str().unwrap(),
        "demo:1",
        "--change",
        r#"CMD ["/bin/hello"]"#,
        "-c",
        "ENV GREETING=hi",
        "-c",
        "WORKDIR /srv",
    ]);
    let id = id.trim();
    assert!(id.starts_with("sha256:") && id.len() == 71, "{id}");

    let table = env.ok(&["images"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("REPOSITORY")
            && lines[0].contains("IMAGE ID")
            && lines[0].ends_with("SIZE")
    );
    assert!(
        lines[1].starts_with("demo ") && lines[1].contains(&id[7..19]),
        "{table}"
    );
    assert!(
        lines[1].contains("ago") && lines[1].ends_with("kB"),
        "{table}"
    );

    let json = images_json(&env);
    assert_eq!(json.len(), 1);
    assert_eq!(
        (json[0]["repository"].as_str(), json[0]["tag"].as_str()),
        (Some("demo"), Some("1"))
    );
    assert_eq!(json[0]["id"], id);

    // Import from stdin too.
    let out = env.sbx_stdin(&["import", "-", "fromstdin"], Some(&rootfs_tgz()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    env.ok(&["tag", "demo:1", "127.0.0.1:5000/team/demo:2"]);
    assert_eq!(images_json(&env).len(), 3);

    // skopeo reads the root as an OCI layout.
    let root = env.root().display().to_string();
    for name in ["demo:1", "127.0.0.1:5000/team/demo:2"] {
        let out = Command::new("skopeo")
            .args(["inspect", &format!("oci:{root}:{name}")])
            .output()
            .expect("skopeo must be installed for this test");
        assert!(
            out.status.success(),
            "skopeo: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["Env"][0], "GREETING=hi");
    }

    let archive = env.path("demo.tar");
    env.ok(&[
        "save",
        "-o",
        archive.to_str().unwrap(),
        "demo:1",
        "127.0.0.1:5000/team/demo:2",
    ]);
    assert!(Path::new(&archive).is_file());

    let rmi = env.ok(&["rmi", "demo:1", "127.0.0.1:5000/team/demo:2"]);
    assert_eq!(
        rmi.lines().collect::<Vec<_>>(),
        vec![
            "Untagged: demo:1",
            "Untagged: 127.0.0.1:5000/team/demo:2",
            &format!("Deleted: {id}")
        ]
    );
    assert_eq!(images_json(&env).len(), 1);

    let load = env.ok(&["load", "-i", archive.to_str().unwrap()]);
    assert_eq!(
        load,
        "Loaded image: demo:1\nLoaded image: 127.0.0.1:5000/team/demo:2\n"
    );
    let json = images_json(&env);
    assert_eq!(json.len(), 3);
    assert!(json.iter().filter(|i| i["id"] == id).count() == 2);

    // By id prefix with two names: refused without -f, then both go.
    env.fails(&["rmi", &id[7..15]], "referenced by 2 names");
    let rmi = env.ok(&["rmi", "-f", &id[7..15]]);
    assert!(rmi.contains(&format!("Deleted: {id}")), "{rmi}");
}

#[test]
fn bad_input_gives_one_clear_line() {
    let env = Env::new();
    env.fails(
        &["import", "/nonexistent/rootfs.tar", "x"],
        "/nonexistent/rootfs.tar",
    );
    let junk = env.path("junk.tar");
    std::fs::write(&junk, vec![b'z'; 2000]).unwrap();
    env.fails(
        &["import", junk.to_str().unwrap(), "x"],
        "not a valid tar archive",
    );
    env.fails(
        &["import", junk.to_str().unwrap(), "Bad Name"],
        "invalid image name",
    );
    env.fails(
        &[
            "import",
            junk.to_str().unwrap(),
            "x",
            "-c",
            "ONBUILD RUN true",
        ],
        "ONBUILD RUN true",
    );
    env.fails(&["rmi", "nothere"], "no such image: nothere");
    env.fails(&["tag", "nothere", "other"], "no such image: nothere");
    env.fails(&["load", "-i", junk.to_str().unwrap()], "junk.tar");
    env.fails(
        &["save", "-o", env.path("o.tar").to_str().unwrap(), "nothere"],
        "no such image",
    );
    env.fails(&["images", "--format", "yaml"], "yaml");
    // Nothing half-written was left behind.
    assert!(std::fs::read_dir(env.root().join("blobs/sha256"))
        .unwrap()
        .next()
        .is_none());
}
