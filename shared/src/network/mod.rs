//! Sandbox networking: none, host, and bridge networks (the default
//! `bridge`, on `sbx0`, plus user-defined ones), each with its own address
//! management, and published ports.
//!
//! - **Store** ([`store`]): `<root>/networks/<name>/network.json`, and one
//!   endpoint file per attached sandbox under `endpoints/`. The endpoint
//!   files *are* the address allocation: an address is taken when a sandbox
//!   is created on a network and released when it is removed.
//! - **Links** ([`link`]): a Linux bridge per network, created in the
//!   caller's network namespace on first use and deleted with its last
//!   endpoint (or the network). A container gets a veth pair whose inner end
//!   is created straight in a network namespace made before the clone
//!   ([`netns`]); a VM gets a tap on the bridge that its engine opens as a
//!   virtio-net device. No NAT, no default route, no forwarding between
//!   bridges: sandboxes reach their own subnet and nothing else.
//! - **Names** ([`hosts`]): on user-defined networks, sandboxes find each
//!   other through `/etc/hosts`. A container's hosts file is a bind mount of
//!   `<dir>/hosts`, rewritten in place whenever a peer joins or leaves; a VM
//!   gets its file from the guest init at boot. A file was chosen over a DNS
//!   responder because there is no daemon to run one, and because the
//!   busybox image's static glibc reads /etc/hosts without NSS modules.
//! - **Ports** ([`ports`], [`proxy`]): the CLI binds every published host
//!   port before anything starts (so a taken port is the first error), and
//!   a proxy process forked from the process that holds the sandbox (the
//!   monitor of `run -d`, or the foreground `sbx`) accepts on them and
//!   forwards to the sandbox's address: the same code for a veth and a tap.
//!   [`backend::Networked`] wraps either backend to do that.

pub mod backend;
pub mod hosts;
pub mod ipam;
pub mod link;
pub mod netns;
pub mod ports;
pub mod proxy;
pub mod store;

use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use ipam::Subnet;
pub use ports::{PortMapping, Protocol};
pub use store::{Endpoint, Network, Networks};

/// The built-in bridge network's name and its bridge device.
pub const DEFAULT_NETWORK: &str = "bridge";
pub const DEFAULT_BRIDGE: &str = "sbx0";

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("no such network: {0}")]
    NotFound(String),
    #[error("network {0} already exists")]
    Exists(String),
    #[error("invalid network name {0:?}: use letters, digits, '_', '.', '-' (starting with a letter or digit)")]
    BadName(String),
    #[error("{0}")]
    Invalid(String),
    #[error("network {name} is in use by {users}")]
    InUse { name: String, users: String },
    #[error("network {0} has no free address left")]
    Exhausted(String),
    #[error("address {address} is already in use on network {network}")]
    AddressInUse { address: Ipv4Addr, network: String },
    #[error("{what}: {detail}")]
    Command { what: String, detail: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

impl NetworkError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        NetworkError::Io {
            context: context.into(),
            source,
        }
    }
}

/// One network a sandbox is attached to, as its spec carries it: enough to
/// plumb its interface without reading the store again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub network: String,
    /// The network's id (64 hex digits): part of the host-side link names.
    pub network_id: String,
    /// The bridge device on the host.
    pub bridge: String,
    pub subnet: Subnet,
    pub gateway: Ipv4Addr,
    pub address: Ipv4Addr,
    /// `02:58:` + the address: locally administered, unique per network.
    pub mac: String,
    #[serde(default)]
    pub aliases: Vec<String>,
}

impl Attachment {
    /// `address/prefix`, as `ip addr add` takes it.
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.address, self.subnet.prefix)
    }

    /// The MAC address as bytes.
    pub fn mac_bytes(&self) -> [u8; 6] {
        mac_for(self.address)
    }
}

/// The MAC address sbx gives the interface holding `address`.
pub fn mac_for(address: Ipv4Addr) -> [u8; 6] {
    let o = address.octets();
    [0x02, 0x58, o[0], o[1], o[2], o[3]]
}

pub fn mac_string(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Host-side link names: `v`/`t` + 8 digits of the sandbox id + 6 of the
/// network id (15 bytes: IFNAMSIZ - 1), so each (sandbox, network) pair has
/// its own name and a stale one can be found again.
pub fn veth_name(sandbox_id: &str, network_id: &str) -> String {
    format!("v{}{}", prefix(sandbox_id, 8), prefix(network_id, 6))
}

pub fn tap_name(sandbox_id: &str, network_id: &str) -> String {
    format!("t{}{}", prefix(sandbox_id, 8), prefix(network_id, 6))
}

fn prefix(s: &str, n: usize) -> &str {
    s.get(..n).unwrap_or(s)
}
