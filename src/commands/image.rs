//! Image verbs: import, load, save, images, tag, rmi.
//! STUB until the store lands.

use std::path::Path;

use anyhow::{bail, Result};
use sbx_shared::paths::Root;

pub fn import(_root: &Root, _file: &str, _name: &str, _changes: &[String]) -> Result<u8> {
    bail!("not implemented")
}

pub fn load(_root: &Root, _input: &Path) -> Result<u8> {
    bail!("not implemented")
}

pub fn save(_root: &Root, _output: &Path, _names: &[String]) -> Result<u8> {
    bail!("not implemented")
}

pub fn images(_root: &Root, _format: &str) -> Result<u8> {
    bail!("not implemented")
}

pub fn tag(_root: &Root, _src: &str, _dst: &str) -> Result<u8> {
    bail!("not implemented")
}

pub fn rmi(_root: &Root, _force: bool, _names: &[String]) -> Result<u8> {
    bail!("not implemented")
}
