//! Image names, normalised as Docker normalises them.
//!
//! STUB: the store helper replaces this with the full parser
//! (`busybox` = docker.io/library/busybox:latest; `127.0.0.1:5000/team/app:1`).

#[derive(Debug, thiserror::Error)]
#[error("invalid image name {0:?}")]
pub struct InvalidReference(pub String);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Registry host (`docker.io`, `127.0.0.1:5000`).
    pub registry: String,
    /// Repository path (`library/busybox`, `team/app`).
    pub repository: String,
    pub tag: String,
}

impl Reference {
    pub fn parse(s: &str) -> Result<Reference, InvalidReference> {
        let _ = s;
        Err(InvalidReference(s.to_string()))
    }

    /// The short form Docker shows and the store keys refs by
    /// (`busybox:latest`, `127.0.0.1:5000/team/app:1`).
    pub fn familiar(&self) -> String {
        String::new()
    }
}
