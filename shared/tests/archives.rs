//! Archives and interop: save/load round trip, hand-built docker-archive
//! and OCI archive, and skopeo reading the store and saved archives.

mod common;

use std::fs;
use std::process::Command;

use common::*;
use sbx_shared::digest::Digest;
use sbx_shared::store::StoreError;

fn skopeo_inspect(target: &str) -> serde_json::Value {
    let out = Command::new("skopeo")
        .args(["inspect", target])
        .output()
        .expect("skopeo must be installed (/usr/bin/skopeo) for this test");
    assert!(
        out.status.success(),
        "skopeo inspect {target}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn skopeo_reads_the_store() {
    let (_dir, store) = store();
    let image = import(
        &store,
        &tar(&[file("etc/os-release", b"ID=sbx\n")]),
        "busybox",
    );
    store.tag("busybox", "127.0.0.1:5000/team/app:1").unwrap();
    let root = store.root().dir().display().to_string();
    for name in ["busybox:latest", "127.0.0.1:5000/team/app:1"] {
        let v = skopeo_inspect(&format!("oci:{root}:{name}"));
        assert_eq!(v["Digest"], image.manifest_digest.to_string());
        assert_eq!(v["Layers"][0], image.layers[0].to_string());
        assert_eq!(v["Architecture"], "amd64");
    }
}

#[test]
fn save_rmi_load_round_trip() {
    let (dir, store) = store();
    let image = import(&store, &gzip(&tar(&[file("bin/app", b"app")])), "app:1");
    store.tag("app:1", "registry.local:5000/app:v2").unwrap();
    let out = dir.path().join("out.tar");
    store
        .save(&["app:1".into(), "registry.local:5000/app:v2".into()], &out)
        .unwrap();

    // Other tools read what we wrote.
    let archive = out.display().to_string();
    assert_eq!(
        skopeo_inspect(&format!("oci-archive:{archive}:app:1"))["Digest"],
        image.manifest_digest.to_string()
    );
    let docker = skopeo_inspect(&format!("docker-archive:{archive}"));
    assert_eq!(docker["Layers"][0], image.diff_ids[0].to_string());

    let gone = store.remove("app:1").unwrap();
    assert!(!gone.deleted, "another name still points at it");
    let gone = store.remove("registry.local:5000/app:v2").unwrap();
    assert!(gone.deleted);
    assert!(store.blobs().list().unwrap().is_empty(), "blobs collected");
    assert!(matches!(
        store.resolve("app:1"),
        Err(StoreError::NotFound(_))
    ));

    let names = store.load(&out).unwrap();
    assert_eq!(
        names,
        vec![
            "app:1".to_string(),
            "registry.local:5000/app:v2".to_string()
        ]
    );
    for name in ["app:1", "registry.local:5000/app:v2"] {
        let again = store.resolve(name).unwrap();
        assert_eq!(
            (again.manifest_digest, again.config_digest.clone()),
            (image.manifest_digest.clone(), image.config_digest.clone())
        );
    }
    let layer = store
        .rootfs(&store.resolve("app:1").unwrap())
        .unwrap()
        .remove(0);
    assert_eq!(fs::read(layer.join("bin/app")).unwrap(), b"app");
    assert_eq!(store.images().unwrap().len(), 2);
}

#[test]
fn rmi_collects_unpacked_layers_no_ref_uses() {
    let (_dir, store) = store();
    let shared = tar(&[file("shared", b"s")]);
    let a = import(&store, &shared, "a");
    let b = import(&store, &shared, "b");
    let la = store.rootfs(&a).unwrap().remove(0);
    assert_eq!(la, store.rootfs(&b).unwrap()[0]);
    store.remove("a").unwrap();
    assert!(la.is_dir(), "b still uses the layer");
    store.remove("b").unwrap();
    assert!(!la.exists(), "no image uses it now");
}

#[test]
fn loads_a_docker_save_archive() {
    let (dir, store) = store();
    let l1 = tar(&[file("etc/one", b"1")]);
    let l2 = tar(&[file("etc/two", b"2"), file("etc/.wh.one", b"")]);
    let (d1, d2) = (Digest::of(&l1), Digest::of(&l2));
    let config = config_json(&[d1.clone(), d2.clone(), d1.clone()]);
    let cfg = Digest::of(&config);
    let cfg_name = format!("{}.json", cfg.hex());
    let manifest = serde_json::json!([{
        "Config": cfg_name,
        "RepoTags": ["busybox:1.36", "docker.io/library/busybox:latest"],
        "Layers": ["aaa/layer.tar", "bbb/layer.tar", "ccc/layer.tar"],
    }])
    .to_string();
    let gz2 = gzip(&l2);
    let ar = archive(
        &[
            ("repositories", br#"{"busybox":{"1.36":"aaa"}}"#),
            ("manifest.json", manifest.as_bytes()),
            (&cfg_name, &config),
            ("aaa/VERSION", b"1.0"),
            ("aaa/layer.tar", &l1),
            ("bbb/layer.tar", &gz2),
        ],
        // docker save links a layer used twice
        &[("ccc/layer.tar", "../aaa/layer.tar")],
    );
    let path = dir.path().join("docker.tar");
    fs::write(&path, gzip(&ar)).unwrap();
    let names = store.load(&path).unwrap();
    assert_eq!(
        names,
        vec!["busybox:1.36".to_string(), "busybox:latest".to_string()]
    );
    let image = store.resolve("busybox").unwrap();
    assert_eq!(image.config_digest, cfg);
    assert_eq!(image.layers, vec![d1.clone(), Digest::of(&gz2), d1]);
    let dirs = store.rootfs(&image).unwrap();
    assert_eq!(fs::read(dirs[0].join("etc/one")).unwrap(), b"1");
    assert_eq!(fs::read(dirs[1].join("etc/two")).unwrap(), b"2");
    // Only what the image uses is kept.
    assert_eq!(
        store.blobs().list().unwrap().len(),
        4,
        "config, manifest and two layer blobs"
    );
}

#[test]
fn loads_an_oci_archive_with_a_nested_index() {
    let (dir, store) = store();
    let amd = tar(&[file("arch", b"amd64")]);
    let arm = tar(&[file("arch", b"arm64")]);
    let mut blobs: Vec<(String, Vec<u8>)> = Vec::new();
    let mut add = |bytes: Vec<u8>| {
        let d = Digest::of(&bytes);
        let size = bytes.len();
        blobs.push((format!("blobs/sha256/{}", d.hex()), bytes));
        (d, size)
    };
    let manifest_for = |layer: &[u8],
                        arch: &str,
                        add: &mut dyn FnMut(Vec<u8>) -> (Digest, usize)| {
        let z = zstd(layer);
        let (ld, ls) = add(z);
        let (cd, cs) = add(config_json(&[Digest::of(layer)]));
        let m = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd.to_string(), "size": cs},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+zstd", "digest": ld.to_string(), "size": ls}],
        });
        let (md, ms) = add(serde_json::to_vec(&m).unwrap());
        serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": md.to_string(), "size": ms,
            "platform": {"architecture": arch, "os": "linux"},
        })
    };
    let arm_desc = manifest_for(&arm, "arm64", &mut add);
    let amd_desc = manifest_for(&amd, "amd64", &mut add);
    let amd_manifest: Digest = amd_desc["digest"].as_str().unwrap().parse().unwrap();
    let nested = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [arm_desc, amd_desc],
    });
    let (nd, ns) = add(serde_json::to_vec(&nested).unwrap());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [
            {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": nd.to_string(), "size": ns,
             "annotations": {"io.containerd.image.name": "docker.io/library/multi:2", "org.opencontainers.image.ref.name": "2"}},
        ],
    });
    let index = serde_json::to_vec(&index).unwrap();
    let mut files: Vec<(&str, &[u8])> = vec![
        ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
        ("index.json", &index),
    ];
    files.extend(blobs.iter().map(|(n, b)| (n.as_str(), b.as_slice())));
    let path = dir.path().join("oci.tar");
    fs::write(&path, archive(&files, &[])).unwrap();

    assert_eq!(store.load(&path).unwrap(), vec!["multi:2".to_string()]);
    let image = store.resolve("multi:2").unwrap();
    assert_eq!(image.manifest_digest, amd_manifest);
    let layer = store.rootfs(&image).unwrap().remove(0);
    assert_eq!(fs::read(layer.join("arch")).unwrap(), b"amd64");
}

#[test]
fn archives_with_bad_blobs_are_refused() {
    let (dir, store) = store();
    let wrong = Digest::of(b"something else");
    let ar = archive(
        &[
            ("oci-layout", b"{}"),
            (&format!("blobs/sha256/{}", wrong.hex()), b"content"),
        ],
        &[],
    );
    let path = dir.path().join("bad.tar");
    fs::write(&path, ar).unwrap();
    let err = store.load(&path).unwrap_err().to_string();
    assert!(err.contains("does not match its digest"), "{err}");
    assert!(store.blobs().list().unwrap().is_empty());

    fs::write(&path, b"this is not a tar archive at all, just some text").unwrap();
    assert!(store.load(&path).is_err());
    let err = store
        .load(&dir.path().join("missing.tar"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing.tar"), "{err}");
}

#[test]
fn resolve_by_id_prefix_and_digest() {
    let (_dir, store) = store();
    let image = import(&store, &tar(&[file("x", b"1")]), "one");
    let id = image.config_digest.to_string();
    assert_eq!(
        store.resolve(&id).unwrap().manifest_digest,
        image.manifest_digest
    );
    assert_eq!(store.resolve(&id[7..19]).unwrap().name, "one:latest");
    assert_eq!(
        store.resolve(&id[7..11]).unwrap().config_digest,
        image.config_digest
    );
    let pinned = format!("one@{}", image.manifest_digest);
    assert_eq!(
        store.resolve(&pinned).unwrap().config_digest,
        image.config_digest
    );
    assert!(
        matches!(store.resolve(&id[7..10]), Err(StoreError::NotFound(_))),
        "3 digits are too few"
    );
    assert!(matches!(
        store.resolve("nothere"),
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.resolve("Bad Name"),
        Err(StoreError::InvalidName(_))
    ));
}
