//! The one description of what to run: image config plus CLI flags.
//!
//! Both backends consume a [`SandboxSpec`]; nothing in it says how the
//! isolation is achieved, only what the workload must see.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    Container,
    Vm,
}

impl std::fmt::Display for Isolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Isolation::Container => "container",
            Isolation::Vm => "vm",
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxSpec {
    /// 64 hex digits, unique on this host.
    pub id: String,
    pub name: Option<String>,
    /// The per-sandbox state directory (upper dir, generated /etc files).
    pub dir: PathBuf,
    pub image: ImageInfo,
    pub rootfs: Rootfs,
    pub process: Process,
    pub hostname: String,
    pub network: NetworkMode,
    pub limits: Limits,
    pub isolation: Isolation,
    /// Kill the sandbox after this long (the CLI's `--timeout`).
    pub timeout: Option<Duration>,
    /// How a VM is booted (`--isolation=vm` only).
    #[serde(default)]
    pub vm: VmOptions,
    /// Bind mounts, volumes and tmpfs mounts, parents before children.
    #[serde(default)]
    pub mounts: Vec<Mount>,
    /// With [`NetworkMode::Bridge`]: the networks the sandbox is attached
    /// to, its interface `ethN` for the Nth (see [`crate::network`]).
    #[serde(default)]
    pub networks: Vec<crate::network::Attachment>,
    /// Published ports (`-p`, `-P`), host ports already chosen.
    #[serde(default)]
    pub ports: Vec<crate::network::PortMapping>,
}

/// One mount on top of the root filesystem (`-v`, `--mount`, `--tmpfs`,
/// and the image's `VOLUME`s).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Absolute path inside the sandbox, resolved in its root.
    pub target: String,
    pub read_only: bool,
    pub source: MountSource,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum MountSource {
    /// A host file or directory (containers only).
    Bind { path: PathBuf },
    /// A named (or anonymous) volume: an ext4 disk image, see
    /// [`crate::volumes`]. `dir` is the volume's directory.
    Volume {
        name: String,
        dir: PathBuf,
        anonymous: bool,
    },
    /// A fresh tmpfs; `size` in bytes, `mode` as chmod takes it.
    Tmpfs {
        size: Option<u64>,
        mode: Option<u32>,
    },
}

/// VM-only choices: which engine, which guest kernel.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct VmOptions {
    /// `--vm-engine`; None: chosen from what KVM this host has.
    pub engine: Option<VmEngine>,
    /// `--kernel`; None: the one guest-kernel/build.sh built.
    pub kernel: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VmEngine {
    /// sbx's own VMM on KVM.
    Kvm,
    /// `qemu-system-x86_64 -M microvm`.
    Qemu,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageInfo {
    /// The name the user gave, normalised (`busybox:latest`).
    pub name: String,
    /// The manifest digest (`sha256:…`).
    pub manifest: String,
    /// The config digest: Docker's image id.
    pub config: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rootfs {
    /// Unpacked layer directories, bottom layer first.
    pub layers: Vec<PathBuf>,
    pub read_only: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Process {
    /// argv; `args[0]` is looked up in the sandbox's PATH when it has no '/'.
    pub args: Vec<String>,
    /// `KEY=VALUE` entries, image Env first, then flags (later wins).
    pub env: Vec<String>,
    /// Absolute working directory inside the sandbox.
    pub cwd: String,
    /// `user[:group]` as names or numbers, resolved against the sandbox's
    /// own /etc/passwd and /etc/group; empty means root.
    pub user: String,
    /// Allocate a pseudo-terminal for the workload (`-t`).
    pub terminal: bool,
    /// Keep stdin open (`-i`).
    pub stdin: bool,
    pub rlimits: Vec<Rlimit>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// A private network namespace with only `lo`.
    None,
    /// The host's network namespace (containers only).
    Host,
    /// A private network namespace (or VM) with one interface per bridge
    /// network in [`SandboxSpec::networks`].
    Bridge,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Limits {
    /// Memory limit in bytes (`--memory`); for a VM, its RAM.
    pub memory: Option<u64>,
    /// CPU quota in CPUs (`--cpus`); for a VM, the vCPU count (rounded up).
    pub cpus: Option<f64>,
    /// Maximum number of tasks (`--pids-limit`).
    pub pids: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    /// `RLIMIT_*` resource number as the kernel numbers it.
    pub resource: u32,
    pub soft: u64,
    pub hard: u64,
}

/// Parse a size the way Docker does: `64m`, `1g`, `512k`, `100b`, `1048576`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').filter(|r| !r.is_empty()).unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let n: f64 = num.parse().map_err(|_| {
        format!("invalid size {s:?}: expected a number with an optional unit b, k, m, g")
    })?;
    if !n.is_finite() || n < 0.0 {
        return Err(format!("invalid size {s:?}: must be a positive number"));
    }
    let bytes = n * mult as f64;
    if bytes > u64::MAX as f64 {
        return Err(format!("invalid size {s:?}: too large"));
    }
    Ok(bytes as u64)
}

/// Names of the rlimits `--ulimit` accepts, as Docker spells them.
pub fn rlimit_resource(name: &str) -> Option<u32> {
    Some(match name {
        "core" => libc::RLIMIT_CORE,
        "cpu" => libc::RLIMIT_CPU,
        "data" => libc::RLIMIT_DATA,
        "fsize" => libc::RLIMIT_FSIZE,
        "locks" => libc::RLIMIT_LOCKS,
        "memlock" => libc::RLIMIT_MEMLOCK,
        "msgqueue" => libc::RLIMIT_MSGQUEUE,
        "nice" => libc::RLIMIT_NICE,
        "nofile" => libc::RLIMIT_NOFILE,
        "nproc" => libc::RLIMIT_NPROC,
        "rss" => libc::RLIMIT_RSS,
        "rtprio" => libc::RLIMIT_RTPRIO,
        "rttime" => libc::RLIMIT_RTTIME,
        "sigpending" => libc::RLIMIT_SIGPENDING,
        "stack" => libc::RLIMIT_STACK,
        _ => return None,
    })
}

/// Parse `--ulimit NAME=SOFT[:HARD]` (`-1` means unlimited).
pub fn parse_ulimit(s: &str) -> Result<Rlimit, String> {
    let (name, vals) = s
        .split_once('=')
        .ok_or_else(|| format!("invalid ulimit {s:?}: expected NAME=SOFT[:HARD]"))?;
    let resource = rlimit_resource(name)
        .ok_or_else(|| format!("invalid ulimit {s:?}: unknown resource {name:?}"))?;
    let num = |v: &str| -> Result<u64, String> {
        if v == "-1" || v == "unlimited" {
            return Ok(libc::RLIM_INFINITY);
        }
        v.parse()
            .map_err(|_| format!("invalid ulimit {s:?}: {v:?} is not a number"))
    };
    let (soft, hard) = match vals.split_once(':') {
        Some((a, b)) => (num(a)?, num(b)?),
        None => (num(vals)?, num(vals)?),
    };
    if soft > hard {
        return Err(format!(
            "invalid ulimit {s:?}: soft limit exceeds hard limit"
        ));
    }
    Ok(Rlimit {
        resource,
        soft,
        hard,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64m").unwrap(), 64 << 20);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("512kb").unwrap(), 512 << 10);
        assert_eq!(parse_size("100").unwrap(), 100);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("-5m").is_err());
    }

    #[test]
    fn ulimits() {
        let r = parse_ulimit("nofile=1024:2048").unwrap();
        assert_eq!((r.soft, r.hard), (1024, 2048));
        assert!(parse_ulimit("nofile=10:5").is_err());
        assert!(parse_ulimit("bogus=1").is_err());
    }
}
