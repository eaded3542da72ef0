//! Resource limits through cgroups: v2 where the unified hierarchy holds the
//! controllers, v1 otherwise.
//!
//! These hosts are hybrid (v1 controllers plus a v2 mount at
//! /sys/fs/cgroup/unified holding only hugetlb): that counts as v1. Each
//! sandbox gets `sbx/<id>` in every hierarchy it uses; the child joins them
//! itself (writing 0 to cgroup.procs) before it unshares its cgroup namespace,
//! so no parent/child handshake is needed.
//!
//! A sandbox joins only the hierarchies it has limits in. Attaching a task in
//! cgroup v1 waits for an RCU grace period per hierarchy (measured here: 4 to
//! 12 ms each, more than the whole rest of a container start), so a sandbox
//! with no limits joins none and its stats come from its processes instead.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sbx_shared::backend::Stats;
use sbx_shared::spec::Limits;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The CFS period `--cpus` quotas are expressed against (Docker's).
const CPU_PERIOD_US: u64 = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroup {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0} limit requested but this host has no {0} cgroup controller")]
    NoController(&'static str),
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    fs::write(path, value).map_err(|source| CgroupError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

/// The cgroup directories of one sandbox.
#[derive(Debug)]
pub struct Cgroup {
    version: Version,
    /// v2: one directory; v1: one per controller used (memory, cpu, pids).
    dirs: Vec<PathBuf>,
}

fn version() -> Version {
    if Path::new(CGROUP_ROOT).join("cgroup.controllers").exists() {
        Version::V2
    } else {
        Version::V1
    }
}

impl Cgroup {
    /// Create the sandbox's cgroups and write its limits. Nothing is left
    /// behind on failure.
    pub fn create(id: &str, limits: &Limits) -> Result<Cgroup, CgroupError> {
        if limits.memory.is_none() && limits.cpus.is_none() && limits.pids.is_none() {
            return Ok(Cgroup {
                version: Version::V1,
                dirs: Vec::new(),
            });
        }
        let cg = match version() {
            Version::V2 => Self::create_v2(id)?,
            Version::V1 => Self::create_v1(id, limits)?,
        };
        if let Err(e) = cg.apply(limits) {
            cg.remove();
            return Err(e);
        }
        Ok(cg)
    }

    fn create_v2(id: &str) -> Result<Cgroup, CgroupError> {
        let parent = Path::new(CGROUP_ROOT).join("sbx");
        mkdir(&parent)?;
        // Delegate the controllers we use down to the per-sandbox groups;
        // a controller the host does not offer is left out.
        let available = fs::read_to_string(Path::new(CGROUP_ROOT).join("cgroup.controllers"))
            .unwrap_or_default();
        let wanted: Vec<String> = ["memory", "cpu", "pids"]
            .iter()
            .filter(|c| available.split_whitespace().any(|a| a == **c))
            .map(|c| format!("+{c}"))
            .collect();
        if !wanted.is_empty() {
            let line = wanted.join(" ");
            for dir in [Path::new(CGROUP_ROOT), parent.as_path()] {
                let control = dir.join("cgroup.subtree_control");
                let current = fs::read_to_string(&control).unwrap_or_default();
                if wanted
                    .iter()
                    .any(|w| !current.split_whitespace().any(|c| c == &w[1..]))
                {
                    write(&control, &line)?;
                }
            }
        }
        let dir = parent.join(id);
        mkdir(&dir)?;
        Ok(Cgroup {
            version: Version::V2,
            dirs: vec![dir],
        })
    }

    fn create_v1(id: &str, limits: &Limits) -> Result<Cgroup, CgroupError> {
        let mut cg = Cgroup {
            version: Version::V1,
            dirs: Vec::new(),
        };
        for (controller, needed) in [
            ("memory", limits.memory.is_some()),
            ("cpu", limits.cpus.is_some()),
            ("pids", limits.pids.is_some()),
        ] {
            if !needed {
                continue;
            }
            let hierarchy = Path::new(CGROUP_ROOT).join(controller);
            if !hierarchy.exists() {
                cg.remove();
                return Err(CgroupError::NoController(controller));
            }
            let dir = hierarchy.join("sbx").join(id);
            if let Err(e) = fs::create_dir_all(&dir) {
                cg.remove();
                return Err(CgroupError::Io {
                    path: dir,
                    source: e,
                });
            }
            cg.dirs.push(dir);
        }
        Ok(cg)
    }

    fn dir_for(&self, controller: &str) -> Option<&Path> {
        match self.version {
            Version::V2 => self.dirs.first().map(PathBuf::as_path),
            Version::V1 => self
                .dirs
                .iter()
                .find(|d| {
                    d.parent()
                        .and_then(Path::parent)
                        .is_some_and(|h| h.ends_with(controller))
                })
                .map(PathBuf::as_path),
        }
    }

    fn apply(&self, limits: &Limits) -> Result<(), CgroupError> {
        if let Some(mem) = limits.memory {
            let dir = self
                .dir_for("memory")
                .ok_or(CgroupError::NoController("memory"))?;
            match self.version {
                Version::V2 => {
                    write(&dir.join("memory.max"), &mem.to_string())?;
                    // No swap beyond the limit, as Docker's default
                    // (--memory-swap = 2×memory would allow; we keep it strict).
                    let swap = dir.join("memory.swap.max");
                    if swap.exists() {
                        write(&swap, "0")?;
                    }
                }
                Version::V1 => {
                    write(&dir.join("memory.limit_in_bytes"), &mem.to_string())?;
                    let memsw = dir.join("memory.memsw.limit_in_bytes");
                    if memsw.exists() {
                        write(&memsw, &mem.to_string())?;
                    }
                }
            }
        }
        if let Some(cpus) = limits.cpus {
            let dir = self
                .dir_for("cpu")
                .ok_or(CgroupError::NoController("cpu"))?;
            let quota = ((cpus * CPU_PERIOD_US as f64).round() as u64).max(1000);
            match self.version {
                Version::V2 => write(&dir.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?,
                Version::V1 => {
                    write(&dir.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                    write(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
                }
            }
        }
        if let Some(pids) = limits.pids {
            let dir = self
                .dir_for("pids")
                .ok_or(CgroupError::NoController("pids"))?;
            let value = if pids <= 0 {
                "max".to_string()
            } else {
                pids.to_string()
            };
            write(&dir.join("pids.max"), &value)?;
        }
        Ok(())
    }

    /// No cgroups (a process that only joined a sandbox's).
    pub fn none() -> Cgroup {
        Cgroup {
            version: Version::V1,
            dirs: Vec::new(),
        }
    }

    /// The cgroups a sandbox created earlier (by another process) still
    /// has: for `exec` to join them, and to remove them after its monitor
    /// was killed.
    pub fn existing(id: &str) -> Cgroup {
        let version = version();
        let candidates: Vec<PathBuf> = match version {
            Version::V2 => vec![Path::new(CGROUP_ROOT).join("sbx").join(id)],
            Version::V1 => ["memory", "cpu", "pids"]
                .iter()
                .map(|c| Path::new(CGROUP_ROOT).join(c).join("sbx").join(id))
                .collect(),
        };
        Cgroup {
            version,
            dirs: candidates.into_iter().filter(|d| d.is_dir()).collect(),
        }
    }

    /// The `cgroup.procs` files the child writes 0 into to join.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// Whether the sandbox is in any cgroup at all.
    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty()
    }

    pub fn stats(&self) -> Stats {
        let read = |c: &str, f: &str| -> Option<String> {
            fs::read_to_string(self.dir_for(c)?.join(f)).ok()
        };
        let num = |s: Option<String>| s.and_then(|s| s.trim().parse::<u64>().ok()).unwrap_or(0);
        match self.version {
            Version::V2 => Stats {
                memory_bytes: num(read("memory", "memory.current")),
                cpu_ns: read("cpu", "cpu.stat")
                    .and_then(|s| {
                        s.lines().find_map(|l| {
                            l.strip_prefix("usage_usec ")
                                .and_then(|v| v.trim().parse::<u64>().ok())
                        })
                    })
                    .unwrap_or(0)
                    * 1000,
                pids: num(read("pids", "pids.current")),
            },
            Version::V1 => Stats {
                memory_bytes: num(read("memory", "memory.usage_in_bytes")),
                cpu_ns: num(read("cpu", "cpuacct.usage")),
                pids: num(read("pids", "pids.current")),
            },
        }
    }

    /// Remove the sandbox's cgroups. Tasks of a pid namespace whose init has
    /// exited are being killed by the kernel; wait briefly for them to go.
    pub fn remove(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        for dir in &self.dirs {
            loop {
                match fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(_) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(2))
                    }
                    Err(_) => break,
                }
            }
        }
    }
}

fn mkdir(path: &Path) -> Result<(), CgroupError> {
    match fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(CgroupError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}
