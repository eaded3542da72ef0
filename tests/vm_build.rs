//! `sbx build --isolation=vm`: every RUN step in its own microVM, its
//! changes taken from the guest's writable layer as an OCI layer (files
//! made, files deleted as `.wh.` whiteouts, a replaced directory as an
//! opaque one), and the image then runs in a container.
//!
//! Needs the guest kernel (scripts/setup test builds it) and QEMU.

mod common;

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use common::{stderr, stdout, TestRoot};
use serde_json::Value;

fn require_kernel() {
    let vmlinux = std::env::var_os("SBX_KERNEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/sbx/kernel"))
        .join("current/vmlinux");
    assert!(
        vmlinux.is_file(),
        "the guest kernel is not built ({} is missing): run guest-kernel/build.sh \
         (scripts/setup test does) before the VM tests",
        vmlinux.display()
    );
}

const DOCKERFILE: &str = r#"FROM busybox
RUN echo made-in-a-vm > /made && mkdir -p /data/old && echo old > /data/old/f && echo keep > /data/k
RUN rm /bin/true && ln -s /made /made-link && ln /made /made-hard
RUN rm -rf /data && mkdir /data && echo new > /data/c
CMD ["sh", "-c", "cat /made /made-link; ls /bin/true 2>&1; ls -A /data; cat /data/c"]
"#;

fn blob_path(r: &TestRoot, digest: &str) -> PathBuf {
    r.path()
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

fn json_blob(r: &TestRoot, digest: &str) -> Value {
    serde_json::from_slice(&fs::read(blob_path(r, digest)).unwrap()).unwrap()
}

fn manifest(r: &TestRoot, name: &str) -> Value {
    let index: Value =
        serde_json::from_slice(&fs::read(r.path().join("index.json")).unwrap()).unwrap();
    let desc = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == name)
        .unwrap_or_else(|| panic!("no image {name} in index.json"))
        .clone();
    json_blob(r, desc["digest"].as_str().unwrap())
}

/// The entry names of a layer blob, whatever its compression.
fn layer_entries(r: &TestRoot, layer: &Value) -> Vec<String> {
    let path = blob_path(r, layer["digest"].as_str().unwrap());
    let media = layer["mediaType"].as_str().unwrap_or_default();
    let file = fs::File::open(path).unwrap();
    let reader: Box<dyn Read> = if media.ends_with("+gzip") {
        Box::new(flate2::read::GzDecoder::new(file))
    } else if media.ends_with("+zstd") {
        Box::new(zstd::Decoder::new(file).unwrap())
    } else {
        Box::new(file)
    };
    tar::Archive::new(reader)
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let p = e.path().unwrap().display().to_string();
            p.trim_end_matches('/').to_string()
        })
        .collect()
}

fn build(r: &TestRoot, ctx: &Path, tag: &str) -> String {
    let o = r.sbx(&["build", "--isolation=vm", "-t", tag, ctx.to_str().unwrap()]);
    let err = stderr(&o);
    assert!(!err.contains("panicked"), "{err}");
    assert!(o.status.success(), "vm build failed: {err}\n{}", stdout(&o));
    stdout(&o)
}

#[test]
fn run_steps_in_vms_make_layers_with_whiteouts_and_opaque_dirs() {
    require_kernel();
    let r = TestRoot::new();
    let ctx = tempfile::tempdir().unwrap();
    fs::write(ctx.path().join("Dockerfile"), DOCKERFILE).unwrap();
    build(&r, ctx.path(), "vmbuilt:1");

    let m = manifest(&r, "vmbuilt:1");
    let layers = m["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 4, "busybox + three RUN steps: {m}");
    let made = layer_entries(&r, &layers[1]);
    for want in ["made", "data", "data/old", "data/old/f", "data/k"] {
        assert!(made.contains(&want.to_string()), "{want} in {made:?}");
    }
    // What the guest init made for itself is not the step's.
    for not in [
        "proc",
        "sys",
        "dev",
        "etc/hosts",
        "etc/hostname",
        "etc/resolv.conf",
    ] {
        assert!(!made.contains(&not.to_string()), "{not} in {made:?}");
    }
    let deleted = layer_entries(&r, &layers[2]);
    for want in ["bin/.wh.true", "made-link", "made-hard"] {
        assert!(deleted.contains(&want.to_string()), "{want} in {deleted:?}");
    }
    let replaced = layer_entries(&r, &layers[3]);
    for want in ["data", "data/.wh..wh..opq", "data/c"] {
        assert!(
            replaced.contains(&want.to_string()),
            "{want} in {replaced:?}"
        );
    }

    // The image runs in a container and shows every change.
    let (code, out, err) = common::run(&r, &["vmbuilt:1"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "made-in-a-vm", "{out}");
    assert_eq!(lines[1], "made-in-a-vm", "{out}");
    assert!(lines[2].contains("No such file"), "{out}");
    assert_eq!(&lines[3..], ["c", "new"], "{out}");

    // The same Dockerfile again: every step from the cache, no VM.
    let again = build(&r, ctx.path(), "vmbuilt:2");
    assert_eq!(manifest(&r, "vmbuilt:2")["layers"], m["layers"], "{again}");
}

#[test]
fn a_failing_vm_step_is_one_line_and_leaves_no_sandbox() {
    require_kernel();
    let r = TestRoot::new();
    let ctx = tempfile::tempdir().unwrap();
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox\nRUN echo working && exit 3\n",
    )
    .unwrap();
    let o = r.sbx(&[
        "build",
        "--isolation=vm",
        "-t",
        "bad:1",
        ctx.path().to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = stderr(&o);
    let last = err.lines().last().unwrap_or_default();
    assert!(last.contains("exit code 3"), "{err}");
    assert!(stdout(&o).contains("working"), "{}", stdout(&o));
    let sandboxes = r.path().join("sandboxes");
    assert!(
        !sandboxes.exists() || fs::read_dir(&sandboxes).unwrap().count() == 0,
        "a step's sandbox (and its changes disk) was left behind"
    );
}
