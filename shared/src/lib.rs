//! sbx-shared: everything both isolation backends share.
//!
//! The image store (an OCI image layout on disk), the [`spec::SandboxSpec`] that
//! describes what to run, the [`backend::Backend`] trait each isolation level
//! implements, and the per-sandbox state directory. Nothing here knows which
//! backend will run a spec.

pub mod backend;
pub mod build;
pub mod digest;
pub mod ids;
pub mod logs;
pub mod monitor;
pub mod network;
pub mod paths;
pub mod reference;
pub mod spec;
pub mod state;
pub mod store;
pub mod volumes;
