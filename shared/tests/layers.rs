//! Layers: plain, gzip and zstd blobs unpack once per diff-id; whiteouts
//! become overlayfs whiteouts; corrupt blobs are refused with a clear error
//! and leave nothing half-unpacked.

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use common::*;
use sbx_shared::digest::Digest;
use sbx_shared::store::StoreError;
use tar::EntryType;

fn rootfs_tar() -> Vec<u8> {
    let mut suid = file("bin/su", b"#!/bin/sh\n");
    suid.mode = 0o4755;
    tar(&[
        dir("./"),
        dir("bin/"),
        suid,
        file("etc/hello", b"hello\n"),
        symlink("etc/link", "hello"),
    ])
}

fn check_rootfs(layer: &Path) {
    assert_eq!(fs::read(layer.join("etc/hello")).unwrap(), b"hello\n");
    assert_eq!(
        fs::read_link(layer.join("etc/link")).unwrap(),
        Path::new("hello")
    );
    let su = fs::metadata(layer.join("bin/su")).unwrap();
    assert_eq!(su.permissions().mode() & 0o7777, 0o4755, "setuid kept");
    assert_eq!((su.uid(), su.mtime()), (0, 1_600_000_000));
    assert_eq!(
        fs::metadata(layer).unwrap().permissions().mode() & 0o777,
        0o755
    );
}

#[test]
fn plain_gzip_and_zstd_imports_unpack_the_same() {
    let (_dir, store) = store();
    let plain = rootfs_tar();
    let mut ids = Vec::new();
    for (name, bytes) in [
        ("plain", plain.clone()),
        ("gz", gzip(&plain)),
        ("zst", zstd(&plain)),
    ] {
        let image = import(&store, &bytes, name);
        // Stored uncompressed: the blob digest is the diff-id.
        assert_eq!(image.layers, image.diff_ids);
        assert_eq!(image.diff_ids, vec![Digest::of(&plain)]);
        let dirs = store.rootfs(&image).unwrap();
        assert_eq!(dirs.len(), 1);
        check_rootfs(&dirs[0]);
        ids.push(dirs[0].clone());
    }
    assert!(
        ids.windows(2).all(|w| w[0] == w[1]),
        "one directory per diff-id"
    );
    assert_eq!(
        fs::read_dir(store.root().tmp()).unwrap().count(),
        0,
        "no temp leftovers"
    );
}

#[test]
fn compressed_layer_blobs_are_verified_and_unpacked() {
    let (dir, store) = store();
    let l1 = tar(&[file("a", b"one")]);
    let l2 = tar(&[file("b", b"two")]);
    let (gz, zs) = (gzip(&l1), zstd(&l2));
    let (d1, d2) = (Digest::of(&l1), Digest::of(&l2));
    let config = config_json(&[d1.clone(), d2.clone()]);
    let cfg = Digest::of(&config);
    let manifest = serde_json::json!([{
        "Config": format!("{}.json", cfg.hex()),
        "RepoTags": ["layered:1"],
        "Layers": ["l1/layer.tar", "l2/layer.tar"],
    }])
    .to_string();
    let ar = archive(
        &[
            ("manifest.json", manifest.as_bytes()),
            (&format!("{}.json", cfg.hex()), &config),
            ("l1/layer.tar", &gz),
            ("l2/layer.tar", &zs),
        ],
        &[],
    );
    let path = dir.path().join("docker.tar");
    fs::write(&path, ar).unwrap();
    assert_eq!(store.load(&path).unwrap(), vec!["layered:1".to_string()]);
    let image = store.resolve("layered:1").unwrap();
    assert_eq!(image.layers, vec![Digest::of(&gz), Digest::of(&zs)]);
    let dirs = store.rootfs(&image).unwrap();
    assert_eq!(dirs[0].file_name().unwrap().to_str(), Some(d1.hex()));
    assert_eq!(fs::read(dirs[0].join("a")).unwrap(), b"one");
    assert_eq!(fs::read(dirs[1].join("b")).unwrap(), b"two");
}

#[test]
fn whiteouts_become_overlay_whiteouts() {
    let (_dir, store) = store();
    let lower = import(
        &store,
        &tar(&[
            file("gone", b"x"),
            file("opq/old", b"x"),
            file("keep", b"k"),
        ]),
        "lower",
    );
    let upper = import(
        &store,
        &tar(&[
            file(".wh.gone", b""),
            dir("opq/"),
            file("opq/.wh..wh..opq", b""),
            file("opq/new", b"n"),
            file(".wh..wh.plnk", b""),
        ]),
        "upper",
    );
    let low = store.rootfs(&lower).unwrap().remove(0);
    let up = store.rootfs(&upper).unwrap().remove(0);
    let wh = fs::symlink_metadata(up.join("gone")).unwrap();
    assert!(wh.file_type().is_char_device());
    assert_eq!(wh.rdev(), 0, "a whiteout is the 0:0 char device");
    assert!(!up.join(".wh.gone").exists());
    assert!(!up.join(".wh..wh.plnk").exists());
    assert_eq!(
        xattr(&up.join("opq"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert!(!up.join("opq/.wh..wh..opq").exists());

    // And overlayfs reads them so.
    let mnt = tempfile::tempdir().unwrap();
    let opts = format!("lowerdir={}:{}", up.display(), low.display());
    let status = std::process::Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &opts])
        .arg(mnt.path())
        .status()
        .unwrap();
    assert!(status.success(), "mount overlay");
    let seen = (
        mnt.path().join("gone").exists(),
        mnt.path().join("opq/old").exists(),
        mnt.path().join("opq/new").exists(),
        mnt.path().join("keep").exists(),
    );
    std::process::Command::new("umount")
        .arg(mnt.path())
        .status()
        .unwrap();
    assert_eq!(seen, (false, false, true, true));
}

#[test]
fn devices_are_skipped_and_fifos_made() {
    let (_dir, store) = store();
    let image = import(
        &store,
        &tar(&[
            device("dev/sda", EntryType::Block, 8, 0),
            device("dev/mem", EntryType::Char, 1, 1),
            device("dev/null", EntryType::Char, 1, 3),
            E {
                kind: EntryType::Fifo,
                name: "run/fifo",
                link: "",
                data: b"",
                mode: 0o600,
                dev: (0, 0),
            },
        ]),
        "devs",
    );
    let layer = store.rootfs(&image).unwrap().remove(0);
    for d in ["dev/sda", "dev/mem", "dev/null"] {
        assert!(
            fs::symlink_metadata(layer.join(d)).is_err(),
            "{d} must not be created"
        );
    }
    assert!(fs::symlink_metadata(layer.join("run/fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
}

fn flip_byte(path: &Path, at: usize) {
    let mut bytes = fs::read(path).unwrap();
    let at = at.min(bytes.len() - 1);
    bytes[at] ^= 0x20;
    fs::write(path, bytes).unwrap();
}

#[test]
fn corrupt_config_or_manifest_fails_resolve() {
    let (_dir, store) = store();
    let image = import(&store, &rootfs_tar(), "victim");
    flip_byte(&store.blobs().path(&image.config_digest), 10);
    let err = store.resolve("victim").unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("blob {} is corrupt (digest mismatch)", image.config_digest)
    );

    let other = import(&store, &tar(&[file("x", b"y")]), "other");
    flip_byte(&store.blobs().path(&other.manifest_digest), 3);
    assert!(
        matches!(store.resolve("other"), Err(StoreError::Corrupt { digest }) if digest == other.manifest_digest)
    );
}

#[test]
fn corrupt_layer_fails_rootfs_and_leaves_nothing() {
    let (_dir, store) = store();
    for (i, at) in [(0, 600usize), (1, 3), (2, usize::MAX)] {
        let name = format!("victim{i}");
        let image = import(
            &store,
            &tar(&[file(&format!("f{i}"), &[b'a'; 2000])]),
            &name,
        );
        flip_byte(&store.blobs().path(&image.layers[0]), at);
        let err = store.rootfs(&image).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("blob {} is corrupt (digest mismatch)", image.layers[0]),
            "flip at {at}"
        );
        assert!(!store
            .root()
            .layers()
            .join("sha256")
            .join(image.diff_ids[0].hex())
            .exists());
        assert_eq!(
            fs::read_dir(store.root().tmp()).unwrap().count(),
            0,
            "nothing half-unpacked"
        );
    }
}

#[test]
fn diff_id_mismatch_is_refused() {
    let (dir, store) = store();
    let layer = tar(&[file("a", b"one")]);
    let config = config_json(&[Digest::of(b"not the layer")]);
    let cfg = Digest::of(&config);
    let manifest = serde_json::json!([{"Config": "config.json", "RepoTags": ["liar:1"], "Layers": ["l/layer.tar"]}]);
    let ar = archive(
        &[
            ("manifest.json", manifest.to_string().as_bytes()),
            ("config.json", &config),
            ("l/layer.tar", &gzip(&layer)),
        ],
        &[],
    );
    let path = dir.path().join("a.tar");
    fs::write(&path, ar).unwrap();
    store.load(&path).unwrap();
    let image = store.resolve("liar:1").unwrap();
    assert_eq!(image.config_digest, cfg);
    let err = store.rootfs(&image).unwrap_err().to_string();
    assert!(err.contains("uncompressed content is"), "{err}");
    assert_eq!(
        fs::read_dir(store.root().layers().join("sha256"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn concurrent_unpackers_share_one_directory() {
    let (_dir, store) = store();
    let files: Vec<(String, Vec<u8>)> = (0..200)
        .map(|i| (format!("d{}/f{i}", i % 7), vec![b'x'; i * 10]))
        .collect();
    let entries: Vec<E<'_>> = files.iter().map(|(n, d)| file(n, d)).collect();
    let image = import(&store, &tar(&entries), "busy");
    let root = store.root().clone();
    let results: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let (root, image) = (root.clone(), image.clone());
                s.spawn(move || {
                    sbx_shared::store::Store::open(&root)
                        .unwrap()
                        .rootfs(&image)
                        .unwrap()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(results.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(
        fs::read(results[0][0].join("d3/f10")).unwrap(),
        vec![b'x'; 100]
    );
    assert_eq!(fs::read_dir(store.root().tmp()).unwrap().count(), 0);
}
