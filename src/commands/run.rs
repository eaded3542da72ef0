//! `sbx run`. STUB.

use anyhow::{bail, Result};
use sbx_shared::paths::Root;

use crate::cli::RunArgs;

pub fn run(_root: &Root, _args: RunArgs) -> Result<u8> {
    bail!("not implemented")
}
