//! Sandbox records: one directory per sandbox under `<root>/sandboxes`.
//!
//! There is no daemon. A record is written when a sandbox is created and
//! updated when it starts and ends; a record that claims to be running is
//! checked against the pid and that pid's start time, so a monitor that died
//! shows as exited, never as running.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::paths::Root;
use crate::spec::{ImageInfo, Isolation};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("the name {0:?} is already in use by sandbox {1}")]
    NameInUse(String, String),
    #[error("invalid sandbox name {0:?}: use letters, digits, '_', '.', '-' (starting with a letter or digit)")]
    BadName(String),
    #[error("no such sandbox: {0}")]
    NotFound(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("sandbox record {path}: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> StateError {
    let context = context.into();
    move |source| StateError::Io { context, source }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Created,
    Running,
    Exited,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub name: Option<String>,
    pub image: ImageInfo,
    pub isolation: Isolation,
    pub command: Vec<String>,
    pub created: DateTime<Utc>,
    pub status: Status,
    /// Host pid of the workload (container) or VMM (vm) while running.
    pub pid: Option<i32>,
    /// That pid's start time in clock ticks since boot (/proc/PID/stat
    /// field 22): a recycled pid does not match it.
    pub pid_start: Option<u64>,
    pub exit_code: Option<i32>,
    pub finished: Option<DateTime<Utc>>,
    /// Removed when the workload ends (`--rm`).
    pub auto_remove: bool,
}

impl Record {
    /// Whether the record's process is really alive (not a recycled pid).
    pub fn is_running(&self) -> bool {
        match (self.status, self.pid, self.pid_start) {
            (Status::Running, Some(pid), Some(start)) => proc_start_time(pid) == Some(start),
            _ => false,
        }
    }
}

/// Field 22 of /proc/PID/stat: when the process started.
pub fn proc_start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields
    // are counted from the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && name.len() <= 128
}

pub struct State {
    root: Root,
}

impl State {
    pub fn new(root: &Root) -> Self {
        State { root: root.clone() }
    }

    pub fn dir(&self, id: &str) -> PathBuf {
        self.root.sandbox(id)
    }

    /// Create the sandbox directory and claim its name. Fails without side
    /// effects when the name is taken.
    pub fn create(&self, record: &Record) -> Result<PathBuf, StateError> {
        let dir = self.dir(&record.id);
        fs::create_dir_all(self.root.sandboxes())
            .map_err(io_err("creating the sandbox directory"))?;
        if let Some(name) = &record.name {
            self.claim_name(name, &record.id)?;
        }
        if let Err(e) = fs::create_dir(&dir) {
            if let Some(name) = &record.name {
                let _ = fs::remove_file(self.root.names().join(name));
            }
            return Err(io_err(format!("creating {}", dir.display()))(e));
        }
        self.save(record)?;
        Ok(dir)
    }

    fn claim_name(&self, name: &str, id: &str) -> Result<(), StateError> {
        if !valid_name(name) {
            return Err(StateError::BadName(name.to_string()));
        }
        let names = self.root.names();
        fs::create_dir_all(&names).map_err(io_err("creating the names directory"))?;
        let path = names.join(name);
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut f) => f
                .write_all(id.as_bytes())
                .map_err(io_err("claiming a name")),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let owner = fs::read_to_string(&path).unwrap_or_default();
                // A name whose sandbox record is gone (a crash between
                // claiming and creating) is free again.
                if !owner.is_empty() && !self.dir(&owner).exists() {
                    fs::write(&path, id).map_err(io_err("claiming a name"))?;
                    return Ok(());
                }
                Err(StateError::NameInUse(
                    name.to_string(),
                    crate::ids::short(&owner).to_string(),
                ))
            }
            Err(e) => Err(io_err("claiming a name")(e)),
        }
    }

    /// Write the record atomically (temp file + rename).
    pub fn save(&self, record: &Record) -> Result<(), StateError> {
        let dir = self.dir(&record.id);
        let tmp = dir.join(".record.json.tmp");
        let data = serde_json::to_vec_pretty(record).expect("records always serialise");
        fs::write(&tmp, data).map_err(io_err("writing the sandbox record"))?;
        fs::rename(&tmp, dir.join("record.json")).map_err(io_err("writing the sandbox record"))
    }

    pub fn load(&self, id: &str) -> Result<Record, StateError> {
        let path = self.dir(id).join("record.json");
        let data = fs::read(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                StateError::NotFound(id.to_string())
            } else {
                io_err(format!("reading {}", path.display()))(e)
            }
        })?;
        serde_json::from_slice(&data).map_err(|source| StateError::Corrupt { path, source })
    }

    /// Every readable record. Records being created or removed concurrently
    /// are skipped rather than reported as errors.
    pub fn list(&self) -> Result<Vec<Record>, StateError> {
        let entries = match fs::read_dir(self.root.sandboxes()) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("listing sandboxes")(e)),
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let id = entry.file_name().to_string_lossy().into_owned();
            if let Ok(r) = self.load(&id) {
                out.push(r);
            }
        }
        out.sort_by_key(|r| std::cmp::Reverse(r.created));
        Ok(out)
    }

    /// Remove the sandbox directory and release its name.
    pub fn remove(&self, record: &Record) -> Result<(), StateError> {
        if let Some(name) = &record.name {
            let path = self.root.names().join(name);
            if fs::read_to_string(&path).ok().as_deref() == Some(record.id.as_str()) {
                let _ = fs::remove_file(&path);
            }
        }
        remove_tree(&self.dir(&record.id))
    }
}

pub fn remove_tree(path: &Path) -> Result<(), StateError> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(format!("removing {}", path.display()))(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("web-1.a_b"));
        assert!(!valid_name("-x"));
        assert!(!valid_name("../etc"));
        assert!(!valid_name(""));
    }

    #[test]
    fn own_start_time_is_readable() {
        assert!(proc_start_time(std::process::id() as i32).is_some());
    }
}
