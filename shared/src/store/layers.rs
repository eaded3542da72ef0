//! Unpacked layers: one directory per diff-id under `layers/sha256/<hex>`,
//! shared by every image and sandbox that uses the layer.
//!
//! A layer is unpacked into a temp directory under the root's `tmp/`, its
//! blob digest and diff-id are checked while it streams, and only a
//! complete, verified directory is renamed into place (`RENAME_NOREPLACE`:
//! when two processes unpack the same layer at once, the loser discards
//! its copy). So an existing directory is always a whole layer, and
//! [`layer_dir`] + a stat is all the hot path needs.

use std::cell::RefCell;
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use nix::errno::Errno;
use nix::fcntl::{renameat2, RenameFlags};
use sha2::{Digest as _, Sha256};

use super::blobs::Blobs;
use super::compress::decoder;
use super::error::{io_err, StoreError};
use super::unpack::{unpack, UnpackStats};
use crate::digest::Digest;
use crate::paths::Root;

/// Where the layer with this diff-id is (or will be) unpacked.
pub fn layer_dir(root: &Root, diff_id: &Digest) -> PathBuf {
    root.layers().join("sha256").join(diff_id.hex())
}

/// A reader that feeds a hasher it shares with its owner.
struct Tee<R> {
    inner: R,
    hash: Rc<RefCell<Sha256>>,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.borrow_mut().update(&buf[..n]);
        Ok(n)
    }
}

/// Unpack the layer blob `blob` (diff-id `diff_id`) unless it already is.
pub fn ensure_unpacked(
    root: &Root,
    blobs: &Blobs,
    blob: &Digest,
    diff_id: &Digest,
) -> Result<PathBuf, StoreError> {
    let dest = layer_dir(root, diff_id);
    if dest.is_dir() {
        return Ok(dest);
    }
    let parent = root.layers().join("sha256");
    fs::create_dir_all(&parent).map_err(io_err("create", &parent))?;
    let tmp_root = root.tmp();
    fs::create_dir_all(&tmp_root).map_err(io_err("create", &tmp_root))?;
    let tmp = tempfile::Builder::new()
        .prefix("layer-")
        .tempdir_in(&tmp_root)
        .map_err(io_err("create a temp directory in", &tmp_root))?;
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755))
        .map_err(io_err("chmod", tmp.path()))?;

    let layer = |reason: String| StoreError::BadLayer {
        layer: blob.to_string(),
        reason,
    };
    match unpack_verified(blobs, blob, tmp.path()) {
        Ok((_, actual_diff)) if actual_diff == *diff_id => {}
        Ok((_, actual_diff)) => {
            return Err(layer(format!(
                "uncompressed content is {actual_diff}, but the image config says {diff_id}"
            )))
        }
        Err(Failure::Corrupt) => {
            return Err(StoreError::Corrupt {
                digest: blob.clone(),
            })
        }
        Err(Failure::Store(e)) => return Err(e),
        Err(Failure::Layer(reason)) => {
            // A damaged blob often shows as a bad tar first: say which.
            if !blobs.verify(blob)? {
                return Err(StoreError::Corrupt {
                    digest: blob.clone(),
                });
            }
            return Err(layer(reason));
        }
    }
    let dir = File::open(tmp.path()).map_err(io_err("open", tmp.path()))?;
    nix::unistd::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir)).map_err(|e| StoreError::Io {
        op: "syncfs",
        path: tmp.path().to_path_buf(),
        source: e.into(),
    })?;
    match renameat2(None, tmp.path(), None, &dest, RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => {
            // Now the layer's: the temp dir must not be removed.
            let _ = tmp.keep();
            Ok(dest)
        }
        // Someone else unpacked it first: theirs is as good as ours.
        Err(Errno::EEXIST) | Err(Errno::ENOTEMPTY) => Ok(dest),
        Err(e) => Err(StoreError::Io {
            op: "rename layer into place",
            path: dest,
            source: e.into(),
        }),
    }
}

enum Failure {
    Corrupt,
    Layer(String),
    Store(StoreError),
}

/// Unpack `blob` into `dir`; returns (stats, diff-id) once the blob's own
/// digest is confirmed.
fn unpack_verified(
    blobs: &Blobs,
    blob: &Digest,
    dir: &Path,
) -> Result<(UnpackStats, Digest), Failure> {
    let file = blobs.open(blob).map_err(Failure::Store)?;
    let mut rest = file
        .try_clone()
        .map_err(|e| Failure::Store(io_err("dup", blobs.path(blob))(e)))?;
    let blob_hash = Rc::new(RefCell::new(Sha256::new()));
    let diff_hash = Rc::new(RefCell::new(Sha256::new()));
    let stats = {
        let raw = Tee {
            inner: file,
            hash: blob_hash.clone(),
        };
        let (_, decoded) =
            decoder(BufReader::new(raw)).map_err(|e| Failure::Layer(e.to_string()))?;
        let mut plain = Tee {
            inner: decoded,
            hash: diff_hash.clone(),
        };
        let stats = unpack(&mut plain, dir).map_err(|e| Failure::Layer(e.to_string()))?;
        // The diff-id covers the whole stream, padding after the
        // end-of-archive marker included.
        io::copy(&mut plain, &mut io::sink())
            .map_err(|e| Failure::Layer(format!("decompress: {e}")))?;
        stats
    };
    // What the decoder did not read (trailing bytes) is still the blob's.
    let mut tail = Tee {
        inner: &mut rest,
        hash: blob_hash.clone(),
    };
    io::copy(&mut tail, &mut io::sink())
        .map_err(|e| Failure::Store(io_err("read blob", blobs.path(blob))(e)))?;
    let blob_actual = Digest::from_sha256(&blob_hash.borrow().clone().finalize());
    if blob_actual != *blob {
        return Err(Failure::Corrupt);
    }
    let diff_actual = Digest::from_sha256(&diff_hash.borrow().clone().finalize());
    Ok((stats, diff_actual))
}
