//! The build cache: `<root>/build-cache/<sha256 of the key material>.json`,
//! one small record per step. A step's key covers its parent's key, the
//! instruction (variables substituted), the build args in scope and, for
//! COPY/ADD, a hash of the sources' contents, so a change anywhere rebuilds
//! from that step on.

use std::fs;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::digest::Digest;
use crate::paths::Root;
use crate::store::blobs::write_atomic;

/// What a step produced.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Record {
    /// The layer blob (uncompressed, so also its diff-id) and its size;
    /// None for a step that changed only the config (or nothing).
    pub layer: Option<(Digest, u64)>,
    /// When the step first ran: reused so that a cached rebuild yields the
    /// very same config, manifest and image id.
    pub created: String,
}

pub struct Cache {
    dir: PathBuf,
    tmp: PathBuf,
}

/// The key of a step: sha256 over its parent's key and its material.
pub fn key(parent: &str, material: &[&str]) -> String {
    let mut h = Sha256::new();
    h.update(parent.as_bytes());
    for m in material {
        h.update([0u8]);
        h.update(m.as_bytes());
    }
    hex::encode(h.finalize())
}

impl Cache {
    pub fn new(root: &Root) -> Cache {
        Cache {
            dir: root.dir().join("build-cache"),
            tmp: root.tmp(),
        }
    }

    pub fn get(&self, key: &str) -> Option<Record> {
        let bytes = fs::read(self.dir.join(format!("{key}.json"))).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    pub fn put(&self, key: &str, record: &Record) -> Result<(), crate::store::StoreError> {
        fs::create_dir_all(&self.dir).map_err(|source| crate::store::StoreError::Io {
            op: "create",
            path: self.dir.clone(),
            source,
        })?;
        let bytes = serde_json::to_vec(record).unwrap_or_default();
        write_atomic(&self.tmp, &self.dir.join(format!("{key}.json")), &bytes)
    }
}
