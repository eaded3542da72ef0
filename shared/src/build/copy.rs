//! COPY and ADD: sources (from the context or another stage) matched,
//! planned as layer entries, hashed for the cache and written as a layer.
//!
//! Docker's rules: a directory source copies its contents; several sources
//! (or a dest ending in '/', or a dest that is a directory in the image)
//! make dest a directory; missing parents are created; context files are
//! owned by root unless `--chown` says otherwise; ADD extracts local tar
//! archives (plain, gzip, zstd) into dest.

use std::collections::BTreeMap;
use std::fs::{File, Metadata};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::context::{has_wildcards, match_component, Ignore};
use super::layer::{LayerWriter, Meta};
use super::view::{clean, components, join, View};
use crate::store::compress::decoder;

/// Where sources are read from.
pub struct Source<'a> {
    pub view: &'a View,
    /// The context's `.dockerignore` (None for another stage or image).
    pub ignore: Option<&'a Ignore>,
    /// Keep the sources' owners (COPY --from) rather than root's.
    pub keep_owner: bool,
}

pub struct Request<'a> {
    pub add: bool,
    /// Sources, variables already substituted.
    pub sources: &'a [String],
    /// Absolute destination; a trailing '/' makes it a directory.
    pub dest: &'a str,
    pub chown: Option<(u64, u64)>,
    pub chmod: Option<u32>,
}

struct Entry {
    host: Option<(PathBuf, Metadata)>,
    meta: Meta,
}

/// What a COPY will write.
pub struct Plan {
    entries: BTreeMap<String, Entry>,
    /// Archives ADD extracts: (dest dir, host path).
    archives: Vec<(String, PathBuf)>,
    chown: Option<(u64, u64)>,
}

impl Source<'_> {
    fn ignored(&self, rel: &str) -> bool {
        self.ignore.is_some_and(|i| i.excludes(rel))
    }

    /// Paths (resolved, relative) the pattern names.
    fn matches(&self, pattern: &str) -> Result<Vec<String>, String> {
        if !has_wildcards(pattern) {
            let rel = clean(pattern);
            return match self.view.resolve(&rel, true) {
                Some(r) if self.view.lstat(&r).is_some() && !self.ignored(&rel) => Ok(vec![r]),
                _ => Err(format!(
                    "{pattern}: no such file or directory in the source"
                )),
            };
        }
        let mut found = vec![String::new()];
        for comp in components(pattern) {
            let mut next = Vec::new();
            for dir in &found {
                if has_wildcards(&comp) {
                    for name in self.view.read_dir(dir) {
                        if match_component(&comp, &name) {
                            next.push(join(dir, &name));
                        }
                    }
                } else if self.view.lstat(&join(dir, &comp)).is_some() {
                    next.push(join(dir, &comp));
                }
            }
            found = next;
        }
        found.retain(|p| !self.ignored(p));
        if found.is_empty() {
            return Err(format!("{pattern}: no source files match"));
        }
        Ok(found)
    }
}

/// Match the sources and lay out the entries; `image` is the stage's root
/// (to see whether dest is a directory and to keep existing parents).
pub fn plan(src: &Source<'_>, image: &View, req: &Request<'_>) -> Result<Plan, String> {
    let dest_is_dir_form = req.dest.ends_with('/') || req.dest.ends_with("/.");
    let dest = clean(req.dest);
    let mut matched = Vec::new();
    for s in req.sources {
        matched.extend(src.matches(s)?);
    }
    if matched.len() > 1 && !dest_is_dir_form {
        return Err(format!(
            "when copying more than one source file, the destination must be a directory and end with a / (got {})",
            req.dest
        ));
    }
    let dest_exists_as_dir = image
        .resolve(&dest, true)
        .and_then(|d| image.lstat(&d))
        .is_some_and(|(_, st)| st.is_dir());
    let dest_is_dir = dest_is_dir_form || matched.len() > 1 || dest_exists_as_dir;

    let mut plan = Plan {
        entries: BTreeMap::new(),
        archives: Vec::new(),
        chown: req.chown,
    };
    let meta_for = |st: &Metadata| {
        let mut m = Meta::of(st);
        if let Some(mode) = req.chmod {
            m.mode = mode;
        }
        match req.chown {
            Some((u, g)) => (m.uid, m.gid) = (u, g),
            None if !src.keep_owner => (m.uid, m.gid) = (0, 0),
            None => {}
        }
        m
    };
    for m in matched {
        let Some((host, st)) = src.view.lstat(&m) else {
            continue;
        };
        if st.is_dir() {
            if !dest.is_empty() {
                plan.entries.insert(
                    dest.clone(),
                    Entry {
                        host: None,
                        meta: meta_for(&st),
                    },
                );
            }
            add_tree(src, &m, &dest, &mut plan, &meta_for)?;
        } else if req.add && is_archive(&host) {
            plan.archives.push((dest.clone(), host));
        } else {
            let name = m.rsplit('/').next().unwrap_or(&m);
            let target = if dest_is_dir {
                join(&dest, name)
            } else {
                dest.clone()
            };
            if target.is_empty() {
                return Err("cannot copy a file onto /".into());
            }
            let meta = meta_for(&st);
            plan.entries.insert(
                target,
                Entry {
                    host: Some((host, st)),
                    meta,
                },
            );
        }
    }
    // Missing parents: as the image has them, or root-owned 0755.
    let mut parents = Vec::new();
    let all: Vec<String> = plan
        .entries
        .keys()
        .cloned()
        .chain(plan.archives.iter().map(|(d, _)| join(d, "x")))
        .collect();
    for path in &all {
        let comps = components(path);
        for n in 1..comps.len() {
            parents.push(comps[..n].join("/"));
        }
    }
    for p in parents {
        if plan.entries.contains_key(&p) {
            continue;
        }
        let meta = image
            .lstat(&p)
            .filter(|(_, st)| st.is_dir())
            .map_or_else(Meta::dir_default, |(_, st)| Meta::of(&st));
        plan.entries.insert(p, Entry { host: None, meta });
    }
    Ok(plan)
}

fn add_tree(
    src: &Source<'_>,
    dir: &str,
    dest: &str,
    plan: &mut Plan,
    meta_for: &dyn Fn(&Metadata) -> Meta,
) -> Result<(), String> {
    for name in src.view.read_dir(dir) {
        let rel = join(dir, &name);
        if src.ignored(&rel) {
            continue;
        }
        let Some((host, st)) = src.view.lstat(&rel) else {
            continue;
        };
        let target = join(dest, &name);
        let is_dir = st.is_dir();
        let meta = meta_for(&st);
        plan.entries.insert(
            target.clone(),
            Entry {
                host: Some((host, st)),
                meta,
            },
        );
        if is_dir {
            add_tree(src, &rel, &target, plan, meta_for)?;
        }
    }
    Ok(())
}

/// Whether a file is a tar archive ADD should extract.
fn is_archive(path: &Path) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    let Ok((_, mut plain)) = decoder(BufReader::new(file)) else {
        return false;
    };
    let mut head = [0u8; 512];
    let mut n = 0;
    while n < head.len() {
        match plain.read(&mut head[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    n == 512 && &head[257..262] == b"ustar"
}

impl Plan {
    /// The cache's view of the sources: names, types, modes, owners, link
    /// targets and contents (not mtimes).
    pub fn content_hash(&self) -> io::Result<String> {
        let mut h = Sha256::new();
        for (path, e) in &self.entries {
            h.update(path.as_bytes());
            h.update(format!(
                "\0{:o}:{}:{}\0",
                e.meta.mode, e.meta.uid, e.meta.gid
            ));
            if let Some((host, st)) = &e.host {
                if st.file_type().is_symlink() {
                    h.update(std::fs::read_link(host)?.as_os_str().as_encoded_bytes());
                } else if st.is_file() {
                    h.update(st.len().to_le_bytes());
                    io::copy(&mut File::open(host)?, &mut HashWriter(&mut h))?;
                }
            }
        }
        for (dest, host) in &self.archives {
            h.update(format!("archive\0{dest}\0"));
            io::copy(&mut File::open(host)?, &mut HashWriter(&mut h))?;
        }
        if let Some((u, g)) = self.chown {
            h.update(format!("chown {u}:{g}"));
        }
        Ok(hex::encode(h.finalize()))
    }

    /// Write the layer.
    pub fn write(&self, out: &mut dyn Write) -> io::Result<()> {
        let mut w = LayerWriter::new(out);
        for (path, e) in &self.entries {
            match &e.host {
                Some((host, st)) => w.host_entry(path, host, st, &e.meta)?,
                None => w.dir(path, &e.meta)?,
            }
        }
        for (dest, host) in &self.archives {
            extract(&mut w, dest, host, self.chown)?;
        }
        w.finish()?;
        Ok(())
    }
}

struct HashWriter<'a>(&'a mut Sha256);

impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Re-write an archive's entries under `dest` (names cleaned so none
/// leaves it).
fn extract<W: Write>(
    w: &mut LayerWriter<W>,
    dest: &str,
    host: &Path,
    chown: Option<(u64, u64)>,
) -> io::Result<()> {
    let (_, plain) = decoder(BufReader::new(File::open(host)?))?;
    let mut archive = tar::Archive::new(plain);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let name = entry.path()?.to_string_lossy().into_owned();
        let rel = clean(&name);
        if rel.is_empty() {
            continue;
        }
        let path = join(dest, &rel);
        let h = entry.header();
        // Archives made by hand may leave numeric fields blank: zero them.
        let mut meta = Meta {
            mode: h.mode().unwrap_or(0o644) & 0o7777,
            uid: h.uid().unwrap_or(0),
            gid: h.gid().unwrap_or(0),
            mtime: h.mtime().unwrap_or(0),
        };
        if let Some((u, g)) = chown {
            (meta.uid, meta.gid) = (u, g);
        }
        let kind = h.entry_type();
        let size = h.size()?;
        let link = entry.link_name()?.map(|l| l.to_string_lossy().into_owned());
        match kind {
            tar::EntryType::Directory => w.dir(&path, &meta)?,
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                w.file(&path, &meta, size, &mut entry)?
            }
            tar::EntryType::Symlink => {
                w.symlink(&path, Path::new(&link.unwrap_or_default()), &meta)?
            }
            tar::EntryType::Link => {
                w.hardlink(&path, &join(dest, &clean(&link.unwrap_or_default())), &meta)?
            }
            tar::EntryType::Fifo => w.fifo(&path, &meta)?,
            _ => {}
        }
    }
    Ok(())
}
