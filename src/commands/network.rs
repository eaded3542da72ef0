//! `sbx network create|ls|inspect|rm|connect|disconnect|prune`, and what
//! `run` asks of networking (`--network`, `--network-alias`, `--ip`, `-p`,
//! `-P`).

use std::net::Ipv4Addr;

use anyhow::{bail, Context, Result};
use sbx_shared::backend::Backend;
use sbx_shared::monitor::lifecycle;
use sbx_shared::network::backend::Networked;
use sbx_shared::network::ports::{self, Bound, PortMapping};
use sbx_shared::network::{hosts, link, netns, veth_name, Endpoint, Networks, DEFAULT_NETWORK};
use sbx_shared::paths::Root;
use sbx_shared::spec::{Isolation, NetworkMode};
use sbx_shared::state::{Record, State};
use sbx_shared::store::Image;
use serde_json::json;

use super::lifecycle::{each, find};
use crate::cli::{NetworkCommand, RunArgs};

/// The backend for `spec.isolation`, with networking around it and the
/// published ports' sockets `run` bound.
pub fn backend(root: &Root, isolation: Isolation, bound: Vec<Bound>) -> Box<dyn Backend> {
    let inner: Box<dyn Backend> = match isolation {
        Isolation::Container => Box::new(sbx_container::ContainerBackend::new(root)),
        Isolation::Vm => Box::new(sbx_vmm::VmBackend::new(root)),
    };
    Box::new(Networked::new(root, inner).with_bound(bound))
}

enum Mode {
    None,
    Host,
    Bridge(String),
}

/// `run`'s network flags, checked.
pub struct Request {
    mode: Mode,
    aliases: Vec<String>,
    ip: Option<Ipv4Addr>,
    publish: Vec<PortMapping>,
    publish_all: bool,
    isolation: Isolation,
}

impl Request {
    pub fn from_args(args: &RunArgs, isolation: Isolation) -> Result<Request> {
        let publish = args
            .publish
            .iter()
            .map(|p| ports::parse(p).map_err(anyhow::Error::msg))
            .collect::<Result<Vec<_>>>()?;
        let wants_ports = !publish.is_empty() || args.publish_all;
        // -p without --network: the default bridge, as in Docker.
        let name = args
            .network
            .clone()
            .unwrap_or_else(|| if wants_ports { DEFAULT_NETWORK } else { "none" }.into());
        let mode = match name.as_str() {
            "none" => Mode::None,
            "host" => Mode::Host,
            _ => Mode::Bridge(name.clone()),
        };
        if matches!(mode, Mode::Host) && isolation == Isolation::Vm {
            bail!("--network host is not possible with --isolation=vm: a VM has its own kernel and network stack");
        }
        if !matches!(mode, Mode::Bridge(_)) {
            if wants_ports {
                bail!("publishing ports needs a bridge network (--network bridge or a network of yours), not --network {name}");
            }
            if !args.network_aliases.is_empty() || args.ip.is_some() {
                bail!("--network-alias and --ip need a bridge network, not --network {name}");
            }
        }
        for a in &args.network_aliases {
            if !sbx_shared::state::valid_name(a) {
                bail!("invalid --network-alias {a:?}: use letters, digits, '_', '.', '-'");
            }
        }
        let ip = match &args.ip {
            Some(s) => Some(
                s.parse()
                    .map_err(|_| anyhow::anyhow!("invalid --ip {s:?}: not an IPv4 address"))?,
            ),
            None => None,
        };
        Ok(Request {
            mode,
            aliases: args.network_aliases.clone(),
            ip,
            publish,
            publish_all: args.publish_all,
            isolation,
        })
    }

    /// Bind the host side of every published port (`-P`: the image's
    /// EXPOSEd ports too).
    pub fn bind_ports(&self, image: &Image) -> Result<Vec<Bound>> {
        let mut all = self.publish.clone();
        if self.publish_all {
            let exposed = image
                .config
                .config()
                .as_ref()
                .and_then(|c| c.exposed_ports().clone())
                .unwrap_or_default();
            for key in exposed {
                all.push(ports::exposed(&key).map_err(anyhow::Error::msg)?);
            }
        }
        Ok(ports::bind_all(&all)?)
    }

    /// The sandbox's address on its network (its directory exists now).
    pub fn attach(
        &self,
        root: &Root,
        record: &Record,
        hostname: &str,
    ) -> Result<(NetworkMode, Vec<sbx_shared::network::Attachment>)> {
        let name = match &self.mode {
            Mode::None => return Ok((NetworkMode::None, Vec::new())),
            Mode::Host => return Ok((NetworkMode::Host, Vec::new())),
            Mode::Bridge(n) => n,
        };
        let nets = Networks::new(root);
        let net = nets.get(name)?;
        if !self.aliases.is_empty() && !net.resolve_names {
            bail!("--network-alias needs a user-defined network: the default bridge resolves no names");
        }
        let ep = Endpoint {
            sandbox: record.id.clone(),
            name: record.name.clone(),
            hostname: hostname.to_string(),
            aliases: self.aliases.clone(),
            address: Ipv4Addr::UNSPECIFIED,
            isolation: self.isolation,
        };
        let att = nets.attach(&net.name, ep, self.ip)?;
        hosts::refresh(&nets, root, &net.name, &record.id);
        Ok((NetworkMode::Bridge, vec![att]))
    }
}

pub fn dispatch(root: &Root, command: NetworkCommand) -> Result<u8> {
    let nets = Networks::new(root);
    match command {
        NetworkCommand::Create {
            driver,
            subnet,
            gateway,
            name,
        } => {
            if driver != "bridge" {
                bail!("unknown network driver {driver:?}: sbx has bridge (and the built-in host and none)");
            }
            let subnet = subnet
                .map(|s| s.parse().map_err(anyhow::Error::msg))
                .transpose()?;
            let gateway = gateway
                .map(|g| {
                    g.parse::<Ipv4Addr>().map_err(|_| {
                        anyhow::anyhow!("invalid --gateway {g:?}: not an IPv4 address")
                    })
                })
                .transpose()?;
            let net = nets.create(&name, subnet, gateway)?;
            println!("{}", net.id);
            Ok(0)
        }
        NetworkCommand::Ls { format, quiet } => ls(&nets, &format, quiet),
        NetworkCommand::Inspect { names } => inspect(&nets, &names),
        NetworkCommand::Rm { names } => each(&names, |name| {
            let net = nets.remove(name)?;
            link::delete(&net.bridge)?;
            println!("{name}");
            Ok(())
        }),
        NetworkCommand::Prune { .. } => {
            let mut deleted = Vec::new();
            for net in nets.list()? {
                if net.builtin() || !nets.endpoints(&net.name)?.is_empty() {
                    continue;
                }
                if nets.remove(&net.name).is_ok() {
                    let _ = link::delete(&net.bridge);
                    deleted.push(net.name);
                }
            }
            if !deleted.is_empty() {
                println!("Deleted Networks:");
                for n in deleted {
                    println!("{n}");
                }
            }
            Ok(0)
        }
        NetworkCommand::Connect {
            aliases,
            ip,
            network,
            id,
        } => {
            let ip = ip
                .map(|s| {
                    s.parse::<Ipv4Addr>()
                        .map_err(|_| anyhow::anyhow!("invalid --ip {s:?}: not an IPv4 address"))
                })
                .transpose()?;
            connect(root, &network, &id, aliases, ip)
                .with_context(|| format!("connecting {id} to {network}"))?;
            Ok(0)
        }
        NetworkCommand::Disconnect { network, id, .. } => {
            disconnect(root, &network, &id)
                .with_context(|| format!("disconnecting {id} from {network}"))?;
            Ok(0)
        }
    }
}

fn ls(nets: &Networks, format: &str, quiet: bool) -> Result<u8> {
    if format != "table" && format != "json" {
        bail!("unknown --format {format:?}: use table or json");
    }
    let all = nets.list()?;
    let mut rows: Vec<[String; 5]> = all
        .iter()
        .map(|n| {
            [
                n.id[..12].to_string(),
                n.name.clone(),
                n.driver.clone(),
                n.subnet.to_string(),
                n.bridge.clone(),
            ]
        })
        .collect();
    for pseudo in ["host", "none"] {
        let driver = if pseudo == "host" { "host" } else { "null" };
        rows.push([
            String::new(),
            pseudo.into(),
            driver.into(),
            String::new(),
            String::new(),
        ]);
    }
    if quiet {
        for r in &rows {
            println!("{}", r[1]);
        }
        return Ok(0);
    }
    if format == "json" {
        for r in &rows {
            let row =
                json!({"ID": r[0], "Name": r[1], "Driver": r[2], "Subnet": r[3], "Bridge": r[4]});
            println!("{row}");
        }
        return Ok(0);
    }
    println!(
        "{:<15}{:<20}{:<10}{:<18}BRIDGE",
        "NETWORK ID", "NAME", "DRIVER", "SUBNET"
    );
    for r in &rows {
        println!("{:<15}{:<20}{:<10}{:<18}{}", r[0], r[1], r[2], r[3], r[4]);
    }
    Ok(0)
}

fn inspect(nets: &Networks, names: &[String]) -> Result<u8> {
    let mut out = Vec::new();
    let mut failed = false;
    for name in names {
        match nets.get(name) {
            Ok(n) => {
                let eps = nets.endpoints(&n.name)?;
                let sandboxes: serde_json::Map<String, serde_json::Value> = eps
                    .iter()
                    .map(|e| {
                        (
                            e.sandbox.clone(),
                            json!({
                                "name": e.name,
                                "hostname": e.hostname,
                                "aliases": e.aliases,
                                "ipv4_address": format!("{}/{}", e.address, n.subnet.prefix),
                                "mac_address": sbx_shared::network::mac_string(
                                    sbx_shared::network::mac_for(e.address)),
                                "isolation": e.isolation,
                            }),
                        )
                    })
                    .collect();
                out.push(json!({
                    "name": n.name,
                    "id": n.id,
                    "created": n.created,
                    "driver": n.driver,
                    "ipam": {"subnet": n.subnet, "gateway": n.gateway},
                    "bridge": n.bridge,
                    "resolves_names": n.resolve_names,
                    "internal": true,
                    "sandboxes": sandboxes,
                }));
            }
            Err(e) => {
                eprintln!("sbx: {e}");
                failed = true;
            }
        }
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(if failed { 1 } else { 0 })
}

fn connect(
    root: &Root,
    network: &str,
    id: &str,
    aliases: Vec<String>,
    ip: Option<Ipv4Addr>,
) -> Result<()> {
    let state = State::new(root);
    let f = find(root, &state, id)?;
    let dir = state.dir(&f.record.id);
    let mut spec =
        lifecycle::load_spec(&dir).context("only a detached sandbox (run -d) can be connected")?;
    if spec.network == NetworkMode::Host {
        bail!("a sandbox on the host's network cannot join another");
    }
    let running = f.running();
    if running && spec.isolation == Isolation::Vm {
        bail!("a running VM gets no new network device: stop it first, then connect it");
    }
    let nets = Networks::new(root);
    let net = nets.get(network)?;
    if !aliases.is_empty() && !net.resolve_names {
        bail!("--alias needs a user-defined network");
    }
    let ep = Endpoint {
        sandbox: spec.id.clone(),
        name: spec.name.clone(),
        hostname: spec.hostname.clone(),
        aliases,
        address: Ipv4Addr::UNSPECIFIED,
        isolation: spec.isolation,
    };
    let att = nets.attach(&net.name, ep, ip)?;
    if running {
        let pid = f.record.pid.unwrap_or(0);
        let ns = format!("/proc/{pid}/ns/net");
        // The next free ethN: the count, or further on after disconnects.
        let mut plugged = Err(anyhow::anyhow!("no free interface name"));
        for index in spec.networks.len()..spec.networks.len() + 8 {
            match netns::plug(&spec.id, &att, index, &ns) {
                Ok(()) => {
                    plugged = Ok(());
                    break;
                }
                Err(e) if e.to_string().contains("exists") => plugged = Err(e.into()),
                Err(e) => {
                    plugged = Err(e.into());
                    break;
                }
            }
        }
        if let Err(e) = plugged {
            let _ = nets.detach(&net.name, &spec.id);
            return Err(e);
        }
    }
    spec.networks.push(att);
    spec.network = NetworkMode::Bridge;
    lifecycle::save_spec(&spec)?;
    rewrite_own_hosts(root, &nets, &spec);
    hosts::refresh(&nets, root, &net.name, &spec.id);
    Ok(())
}

fn disconnect(root: &Root, network: &str, id: &str) -> Result<()> {
    let state = State::new(root);
    let f = find(root, &state, id)?;
    let dir = state.dir(&f.record.id);
    let mut spec = lifecycle::load_spec(&dir)
        .context("only a detached sandbox (run -d) can be disconnected")?;
    let nets = Networks::new(root);
    let net = nets.get(network)?;
    let Some(i) = spec.networks.iter().position(|a| a.network == net.name) else {
        bail!(
            "sandbox {} is not connected to network {}",
            f.short(),
            net.name
        );
    };
    if f.running() && spec.isolation == Isolation::Vm {
        bail!("a running VM keeps its network devices: stop it first, then disconnect it");
    }
    let att = spec.networks.remove(i);
    // The host end goes, and its peer inside with it.
    link::delete(&veth_name(&spec.id, &att.network_id))?;
    if nets.detach(&net.name, &spec.id)? {
        let _ = link::delete(&att.bridge);
    }
    if spec.networks.is_empty() {
        spec.network = NetworkMode::None;
        spec.ports.clear();
    }
    lifecycle::save_spec(&spec)?;
    rewrite_own_hosts(root, &nets, &spec);
    hosts::refresh(&nets, root, &net.name, &spec.id);
    Ok(())
}

/// A container's own hosts file after it joined or left a network.
fn rewrite_own_hosts(root: &Root, nets: &Networks, spec: &sbx_shared::spec::SandboxSpec) {
    if spec.isolation != Isolation::Container {
        return;
    }
    let _ = root;
    let text = hosts::render(nets, &spec.id, &spec.hostname);
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(spec.dir.join("hosts"))
    {
        use std::io::Write;
        let _ = f.write_all(text.as_bytes());
    }
}
