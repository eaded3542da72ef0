//! Which volumes a sandbox uses: `<sandbox dir>/volumes.json`, written
//! when the sandbox is created and gone with its directory. `volume rm`
//! and `volume prune` read these; `rm -v` and `--rm` remove the anonymous
//! ones.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{VolumeError, Volumes};
use crate::paths::Root;

const FILE: &str = "volumes.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsedVolume {
    pub name: String,
    pub anonymous: bool,
}

/// Record the volumes of the sandbox whose directory is `dir`.
pub fn save(dir: &Path, used: &[UsedVolume]) -> Result<(), VolumeError> {
    if used.is_empty() {
        return Ok(());
    }
    let data = serde_json::to_vec_pretty(used).unwrap_or_default();
    let path = dir.join(FILE);
    std::fs::write(&path, data)
        .map_err(|e| VolumeError::io(format!("writing {}", path.display()), e))
}

/// The volumes the sandbox in `dir` uses (none if it never wrote any).
pub fn load(dir: &Path) -> Vec<UsedVolume> {
    std::fs::read(dir.join(FILE))
        .ok()
        .and_then(|d| serde_json::from_slice(&d).ok())
        .unwrap_or_default()
}

/// Every sandbox's volumes: `(sandbox id, volumes)`.
pub fn all(root: &Root) -> Vec<(String, Vec<UsedVolume>)> {
    let Ok(entries) = std::fs::read_dir(root.sandboxes()) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                load(&e.path()),
            )
        })
        .filter(|(_, used)| !used.is_empty())
        .collect()
}

/// Remove the anonymous volumes of the sandbox in `dir` (`--rm`, `rm -v`),
/// once it no longer runs. Its own reference does not count against it;
/// one still in use elsewhere is left for `volume prune`.
pub fn remove_anonymous(root: &Root, dir: &Path) -> Result<(), VolumeError> {
    let volumes = Volumes::new(root);
    let mut first_error = None;
    for v in load(dir).into_iter().filter(|v| v.anonymous) {
        match volumes.remove(&v.name, true) {
            Ok(()) | Err(VolumeError::NotFound(_)) => {}
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
