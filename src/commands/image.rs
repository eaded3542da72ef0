//! Image verbs: import, load, save, images, tag, rmi.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use sbx_shared::paths::Root;
use sbx_shared::reference::Reference;
use sbx_shared::state::State;
use sbx_shared::store::{change, ImageSummary, RuntimeConfig, Store};

fn open_store(root: &Root) -> Result<Store> {
    Store::open(root)
        .with_context(|| format!("opening the image store in {}", root.dir().display()))
}

pub fn import(root: &Root, file: &str, name: &str, changes: &[String]) -> Result<u8> {
    let mut config = RuntimeConfig::default();
    for c in changes {
        change::apply(&mut config, c)?;
    }
    let mut input: Box<dyn Read> = if file == "-" {
        Box::new(io::stdin().lock())
    } else {
        Box::new(File::open(file).with_context(|| format!("opening {file}"))?)
    };
    let store = open_store(root)?;
    let image = store
        .import(&mut input, name, config)
        .with_context(|| format!("importing {file} as {name}"))?;
    println!("{}", image.config_digest);
    Ok(0)
}

pub fn load(root: &Root, input: &Path) -> Result<u8> {
    let store = open_store(root)?;
    let loaded = store
        .load(input)
        .with_context(|| format!("loading {}", input.display()))?;
    for name in loaded {
        if name.starts_with("sha256:") {
            println!("Loaded image ID: {name}");
        } else {
            println!("Loaded image: {name}");
        }
    }
    Ok(0)
}

pub fn save(root: &Root, output: &Path, names: &[String]) -> Result<u8> {
    let store = open_store(root)?;
    store
        .save(names, output)
        .with_context(|| format!("saving {} to {}", names.join(", "), output.display()))?;
    Ok(0)
}

pub fn images(root: &Root, format: &str) -> Result<u8> {
    let store = open_store(root)?;
    let images = store.images().context("listing images")?;
    match format {
        "json" => println!("{}", serde_json::to_string_pretty(&images)?),
        "table" => print!("{}", table(&images, Utc::now())),
        other => bail!("unknown --format {other:?}: use table or json"),
    }
    Ok(0)
}

pub fn tag(root: &Root, src: &str, dst: &str) -> Result<u8> {
    let store = open_store(root)?;
    store
        .tag(src, dst)
        .with_context(|| format!("tagging {src} as {dst}"))?;
    Ok(0)
}

pub fn rmi(root: &Root, force: bool, names: &[String]) -> Result<u8> {
    let store = open_store(root)?;
    let sandboxes = State::new(root).list().context("listing sandboxes")?;
    for name in names {
        let image = store
            .resolve(name)
            .with_context(|| format!("removing {name}"))?;
        let id = image.config_digest.to_string();
        // Untagging one of several names leaves the image: only its last
        // name (or removal by id) needs it unused.
        let names_left = store.names_of(&image.config_digest)?;
        let by_name = Reference::parse(name)
            .ok()
            .filter(|r| r.digest.is_none())
            .is_some_and(|r| names_left.contains(&r.familiar()));
        if !by_name && names_left.len() > 1 && !force {
            bail!(
                "removing {name}: image is referenced by {} names ({}): remove them by name or use -f",
                names_left.len(),
                names_left.join(", ")
            );
        }
        let last = !by_name || names_left.len() <= 1;
        if last {
            for sandbox in sandboxes.iter().filter(|s| s.image.config == id) {
                let short = sbx_shared::ids::short(&sandbox.id);
                if sandbox.is_running() {
                    bail!("removing {name}: image is in use by running sandbox {short}");
                }
                if !force {
                    bail!("removing {name}: image is used by stopped sandbox {short} (use -f to remove it anyway)");
                }
            }
        }
        let removed = store
            .remove(name)
            .with_context(|| format!("removing {name}"))?;
        for untagged in &removed.untagged {
            println!("Untagged: {untagged}");
        }
        if removed.deleted {
            println!("Deleted: {}", removed.id);
        }
    }
    Ok(0)
}

fn table(images: &[ImageSummary], now: DateTime<Utc>) -> String {
    let rows: Vec<[String; 5]> = images
        .iter()
        .map(|i| {
            let created = i
                .created
                .as_deref()
                .and_then(|c| DateTime::parse_from_rfc3339(c).ok())
                .map_or_else(|| "N/A".to_string(), |t| ago(now, t.with_timezone(&Utc)));
            [
                i.repository.clone(),
                i.tag.clone(),
                i.id.short().to_string(),
                created,
                human_size(i.size),
            ]
        })
        .collect();
    let header = ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(i, (c, w))| {
                if i == 4 {
                    c.clone()
                } else {
                    format!("{c:<w$}")
                }
            })
            .collect();
        out.push_str(cells.join("   ").trim_end());
        out.push('\n');
    }
    out
}

/// Docker's "2 minutes ago" (go-units HumanDuration).
fn ago(now: DateTime<Utc>, then: DateTime<Utc>) -> String {
    let secs = (now - then).num_seconds().max(0);
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86400);
    let text = if secs < 1 {
        "Less than a second".to_string()
    } else if secs == 1 {
        "1 second".to_string()
    } else if secs < 60 {
        format!("{secs} seconds")
    } else if m == 1 {
        "About a minute".to_string()
    } else if m < 60 {
        format!("{m} minutes")
    } else if h == 1 {
        "About an hour".to_string()
    } else if h < 48 {
        format!("{h} hours")
    } else if h < 24 * 7 * 2 {
        format!("{d} days")
    } else if h < 24 * 30 * 2 {
        format!("{} weeks", d / 7)
    } else if h < 24 * 365 * 2 {
        format!("{} months", d / 30)
    } else {
        format!("{} years", d / 365)
    };
    format!("{text} ago")
}

/// Docker's sizes: decimal units, three significant digits ("1.23MB").
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut size = bytes as f64;
    let mut unit = 0;
    while size >= 1000.0 && unit < UNITS.len() - 1 {
        size /= 1000.0;
        unit += 1;
    }
    let digits = if size >= 100.0 {
        0
    } else if size >= 10.0 {
        1
    } else {
        2
    };
    let text = format!("{size:.digits$}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    };
    format!("{text}{}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_like_docker() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1_234_567), "1.23MB");
        assert_eq!(human_size(1_200_000), "1.2MB");
        assert_eq!(human_size(77_800_000), "77.8MB");
        assert_eq!(human_size(4_261_000), "4.26MB");
    }

    #[test]
    fn durations_like_docker() {
        let now = Utc::now();
        let ago_s = |s: i64| ago(now, now - chrono::Duration::seconds(s));
        assert_eq!(ago_s(0), "Less than a second ago");
        assert_eq!(ago_s(30), "30 seconds ago");
        assert_eq!(ago_s(70), "About a minute ago");
        assert_eq!(ago_s(150), "2 minutes ago");
        assert_eq!(ago_s(3 * 3600), "3 hours ago");
        assert_eq!(ago_s(3 * 86400), "3 days ago");
    }
}
