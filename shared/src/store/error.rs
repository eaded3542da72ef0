//! The store's one error enum: each variant names the failed operation and
//! the file, digest or name it failed on.

use std::io;
use std::path::PathBuf;

use crate::digest::Digest;
use crate::reference::InvalidReference;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no such image: {0}")]
    NotFound(String),
    #[error("image id prefix {0:?} matches more than one image")]
    Ambiguous(String),
    #[error(transparent)]
    InvalidName(#[from] InvalidReference),
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A stored blob whose content no longer matches its name.
    #[error("blob {digest} is corrupt (digest mismatch)")]
    Corrupt { digest: Digest },
    /// Content offered for a digest did not hash to it; nothing was stored.
    #[error("content for {expected} does not match its digest (got {actual})")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("blob {0} is missing from the store")]
    MissingBlob(Digest),
    #[error("blob {digest} is larger than the {limit} bytes allowed for {what}")]
    TooLarge {
        what: &'static str,
        digest: Digest,
        limit: u64,
    },
    #[error("parse {what}: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("image {name}: {reason}")]
    BadImage { name: String, reason: String },
    #[error("layer {layer}: {reason}")]
    BadLayer { layer: String, reason: String },
    #[error("archive {}: {reason}", path.display())]
    BadArchive { path: PathBuf, reason: String },
    #[error("rootfs tarball: {0}")]
    BadTarball(String),
    #[error("invalid --change {0:?}: {1}")]
    BadChange(String, String),
    #[error("{0}")]
    Other(String),
}

/// `map_err` helper: an io error on `path` during `op`.
pub(crate) fn io_err(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.into();
    move |source| StoreError::Io { op, path, source }
}
