//! `index.json` and the locks around it.
//!
//! Refs are the index's manifest descriptors annotated with
//! `org.opencontainers.image.ref.name` = the familiar name (`busybox:latest`),
//! which is how skopeo's `oci:<dir>:<ref>` finds them. Every change is a
//! read-modify-write under an exclusive flock, written atomically.
//!
//! A second lock keeps garbage collection away from blobs that are being
//! written but not referenced yet: writers (import, load, unpack) hold it
//! shared, collection holds it exclusive.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageIndex, ImageIndexBuilder, MediaType};

use super::blobs::{write_atomic, METADATA_LIMIT};
use super::error::{io_err, StoreError};
use crate::digest::Digest;

/// OCI image-spec annotations.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// containerd's (and Docker 25's) full image name annotation.
pub const CONTAINERD_NAME: &str = "io.containerd.image.name";

/// A held flock; released when dropped (the file is closed).
pub struct LockGuard(#[allow(dead_code)] File);

fn open_lock(path: &Path) -> Result<File, StoreError> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    }
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io_err("open lock", path))
}

pub fn lock_exclusive(path: &Path) -> Result<LockGuard, StoreError> {
    let file = open_lock(path)?;
    file.lock().map_err(io_err("lock", path))?;
    Ok(LockGuard(file))
}

pub fn lock_shared(path: &Path) -> Result<LockGuard, StoreError> {
    let file = open_lock(path)?;
    file.lock_shared().map_err(io_err("lock", path))?;
    Ok(LockGuard(file))
}

/// An exclusive lock if nobody holds the lock now.
pub fn try_lock_exclusive(path: &Path) -> Result<Option<LockGuard>, StoreError> {
    let file = open_lock(path)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(LockGuard(file))),
        Err(fs::TryLockError::WouldBlock) => Ok(None),
        Err(fs::TryLockError::Error(e)) => Err(io_err("lock", path)(e)),
    }
}

/// The OCI layout files at the top of the root.
#[derive(Debug, Clone)]
pub struct Layout {
    dir: PathBuf,
    tmp: PathBuf,
}

impl Layout {
    pub fn new(dir: &Path, tmp: &Path) -> Self {
        Layout {
            dir: dir.to_path_buf(),
            tmp: tmp.to_path_buf(),
        }
    }

    pub fn index_path(&self) -> PathBuf {
        self.dir.join("index.json")
    }

    pub fn locks(&self) -> PathBuf {
        self.dir.join("locks")
    }

    pub fn gc_lock(&self) -> PathBuf {
        self.locks().join("gc.lock")
    }

    /// Create `oci-layout` and an empty `index.json` where missing.
    pub fn init(&self) -> Result<(), StoreError> {
        let layout = self.dir.join("oci-layout");
        if layout.is_file() && self.index_path().is_file() {
            return Ok(());
        }
        fs::create_dir_all(self.dir.join("blobs").join("sha256"))
            .map_err(io_err("create", &self.dir))?;
        if !layout.is_file() {
            write_atomic(&self.tmp, &layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        self.update(|_| Ok(()))
    }

    /// The index as it is now (an absent file is an empty index).
    pub fn read(&self) -> Result<ImageIndex, StoreError> {
        let path = self.index_path();
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(empty_index()),
            Err(e) => return Err(io_err("read", path)(e)),
        };
        if bytes.len() as u64 > METADATA_LIMIT {
            return Err(StoreError::Other(format!(
                "{} is too large",
                path.display()
            )));
        }
        serde_json::from_slice(&bytes).map_err(|source| StoreError::Json {
            what: path.display().to_string(),
            source,
        })
    }

    /// Read, change and write the index under its lock.
    pub fn update<T>(
        &self,
        f: impl FnOnce(&mut Vec<Descriptor>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let _lock = lock_exclusive(&self.locks().join("index.lock"))?;
        let mut index = self.read()?;
        let mut manifests = index.manifests().clone();
        let out = f(&mut manifests)?;
        index.set_manifests(manifests);
        let bytes = serde_json::to_vec(&index).map_err(|source| StoreError::Json {
            what: "index.json".into(),
            source,
        })?;
        write_atomic(&self.tmp, &self.index_path(), &bytes)?;
        Ok(out)
    }
}

pub fn empty_index() -> ImageIndex {
    ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(Vec::new())
        .build()
        .unwrap_or_default()
}

/// The ref name a descriptor carries, if any.
pub fn ref_name(d: &Descriptor) -> Option<&str> {
    d.annotations().as_ref()?.get(REF_NAME).map(String::as_str)
}

/// A descriptor's digest as ours (only sha256 is stored).
pub fn digest_of(d: &Descriptor) -> Result<Digest, StoreError> {
    d.digest()
        .to_string()
        .parse()
        .map_err(|e: crate::digest::InvalidDigest| StoreError::Other(e.to_string()))
}

/// A manifest descriptor named `name` (none for an unnamed entry).
pub fn manifest_descriptor(
    digest: &Digest,
    size: u64,
    name: Option<&str>,
) -> Result<Descriptor, StoreError> {
    let mut d = Descriptor::new(MediaType::ImageManifest, size, oci_digest(digest)?);
    if let Some(name) = name {
        d.set_annotations(Some(HashMap::from([(
            REF_NAME.to_string(),
            name.to_string(),
        )])));
    }
    Ok(d)
}

pub fn oci_digest(digest: &Digest) -> Result<oci_spec::image::Digest, StoreError> {
    digest
        .to_string()
        .parse()
        .map_err(|e: oci_spec::OciSpecError| StoreError::Other(e.to_string()))
}

/// Point `name` at a manifest. A manifest the name pointed at before stays
/// in the index unnamed (a dangling `<none>` image, as Docker keeps it)
/// unless another entry still refers to it.
pub fn set_ref(manifests: &mut Vec<Descriptor>, name: &str, target: Descriptor) {
    let mut displaced = None;
    manifests.retain(|d| {
        if ref_name(d) == Some(name) {
            displaced = Some(d.clone());
            false
        } else {
            true
        }
    });
    // An unnamed entry for the manifest now named is superseded.
    manifests.retain(|d| !(ref_name(d).is_none() && d.digest() == target.digest()));
    if let Some(mut old) = displaced {
        let still_used =
            old.digest() == target.digest() || manifests.iter().any(|d| d.digest() == old.digest());
        if !still_used {
            old.set_annotations(None);
            manifests.push(old);
        }
    }
    manifests.push(target);
}
