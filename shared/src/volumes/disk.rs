//! A volume's storage: a sparse file holding an ext4 filesystem.

use std::path::Path;
use std::process::{Command, Stdio};

use super::VolumeError;

/// The filesystem a volume holds; the guest kernel and the host both have it.
pub const FSTYPE: &str = "ext4";
/// The file under a volume's directory that holds the filesystem.
pub const DISK_FILE: &str = "disk.img";
/// Below this ext4 with a journal hardly fits.
pub const MIN_SIZE: u64 = 8 << 20;

/// Create `path` as a sparse file of `size` bytes and make an empty ext4
/// filesystem on it: with a journal (a killed VM or container leaves it
/// consistent), inode tables initialised now (no background zeroing
/// while it is mounted), no reserved blocks, and no `lost+found` (the
/// workload sees an empty directory, as with Docker's volumes).
pub fn make(path: &Path, size: u64) -> Result<(), VolumeError> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| VolumeError::io(format!("creating {}", path.display()), e))?;
    file.set_len(size)
        .map_err(|e| VolumeError::io(format!("sizing {}", path.display()), e))?;
    drop(file);
    let out = Command::new("mkfs.ext4")
        .args([
            "-F",
            "-q",
            "-m",
            "0",
            "-E",
            "lazy_itable_init=0,lazy_journal_init=0",
        ])
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(VolumeError::Mkfs(
                "mkfs.ext4 not found (install e2fsprogs)".into(),
            ))
        }
        Err(e) => return Err(VolumeError::io("running mkfs.ext4", e)),
    };
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(VolumeError::Mkfs(format!(
            "mkfs.ext4 {} ({}): {}",
            path.display(),
            out.status,
            err.trim().lines().last().unwrap_or("")
        )));
    }
    let status = Command::new("debugfs")
        .args(["-w", "-R", "rmdir lost+found"])
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !status.is_ok_and(|s| s.success()) {
        return Err(VolumeError::Mkfs(format!(
            "debugfs {}: removing lost+found failed",
            path.display()
        )));
    }
    Ok(())
}
