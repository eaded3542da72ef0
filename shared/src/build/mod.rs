//! `sbx build`: a Dockerfile and a context become an image in the store.
//!
//! [`dockerfile`] parses, [`builder`] runs the stages step by step (RUN
//! through the [`crate::backend::Backend`] trait, so every isolation level
//! can build), [`copy`] and [`layer`] write layers, [`cache`] remembers what
//! each step produced, [`view`] reads a stage's filesystem from its layers
//! and [`context`] holds `.dockerignore` and wildcard matching.

pub mod builder;
pub mod cache;
pub mod context;
pub mod copy;
pub mod dockerfile;
pub mod layer;
mod run;
pub mod view;
pub mod words;

pub use builder::{build, Options};

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The Dockerfile does not parse.
    #[error("{file}:{line}: {message}")]
    Dockerfile {
        file: String,
        line: usize,
        message: String,
    },
    /// A step failed (a RUN that exited non-zero, a missing COPY source…).
    #[error("{file}:{line}: {message}")]
    Step {
        file: String,
        line: usize,
        message: String,
    },
    #[error("read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Other(String),
}
