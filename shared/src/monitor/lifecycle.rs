//! What a detached sandbox's monitor keeps beside the record:
//! `<dir>/lifecycle.json` (restart policy and count, stop signal, the
//! monitor's own pid and start time, what the backend reports), and the
//! status a reader derives from both files and from which processes are
//! really alive.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::spec::SandboxSpec;
use crate::state::{Record, Status};

use super::MonitorError;

/// `--restart`: what the monitor does when the workload ends by itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "kebab-case")]
pub enum RestartPolicy {
    #[default]
    No,
    /// Restart after a non-zero exit, at most `max` times (0: no limit).
    OnFailure {
        max: u32,
    },
    Always,
}

impl RestartPolicy {
    /// Parse Docker's spelling: `no`, `on-failure[:N]`, `always`
    /// (`unless-stopped` is `always` here: no daemon restarts on boot).
    pub fn parse(s: &str) -> Result<RestartPolicy, String> {
        match s.split_once(':') {
            None if s == "no" => Ok(RestartPolicy::No),
            None if s == "always" || s == "unless-stopped" => Ok(RestartPolicy::Always),
            None if s == "on-failure" => Ok(RestartPolicy::OnFailure { max: 0 }),
            Some(("on-failure", n)) => n
                .parse()
                .map(|max| RestartPolicy::OnFailure { max })
                .map_err(|_| format!("invalid --restart {s:?}: {n:?} is not a count")),
            _ => Err(format!(
                "invalid --restart {s:?}: use no, on-failure[:N] or always"
            )),
        }
    }

    /// Whether a workload that ended with `code`, after `count` restarts,
    /// is started again.
    pub fn restarts(self, code: i32, count: u32) -> bool {
        match self {
            RestartPolicy::No => false,
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure { max } => code != 0 && (max == 0 || count < max),
        }
    }
}

impl std::fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RestartPolicy::No => f.write_str("no"),
            RestartPolicy::Always => f.write_str("always"),
            RestartPolicy::OnFailure { max: 0 } => f.write_str("on-failure"),
            RestartPolicy::OnFailure { max } => write!(f, "on-failure:{max}"),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Lifecycle {
    #[serde(default)]
    pub restart: RestartPolicy,
    #[serde(default)]
    pub restart_count: u32,
    /// The image's STOPSIGNAL (`SIGTERM` when it has none).
    #[serde(default)]
    pub stop_signal: Option<String>,
    #[serde(default)]
    pub monitor_pid: Option<i32>,
    /// The monitor's start time (/proc/PID/stat field 22).
    #[serde(default)]
    pub monitor_start: Option<u64>,
    /// When the workload last started.
    #[serde(default)]
    pub started: Option<DateTime<Utc>>,
    /// Why the last start failed, or that the monitor died.
    #[serde(default)]
    pub error: Option<String>,
    /// Backend-specific facts ([`crate::backend::Sandbox::details`]).
    #[serde(default)]
    pub details: serde_json::Value,
    /// The workload ended and the monitor will start it again.
    #[serde(default)]
    pub restarting: bool,
}

pub fn path(dir: &Path) -> PathBuf {
    dir.join("lifecycle.json")
}

impl Lifecycle {
    /// The lifecycle of the sandbox in `dir`; a foreground sandbox has none
    /// and reads as the default.
    pub fn load(dir: &Path) -> Lifecycle {
        fs::read(path(dir))
            .ok()
            .and_then(|d| serde_json::from_slice(&d).ok())
            .unwrap_or_default()
    }

    /// Write atomically (temp file + rename).
    pub fn save(&self, dir: &Path) -> Result<(), MonitorError> {
        let tmp = dir.join(".lifecycle.json.tmp");
        let data = serde_json::to_vec_pretty(self).map_err(io::Error::other);
        data.and_then(|d| fs::write(&tmp, d))
            .and_then(|()| fs::rename(&tmp, path(dir)))
            .map_err(|e| MonitorError::io(format!("writing {}", path(dir).display()), e))
    }

    /// Whether the monitor that wrote this is still alive.
    pub fn monitor_alive(&self) -> bool {
        match (self.monitor_pid, self.monitor_start) {
            (Some(pid), Some(start)) => alive(pid, start),
            _ => false,
        }
    }
}

/// The spec a sandbox was created from, kept as `<dir>/spec.json` so
/// `start` can run it again and `inspect` can show it.
pub fn save_spec(spec: &SandboxSpec) -> Result<(), MonitorError> {
    let path = spec.dir.join("spec.json");
    serde_json::to_vec_pretty(spec)
        .map_err(io::Error::other)
        .and_then(|d| fs::write(&path, d))
        .map_err(|e| MonitorError::io(format!("writing {}", path.display()), e))
}

pub fn load_spec(dir: &Path) -> Result<SandboxSpec, MonitorError> {
    let path = dir.join("spec.json");
    fs::read(&path)
        .and_then(|d| serde_json::from_slice(&d).map_err(io::Error::other))
        .map_err(|e| MonitorError::io(format!("reading {}", path.display()), e))
}

/// Whether `pid` is the process that started at `start` and has not ended
/// (a zombie has ended).
pub fn alive(pid: i32, start: u64) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let Some(rest) = stat.rfind(')').and_then(|i| stat.get(i + 2..)) else {
        return false;
    };
    let mut fields = rest.split(' ');
    let state = fields.next().unwrap_or("");
    if state == "Z" || state == "X" {
        return false;
    }
    fields.nth(18).and_then(|s| s.parse::<u64>().ok()) == Some(start)
}

/// The status shown by `ps` and `inspect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Shown {
    Created,
    Running,
    /// Between a workload's end and its restart.
    Restarting,
    Exited,
}

impl std::fmt::Display for Shown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Shown::Created => "created",
            Shown::Running => "running",
            Shown::Restarting => "restarting",
            Shown::Exited => "exited",
        })
    }
}

/// A record as it really is now.
#[derive(Debug, Clone)]
pub struct View {
    pub status: Shown,
    pub exit_code: Option<i32>,
    pub finished: Option<DateTime<Utc>>,
    pub error: Option<String>,
}

/// Exit status reported for a workload whose monitor died: the
/// parent-death signal killed it.
pub const KILLED: i32 = 128 + libc::SIGKILL;

pub fn view(record: &Record, life: &Lifecycle) -> View {
    let has_monitor = life.monitor_pid.is_some();
    let monitor = has_monitor && life.monitor_alive();
    let workload = match (record.pid, record.pid_start) {
        (Some(pid), Some(start)) => alive(pid, start),
        _ => false,
    };
    let mut v = View {
        status: Shown::Exited,
        exit_code: record.exit_code,
        finished: record.finished,
        error: life.error.clone(),
    };
    match record.status {
        Status::Created if has_monitor && !monitor => {
            v.exit_code = v.exit_code.or(Some(KILLED));
            v.error = Some("the monitor process died before the workload started".into());
        }
        Status::Created => v.status = Shown::Created,
        Status::Running if workload && (monitor || !has_monitor) => v.status = Shown::Running,
        Status::Running => {
            v.exit_code = v.exit_code.or(Some(KILLED));
            if has_monitor && !monitor {
                v.error = Some("the monitor process died".into());
            }
        }
        Status::Exited if monitor && life.restarting => v.status = Shown::Restarting,
        Status::Exited => {}
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_policies() {
        assert_eq!(RestartPolicy::parse("no").unwrap(), RestartPolicy::No);
        assert_eq!(
            RestartPolicy::parse("on-failure:2").unwrap(),
            RestartPolicy::OnFailure { max: 2 }
        );
        assert!(RestartPolicy::parse("on-failure:x").is_err());
        assert!(RestartPolicy::parse("sometimes").is_err());
        let p = RestartPolicy::OnFailure { max: 2 };
        assert!(p.restarts(1, 0) && p.restarts(1, 1) && !p.restarts(1, 2));
        assert!(!p.restarts(0, 0));
        assert!(RestartPolicy::Always.restarts(0, 100));
        assert_eq!(p.to_string(), "on-failure:2");
    }

    #[test]
    fn own_process_is_alive_and_a_wrong_start_time_is_not() {
        let me = std::process::id() as i32;
        let start = crate::state::proc_start_time(me).unwrap();
        assert!(alive(me, start));
        assert!(!alive(me, start + 1));
    }
}
