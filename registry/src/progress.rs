//! How pull and push report per-blob progress; the CLI draws it
//! (bars on a terminal, plain lines otherwise).

use sbx_shared::digest::Digest;

/// Called from the transfer threads, so it must be `Sync`.
pub trait Progress: Sync {
    /// A blob transfer starts: `size` bytes in all.
    fn begin(&self, digest: &Digest, size: u64, action: &str);
    /// `bytes` more were moved.
    fn advance(&self, digest: &Digest, bytes: u64);
    /// The blob is done: "Pull complete", "Already exists", "Pushed"…
    fn done(&self, digest: &Digest, status: &str);
}

/// Reports nothing.
pub struct Silent;

impl Progress for Silent {
    fn begin(&self, _: &Digest, _: u64, _: &str) {}
    fn advance(&self, _: &Digest, _: u64) {}
    fn done(&self, _: &Digest, _: &str) {}
}
