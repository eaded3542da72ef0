//! Images fetched from elsewhere (a registry): the manifest as it came and
//! its blobs staged under `tmp/`, committed only once everything checks out.
//!
//! Before anything lands under `blobs/` or in `index.json`: every blob the
//! manifest names is staged (its digest computed as it was written, and its
//! size as the manifest says) or already stored, and the config parses and
//! lists as many diff-ids as there are layers. A refused image leaves the
//! store as it was; staged files go when dropped.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};

use oci_spec::image::{Descriptor, ImageConfiguration, ImageManifest, MediaType};

use super::blobs::{Staged, METADATA_LIMIT};
use super::error::{io_err, StoreError};
use super::index::{self, digest_of, lock_shared, oci_digest};
use super::{Image, Store};
use crate::digest::Digest;
use crate::reference::Reference;

/// An image fetched but not stored yet.
pub struct Fetched {
    /// The image manifest's bytes, exactly as fetched.
    pub manifest: Vec<u8>,
    /// Its media type (OCI or Docker schema2 manifest).
    pub media_type: String,
    /// The config and the layers not already in the store.
    pub blobs: Vec<Staged>,
}

pub fn commit(store: &Store, name: &Reference, fetched: Fetched) -> Result<Image, StoreError> {
    let Fetched {
        manifest: bytes,
        media_type,
        blobs,
    } = fetched;
    let familiar = name.familiar();
    let bad = |reason: String| StoreError::BadImage {
        name: familiar.clone(),
        reason,
    };
    if bytes.len() as u64 > METADATA_LIMIT {
        return Err(bad("the manifest is too large".into()));
    }
    let manifest_digest = Digest::of(&bytes);
    if let Some(pinned) = &name.digest {
        if *pinned != manifest_digest {
            return Err(StoreError::DigestMismatch {
                expected: pinned.clone(),
                actual: manifest_digest,
            });
        }
    }
    let manifest: ImageManifest =
        serde_json::from_slice(&bytes).map_err(|source| StoreError::Json {
            what: format!("manifest {manifest_digest}"),
            source,
        })?;
    let _writing = lock_shared(&store.layout.gc_lock())?;
    let mut staged: HashMap<Digest, Staged> =
        blobs.into_iter().map(|s| (s.digest.clone(), s)).collect();
    let wanted: Vec<&Descriptor> = std::iter::once(manifest.config())
        .chain(manifest.layers())
        .collect();
    for desc in &wanted {
        let digest = digest_of(desc)?;
        match staged.get(&digest) {
            Some(s) if s.size != desc.size() => {
                return Err(bad(format!(
                    "blob {digest} is {} bytes, the manifest says {}",
                    s.size,
                    desc.size()
                )))
            }
            Some(_) => {}
            None if store.blobs.exists(&digest) => {}
            None => return Err(StoreError::MissingBlob(digest)),
        }
    }
    let config_digest = digest_of(manifest.config())?;
    let config = read_config(store, &staged, &config_digest)?;
    if config.rootfs().diff_ids().len() != manifest.layers().len() {
        return Err(bad(format!(
            "the manifest has {} layers but the config lists {} diff-ids",
            manifest.layers().len(),
            config.rootfs().diff_ids().len()
        )));
    }
    // Everything checks out: blobs first, the manifest, then the name.
    for desc in &wanted {
        if let Some(s) = staged.remove(&digest_of(desc)?) {
            store.blobs.commit(s)?;
        }
    }
    store
        .blobs
        .put_reader(&mut &bytes[..], Some(&manifest_digest))?;
    let mut desc = Descriptor::new(
        MediaType::from(media_type.as_str()),
        bytes.len() as u64,
        oci_digest(&manifest_digest)?,
    );
    desc.set_annotations(Some(
        [(index::REF_NAME.to_string(), familiar.clone())].into(),
    ));
    store.layout.update(|manifests| {
        index::set_ref(manifests, &familiar, desc);
        Ok(())
    })?;
    store.resolve(&familiar)
}

/// The config, from its staged file or the store, checked and parsed.
fn read_config(
    store: &Store,
    staged: &HashMap<Digest, Staged>,
    digest: &Digest,
) -> Result<ImageConfiguration, StoreError> {
    let bytes = match staged.get(digest) {
        Some(s) => {
            let path = s.file.path();
            let file = File::open(path).map_err(io_err("open staged config", path))?;
            let mut bytes = Vec::new();
            BufReader::new(file)
                .take(METADATA_LIMIT + 1)
                .read_to_end(&mut bytes)
                .map_err(io_err("read staged config", path))?;
            if bytes.len() as u64 > METADATA_LIMIT || Digest::of(&bytes) != *digest {
                return Err(StoreError::Corrupt {
                    digest: digest.clone(),
                });
            }
            bytes
        }
        None => store.blobs.read_verified(digest, "an image config")?,
    };
    serde_json::from_slice(&bytes).map_err(|source| StoreError::Json {
        what: format!("image config {digest}"),
        source,
    })
}
