//! `sbx port ID [PORT]`: a sandbox's published ports, as Docker lists them
//! (`80/tcp -> 127.0.0.1:8080`); with PORT, only that port's host side.

use anyhow::{bail, Result};
use sbx_shared::monitor::lifecycle;
use sbx_shared::network::PortMapping;
use sbx_shared::paths::Root;
use sbx_shared::state::State;

use super::lifecycle::find;

pub fn port(root: &Root, id: &str, which: Option<&str>) -> Result<u8> {
    let state = State::new(root);
    let f = find(root, &state, id)?;
    let ports = published(&state, &f.record.id);
    let Some(which) = which else {
        for m in &ports {
            println!("{} -> {}", m.sandbox_side(), m.host_side());
        }
        return Ok(0);
    };
    let (num, proto) = which.split_once('/').unwrap_or((which, "tcp"));
    let shown: Vec<&PortMapping> = ports
        .iter()
        .filter(|m| m.port.to_string() == num && m.protocol.to_string() == proto)
        .collect();
    if shown.is_empty() {
        bail!("no public port {num}/{proto} published for {id}");
    }
    for m in shown {
        println!("{}", m.host_side());
    }
    Ok(0)
}

/// The sandbox's published ports, from its saved spec (none without one).
pub fn published(state: &State, id: &str) -> Vec<PortMapping> {
    lifecycle::load_spec(&state.dir(id))
        .map(|s| s.ports)
        .unwrap_or_default()
}

/// Docker's PORTS column.
pub fn column(state: &State, id: &str) -> String {
    published(state, id)
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
