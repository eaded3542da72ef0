//! sbx-registry: the registry client (OCI distribution spec) behind
//! `sbx pull`, `push`, `login` and `logout`.
//!
//! Why a focused client on `ureq` rather than `oci-client` (0.18, checked):
//! `oci-client` covers much (token auth, chunked streams, index
//! resolvers, digest checks on pull), but it is async (tokio + reqwest +
//! hyper under a blocking CLI), does not check Basic credentials until
//! a later request fails (so `login` needs its own probe anyway), asks
//! tokens for one repository scope only, and hands blobs to the caller
//! rather than into our staged, verified store. The store is synchronous
//! and already verifies and stages blobs; a blocking client with a few
//! threads per image does the same job with a small dependency tree and
//! every step in view:
//!
//! - [`client`]: requests with the auth handshake (Basic, or Bearer via the
//!   token endpoint: [`token`], [`challenge`]), plain http only for
//!   loopback registries and `--insecure-registry` ([`endpoint`]), rustls
//!   otherwise;
//! - [`pull`]: index → linux/amd64 manifest → config and layers (concurrent),
//!   digests checked before the store commits anything;
//! - [`push`]: HEAD each blob, chunked upload of the missing, manifest as is;
//! - [`auth_file`]: docker-compatible `auth.json`, mode 0600;
//! - [`login`]: check credentials against the registry, then store them.

pub mod auth_file;
pub mod challenge;
pub mod client;
pub mod endpoint;
mod error;
pub mod login;
pub mod manifest;
pub mod progress;
pub mod pull;
pub mod push;
pub mod token;
mod workers;

pub use auth_file::{AuthFile, Credentials};
pub use error::RegistryError;
pub use progress::{Progress, Silent};
pub use pull::{pull, Options, Pulled};
pub use push::{push, Pushed};
