//! The network store: `<root>/networks/<name>/network.json` and
//! `<root>/networks/<name>/endpoints/<sandbox id>.json`, changed under one
//! lock (`<root>/networks/.lock`) so concurrent `run`s never hand out one
//! address twice. An endpoint whose sandbox directory is gone (a crash
//! between create and remove) no longer holds its address.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::ipam::{is_private, Subnet};
use super::{mac_for, mac_string, Attachment, NetworkError, DEFAULT_BRIDGE, DEFAULT_NETWORK};
use crate::paths::Root;
use crate::spec::Isolation;

/// The default bridge's subnet, and where user-defined networks get theirs
/// when `--subnet` is not given (`10.89.N.0/24`).
const DEFAULT_SUBNET: &str = "10.88.0.0/16";
const AUTO_BASE: [u8; 2] = [10, 89];

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Network {
    pub name: String,
    pub id: String,
    pub driver: String,
    pub subnet: Subnet,
    pub gateway: Ipv4Addr,
    pub bridge: String,
    pub created: DateTime<Utc>,
    /// User-defined networks resolve their sandboxes' names; the default
    /// bridge does not (as in Docker).
    pub resolve_names: bool,
}

impl Network {
    pub fn builtin(&self) -> bool {
        self.name == DEFAULT_NETWORK
    }
}

/// A sandbox on a network: its address and the names peers know it by.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Endpoint {
    pub sandbox: String,
    pub name: Option<String>,
    pub hostname: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    pub address: Ipv4Addr,
    pub isolation: Isolation,
}

/// Names that can never be user-defined networks.
pub const RESERVED: [&str; 3] = [DEFAULT_NETWORK, "host", "none"];

pub struct Networks {
    dir: PathBuf,
    sandboxes: PathBuf,
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, NetworkError> {
    let data =
        fs::read(path).map_err(|e| NetworkError::io(format!("reading {}", path.display()), e))?;
    serde_json::from_slice(&data).map_err(|source| NetworkError::Corrupt {
        path: path.to_path_buf(),
        source,
    })
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), NetworkError> {
    let tmp = path.with_extension("tmp");
    let data = serde_json::to_vec_pretty(value).map_err(io::Error::other);
    data.and_then(|d| fs::write(&tmp, d))
        .and_then(|()| fs::rename(&tmp, path))
        .map_err(|e| NetworkError::io(format!("writing {}", path.display()), e))
}

/// Holds the store's lock until dropped.
pub struct Locked(#[allow(dead_code)] nix::fcntl::Flock<fs::File>);

impl Networks {
    pub fn new(root: &Root) -> Networks {
        Networks {
            dir: root.dir().join("networks"),
            sandboxes: root.sandboxes(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn net_dir(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Take the store's lock (blocking).
    pub fn lock(&self) -> Result<Locked, NetworkError> {
        fs::create_dir_all(&self.dir)
            .map_err(|e| NetworkError::io(format!("creating {}", self.dir.display()), e))?;
        let path = self.dir.join(".lock");
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| NetworkError::io(format!("opening {}", path.display()), e))?;
        nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
            .map(Locked)
            .map_err(|(_, e)| NetworkError::io(format!("locking {}", path.display()), e.into()))
    }

    /// Create a user-defined network (under the lock).
    pub fn create(
        &self,
        name: &str,
        subnet: Option<Subnet>,
        gateway: Option<Ipv4Addr>,
    ) -> Result<Network, NetworkError> {
        if !crate::state::valid_name(name) || name.len() > 64 {
            return Err(NetworkError::BadName(name.to_string()));
        }
        let _lock = self.lock()?;
        if RESERVED.contains(&name) || self.net_dir(name).join("network.json").exists() {
            return Err(NetworkError::Exists(name.to_string()));
        }
        let existing = self.list_unlocked()?;
        let subnet = match subnet {
            Some(s) => {
                if !is_private(&s) {
                    return Err(NetworkError::Invalid(format!(
                        "invalid --subnet {s}: use a private range (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16)"
                    )));
                }
                if let Some(n) = existing.iter().find(|n| n.subnet.overlaps(&s)) {
                    return Err(NetworkError::Invalid(format!(
                        "subnet {s} overlaps network {} ({})",
                        n.name, n.subnet
                    )));
                }
                s
            }
            None => (0..=255u8)
                .filter_map(|n| {
                    Subnet::new(Ipv4Addr::new(AUTO_BASE[0], AUTO_BASE[1], n, 0), 24).ok()
                })
                .find(|s| !existing.iter().any(|n| n.subnet.overlaps(s)))
                .ok_or_else(|| {
                    NetworkError::Invalid(
                        "no free subnet left in 10.89.0.0/16: give --subnet".into(),
                    )
                })?,
        };
        let gateway = gateway.unwrap_or_else(|| subnet.first_host());
        if !subnet.is_host(gateway) {
            return Err(NetworkError::Invalid(format!(
                "invalid --gateway {gateway}: not a host address of {subnet}"
            )));
        }
        let id = crate::ids::new_id();
        let net = Network {
            name: name.to_string(),
            bridge: format!("sbx-{}", &id[..8]),
            id,
            driver: "bridge".into(),
            subnet,
            gateway,
            created: Utc::now(),
            resolve_names: true,
        };
        self.save(&net)?;
        Ok(net)
    }

    fn save(&self, net: &Network) -> Result<(), NetworkError> {
        let dir = self.net_dir(&net.name);
        fs::create_dir_all(dir.join("endpoints"))
            .map_err(|e| NetworkError::io(format!("creating {}", dir.display()), e))?;
        write_json(&dir.join("network.json"), net)
    }

    /// The default bridge network, made on first use.
    fn default_network(&self) -> Result<Network, NetworkError> {
        let path = self.net_dir(DEFAULT_NETWORK).join("network.json");
        if path.exists() {
            return read_json(&path);
        }
        let subnet: Subnet = DEFAULT_SUBNET.parse().map_err(NetworkError::Invalid)?;
        let net = Network {
            name: DEFAULT_NETWORK.into(),
            id: crate::ids::new_id(),
            driver: "bridge".into(),
            subnet,
            gateway: subnet.first_host(),
            bridge: DEFAULT_BRIDGE.into(),
            created: Utc::now(),
            resolve_names: false,
        };
        self.save(&net)?;
        Ok(net)
    }

    /// A network by name (or a unique id prefix).
    pub fn get(&self, name: &str) -> Result<Network, NetworkError> {
        if name == DEFAULT_NETWORK {
            let _lock = self.lock()?;
            return self.default_network();
        }
        self.get_unlocked(name)
    }

    fn get_unlocked(&self, name: &str) -> Result<Network, NetworkError> {
        if name == DEFAULT_NETWORK {
            return self.default_network();
        }
        let path = self.net_dir(name).join("network.json");
        if crate::state::valid_name(name) && path.exists() {
            return read_json(&path);
        }
        let by_id: Vec<Network> = self
            .list_unlocked()?
            .into_iter()
            .filter(|n| name.len() >= 3 && n.id.starts_with(name))
            .collect();
        match by_id.as_slice() {
            [n] => Ok(n.clone()),
            _ => Err(NetworkError::NotFound(name.to_string())),
        }
    }

    /// Every network in the store (the default one once used), by name.
    pub fn list(&self) -> Result<Vec<Network>, NetworkError> {
        let _lock = self.lock()?;
        let mut all = self.list_unlocked()?;
        if !all.iter().any(|n| n.builtin()) {
            all.insert(0, self.default_network()?);
        }
        Ok(all)
    }

    fn list_unlocked(&self) -> Result<Vec<Network>, NetworkError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(NetworkError::io(
                    format!("listing {}", self.dir.display()),
                    e,
                ))
            }
        };
        let mut out: Vec<Network> = entries
            .flatten()
            .filter_map(|e| read_json(&e.path().join("network.json")).ok())
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The live endpoints of a network; stale ones are dropped.
    pub fn endpoints(&self, net: &str) -> Result<Vec<Endpoint>, NetworkError> {
        let dir = self.net_dir(net).join("endpoints");
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(NetworkError::io(format!("listing {}", dir.display()), e)),
        };
        let mut out = Vec::new();
        for e in entries.flatten() {
            let Ok(ep) = read_json::<Endpoint>(&e.path()) else {
                continue;
            };
            if self.sandboxes.join(&ep.sandbox).is_dir() {
                out.push(ep);
            } else {
                let _ = fs::remove_file(e.path());
            }
        }
        out.sort_by_key(|e| e.address);
        Ok(out)
    }

    /// Give the sandbox an address on `net` (`wanted`, or the lowest free
    /// one) and record its names. Under the lock.
    pub fn attach(
        &self,
        net_name: &str,
        endpoint: Endpoint,
        wanted: Option<Ipv4Addr>,
    ) -> Result<Attachment, NetworkError> {
        let _lock = self.lock()?;
        let net = self.get_unlocked(net_name)?;
        let eps = self.endpoints(&net.name)?;
        if eps.iter().any(|e| e.sandbox == endpoint.sandbox) {
            return Err(NetworkError::Invalid(format!(
                "the sandbox is already connected to network {}",
                net.name
            )));
        }
        let used: BTreeSet<Ipv4Addr> = eps.iter().map(|e| e.address).collect();
        let address = match wanted {
            Some(a) if !net.subnet.is_host(a) || a == net.gateway => {
                return Err(NetworkError::Invalid(format!(
                    "invalid --ip {a}: not a free host address of {} ({})",
                    net.name, net.subnet
                )))
            }
            Some(a) if used.contains(&a) => {
                return Err(NetworkError::AddressInUse {
                    address: a,
                    network: net.name.clone(),
                })
            }
            Some(a) => a,
            None => net
                .subnet
                .allocate(net.gateway, &used)
                .ok_or_else(|| NetworkError::Exhausted(net.name.clone()))?,
        };
        let ep = Endpoint {
            address,
            ..endpoint
        };
        let path = self
            .net_dir(&net.name)
            .join("endpoints")
            .join(format!("{}.json", ep.sandbox));
        write_json(&path, &ep)?;
        Ok(Attachment {
            network: net.name.clone(),
            network_id: net.id.clone(),
            bridge: net.bridge.clone(),
            subnet: net.subnet,
            gateway: net.gateway,
            address,
            mac: mac_string(mac_for(address)),
            aliases: ep.aliases,
        })
    }

    /// Release the sandbox's address on `net`; true when the network has
    /// no endpoint left (its bridge can go).
    pub fn detach(&self, net: &str, sandbox: &str) -> Result<bool, NetworkError> {
        let _lock = self.lock()?;
        let path = self
            .net_dir(net)
            .join("endpoints")
            .join(format!("{sandbox}.json"));
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(NetworkError::io(format!("removing {}", path.display()), e)),
        }
        Ok(self.endpoints(net)?.is_empty())
    }

    /// Remove a user-defined network that no sandbox uses.
    pub fn remove(&self, name: &str) -> Result<Network, NetworkError> {
        let _lock = self.lock()?;
        if RESERVED.contains(&name) {
            return Err(NetworkError::Invalid(format!(
                "{name} is a pre-defined network and cannot be removed"
            )));
        }
        let net = self.get_unlocked(name)?;
        let eps = self.endpoints(&net.name)?;
        if !eps.is_empty() {
            let users: Vec<String> = eps
                .iter()
                .map(|e| {
                    e.name
                        .clone()
                        .unwrap_or_else(|| crate::ids::short(&e.sandbox).to_string())
                })
                .collect();
            return Err(NetworkError::InUse {
                name: net.name.clone(),
                users: users.join(", "),
            });
        }
        let dir = self.net_dir(&net.name);
        fs::remove_dir_all(&dir)
            .map_err(|e| NetworkError::io(format!("removing {}", dir.display()), e))?;
        Ok(net)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(id: &str) -> Endpoint {
        Endpoint {
            sandbox: id.into(),
            name: None,
            hostname: "h".into(),
            aliases: Vec::new(),
            address: Ipv4Addr::UNSPECIFIED,
            isolation: Isolation::Container,
        }
    }

    #[test]
    fn create_attach_detach_remove() {
        let tmp = tempfile::tempdir().unwrap();
        let root = Root::new(tmp.path());
        let nets = Networks::new(&root);
        let n = nets.create("mynet", None, None).unwrap();
        assert_eq!(n.subnet.to_string(), "10.89.0.0/24");
        assert!(nets.create("mynet", None, None).is_err());
        assert!(nets.create("bridge", None, None).is_err());
        let n2 = nets.create("other", None, None).unwrap();
        assert_eq!(n2.subnet.to_string(), "10.89.1.0/24");
        assert!(nets
            .create("clash", Some("10.89.0.0/16".parse().unwrap()), None)
            .is_err());
        fs::create_dir_all(root.sandbox("a")).unwrap();
        fs::create_dir_all(root.sandbox("b")).unwrap();
        let a = nets.attach("mynet", ep("a"), None).unwrap();
        assert_eq!(a.address, Ipv4Addr::new(10, 89, 0, 2));
        let b = nets
            .attach("mynet", ep("b"), Some(Ipv4Addr::new(10, 89, 0, 9)))
            .unwrap();
        assert_eq!(b.address, Ipv4Addr::new(10, 89, 0, 9));
        assert!(matches!(
            nets.remove("mynet"),
            Err(NetworkError::InUse { .. })
        ));
        // A sandbox whose directory is gone no longer holds its address.
        fs::remove_dir_all(root.sandbox("b")).unwrap();
        assert_eq!(nets.endpoints("mynet").unwrap().len(), 1);
        assert!(nets.detach("mynet", "a").unwrap());
        nets.remove("mynet").unwrap();
        assert!(matches!(nets.get("mynet"), Err(NetworkError::NotFound(_))));
        assert_eq!(nets.list().unwrap().len(), 2); // bridge + other
    }
}
