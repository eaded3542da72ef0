//! The registry client's one error enum: each variant names the failed
//! operation and the registry, repository, URL or digest it failed on.

use std::io;
use std::path::PathBuf;

use sbx_shared::digest::Digest;
use sbx_shared::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The transport failed (connect, TLS, read): no HTTP answer came.
    #[error("{method} {url}: {source}")]
    Http {
        method: String,
        url: String,
        #[source]
        source: Box<ureq::Error>,
    },
    /// Credentials were refused (or none were given where some are needed).
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    #[error("access denied: {0}")]
    Denied(String),
    #[error("{what} not found in {registry}")]
    NotFound { what: String, registry: String },
    /// Any other answer the protocol does not expect.
    #[error("{method} {url}: {status} {message}")]
    Status {
        method: String,
        url: String,
        status: u16,
        message: String,
    },
    #[error("token endpoint {realm}: {reason}")]
    Token { realm: String, reason: String },
    #[error("registry {registry}: {reason}")]
    Protocol { registry: String, reason: String },
    /// Downloaded content did not hash to the digest it was asked for.
    #[error("{what} {expected} from {registry} does not match its digest (got {actual}); nothing was stored")]
    DigestMismatch {
        what: &'static str,
        registry: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("manifest {reference}: {reason}")]
    BadManifest { reference: String, reason: String },
    #[error("{registry} is not a loopback address: plain http is only used for it with --insecure-registry {registry}")]
    Insecure { registry: String },
    #[error("{op} {}: {source}", path.display())]
    AuthFile {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("parse {}: {reason}", path.display())]
    BadAuthFile { path: PathBuf, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{op}: {source}")]
    Io {
        op: String,
        #[source]
        source: io::Error,
    },
}
