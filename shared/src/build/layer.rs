//! Layer tars: entries written one by one (COPY, ADD, WORKDIR), or a whole
//! overlayfs upper directory turned back into an OCI layer (a RUN step's
//! changes).
//!
//! overlayfs records a deleted file as a 0:0 character device and a
//! directory that hides everything below it with the xattr
//! `trusted.overlay.opaque=y`; an OCI layer says the same with an empty
//! `.wh.NAME` file and a `.wh..wh..opq` file inside the directory
//! (image-spec `layer.md`, "Whiteouts").

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Owner, permission bits and mtime of one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// Permission bits with setuid/setgid/sticky (no file type).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Seconds since the epoch.
    pub mtime: u64,
}

impl Meta {
    pub fn of(m: &Metadata) -> Meta {
        Meta {
            mode: m.mode() & 0o7777,
            uid: u64::from(m.uid()),
            gid: u64::from(m.gid()),
            mtime: m.mtime().max(0) as u64,
        }
    }

    /// A root-owned directory, as COPY creates missing parents.
    pub fn dir_default() -> Meta {
        Meta {
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: 0,
        }
    }
}

/// Writes layer entries to a tar stream. Hardlinked files (same device and
/// inode) become tar hardlinks to the first path written.
pub struct LayerWriter<W: Write> {
    tar: tar::Builder<W>,
    links: HashMap<(u64, u64), String>,
    entries: u64,
}

fn header(kind: tar::EntryType, meta: &Meta, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(meta.mode);
    h.set_uid(meta.uid);
    h.set_gid(meta.gid);
    h.set_mtime(meta.mtime);
    h.set_size(size);
    h
}

impl<W: Write> LayerWriter<W> {
    pub fn new(out: W) -> Self {
        let mut tar = tar::Builder::new(out);
        tar.follow_symlinks(false);
        LayerWriter {
            tar,
            links: HashMap::new(),
            entries: 0,
        }
    }

    /// How many entries were written.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    pub fn dir(&mut self, path: &str, meta: &Meta) -> io::Result<()> {
        let mut h = header(tar::EntryType::Directory, meta, 0);
        self.entries += 1;
        self.tar.append_data(
            &mut h,
            format!("{}/", path.trim_end_matches('/')),
            io::empty(),
        )
    }

    pub fn file(&mut self, path: &str, meta: &Meta, size: u64, data: impl Read) -> io::Result<()> {
        let mut h = header(tar::EntryType::Regular, meta, size);
        self.entries += 1;
        self.tar.append_data(&mut h, path, data.take(size))
    }

    pub fn symlink(&mut self, path: &str, target: &Path, meta: &Meta) -> io::Result<()> {
        let mut h = header(tar::EntryType::Symlink, meta, 0);
        self.entries += 1;
        self.tar.append_link(&mut h, path, target)
    }

    pub fn hardlink(&mut self, path: &str, target: &str, meta: &Meta) -> io::Result<()> {
        let mut h = header(tar::EntryType::Link, meta, 0);
        self.entries += 1;
        self.tar.append_link(&mut h, path, target)
    }

    pub fn fifo(&mut self, path: &str, meta: &Meta) -> io::Result<()> {
        let mut h = header(tar::EntryType::Fifo, meta, 0);
        self.entries += 1;
        self.tar.append_data(&mut h, path, io::empty())
    }

    /// `path` was deleted.
    pub fn whiteout(&mut self, path: &str) -> io::Result<()> {
        let (parent, name) = split(path);
        let meta = Meta {
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
        };
        self.file(&join(parent, &format!(".wh.{name}")), &meta, 0, io::empty())
    }

    /// Nothing of the lower layers shows through directory `path`.
    pub fn opaque(&mut self, path: &str) -> io::Result<()> {
        let meta = Meta {
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
        };
        self.file(&join(path, ".wh..wh..opq"), &meta, 0, io::empty())
    }

    /// The host file `host` (not followed if a symlink) as `path`, with
    /// `meta` for its owner and mode. Devices and sockets are skipped.
    pub fn host_entry(
        &mut self,
        path: &str,
        host: &Path,
        st: &Metadata,
        meta: &Meta,
    ) -> io::Result<()> {
        let ft = st.file_type();
        if ft.is_dir() {
            return self.dir(path, meta);
        }
        if ft.is_symlink() {
            return self.symlink(path, &fs::read_link(host)?, meta);
        }
        if ft.is_fifo() {
            return self.fifo(path, meta);
        }
        if !ft.is_file() {
            return Ok(());
        }
        if st.nlink() > 1 {
            let key = (st.dev(), st.ino());
            if let Some(first) = self.links.get(&key) {
                let first = first.clone();
                return self.hardlink(path, &first, meta);
            }
            self.links.insert(key, path.to_string());
        }
        let file = File::open(host)?;
        self.file(path, meta, st.len(), file)
    }

    pub fn finish(mut self) -> io::Result<W> {
        self.tar.finish()?;
        self.tar.into_inner()
    }
}

fn split(path: &str) -> (&str, &str) {
    match path.trim_end_matches('/').rsplit_once('/') {
        Some((p, n)) => (p, n),
        None => ("", path),
    }
}

fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}/{name}")
    }
}

/// The value of an xattr on `path` itself (not followed), if set.
fn lgetxattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = CString::new(path.as_os_str().as_bytes()).ok()?;
    let n = CString::new(name).ok()?;
    let mut buf = [0u8; 64];
    // SAFETY: both strings are NUL-terminated and outlive the call; the
    // kernel writes at most `buf.len()` bytes into `buf`.
    let len =
        unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (len >= 0).then(|| buf[..len as usize].to_vec())
}

/// Whether an upper-dir entry is an overlayfs whiteout (a 0:0 char device).
pub fn is_whiteout(st: &Metadata) -> bool {
    st.file_type().is_char_device() && st.rdev() == 0
}

/// Whether an upper- or layer-dir directory is opaque.
pub fn is_opaque(dir: &Path) -> bool {
    lgetxattr(dir, OPAQUE_XATTR).is_some_and(|v| v == b"y")
}

/// Write the overlayfs upper directory `upper` as an OCI layer tar. `skip`
/// is asked about each entry (path relative to the root, no leading '/')
/// and may leave out what the backend itself created (mount points).
/// Returns the number of entries written.
pub fn write_upper(
    upper: &Path,
    out: &mut dyn Write,
    skip: &dyn Fn(&str, &Metadata) -> bool,
) -> io::Result<u64> {
    let mut w = LayerWriter::new(out);
    walk(&mut w, upper, "", skip)?;
    let n = w.entries();
    w.finish()?;
    Ok(n)
}

fn walk<W: Write>(
    w: &mut LayerWriter<W>,
    dir: &Path,
    rel: &str,
    skip: &dyn Fn(&str, &Metadata) -> bool,
) -> io::Result<()> {
    let mut names: Vec<_> = fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    names.sort();
    for name in names {
        let Some(name) = name.to_str() else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: a file name that is not UTF-8", dir.display()),
            ));
        };
        let host = dir.join(name);
        let path = join(rel, name);
        let st = fs::symlink_metadata(&host)?;
        if skip(&path, &st) {
            continue;
        }
        if is_whiteout(&st) {
            w.whiteout(&path)?;
            continue;
        }
        w.host_entry(&path, &host, &st, &Meta::of(&st))?;
        if st.is_dir() {
            if is_opaque(&host) {
                w.opaque(&path)?;
            }
            walk(w, &host, &path, skip)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(tar_bytes: &[u8]) -> Vec<String> {
        let mut a = tar::Archive::new(tar_bytes);
        a.entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect()
    }

    #[test]
    fn upper_dir_becomes_a_layer() {
        let dir = tempfile::tempdir().unwrap();
        let up = dir.path();
        fs::create_dir_all(up.join("etc/app")).unwrap();
        fs::write(up.join("etc/app/conf"), b"x=1").unwrap();
        fs::hard_link(up.join("etc/app/conf"), up.join("etc/app/conf2")).unwrap();
        std::os::unix::fs::symlink("conf", up.join("etc/app/link")).unwrap();
        fs::create_dir(up.join("proc")).unwrap();
        let mut out = Vec::new();
        let n = write_upper(up, &mut out, &|p, _| p == "proc").unwrap();
        assert_eq!(n, 5);
        assert_eq!(
            names(&out),
            [
                "etc/",
                "etc/app/",
                "etc/app/conf",
                "etc/app/conf2",
                "etc/app/link"
            ]
        );
        let mut a = tar::Archive::new(&out[..]);
        let kinds: Vec<_> = a
            .entries()
            .unwrap()
            .map(|e| e.unwrap().header().entry_type())
            .collect();
        assert_eq!(kinds[3], tar::EntryType::Link);
        assert_eq!(kinds[4], tar::EntryType::Symlink);
    }

    #[test]
    fn whiteouts_and_opaque_dirs() {
        let mut w = LayerWriter::new(Vec::new());
        w.whiteout("etc/gone").unwrap();
        w.whiteout("top").unwrap();
        w.opaque("var/cache").unwrap();
        let out = w.finish().unwrap();
        assert_eq!(
            names(&out),
            ["etc/.wh.gone", ".wh.top", "var/cache/.wh..wh..opq"]
        );
    }
}
