//! `sbx volume create|ls|inspect|rm|prune`, and the volume side of `rm -v`
//! and `system prune --volumes`.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use sbx_shared::paths::Root;
use sbx_shared::state::State;
use sbx_shared::volumes::{flags, usage, CreateOptions, Volume, VolumeError, Volumes};

use crate::cli::VolumeCommand;

pub fn dispatch(root: &Root, command: VolumeCommand) -> Result<u8> {
    let volumes = Volumes::new(root);
    match command {
        VolumeCommand::Create { opts, labels, name } => create(&volumes, &name, &opts, &labels),
        VolumeCommand::Ls { format, quiet } => ls(&volumes, &format, quiet),
        VolumeCommand::Inspect { names } => inspect(&volumes, &names),
        VolumeCommand::Rm { force, names } => rm(&volumes, force, &names),
        VolumeCommand::Prune { .. } => prune(root),
    }
}

fn create(volumes: &Volumes, name: &str, opts: &[String], labels: &[String]) -> Result<u8> {
    let mut options = CreateOptions::default();
    for o in opts {
        options.opt(o)?;
    }
    for l in labels {
        let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
        if k.is_empty() {
            bail!("invalid --label {l:?}: expected KEY=VALUE");
        }
        options.labels.insert(k.to_string(), v.to_string());
    }
    let v = volumes.create(name, &options)?;
    println!("{}", v.name);
    Ok(0)
}

fn ls(volumes: &Volumes, format: &str, quiet: bool) -> Result<u8> {
    let list = volumes.list()?;
    if quiet {
        for v in &list {
            println!("{}", v.name);
        }
        return Ok(0);
    }
    match format {
        "json" => {
            for v in &list {
                println!("{}", serde_json::to_string(v)?);
            }
        }
        "table" => {
            println!("{:<8} {:<10} {:<6} VOLUME NAME", "DRIVER", "SIZE", "FORMAT");
            for v in &list {
                println!(
                    "{:<8} {:<10} {:<6} {}",
                    v.driver,
                    human(v.size),
                    v.format,
                    v.name
                );
            }
        }
        f => bail!("invalid --format {f:?}: table or json"),
    }
    Ok(0)
}

/// A size as `docker volume` users read it: 1GiB, 64MiB.
fn human(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value.fract() == 0.0 {
        format!("{value}{}", units[unit])
    } else {
        format!("{value:.1}{}", units[unit])
    }
}

/// What `volume inspect` prints for one volume: its record, the bytes its
/// image holds on disk, and the sandboxes that name it.
fn describe(volumes: &Volumes, v: &Volume) -> serde_json::Value {
    let mut value = serde_json::to_value(v).unwrap_or_default();
    if let Some(obj) = value.as_object_mut() {
        obj.insert(
            "allocated".into(),
            sbx_shared::volumes::allocated(&v.mountpoint).into(),
        );
        obj.insert("used_by".into(), volumes.users(&v.name).into());
        obj.insert(
            "options".into(),
            serde_json::to_value(BTreeMap::from([("size", v.size.to_string())]))
                .unwrap_or_default(),
        );
    }
    value
}

fn inspect(volumes: &Volumes, names: &[String]) -> Result<u8> {
    let mut out = Vec::new();
    let mut missing = Vec::new();
    for n in names {
        match volumes.get(n) {
            Ok(v) => out.push(describe(volumes, &v)),
            Err(VolumeError::NotFound(_)) => missing.push(n.as_str()),
            Err(e) => return Err(e.into()),
        }
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    if !missing.is_empty() {
        bail!("no such volume: {}", missing.join(", "));
    }
    Ok(0)
}

fn rm(volumes: &Volumes, force: bool, names: &[String]) -> Result<u8> {
    let mut failed = Vec::new();
    for n in names {
        match volumes.remove(n, force) {
            Ok(()) => println!("{n}"),
            Err(VolumeError::NotFound(_)) if force => {}
            Err(e) => failed.push(e.to_string()),
        }
    }
    match failed.len() {
        0 => Ok(0),
        1 => bail!("{}", failed[0]),
        _ => bail!("{}", failed.join("; ")),
    }
}

pub fn prune(root: &Root) -> Result<u8> {
    let (removed, bytes) = Volumes::new(root).prune()?;
    if !removed.is_empty() {
        println!("Deleted Volumes:");
        for n in &removed {
            println!("{n}");
        }
        println!();
    }
    println!("Total reclaimed space: {}", human(bytes));
    Ok(0)
}

/// `rm -v`: run `remove` on `ids`, then remove the anonymous volumes of
/// each sandbox that is gone afterwards.
pub fn with_anonymous(
    root: &Root,
    ids: &[String],
    remove: impl FnOnce(&[String]) -> Result<u8>,
) -> Result<u8> {
    let state = State::new(root);
    let doomed: Vec<(std::path::PathBuf, Vec<usage::UsedVolume>)> = ids
        .iter()
        .filter_map(|arg| super::lifecycle::find(root, &state, arg).ok())
        .map(|f| {
            let dir = state.dir(&f.record.id);
            let used = usage::load(&dir);
            (dir, used)
        })
        .collect();
    let code = remove(ids);
    let volumes = Volumes::new(root);
    for (dir, used) in doomed {
        if dir.exists() {
            continue;
        }
        for v in used.iter().filter(|v| v.anonymous) {
            match volumes.remove(&v.name, true) {
                Ok(()) | Err(VolumeError::NotFound(_)) => {}
                Err(e) => eprintln!("sbx: {e}"),
            }
        }
    }
    code
}

/// `-v`, `--mount` and `--tmpfs`, parsed, in that order.
pub fn requests(
    volumes: &[String],
    mounts: &[String],
    tmpfs: &[String],
) -> Result<Vec<flags::MountRequest>> {
    let parsed = volumes
        .iter()
        .map(|v| flags::parse_volume(v))
        .chain(mounts.iter().map(|m| flags::parse_mount(m)))
        .chain(tmpfs.iter().map(|t| flags::parse_tmpfs(t)))
        .collect::<Result<Vec<_>, String>>();
    parsed.map_err(anyhow::Error::msg)
}

/// Remove the anonymous volumes made for a run that never got a record.
pub fn drop_anonymous(root: &Root, used: &[usage::UsedVolume]) {
    let volumes = Volumes::new(root);
    for v in used.iter().filter(|v| v.anonymous) {
        let _ = volumes.remove(&v.name, true);
    }
}
