//! `sbx rm`, `sbx system prune`, `sbx system df`.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{bail, Context, Result};
use sbx_shared::monitor::lifecycle;
use sbx_shared::monitor::protocol::{self, Request};
use sbx_shared::paths::Root;
use sbx_shared::state::State;
use sbx_shared::store::Store;

use super::{all, await_monitor_exit, backend_for, each, find, Found};

pub fn rm(root: &Root, force: bool, ids: &[String]) -> Result<u8> {
    let state = State::new(root);
    each(ids, |arg| {
        let f = find(root, &state, arg)?;
        if f.running() && !force {
            bail!(
                "cannot remove {arg}: sandbox {} is running: stop it first, or use -f",
                f.short()
            );
        }
        remove_one(root, &state, &f).with_context(|| format!("removing {arg}"))?;
        println!("{arg}");
        Ok(())
    })
}

/// Kill it if it runs, wait for its monitor, release what the backend
/// left, remove the directory and the name.
fn remove_one(root: &Root, state: &State, f: &Found) -> Result<()> {
    let dir = state.dir(&f.record.id);
    if f.running() {
        let req = Request::Stop {
            signal: libc::SIGKILL,
            timeout_secs: 0.0,
        };
        if protocol::request(&dir, &req).is_err() {
            // No monitor (a foreground run): its pid, if that is still it.
            if let (Some(pid), Some(start)) = (f.record.pid, f.record.pid_start) {
                if lifecycle::alive(pid, start) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
    }
    await_monitor_exit(state, &f.record.id, std::time::Duration::from_secs(10));
    if let Ok(spec) = lifecycle::load_spec(&dir) {
        backend_for(root, spec.isolation)
            .cleanup(&spec)
            .map_err(anyhow::Error::from)?;
    }
    state.remove(&f.record)?;
    Ok(())
}

pub fn prune(root: &Root, images: bool) -> Result<u8> {
    let state = State::new(root);
    let mut reclaimed = 0;
    let mut removed = Vec::new();
    for f in all(&state)? {
        if f.running() || f.life.monitor_alive() {
            continue;
        }
        let size = du(&state.dir(&f.record.id));
        match remove_one(root, &state, &f) {
            Ok(()) => {
                reclaimed += size;
                removed.push(f.record.id.clone());
            }
            Err(e) => eprintln!("sbx: removing {}: {e:#}", f.short()),
        }
    }
    if !removed.is_empty() {
        println!("Deleted Sandboxes:");
        for id in &removed {
            println!("{id}");
        }
    }
    if images {
        let store = Store::open(root).context("opening the image store")?;
        let used: BTreeSet<String> = state.list()?.into_iter().map(|r| r.image.config).collect();
        let mut deleted = Vec::new();
        let ids: BTreeSet<(String, u64)> = store
            .images()?
            .into_iter()
            .map(|i| (i.id.to_string(), i.size))
            .collect();
        for (id, size) in ids {
            if used.contains(&id) {
                continue;
            }
            match store.remove(&id) {
                Ok(_) => {
                    reclaimed += size;
                    deleted.push(id);
                }
                Err(e) => eprintln!("sbx: removing image {id}: {e}"),
            }
        }
        if !deleted.is_empty() {
            println!("Deleted Images:");
            for id in &deleted {
                println!("deleted: {id}");
            }
        }
    }
    println!("Total reclaimed space: {}", human_size(reclaimed));
    Ok(0)
}

pub fn df(root: &Root, format: &str) -> Result<u8> {
    if format != "table" && format != "json" {
        bail!("unknown --format {format:?}: use table or json");
    }
    let state = State::new(root);
    let store = Store::open(root).context("opening the image store")?;
    let sandboxes = all(&state)?;
    let used: BTreeSet<String> = sandboxes
        .iter()
        .map(|f| f.record.image.config.clone())
        .collect();
    let mut images: Vec<(String, u64)> = store
        .images()?
        .into_iter()
        .map(|i| (i.id.to_string(), i.size))
        .collect();
    images.sort();
    images.dedup();
    let image_size: u64 = images.iter().map(|(_, s)| s).sum();
    let image_unused: u64 = images
        .iter()
        .filter(|(id, _)| !used.contains(id))
        .map(|(_, s)| s)
        .sum();
    let image_active = images.iter().filter(|(id, _)| used.contains(id)).count();
    let mut sb_size = 0;
    let mut sb_reclaim = 0;
    for f in &sandboxes {
        let s = du(&state.dir(&f.record.id));
        sb_size += s;
        if !f.running() {
            sb_reclaim += s;
        }
    }
    let sb_active = sandboxes.iter().filter(|f| f.running()).count();
    let rows = [
        (
            "Images",
            images.len(),
            image_active,
            image_size,
            image_unused,
        ),
        ("Sandboxes", sandboxes.len(), sb_active, sb_size, sb_reclaim),
    ];
    if format == "json" {
        for (kind, total, active, size, reclaimable) in rows {
            let row = serde_json::json!({
                "type": kind, "total": total, "active": active,
                "size": size, "reclaimable": reclaimable,
            });
            println!("{row}");
        }
        return Ok(0);
    }
    println!(
        "{:<12}{:<8}{:<8}{:<12}RECLAIMABLE",
        "TYPE", "TOTAL", "ACTIVE", "SIZE"
    );
    for (kind, total, active, size, reclaimable) in rows {
        println!(
            "{kind:<12}{total:<8}{active:<8}{:<12}{}",
            human_size(size),
            human_size(reclaimable)
        );
    }
    Ok(0)
}

/// Bytes under `dir` (files as allocated, symlinks not followed).
fn du(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                total += m.blocks() * 512;
            }
        }
    }
    total
}

/// Docker's sizes: decimal units, up to two decimals.
fn human_size(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < units.len() {
        v /= 1000.0;
        i += 1;
    }
    let n = format!("{v:.2}");
    let n = n.trim_end_matches('0').trim_end_matches('.');
    format!("{n}{}", units[i])
}
