//! A read-only view of a root filesystem made of unpacked layer directories
//! (overlayfs form: 0:0 character devices for whiteouts, opaque xattrs),
//! read from the host without mounting anything. The build context is a
//! view of one directory.
//!
//! Paths are relative to the view's root, '/'-separated. Every component is
//! looked up with `lstat` and only real directories are descended into, so
//! a symlink in a layer never leads outside it; symlinks are followed by
//! [`View::resolve`] inside the view, as the image would see them.

use std::fs::{self, Metadata};
use std::path::PathBuf;

use super::layer::{is_opaque, is_whiteout};

/// Links followed in one lookup before giving up (Linux's MAXSYMLINKS).
const MAX_LINKS: usize = 40;

#[derive(Debug, Clone)]
pub struct View {
    /// Top layer first.
    layers: Vec<PathBuf>,
}

/// Split a path into its components, dropping `.` and empty ones and
/// clamping `..` at the root.
pub fn components(path: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c.to_string()),
        }
    }
    out
}

/// `path` made clean and relative (`/a/./b/../c` → `a/c`; the root is "").
pub fn clean(path: &str) -> String {
    components(path).join("/")
}

impl View {
    /// A view of these layer directories, bottom first.
    pub fn new(bottom_first: &[PathBuf]) -> View {
        View {
            layers: bottom_first.iter().rev().cloned().collect(),
        }
    }

    /// The entry at `rel` (not following a final symlink): its host path
    /// and metadata, or None when it does not exist in the merged view.
    pub fn lstat(&self, rel: &str) -> Option<(PathBuf, Metadata)> {
        let comps = components(rel);
        for layer in &self.layers {
            let mut host = layer.clone();
            let mut hidden_below = false;
            let mut found = None;
            for (i, c) in comps.iter().enumerate() {
                host.push(c);
                let Ok(st) = fs::symlink_metadata(&host) else {
                    break;
                };
                if is_whiteout(&st) {
                    return None;
                }
                if i + 1 == comps.len() {
                    found = Some(st);
                    break;
                }
                if !st.is_dir() {
                    // A file (or link) here hides whatever lower layers
                    // have below this name.
                    return None;
                }
                if is_opaque(&host) {
                    hidden_below = true;
                }
            }
            if comps.is_empty() {
                if let Ok(st) = fs::symlink_metadata(layer) {
                    return Some((layer.clone(), st));
                }
            }
            if let Some(st) = found {
                return Some((host, st));
            }
            if hidden_below {
                return None;
            }
        }
        None
    }

    /// The names in directory `rel`, sorted (empty when it is not one).
    pub fn read_dir(&self, rel: &str) -> Vec<String> {
        let rel = clean(rel);
        let mut names = std::collections::BTreeSet::new();
        for layer in &self.layers {
            let dir = layer.join(&rel);
            // Only directories reached without symlinks count.
            let real = components(&rel).iter().try_fold(layer.clone(), |mut p, c| {
                p.push(c);
                fs::symlink_metadata(&p)
                    .ok()
                    .filter(|m| m.is_dir())
                    .map(|_| p)
            });
            if real.is_none() {
                continue;
            }
            if let Ok(entries) = fs::read_dir(&dir) {
                names.extend(
                    entries
                        .flatten()
                        .filter_map(|e| e.file_name().into_string().ok()),
                );
            }
        }
        names
            .into_iter()
            .filter(|n| self.lstat(&join(&rel, n)).is_some())
            .collect()
    }

    /// `rel` with every symlink in it resolved inside the view (the last
    /// one too when `follow_last`). None when a component is missing.
    pub fn resolve(&self, rel: &str, follow_last: bool) -> Option<String> {
        let mut todo: Vec<String> = components(rel).into_iter().rev().collect();
        let mut done: Vec<String> = Vec::new();
        let mut links = 0;
        while let Some(c) = todo.pop() {
            if c == ".." {
                done.pop();
                continue;
            }
            done.push(c);
            let here = done.join("/");
            let (host, st) = self.lstat(&here)?;
            if st.file_type().is_symlink() && (follow_last || !todo.is_empty()) {
                links += 1;
                if links > MAX_LINKS {
                    return None;
                }
                let target = fs::read_link(&host).ok()?;
                let target = target.to_str()?;
                done.pop();
                if target.starts_with('/') {
                    done.clear();
                }
                todo.extend(
                    target
                        .split('/')
                        .filter(|s| !s.is_empty() && *s != ".")
                        .rev()
                        .map(str::to_string),
                );
            }
        }
        Some(done.join("/"))
    }

    /// Read a small file (passwd, group) through the view.
    pub fn read_to_string(&self, rel: &str) -> Option<String> {
        let path = self.resolve(rel, true)?;
        let (host, st) = self.lstat(&path)?;
        if !st.is_file() {
            return None;
        }
        fs::read_to_string(host).ok()
    }
}

pub fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn layers_merge_and_links_resolve() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        fs::create_dir_all(a.join("etc")).unwrap();
        fs::create_dir_all(b.join("etc")).unwrap();
        fs::write(a.join("etc/passwd"), "root").unwrap();
        fs::write(a.join("etc/old"), "x").unwrap();
        fs::write(b.join("etc/new"), "y").unwrap();
        symlink("/etc", b.join("link")).unwrap();
        symlink("../../..", b.join("up")).unwrap();
        let v = View::new(&[a.clone(), b.clone()]);
        assert_eq!(v.read_dir("etc"), ["new", "old", "passwd"]);
        assert_eq!(v.read_dir(""), ["etc", "link", "up"]);
        assert_eq!(
            v.resolve("link/passwd", true).as_deref(),
            Some("etc/passwd")
        );
        assert_eq!(v.resolve("up/etc", true).as_deref(), Some("etc"));
        assert_eq!(v.read_to_string("/link/passwd").as_deref(), Some("root"));
        assert!(v.lstat("etc/none").is_none());
        assert_eq!(clean("/a/./b/../c/"), "a/c");
    }
}
