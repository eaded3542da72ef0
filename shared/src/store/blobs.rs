//! Content-addressed blobs under `blobs/sha256/<hex>`.
//!
//! Every write hashes what it stores and is atomic: the content goes to a
//! temp file under the root's `tmp/`, is fsynced, checked against its digest
//! and only then renamed to its name, so a crash or a wrong digest never
//! leaves anything under `blobs/`. Reads of metadata blobs (manifests,
//! configs, indexes) are checked against their digest too.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::error::{io_err, StoreError};
use crate::digest::Digest;

/// Manifests, indexes and configs larger than this are refused (Docker's
/// registry caps manifests at 4 MiB; configs with long histories are larger).
pub const METADATA_LIMIT: u64 = 32 << 20;

/// A reader that hashes and counts what passes through it.
pub struct HashReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashReader<R> {
    pub fn new(inner: R) -> Self {
        HashReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Read the rest of the stream, then return its digest and length.
    pub fn finish(mut self) -> io::Result<(Digest, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((Digest::from_sha256(&self.hasher.finalize()), self.count))
    }
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// Write `bytes` to `dest` atomically: temp file in `tmp`, fsync, rename,
/// fsync of the directory.
pub fn write_atomic(tmp: &Path, dest: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    fs::create_dir_all(tmp).map_err(io_err("create", tmp))?;
    let mut file =
        tempfile::NamedTempFile::new_in(tmp).map_err(io_err("create a temp file in", tmp))?;
    file.write_all(bytes)
        .map_err(io_err("write", file.path()))?;
    file.as_file()
        .sync_all()
        .map_err(io_err("fsync", file.path()))?;
    file.persist(dest).map_err(|e| StoreError::Io {
        op: "rename into place",
        path: dest.to_path_buf(),
        source: e.error,
    })?;
    sync_dir(dest)
}

/// fsync the directory holding `path`, so a rename into it is durable.
pub fn sync_dir(path: &Path) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

/// Content written and hashed but not yet under `blobs/`.
pub struct Staged {
    pub file: tempfile::NamedTempFile,
    pub digest: Digest,
    pub size: u64,
}

#[derive(Debug, Clone)]
pub struct Blobs {
    dir: PathBuf,
    tmp: PathBuf,
}

impl Blobs {
    pub fn new(layout: &Path, tmp: &Path) -> Self {
        Blobs {
            dir: layout.join("blobs").join("sha256"),
            tmp: tmp.to_path_buf(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(digest.hex())
    }

    pub fn exists(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    /// Store a stream. With `expected`, the content must hash to it or
    /// nothing is stored. Returns the digest and the size.
    pub fn put_reader(
        &self,
        reader: &mut dyn Read,
        expected: Option<&Digest>,
    ) -> Result<(Digest, u64), StoreError> {
        let staged = self.stage(reader)?;
        if let Some(expected) = expected {
            if *expected != staged.digest {
                return Err(StoreError::DigestMismatch {
                    expected: expected.clone(),
                    actual: staged.digest,
                });
            }
        }
        self.commit(staged)
    }

    /// Write a stream to a temp file under `tmp/`, hashing it; nothing is
    /// under `blobs/` until [`Blobs::commit`]. Dropping it removes it.
    pub fn stage(&self, reader: &mut dyn Read) -> Result<Staged, StoreError> {
        fs::create_dir_all(&self.tmp).map_err(io_err("create", &self.tmp))?;
        let mut file = tempfile::NamedTempFile::new_in(&self.tmp)
            .map_err(io_err("create a temp file in", &self.tmp))?;
        let mut hashed = HashReader::new(reader);
        io::copy(&mut hashed, file.as_file_mut()).map_err(io_err("write blob to", file.path()))?;
        let (digest, size) = hashed
            .finish()
            .map_err(io_err("read blob for", file.path()))?;
        Ok(Staged { file, digest, size })
    }

    /// fsync a staged blob and rename it to its digest.
    pub fn commit(&self, staged: Staged) -> Result<(Digest, u64), StoreError> {
        fs::create_dir_all(&self.dir).map_err(io_err("create", &self.dir))?;
        let Staged { file, digest, size } = staged;
        file.as_file()
            .sync_all()
            .map_err(io_err("fsync", file.path()))?;
        let dest = self.path(&digest);
        file.persist(&dest).map_err(|e| StoreError::Io {
            op: "rename blob into place",
            path: dest.clone(),
            source: e.error,
        })?;
        sync_dir(&dest)?;
        Ok((digest, size))
    }

    /// Store bytes held in memory.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<(Digest, u64), StoreError> {
        self.put_reader(&mut &bytes[..], None)
    }

    pub fn open(&self, digest: &Digest) -> Result<File, StoreError> {
        let path = self.path(digest);
        File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::MissingBlob(digest.clone()),
            _ => StoreError::Io {
                op: "open blob",
                path,
                source: e,
            },
        })
    }

    pub fn size(&self, digest: &Digest) -> Result<u64, StoreError> {
        let file = self.open(digest)?;
        let meta = file.metadata().map_err(io_err("stat", self.path(digest)))?;
        Ok(meta.len())
    }

    /// Read a metadata blob whole, checking its digest.
    pub fn read_verified(
        &self,
        digest: &Digest,
        what: &'static str,
    ) -> Result<Vec<u8>, StoreError> {
        let file = self.open(digest)?;
        let path = self.path(digest);
        let len = file.metadata().map_err(io_err("stat", &path))?.len();
        if len > METADATA_LIMIT {
            return Err(StoreError::TooLarge {
                what,
                digest: digest.clone(),
                limit: METADATA_LIMIT,
            });
        }
        let mut bytes = Vec::with_capacity(len as usize);
        file.take(METADATA_LIMIT + 1)
            .read_to_end(&mut bytes)
            .map_err(io_err("read blob", &path))?;
        if Digest::of(&bytes) != *digest {
            return Err(StoreError::Corrupt {
                digest: digest.clone(),
            });
        }
        Ok(bytes)
    }

    /// Hash a stored blob from its start and say whether it matches its name.
    pub fn verify(&self, digest: &Digest) -> Result<bool, StoreError> {
        let (actual, _) = HashReader::new(self.open(digest)?)
            .finish()
            .map_err(io_err("read blob", self.path(digest)))?;
        Ok(actual == *digest)
    }

    pub fn remove(&self, digest: &Digest) -> Result<(), StoreError> {
        let path = self.path(digest);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("remove blob", path)(e)),
            _ => Ok(()),
        }
    }

    /// Every stored blob (files whose names are not digests are ignored).
    pub fn list(&self) -> Result<Vec<Digest>, StoreError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("list", &self.dir)(e)),
        };
        Ok(entries
            .flatten()
            .filter_map(|e| {
                format!("sha256:{}", e.file_name().to_string_lossy())
                    .parse()
                    .ok()
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_digest_is_refused_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::new(dir.path(), &dir.path().join("tmp"));
        let wrong = Digest::of(b"other");
        let err = blobs
            .put_reader(&mut &b"content"[..], Some(&wrong))
            .unwrap_err();
        assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
        assert!(blobs.list().unwrap().is_empty());
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        let (d, n) = blobs
            .put_reader(&mut &b"content"[..], Some(&Digest::of(b"content")))
            .unwrap();
        assert_eq!((d.clone(), n), (Digest::of(b"content"), 7));
        assert_eq!(blobs.read_verified(&d, "test").unwrap(), b"content");
    }

    #[test]
    fn corrupt_blob_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::new(dir.path(), &dir.path().join("tmp"));
        let (d, _) = blobs.put_bytes(b"{\"a\":1}").unwrap();
        fs::write(blobs.path(&d), b"{\"a\":2}").unwrap();
        let err = blobs.read_verified(&d, "test").unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("blob {d} is corrupt (digest mismatch)")
        );
        assert!(!blobs.verify(&d).unwrap());
    }
}
