//! The writable layer's changes as an OCI layer tar, written to the
//! changes disk after the workload (a build's `RUN` step) has ended.
//!
//! overlayfs keeps a deleted file as a 0:0 character device and a
//! directory that hides the lower layers with the xattr
//! `trusted.overlay.opaque=y`; the layer says the same with an empty
//! `.wh.NAME` file and a `.wh..wh..opq` file inside the directory
//! (image-spec `layer.md`, "Whiteouts"). What the init itself made (mount
//! points, the generated /etc files) is left out, as the container backend
//! does. The upper directory is reached through a descriptor opened before
//! the switch into the new root (`/proc/self/fd/N`), streamed one entry at
//! a time: memory stays bounded whatever the layer holds.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::{File, Metadata};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use sbx_vm_protocol::GuestSpec;

use crate::tar::{Entry, Kind, TarWriter};

const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Counts what passes, so the host learns the tar's length.
struct Counted<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Write the changes of the writable layer at `upper` (a path that works
/// from the new root; None: no changes) to `disk`; the tar's length in
/// bytes.
pub fn write(spec: &GuestSpec, upper: Option<&Path>, disk: &str) -> Result<u64, String> {
    let dev = std::fs::OpenOptions::new()
        .write(true)
        .open(disk)
        .map_err(|e| format!("open the changes disk {disk}: {e}"))?;
    let out = Counted {
        inner: BufWriter::with_capacity(1 << 20, &dev),
        bytes: 0,
    };
    let mut tar = TarWriter::new(out);
    let skip = Skip::new(spec);
    let mut links = HashMap::new();
    if let Some(upper) = upper {
        walk(&mut tar, upper, "", &skip, &mut links)
            .map_err(|e| format!("writing the changes to {disk}: {e}"))?;
    }
    let mut out = tar
        .finish()
        .map_err(|e| format!("writing the changes to {disk}: {e}"))?;
    out.flush()
        .map_err(|e| format!("writing the changes to {disk}: {e}"))?;
    let bytes = out.bytes;
    drop(out);
    dev.sync_all()
        .map_err(|e| format!("flushing the changes disk {disk}: {e}"))?;
    Ok(bytes)
}

/// What the init made in the writable layer, not the workload.
struct Skip {
    mount_targets: Vec<String>,
}

impl Skip {
    fn new(spec: &GuestSpec) -> Self {
        Skip {
            mount_targets: spec
                .mounts
                .iter()
                .map(|m| m.target.trim_matches('/').to_string())
                .collect(),
        }
    }

    fn skips(&self, path: &str, st: &Metadata) -> bool {
        match path {
            "proc" | "sys" | "dev" => st.is_dir(),
            "etc/hosts" | "etc/hostname" | "etc/resolv.conf" => st.is_file(),
            _ => st.is_dir() && self.mount_targets.iter().any(|t| t == path),
        }
    }
}

fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}/{name}")
    }
}

fn entry(path: String, kind: Kind, st: &Metadata) -> Entry {
    Entry {
        path,
        kind,
        mode: st.mode() & 0o7777,
        uid: st.uid(),
        gid: st.gid(),
        mtime: st.mtime().max(0) as u64,
        size: 0,
    }
}

fn whiteout(path: &str) -> Entry {
    let (parent, name) = match path.rsplit_once('/') {
        Some((p, n)) => (p, n),
        None => ("", path),
    };
    Entry {
        path: join(parent, &format!(".wh.{name}")),
        kind: Kind::File,
        mode: 0o644,
        uid: 0,
        gid: 0,
        mtime: 0,
        size: 0,
    }
}

fn walk<W: Write>(
    tar: &mut TarWriter<W>,
    dir: &Path,
    rel: &str,
    skip: &Skip,
    links: &mut HashMap<(u64, u64), String>,
) -> io::Result<()> {
    let mut names: Vec<_> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    names.sort();
    for name in names {
        let Some(name) = name.to_str() else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("/{rel}: a file name that is not UTF-8"),
            ));
        };
        let host = dir.join(name);
        let path = join(rel, name);
        let st = std::fs::symlink_metadata(&host)?;
        if skip.skips(&path, &st) {
            continue;
        }
        let ft = st.file_type();
        if ft.is_char_device() && st.rdev() == 0 {
            tar.append(&whiteout(&path), io::empty())?;
        } else if ft.is_dir() {
            tar.append(&entry(format!("{path}/"), Kind::Dir, &st), io::empty())?;
            if lgetxattr(&host, OPAQUE_XATTR).is_some_and(|v| v == b"y") {
                let mut opq = whiteout(&format!("{path}/.wh."));
                opq.path = format!("{path}/.wh..wh..opq");
                tar.append(&opq, io::empty())?;
            }
            walk(tar, &host, &path, skip, links)?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&host)?;
            let target = target.to_str().ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("/{path}: a link target that is not UTF-8"),
                )
            })?;
            tar.append(&entry(path, Kind::Symlink(target.into()), &st), io::empty())?;
        } else if ft.is_fifo() {
            tar.append(&entry(path, Kind::Fifo, &st), io::empty())?;
        } else if ft.is_char_device() || ft.is_block_device() {
            let (major, minor) = (libc::major(st.rdev()), libc::minor(st.rdev()));
            let kind = if ft.is_char_device() {
                Kind::Char(major, minor)
            } else {
                Kind::Block(major, minor)
            };
            tar.append(&entry(path, kind, &st), io::empty())?;
        } else if ft.is_file() {
            if st.nlink() > 1 {
                let key = (st.dev(), st.ino());
                if let Some(first) = links.get(&key) {
                    let kind = Kind::Hardlink(first.clone());
                    tar.append(&entry(path, kind, &st), io::empty())?;
                    continue;
                }
                links.insert(key, path.clone());
            }
            let mut e = entry(path, Kind::File, &st);
            e.size = st.len();
            let file = File::open(&host)?;
            tar.append(&e, file.take(st.len()))?;
        }
        // Sockets have no place in a layer.
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whiteout_names() {
        assert_eq!(whiteout("a/b/c").path, "a/b/.wh.c");
        assert_eq!(whiteout("c").path, ".wh.c");
    }
}
