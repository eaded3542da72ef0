//! Named volumes, usable by either isolation level.
//!
//! **Representation.** A volume is a directory `<root>/volumes/NAME/`
//! holding `disk.img` (a sparse file with an ext4 filesystem, 1 GiB by
//! default, `--opt size=`), `volume.json` (its record) and `lock`. One
//! representation serves both backends: a VM gets the file as one more
//! virtio-blk disk, which its guest init mounts at the target; a container
//! gets it through a loop device (`LOOP_CONFIGURE` with
//! `LO_FLAGS_AUTOCLEAR`, so the device goes away with the last mount even
//! when sbx is killed) mounted in its own mount namespace. A plain host
//! directory would need virtio-fs to reach a VM; a disk image needs nothing
//! the guest contract lacks, and its size is a real quota.
//!
//! **One user at a time.** An ext4 filesystem mounted by two kernels (a VM
//! and the host, or two VMs) is corrupted, so whoever starts a sandbox
//! takes an exclusive `flock` on the volume's `lock` for as long as the
//! sandbox runs (see [`Lease`]); a second sandbox is refused with a clear
//! error, whichever isolation either uses. Two containers could share one
//! mount of the same loop device; that is not done yet.
//!
//! **References.** Each sandbox lists the volumes it uses in
//! `<sandbox dir>/volumes.json` (see [`usage`]); `volume rm` refuses a
//! volume that a sandbox record still names, `volume prune` removes the
//! ones none names. Anonymous volumes (`-v /path`, the image's `VOLUME`s)
//! are volumes with a random name that go with their sandbox (`--rm`,
//! `rm -v`).

mod disk;
pub mod flags;
mod lease;
mod resolve;
pub mod usage;

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::paths::Root;

pub use disk::{DISK_FILE, FSTYPE, MIN_SIZE};
pub use lease::{hold, Lease};
pub use resolve::Resolved;

/// Size of a volume created without `--opt size=`.
pub const DEFAULT_SIZE: u64 = 1 << 30;
const RECORD: &str = "volume.json";
const LOCK: &str = "lock";
/// Who holds the lock: the sandbox id, for error messages.
const OWNER: &str = "owner";

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("no such volume: {0}")]
    NotFound(String),
    #[error("volume {0} already exists")]
    Exists(String),
    #[error("invalid volume name {0:?}: use letters, digits, '_', '.', '-' (starting with a letter or digit)")]
    BadName(String),
    #[error("invalid volume option {0}")]
    BadOption(String),
    #[error("volume {name} is in use by running sandbox {by}")]
    InUse { name: String, by: String },
    #[error("volume {name} is in use by sandbox {by}: an ext4 volume can be mounted by one sandbox at a time")]
    Busy { name: String, by: String },
    #[error("volume {name} is used by sandbox {ids} (remove it first, or use volume rm -f)")]
    Referenced { name: String, ids: String },
    #[error("{0}: host bind mounts into a VM are not supported yet (virtio-fs is pending); use a named volume instead (-v NAME:{1})")]
    BindIntoVm(String, String),
    #[error("bind mount source {0} does not exist")]
    BindMissing(PathBuf),
    #[error("volume {0} is mounted twice in one sandbox")]
    Twice(String),
    #[error("duplicate mount point {0}")]
    DuplicateTarget(String),
    #[error("{0}")]
    Mkfs(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("volume record {path}: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

impl VolumeError {
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        VolumeError::Io {
            context: context.into(),
            source,
        }
    }
}

/// A volume's record (`volume.json`), also what `volume inspect` prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Volume {
    pub name: String,
    /// Docker's driver name; the only driver.
    pub driver: String,
    /// How the data is kept: `ext4` in `mountpoint`, a disk image.
    pub format: String,
    /// The disk image file.
    pub mountpoint: PathBuf,
    /// Size of the filesystem in bytes.
    pub size: u64,
    pub created: DateTime<Utc>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Made for one sandbox (`-v /path`, an image `VOLUME`), removed with it.
    #[serde(default)]
    pub anonymous: bool,
}

/// What `volume create` asks for.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub size: Option<u64>,
    pub labels: BTreeMap<String, String>,
    pub anonymous: bool,
}

impl CreateOptions {
    /// Docker's `--opt KEY=VALUE`; only `size` means anything here.
    pub fn opt(&mut self, kv: &str) -> Result<(), VolumeError> {
        match kv.split_once('=') {
            Some(("size", v)) => {
                let size = crate::spec::parse_size(v).map_err(VolumeError::BadOption)?;
                if size < MIN_SIZE {
                    return Err(VolumeError::BadOption(format!(
                        "size={v}: the minimum is {}m",
                        MIN_SIZE >> 20
                    )));
                }
                self.size = Some(size);
                Ok(())
            }
            _ => Err(VolumeError::BadOption(format!(
                "{kv:?}: the only option is size=SIZE"
            ))),
        }
    }
}

/// The volumes of one sbx root.
#[derive(Debug, Clone)]
pub struct Volumes {
    root: Root,
}

impl Volumes {
    pub fn new(root: &Root) -> Self {
        Volumes { root: root.clone() }
    }

    pub fn dir(&self) -> PathBuf {
        self.root.dir().join("volumes")
    }

    fn volume_dir(&self, name: &str) -> Result<PathBuf, VolumeError> {
        if !flags::valid_volume_name(name) {
            return Err(VolumeError::BadName(name.to_string()));
        }
        Ok(self.dir().join(name))
    }

    /// Create a volume; `Exists` if the name is taken. The volume is built
    /// in a temporary directory and renamed into place, so a concurrent
    /// create (or a first use) sees it whole or not at all.
    pub fn create(&self, name: &str, opts: &CreateOptions) -> Result<Volume, VolumeError> {
        let dir = self.volume_dir(name)?;
        if dir.exists() {
            return Err(VolumeError::Exists(name.to_string()));
        }
        let base = self.dir();
        fs::create_dir_all(&base)
            .map_err(|e| VolumeError::io(format!("creating {}", base.display()), e))?;
        let tmp = base.join(format!(".{name}.{}.tmp", crate::ids::new_id()));
        let result = self.build(&tmp, &dir, name, opts);
        if result.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        result
    }

    fn build(
        &self,
        tmp: &Path,
        dir: &Path,
        name: &str,
        opts: &CreateOptions,
    ) -> Result<Volume, VolumeError> {
        fs::create_dir(tmp)
            .map_err(|e| VolumeError::io(format!("creating {}", tmp.display()), e))?;
        let size = opts.size.unwrap_or(DEFAULT_SIZE);
        disk::make(&tmp.join(DISK_FILE), size)?;
        let volume = Volume {
            name: name.to_string(),
            driver: "local".into(),
            format: FSTYPE.into(),
            mountpoint: dir.join(DISK_FILE),
            size,
            created: Utc::now(),
            labels: opts.labels.clone(),
            anonymous: opts.anonymous,
        };
        let data = serde_json::to_vec_pretty(&volume).unwrap_or_default();
        fs::write(tmp.join(RECORD), data)
            .map_err(|e| VolumeError::io("writing the volume record", e))?;
        match fs::rename(tmp, dir) {
            Ok(()) => Ok(volume),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EEXIST | libc::ENOTEMPTY)) => {
                Err(VolumeError::Exists(name.to_string()))
            }
            Err(e) => Err(VolumeError::io(format!("creating {}", dir.display()), e)),
        }
    }

    /// The volume `name`, created with default options if missing (as
    /// Docker does on first use). Returns whether this call created it.
    pub fn ensure(&self, name: &str) -> Result<(Volume, bool), VolumeError> {
        match self.get(name) {
            Ok(v) => return Ok((v, false)),
            Err(VolumeError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        match self.create(name, &CreateOptions::default()) {
            Ok(v) => Ok((v, true)),
            // Someone else created it meanwhile.
            Err(VolumeError::Exists(_)) => Ok((self.get(name)?, false)),
            Err(e) => Err(e),
        }
    }

    pub fn get(&self, name: &str) -> Result<Volume, VolumeError> {
        let path = self.volume_dir(name)?.join(RECORD);
        let data = fs::read(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                VolumeError::NotFound(name.to_string())
            } else {
                VolumeError::io(format!("reading {}", path.display()), e)
            }
        })?;
        serde_json::from_slice(&data).map_err(|source| VolumeError::Corrupt { path, source })
    }

    /// Every volume, by name.
    pub fn list(&self) -> Result<Vec<Volume>, VolumeError> {
        let entries = match fs::read_dir(self.dir()) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(VolumeError::io("listing volumes", e)),
        };
        let mut out: Vec<Volume> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                flags::valid_volume_name(&name)
                    .then(|| self.get(&name).ok())
                    .flatten()
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Ids of the sandboxes whose records name the volume.
    pub fn users(&self, name: &str) -> Vec<String> {
        usage::all(&self.root)
            .into_iter()
            .filter(|(_, used)| used.iter().any(|u| u.name == name))
            .map(|(id, _)| id)
            .collect()
    }

    /// Remove a volume. Refused while a sandbox runs with it, and (unless
    /// `force`) while a sandbox record names it.
    pub fn remove(&self, name: &str, force: bool) -> Result<(), VolumeError> {
        let dir = self.volume_dir(name)?;
        if !dir.join(RECORD).exists() {
            return Err(VolumeError::NotFound(name.to_string()));
        }
        if !force {
            let users = self.users(name);
            if !users.is_empty() {
                let ids: Vec<&str> = users.iter().map(|id| crate::ids::short(id)).collect();
                return Err(VolumeError::Referenced {
                    name: name.to_string(),
                    ids: ids.join(", "),
                });
            }
        }
        delete(&self.dir(), name)
    }

    /// Remove every volume no sandbox record names; returns their names
    /// and the bytes their disk images held.
    pub fn prune(&self) -> Result<(Vec<String>, u64), VolumeError> {
        let used: std::collections::HashSet<String> = usage::all(&self.root)
            .into_iter()
            .flat_map(|(_, used)| used.into_iter().map(|u| u.name))
            .collect();
        let (mut removed, mut bytes) = (Vec::new(), 0);
        for v in self.list()? {
            if used.contains(&v.name) {
                continue;
            }
            let held = allocated(&v.mountpoint);
            match self.remove(&v.name, true) {
                Ok(()) => {
                    bytes += held;
                    removed.push(v.name);
                }
                Err(VolumeError::InUse { .. } | VolumeError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok((removed, bytes))
    }
}

/// Delete the volume `name` under `base` (`<root>/volumes`), unless a
/// sandbox runs with it.
fn delete(base: &Path, name: &str) -> Result<(), VolumeError> {
    let dir = base.join(name);
    // Hold the lock while deleting, so no sandbox starts on it meanwhile.
    let _held = lease::try_lock(&dir, name).map_err(|e| match e {
        VolumeError::Busy { name, by } => VolumeError::InUse { name, by },
        e => e,
    })?;
    // Renamed away first: a concurrent first use then creates a new
    // volume rather than finding half of this one.
    let doomed = base.join(format!(".{name}.{}.rm", crate::ids::new_id()));
    fs::rename(&dir, &doomed)
        .map_err(|e| VolumeError::io(format!("removing {}", dir.display()), e))?;
    fs::remove_dir_all(&doomed)
        .map_err(|e| VolumeError::io(format!("removing {}", doomed.display()), e))
}

/// Remove the anonymous volumes a sandbox's spec mounts, once it no
/// longer runs (a detached `--rm` sandbox's monitor, at its end).
pub fn remove_anonymous_of(spec: &crate::spec::SandboxSpec) -> Result<(), VolumeError> {
    for m in &spec.mounts {
        if let crate::spec::MountSource::Volume {
            name,
            dir,
            anonymous: true,
        } = &m.source
        {
            let base = dir.parent().unwrap_or(dir);
            match delete(base, name) {
                Ok(()) | Err(VolumeError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// Bytes a (sparse) file really holds on disk.
pub fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).map(|m| m.blocks() * 512).unwrap_or(0)
}

/// The disk image of the volume whose directory is `dir`.
pub fn disk_path(dir: &Path) -> PathBuf {
    dir.join(DISK_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Mount, MountSource};

    fn spec_with(volumes: &Volumes, names: &[&str]) -> crate::spec::SandboxSpec {
        let mounts: Vec<Mount> = names
            .iter()
            .map(|n| Mount {
                target: format!("/{n}"),
                read_only: false,
                source: MountSource::Volume {
                    name: n.to_string(),
                    dir: volumes.dir().join(n),
                    anonymous: false,
                },
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "id": "f".repeat(64), "name": null, "dir": "/nonexistent",
            "image": {"name": "x", "manifest": "sha256:0", "config": "sha256:0"},
            "rootfs": {"layers": [], "read_only": false},
            "process": {"args": ["true"], "env": [], "cwd": "/", "user": "",
                        "terminal": false, "stdin": false, "rlimits": []},
            "hostname": "h", "network": "none", "limits": {},
            "isolation": "container", "timeout": null, "mounts": mounts,
        }))
        .unwrap()
    }

    #[test]
    fn create_lock_remove() {
        let tmp = tempfile::tempdir().unwrap();
        let volumes = Volumes::new(&Root::new(tmp.path()));
        let mut opts = CreateOptions::default();
        opts.opt("size=16m").unwrap();
        assert!(opts.opt("size=1k").is_err());
        assert!(opts.opt("colour=red").is_err());
        let v = volumes.create("data", &opts).unwrap();
        assert_eq!(v.size, 16 << 20);
        assert!(v.mountpoint.is_file());
        assert!(matches!(
            volumes.create("data", &opts),
            Err(VolumeError::Exists(_))
        ));
        assert!(matches!(
            volumes.create("../x", &opts),
            Err(VolumeError::BadName(_))
        ));
        assert!(!volumes.ensure("data").unwrap().1);
        assert!(volumes.ensure("other").unwrap().1);
        let names: Vec<String> = volumes
            .list()
            .unwrap()
            .into_iter()
            .map(|v| v.name)
            .collect();
        assert_eq!(names, ["data", "other"]);

        let spec = spec_with(&volumes, &["data"]);
        let lease = Lease::acquire(&spec).unwrap();
        assert!(matches!(
            Lease::acquire(&spec),
            Err(VolumeError::Busy { .. })
        ));
        assert!(matches!(
            volumes.remove("data", true),
            Err(VolumeError::InUse { .. })
        ));
        drop(lease);
        volumes.remove("data", false).unwrap();
        assert!(matches!(volumes.get("data"), Err(VolumeError::NotFound(_))));
        let (pruned, _) = volumes.prune().unwrap();
        assert_eq!(pruned, ["other"]);
        assert!(volumes.list().unwrap().is_empty());
    }
}
