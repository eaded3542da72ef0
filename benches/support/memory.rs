//! What an idle sandbox costs the host, measured one way for every
//! runtime: the memory cgroup(s) its processes are charged to, plus the PSS
//! of every host process kept alive for it that is outside those cgroups
//! (sbx's foreground process, crun/runc's, conmon, the VMM).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// `Rss:` and `Pss:` of /proc/PID/smaps_rollup, in KiB.
pub fn rss_pss_kib(pid: i32) -> Option<(u64, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    };
    Some((field("Rss:")?, field("Pss:")?))
}

pub fn comm(pid: i32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim().to_string())
        .unwrap_or_default()
}

pub fn parent(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(1)?.parse().ok()
}

/// `pid` and all its descendants.
pub fn tree(pid: i32) -> Vec<i32> {
    let all: Vec<(i32, i32)> = fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .filter_map(|p: i32| Some((p, parent(p)?)))
                .collect()
        })
        .unwrap_or_default();
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        out.extend(all.iter().filter(|(_, pp)| *pp == parent).map(|(p, _)| *p));
        i += 1;
    }
    out
}

/// The memory cgroup directory `pid` is charged to (v2, or v1's memory
/// hierarchy), as /proc/PID/cgroup names it.
pub fn memory_cgroup(pid: &str) -> Option<PathBuf> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let v2 = Path::new(CGROUP_ROOT).join("cgroup.controllers").exists();
    text.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
        let rel = path.trim_start_matches('/');
        if v2 && controllers.is_empty() {
            Some(Path::new(CGROUP_ROOT).join(rel))
        } else if !v2 && controllers.split(',').any(|c| c == "memory") {
            Some(Path::new(CGROUP_ROOT).join("memory").join(rel))
        } else {
            None
        }
    })
}

/// Bytes charged to a memory cgroup now.
pub fn cgroup_usage(dir: &Path) -> Option<u64> {
    ["memory.current", "memory.usage_in_bytes"]
        .iter()
        .find_map(|f| fs::read_to_string(dir.join(f)).ok())
        .and_then(|v| v.trim().parse().ok())
}

/// One host process of a sandbox.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Proc {
    pub pid: i32,
    pub comm: String,
    pub rss_kib: u64,
    pub pss_kib: u64,
    /// Charged to the sandbox's own cgroup (so not added again).
    pub in_sandbox_cgroup: bool,
}

/// What one sandbox costs.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Cost {
    /// The sandbox's own memory cgroups and their usage.
    pub cgroups: Vec<(PathBuf, u64)>,
    pub cgroup_kib: u64,
    /// PSS of the host processes outside those cgroups.
    pub host_pss_kib: u64,
    pub processes: Vec<Proc>,
}

impl Cost {
    pub fn total_kib(&self) -> u64 {
        self.cgroup_kib + self.host_pss_kib
    }
}

/// The pid namespace `pid` is in (the target of /proc/PID/ns/pid).
fn pid_ns(pid: &str) -> Option<PathBuf> {
    fs::read_link(format!("/proc/{pid}/ns/pid")).ok()
}

/// The cost of the sandbox whose processes are `root_pid`'s tree. A
/// process in another pid namespace is the sandbox's own: its memory
/// cgroup counts (unless it is this bench's, i.e. no cgroup was made; then
/// its PSS does). A process in ours is kept alive for the sandbox on the
/// host (sbx run, crun/runc run, conmon, a VMM): its PSS counts.
pub fn cost_of(root_pid: i32) -> Cost {
    let own_cgroup = memory_cgroup("self");
    let own_ns = pid_ns("self");
    let mut cgroups = BTreeSet::new();
    let mut placed = Vec::new();
    for p in tree(root_pid) {
        let id = p.to_string();
        let inside = pid_ns(&id).is_some_and(|ns| Some(ns) != own_ns);
        let cg = memory_cgroup(&id).filter(|c| inside && Some(c) != own_cgroup.as_ref());
        if let Some(c) = &cg {
            cgroups.insert(c.clone());
        }
        placed.push((p, cg));
    }
    let mut cost = Cost::default();
    for c in cgroups {
        let used = cgroup_usage(&c).unwrap_or(0);
        cost.cgroup_kib += used / 1024;
        cost.cgroups.push((c, used));
    }
    for (pid, cg) in placed {
        let Some((rss_kib, pss_kib)) = rss_pss_kib(pid) else {
            continue;
        };
        let in_sandbox_cgroup = cg.is_some();
        if !in_sandbox_cgroup {
            cost.host_pss_kib += pss_kib;
        }
        cost.processes.push(Proc {
            pid,
            comm: comm(pid),
            rss_kib,
            pss_kib,
            in_sandbox_cgroup,
        });
    }
    cost
}

/// A VMM's resident memory split into guest RAM (its largest anonymous
/// mapping of at least `guest_mib`), QEMU's TCG translation cache (its
/// anonymous executable mappings; none under KVM) and the rest.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct VmmSplit {
    pub rss_kib: u64,
    pub pss_kib: u64,
    /// Guest RAM the host has backed (touched by the guest or the loader).
    pub guest_rss_kib: u64,
    /// TCG's code buffer (translated guest code): a cost of emulation.
    pub tcg_code_kib: u64,
    /// RSS less guest RAM and the TCG code buffer.
    pub vmm_rss_kib: u64,
    pub vmm_pss_kib: u64,
}

pub fn vmm_split(pid: i32, guest_mib: u64) -> Option<VmmSplit> {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    let (rss_kib, pss_kib) = rss_pss_kib(pid)?;
    let kib = |l: &str, name: &str| -> Option<u64> {
        l.strip_prefix(name)?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    };
    // Per mapping: (anonymous, executable, size, rss, pss).
    let mut maps: Vec<(bool, bool, u64, u64, u64)> = Vec::new();
    for l in text.lines() {
        let first = l.split(' ').next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            // "start-end perms offset dev inode [path]": no path, anonymous.
            let mut f = l.split_whitespace();
            let exec = f.nth(1).is_some_and(|p| p.contains('x'));
            let anon = f.nth(3).is_none();
            maps.push((anon, exec, 0, 0, 0));
        } else if let Some(m) = maps.last_mut() {
            if let Some(v) = kib(l, "Size:") {
                m.2 = v;
            } else if let Some(v) = kib(l, "Rss:") {
                m.3 = v;
            } else if let Some(v) = kib(l, "Pss:") {
                m.4 = v;
            }
        }
    }
    let guest = maps
        .iter()
        .filter(|m| m.0 && !m.1 && m.2 >= guest_mib * 1024)
        .max_by_key(|m| m.2)?;
    let (tcg_rss, tcg_pss) = maps
        .iter()
        .filter(|m| m.0 && m.1)
        .fold((0, 0), |(r, p), m| (r + m.3, p + m.4));
    Some(VmmSplit {
        rss_kib,
        pss_kib,
        guest_rss_kib: guest.3,
        tcg_code_kib: tcg_rss,
        vmm_rss_kib: rss_kib.saturating_sub(guest.3 + tcg_rss),
        vmm_pss_kib: pss_kib.saturating_sub(guest.4 + tcg_pss),
    })
}

/// This process's peak RSS (`VmHWM`), in KiB.
pub fn own_hwm_kib() -> u64 {
    fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
