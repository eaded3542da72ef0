//! Fixtures shared by the store tests: root check, tar builders that can
//! write any name (hostile ones included), archives, and directory
//! snapshots.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use sbx_shared::digest::Digest;
use sbx_shared::paths::Root;
use sbx_shared::store::{RuntimeConfig, Store};
use tar::{EntryType, Header};

/// These tests chown, mknod whiteouts and set trusted.* xattrs.
pub fn require_root() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "this test needs root (it chowns files, creates overlay whiteouts and sets trusted.* xattrs): run it as root"
    );
}

pub fn store() -> (tempfile::TempDir, Store) {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&Root::new(dir.path().join("root"))).unwrap();
    (dir, store)
}

/// One tar entry, written with raw header bytes so that any name goes.
pub struct E<'a> {
    pub kind: EntryType,
    pub name: &'a str,
    pub link: &'a str,
    pub data: &'a [u8],
    pub mode: u32,
    pub dev: (u32, u32),
}

pub fn file<'a>(name: &'a str, data: &'a [u8]) -> E<'a> {
    E {
        kind: EntryType::Regular,
        name,
        link: "",
        data,
        mode: 0o644,
        dev: (0, 0),
    }
}
pub fn dir(name: &str) -> E<'_> {
    E {
        kind: EntryType::Directory,
        name,
        link: "",
        data: b"",
        mode: 0o755,
        dev: (0, 0),
    }
}
pub fn symlink<'a>(name: &'a str, target: &'a str) -> E<'a> {
    E {
        kind: EntryType::Symlink,
        name,
        link: target,
        data: b"",
        mode: 0o777,
        dev: (0, 0),
    }
}
pub fn hardlink<'a>(name: &'a str, target: &'a str) -> E<'a> {
    E {
        kind: EntryType::Link,
        name,
        link: target,
        data: b"",
        mode: 0o644,
        dev: (0, 0),
    }
}
pub fn device(name: &str, kind: EntryType, major: u32, minor: u32) -> E<'_> {
    E {
        kind,
        name,
        link: "",
        data: b"",
        mode: 0o666,
        dev: (major, minor),
    }
}

pub fn tar(entries: &[E<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = Header::new_gnu();
        {
            let gnu = h.as_gnu_mut().unwrap();
            assert!(
                e.name.len() < 100 && e.link.len() < 100,
                "keep test names short"
            );
            gnu.name[..e.name.len()].copy_from_slice(e.name.as_bytes());
            gnu.linkname[..e.link.len()].copy_from_slice(e.link.as_bytes());
        }
        h.set_entry_type(e.kind);
        h.set_size(e.data.len() as u64);
        h.set_mode(e.mode);
        h.set_mtime(1_600_000_000);
        h.set_uid(0);
        h.set_gid(0);
        if matches!(e.kind, EntryType::Char | EntryType::Block) {
            h.set_device_major(e.dev.0).unwrap();
            h.set_device_minor(e.dev.1).unwrap();
        }
        h.set_cksum();
        b.append(&h, e.data).unwrap();
    }
    b.into_inner().unwrap()
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

/// Import `rootfs` (a tar, possibly compressed) as `name`.
pub fn import(store: &Store, rootfs: &[u8], name: &str) -> sbx_shared::store::Image {
    store
        .import(&mut &rootfs[..], name, RuntimeConfig::default())
        .unwrap()
}

/// Build a tar archive of named files (for docker/OCI archives).
pub fn archive(files: &[(&str, &[u8])], symlinks: &[(&str, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = Header::new_ustar();
        h.set_entry_type(EntryType::Regular);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, *data).unwrap();
    }
    for (name, target) in symlinks {
        let mut h = Header::new_ustar();
        h.set_entry_type(EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, name, target).unwrap();
    }
    b.into_inner().unwrap()
}

pub fn config_json(diff_ids: &[Digest]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "created": "2024-01-02T03:04:05Z",
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>()},
    }))
    .unwrap()
}

/// Everything about a tree that an escape could change: for each path its
/// type, mode, owner, size, mtime and content (or link target).
pub fn snapshot(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(base).unwrap().display().to_string();
            let content = if meta.file_type().is_symlink() {
                fs::read_link(&path).unwrap().display().to_string()
            } else if meta.is_file() {
                Digest::of(&fs::read(&path).unwrap()).to_string()
            } else {
                String::new()
            };
            out.insert(
                rel,
                format!(
                    "{:o} {}:{} {} {} {} {}",
                    meta.permissions().mode(),
                    meta.uid(),
                    meta.gid(),
                    meta.len(),
                    meta.mtime(),
                    meta.nlink(),
                    content
                ),
            );
            if meta.is_dir() {
                walk(base, &path, out);
            }
        }
    }
    let meta = fs::symlink_metadata(dir).unwrap();
    out.insert(
        ".".into(),
        format!("{:o} {}", meta.permissions().mode(), meta.mtime()),
    );
    walk(dir, dir, &mut out);
    out
}

/// Read an xattr of a path (not following a final symlink).
pub fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = [0u8; 64];
    // SAFETY: both strings are NUL-terminated and `buf` is writable for the
    // length passed.
    let rc = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (rc >= 0).then(|| buf[..rc as usize].to_vec())
}
