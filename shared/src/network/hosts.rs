//! Name resolution on user-defined networks: `/etc/hosts`.
//!
//! A sandbox's file lists its own address under its hostname, then, for
//! each user-defined network it is on, every peer there by name, hostname
//! and `--network-alias`es. Containers' files are rewritten in place (their
//! bind mount keeps the inode) when a peer joins or leaves; a VM's is
//! written by its guest init at boot.

use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;

use super::store::{Endpoint, Networks};
use crate::paths::Root;
use crate::spec::{Isolation, SandboxSpec};

const BASE: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n";

/// The root a sandbox directory (`<root>/sandboxes/<id>`) belongs to.
pub fn root_of(dir: &Path) -> Option<Root> {
    dir.parent()?.parent().map(Root::new)
}

/// The hosts file for `spec`.
pub fn for_spec(spec: &SandboxSpec) -> String {
    match root_of(&spec.dir) {
        Some(root) if !spec.networks.is_empty() => {
            render(&Networks::new(&root), &spec.id, &spec.hostname)
        }
        _ => render_alone(&spec.hostname),
    }
}

fn render_alone(hostname: &str) -> String {
    format!("{BASE}127.0.1.1\t{hostname}\n")
}

/// The hosts file of `sandbox` from what the store says about its
/// endpoints and their peers.
pub fn render(nets: &Networks, sandbox: &str, hostname: &str) -> String {
    let Ok(all) = nets.list() else {
        return render_alone(hostname);
    };
    let mut own = Vec::new();
    let mut peers: Vec<Endpoint> = Vec::new();
    for net in &all {
        let eps = nets.endpoints(&net.name).unwrap_or_default();
        let Some(me) = eps.iter().find(|e| e.sandbox == sandbox) else {
            continue;
        };
        own.push(me.address);
        if net.resolve_names {
            peers.extend(eps.iter().filter(|e| e.sandbox != sandbox).cloned());
        }
    }
    let mut out = String::from(BASE);
    match own.first() {
        Some(a) => {
            let _ = writeln!(out, "{a}\t{hostname}");
        }
        None => return render_alone(hostname),
    }
    for p in peers {
        let mut names: Vec<&str> = Vec::new();
        names.extend(p.name.as_deref());
        names.extend(p.aliases.iter().map(String::as_str));
        if !names.contains(&p.hostname.as_str()) {
            names.push(&p.hostname);
        }
        let _ = writeln!(out, "{}\t{}", p.address, names.join(" "));
    }
    out
}

/// Rewrite, in place, the hosts files of the running or stopped
/// containers on `network` (all but `except`).
pub fn refresh(nets: &Networks, root: &Root, network: &str, except: &str) {
    for ep in nets.endpoints(network).unwrap_or_default() {
        if ep.sandbox == except || ep.isolation != Isolation::Container {
            continue;
        }
        let path = root.sandbox(&ep.sandbox).join("hosts");
        let text = render(nets, &ep.sandbox, &ep.hostname);
        // Truncate and write the same inode: the container's bind mount
        // of it then sees the new text.
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
        {
            let _ = f.write_all(text.as_bytes());
        }
    }
}
