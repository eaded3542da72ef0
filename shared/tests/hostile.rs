//! Hostile layer tarballs: every case is rejected or contained, and a
//! sentinel directory outside the store (and the host's /etc/passwd) stays
//! byte-for-byte the same.

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use common::*;
use sbx_shared::store::unpack::unpack;
use tar::EntryType;

/// A base directory holding `outside/` (the sentinel) and `layer/`.
struct Scene {
    base: tempfile::TempDir,
}

impl Scene {
    fn new() -> Scene {
        require_root();
        let base = tempfile::tempdir().unwrap();
        let out = base.path().join("outside");
        fs::create_dir_all(out.join("sub")).unwrap();
        fs::write(out.join("secret"), b"do not touch").unwrap();
        fs::write(out.join("sub/file"), b"nor this").unwrap();
        std::os::unix::fs::symlink("secret", out.join("alias")).unwrap();
        fs::create_dir(base.path().join("layer")).unwrap();
        Scene { base }
    }
    fn outside(&self) -> std::path::PathBuf {
        self.base.path().join("outside")
    }
    fn layer(&self) -> std::path::PathBuf {
        self.base.path().join("layer")
    }
}

fn host_state() -> Vec<(String, i64, u64, Vec<u8>)> {
    ["/etc/passwd", "/etc/shadow", "/etc/hostname", "/"]
        .iter()
        .filter_map(|p| {
            let m = fs::symlink_metadata(p).ok()?;
            let content = if m.is_file() {
                fs::read(p).ok()?
            } else {
                Vec::new()
            };
            Some((p.to_string(), m.mtime(), m.ino(), content))
        })
        .collect()
}

/// Unpack `entries` into a fresh layer; the outside must not change.
/// Returns whether the layer was accepted, and the scene to inspect.
fn attempt(name: &str, entries: &[E<'_>]) -> (bool, Scene) {
    let scene = Scene::new();
    let before = snapshot(&scene.outside());
    let host = host_state();
    let result = unpack(&tar(entries)[..], &scene.layer());
    assert_eq!(
        snapshot(&scene.outside()),
        before,
        "{name}: the outside changed"
    );
    assert_eq!(host_state(), host, "{name}: a host file changed");
    for p in ["/pwned", "/etc/pwned", "/tmp/pwned"] {
        assert!(fs::symlink_metadata(p).is_err(), "{name}: {p} was created");
    }
    (result.is_ok(), scene)
}

#[test]
fn dotdot_names_are_refused() {
    for n in [
        "../outside/secret",
        "../../../../tmp/pwned",
        "a/../../outside/pwned",
        "./../x",
    ] {
        let (ok, _) = attempt(n, &[file(n, b"evil")]);
        assert!(!ok, "{n} must refuse the layer");
    }
    // `..` that stays inside is just a path.
    let (ok, s) = attempt("a/../b", &[file("a/../b", b"fine")]);
    assert!(ok);
    assert_eq!(fs::read(s.layer().join("b")).unwrap(), b"fine");
}

#[test]
fn absolute_names_are_contained() {
    let sentinel = Scene::new();
    let abs = format!("{}/secret", sentinel.outside().display());
    let (ok, s) = attempt("/abs", &[file("/etc/pwned", b"evil"), file(&abs, b"evil")]);
    assert!(ok);
    assert_eq!(fs::read(s.layer().join("etc/pwned")).unwrap(), b"evil");
    assert_eq!(
        fs::read(sentinel.outside().join("secret")).unwrap(),
        b"do not touch"
    );
}

#[test]
fn writes_through_symlinks_stay_inside() {
    let s0 = Scene::new();
    let outside_abs = s0.outside().display().to_string();
    let cases: Vec<(&str, Vec<E<'_>>)> = vec![
        (
            "link to / then a file through it",
            vec![symlink("root", "/"), file("root/etc/pwned", b"evil")],
        ),
        (
            "link to ../.. then a file through it",
            vec![symlink("up", "../.."), file("up/tmp/pwned", b"evil")],
        ),
        (
            "link to the outside dir",
            vec![symlink("out", "../outside"), file("out/secret", b"evil")],
        ),
        (
            "absolute link to the outside dir",
            vec![symlink("out", &outside_abs), file("out/secret", b"evil")],
        ),
        (
            "link to a file then overwrite it",
            vec![symlink("f", "../outside/secret"), file("f", b"evil")],
        ),
        (
            "abs link to a file then overwrite",
            vec![symlink("passwd", "/etc/passwd"), file("passwd", b"evil")],
        ),
        (
            "symlink dir then dir/file",
            vec![
                symlink("dir", "/etc"),
                dir("dir/"),
                file("dir/passwd", b"evil"),
            ],
        ),
        (
            "nested relative escape",
            vec![
                dir("a/"),
                symlink("a/b", "../../../../../"),
                file("a/b/etc/pwned", b"x"),
            ],
        ),
        (
            "link to /proc/self/root",
            vec![
                symlink("p", "/proc/self/root/etc"),
                file("p/pwned", b"evil"),
            ],
        ),
    ];
    for (name, entries) in &cases {
        attempt(name, entries);
    }
    // The plain case lands inside the layer.
    let (ok, s) = attempt("root", &cases[0].1);
    assert!(ok);
    assert_eq!(fs::read(s.layer().join("etc/pwned")).unwrap(), b"evil");
    // Overwriting a symlink replaces the link, not its target.
    let (ok, s) = attempt("f", &cases[4].1);
    assert!(ok);
    assert!(fs::symlink_metadata(s.layer().join("f")).unwrap().is_file());
}

#[test]
fn hardlinks_cannot_reach_out() {
    let cases: Vec<(&str, Vec<E<'_>>)> = vec![
        (
            "hardlink to /etc/passwd",
            vec![hardlink("pw", "/etc/passwd")],
        ),
        (
            "hardlink to ../outside",
            vec![hardlink("s", "../outside/secret")],
        ),
        (
            "hardlink through a symlink dir",
            vec![symlink("o", "../outside"), hardlink("s", "o/secret")],
        ),
        (
            "hardlink then write",
            vec![hardlink("pw", "/etc/passwd"), file("pw", b"evil")],
        ),
    ];
    for (name, entries) in &cases {
        let (ok, _) = attempt(name, entries);
        assert!(!ok, "{name} must refuse the layer");
    }
    // A hardlink to a symlink links the symlink itself, inside the layer.
    let (ok, s) = attempt(
        "link to symlink",
        &[
            symlink("l", "/etc/passwd"),
            hardlink("h", "l"),
            file("h2", b""),
        ],
    );
    assert!(ok);
    assert!(fs::symlink_metadata(s.layer().join("h"))
        .unwrap()
        .file_type()
        .is_symlink());
    // Writing a file over a hardlink breaks the link instead of writing through it.
    let (ok, s) = attempt(
        "rewrite",
        &[file("a", b"orig"), hardlink("b", "a"), file("b", b"new")],
    );
    assert!(ok);
    assert_eq!(fs::read(s.layer().join("a")).unwrap(), b"orig");
    assert_eq!(fs::read(s.layer().join("b")).unwrap(), b"new");
}

#[test]
fn devices_are_never_created() {
    let (ok, s) = attempt(
        "devices",
        &[
            device("sda", EntryType::Block, 8, 0),
            device("kmem", EntryType::Char, 1, 2),
            device("../outside/null", EntryType::Char, 1, 3),
        ],
    );
    assert!(!ok, "the ../ entry refuses the layer");
    assert_eq!(fs::read_dir(s.layer()).unwrap().count(), 0);
    let (ok, s) = attempt(
        "devices",
        &[
            device("sda", EntryType::Block, 8, 0),
            device("kmem", EntryType::Char, 1, 2),
        ],
    );
    assert!(ok, "devices are skipped, not fatal");
    assert_eq!(fs::read_dir(s.layer()).unwrap().count(), 0);
}

#[test]
fn whiteout_names_cannot_escape() {
    for (name, entries) in [
        ("whiteout of ..", vec![file(".wh...", b"")]),
        ("whiteout of .", vec![file(".wh..", b"")]),
        ("empty whiteout", vec![file("sub/.wh.", b"")]),
        (
            "whiteout above the root",
            vec![file("../outside/.wh.secret", b"")],
        ),
        (
            "whiteout path with ..",
            vec![file("a/../../outside/.wh.secret", b"")],
        ),
    ] {
        let (ok, _) = attempt(name, &entries);
        assert!(!ok, "{name} must refuse the layer");
    }
    // Through a symlink to a directory the layer lacks: refused (the
    // outside is checked unchanged by `attempt`).
    let (ok, _) = attempt(
        "wh via link",
        &[symlink("o", "../outside"), file("o/.wh.secret", b"")],
    );
    assert!(!ok);
    // Through a symlink to the root, the whiteout lands inside.
    let (ok, s) = attempt(
        "wh via root link",
        &[symlink("o", "/"), file("o/outside/.wh.secret", b"")],
    );
    assert!(ok);
    assert!(fs::symlink_metadata(s.layer().join("outside/secret"))
        .unwrap()
        .file_type()
        .is_char_device());
    // An opaque marker through a symlink sets the xattr inside only.
    let (ok, _) = attempt(
        "opq via link",
        &[symlink("o", "/"), file("o/etc/.wh..wh..opq", b"")],
    );
    assert!(ok);
    assert!(xattr(Path::new("/etc"), "trusted.overlay.opaque").is_none());
}

#[test]
fn hostile_layer_through_the_store_leaves_nothing() {
    let (_dir, store) = store();
    let evil = tar(&[file("ok", b"fine"), file("../../../pwned", b"evil")]);
    let image = import(&store, &evil, "evil");
    let err = store.rootfs(&image).unwrap_err().to_string();
    assert!(err.contains("leaves the layer"), "{err}");
    assert_eq!(
        fs::read_dir(store.root().layers().join("sha256"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(fs::read_dir(store.root().tmp()).unwrap().count(), 0);
    assert!(fs::symlink_metadata(store.root().dir().join("pwned")).is_err());
}
