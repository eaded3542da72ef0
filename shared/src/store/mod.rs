//! The image store: an OCI image layout under the sbx root.
//!
//! STUB: the signatures here are the contract with the CLI and backends;
//! bodies are filled in by the store work.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::paths::Root;

pub use oci_spec::image::{Config as RuntimeConfig, ImageConfiguration};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no such image: {0}")]
    NotFound(String),
    #[error("{0}")]
    Other(String),
}

/// An image resolved from a name: everything `run` needs.
#[derive(Debug, Clone)]
pub struct Image {
    /// The familiar name it was resolved from (`busybox:latest`).
    pub name: String,
    pub manifest_digest: Digest,
    /// Docker's image id.
    pub config_digest: Digest,
    pub config: ImageConfiguration,
    /// Layer blob digests, bottom first.
    pub layers: Vec<Digest>,
    /// Uncompressed layer digests (the config's rootfs.diff_ids), bottom first.
    pub diff_ids: Vec<Digest>,
}

/// One row of `sbx images`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImageSummary {
    pub repository: String,
    pub tag: String,
    /// The config digest.
    pub id: Digest,
    pub created: Option<String>,
    /// Sum of the layer blobs and config, in bytes.
    pub size: u64,
}

pub struct Store {
    root: Root,
}

impl Store {
    /// Open the store, creating an empty OCI layout if there is none.
    pub fn open(root: &Root) -> Result<Store, StoreError> {
        Ok(Store { root: root.clone() })
    }

    pub fn root(&self) -> &Root {
        &self.root
    }

    /// `sbx import`: a rootfs tarball (plain, gzip or zstd) becomes a
    /// one-layer image named `name` with the given runtime config.
    pub fn import(&self, reader: &mut dyn Read, name: &str, config: RuntimeConfig) -> Result<Image, StoreError> {
        let _ = (reader, name, config);
        Err(StoreError::Other("not implemented".into()))
    }

    /// `sbx load -i`: a docker-archive or OCI archive; returns the names loaded
    /// (or the manifest digests of unnamed images).
    pub fn load(&self, archive: &Path) -> Result<Vec<String>, StoreError> {
        let _ = archive;
        Err(StoreError::Other("not implemented".into()))
    }

    /// `sbx save -o`: an OCI archive that also carries Docker's manifest.json.
    pub fn save(&self, names: &[String], out: &Path) -> Result<(), StoreError> {
        let _ = (names, out);
        Err(StoreError::Other("not implemented".into()))
    }

    pub fn images(&self) -> Result<Vec<ImageSummary>, StoreError> {
        Ok(Vec::new())
    }

    pub fn tag(&self, src: &str, dst: &str) -> Result<(), StoreError> {
        let _ = (src, dst);
        Err(StoreError::Other("not implemented".into()))
    }

    /// Remove a name; blobs and unpacked layers no other name uses go too.
    /// Returns the config digest the name pointed at.
    pub fn untag(&self, name: &str) -> Result<Digest, StoreError> {
        Err(StoreError::NotFound(name.to_string()))
    }

    /// Look a name (or an image id prefix) up; manifest and config digests
    /// are verified as they are read.
    pub fn resolve(&self, name: &str) -> Result<Image, StoreError> {
        Err(StoreError::NotFound(name.to_string()))
    }

    /// The unpacked layer directories of an image, bottom first, unpacking
    /// (and verifying) any that are not unpacked yet.
    pub fn rootfs(&self, image: &Image) -> Result<Vec<PathBuf>, StoreError> {
        let _ = image;
        Err(StoreError::Other("not implemented".into()))
    }
}
