//! Where sbx keeps things under its root directory.

use std::path::{Path, PathBuf};

/// The default root when neither `--root` nor `SBX_ROOT` is given.
pub const DEFAULT_ROOT: &str = "/var/lib/sbx";

/// Layout of the sbx root directory. The OCI image layout (`oci-layout`,
/// `index.json`, `blobs/`) sits at the top so that skopeo and umoci read the
/// root as it is; everything sbx adds lives in sibling directories.
#[derive(Debug, Clone)]
pub struct Root {
    dir: PathBuf,
}

impl Root {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Root { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Unpacked layers, one directory per diff-id: `layers/sha256/<hex>`.
    pub fn layers(&self) -> PathBuf {
        self.dir.join("layers")
    }

    /// One directory per sandbox: record, logs, upper dir.
    pub fn sandboxes(&self) -> PathBuf {
        self.dir.join("sandboxes")
    }

    pub fn sandbox(&self, id: &str) -> PathBuf {
        self.sandboxes().join(id)
    }

    /// `names/<name>` holds the id of the sandbox that owns a name.
    pub fn names(&self) -> PathBuf {
        self.dir.join("names")
    }

    /// Things computed once and reused across runs (compiled seccomp filters).
    pub fn cache(&self) -> PathBuf {
        self.dir.join("cache")
    }

    /// Scratch space on the same filesystem as the store, so renames are atomic.
    pub fn tmp(&self) -> PathBuf {
        self.dir.join("tmp")
    }
}
