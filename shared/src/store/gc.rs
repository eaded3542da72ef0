//! Garbage collection: blobs and unpacked layers that no ref reaches.
//!
//! Runs with the gc lock held exclusively (see [`super::index`]), so no
//! import, load or unpack is half-way through writing. When any image in
//! the index cannot be read, nothing is collected: what it uses is unknown.

use std::collections::HashSet;
use std::fs;
use std::io;

use oci_spec::image::{Descriptor, ImageIndex, MediaType};

use super::error::{io_err, StoreError};
use super::index::digest_of;
use super::Store;
use crate::digest::Digest;

/// Remove whatever the index no longer reaches.
pub fn collect(store: &Store) -> Result<(), StoreError> {
    let index = store.layout.read()?;
    let mut blobs = HashSet::new();
    let mut layers = HashSet::new();
    for desc in index.manifests() {
        if mark(store, desc, &mut blobs, &mut layers, true).is_err() {
            return Ok(());
        }
    }
    for blob in store.blobs.list()? {
        if !blobs.contains(&blob) {
            store.blobs.remove(&blob)?;
        }
    }
    let dir = store.root.layers().join("sha256");
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("list", &dir)(e)),
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if layers.contains(&name) {
            continue;
        }
        // Out of sight first (one rename), then removed at leisure.
        let tmp = store.root.tmp();
        fs::create_dir_all(&tmp).map_err(io_err("create", &tmp))?;
        let doomed = tmp.join(format!("gc-{name}-{}", std::process::id()));
        fs::rename(entry.path(), &doomed).map_err(io_err("move out unused layer", entry.path()))?;
        fs::remove_dir_all(&doomed).map_err(io_err("remove unused layer", &doomed))?;
    }
    Ok(())
}

/// Mark what `desc` reaches: manifests, configs, layers, nested indexes.
fn mark(
    store: &Store,
    desc: &Descriptor,
    blobs: &mut HashSet<Digest>,
    layers: &mut HashSet<String>,
    required: bool,
) -> Result<(), StoreError> {
    let digest = digest_of(desc)?;
    if !required && !store.blobs.exists(&digest) {
        // Other platforms of a nested index need not be here.
        return Ok(());
    }
    blobs.insert(digest.clone());
    if *desc.media_type() == MediaType::ImageIndex {
        let bytes = store.blobs.read_verified(&digest, "an image index")?;
        let nested: ImageIndex =
            serde_json::from_slice(&bytes).map_err(|source| StoreError::Json {
                what: format!("image index {digest}"),
                source,
            })?;
        for child in nested.manifests() {
            mark(store, child, blobs, layers, false)?;
        }
        return Ok(());
    }
    let manifest = store.manifest(&digest)?;
    let config = digest_of(manifest.config())?;
    blobs.insert(config.clone());
    for layer in manifest.layers() {
        blobs.insert(digest_of(layer)?);
    }
    for diff_id in store.config(&config)?.rootfs().diff_ids() {
        if let Ok(d) = diff_id.parse::<Digest>() {
            layers.insert(d.hex().to_string());
        }
    }
    Ok(())
}
