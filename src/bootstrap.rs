//! Built-in images made from this machine's packages.
//! STUB until written.

use anyhow::{bail, Result};
use sbx_shared::paths::Root;

pub fn bootstrap(_root: &Root, name: &str) -> Result<u8> {
    bail!("no built-in image named {name:?}")
}
