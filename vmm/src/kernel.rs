//! Finding the guest kernel and checking that it is one before an engine
//! is asked to boot it.

use std::io::Read;
use std::path::{Path, PathBuf};

/// Where guest-kernel/build.sh caches its builds (`SBX_KERNEL_CACHE` moves
/// it, as it does for the script); `current` points at the latest.
const DEFAULT_CACHE: &str = "/var/cache/sbx/kernel";

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("guest kernel not found at {}: build it with guest-kernel/build.sh (or pass --kernel PATH)", .0.display())]
    Missing(PathBuf),
    #[error("guest kernel {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("guest kernel {} is not a Linux x86_64 kernel image: {why}", path.display())]
    Invalid { path: PathBuf, why: &'static str },
}

/// The kernel to boot: `--kernel`, else the one guest-kernel/build.sh built.
pub fn locate(explicit: Option<&Path>) -> Result<PathBuf, KernelError> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => std::env::var_os("SBX_KERNEL_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE))
            .join("current/vmlinux"),
    };
    check(&path)?;
    Ok(path)
}

/// An ELF64 x86_64 `vmlinux` (booted through its PVH note) or a bzImage
/// (the x86 boot protocol's "HdrS" at 0x202,
/// Documentation/arch/x86/boot.rst).
pub fn check(path: &Path) -> Result<(), KernelError> {
    let mut f = std::fs::File::open(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => KernelError::Missing(path.to_path_buf()),
        _ => KernelError::Read {
            path: path.to_path_buf(),
            source,
        },
    })?;
    let mut head = [0u8; 0x210];
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(KernelError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
    }
    let invalid = |why| KernelError::Invalid {
        path: path.to_path_buf(),
        why,
    };
    if n >= 20 && head.starts_with(b"\x7fELF") {
        // e_ident[EI_CLASS] = ELFCLASS64, e_machine (offset 18) = EM_X86_64 (62).
        if head[4] != 2 {
            return Err(invalid("a 32-bit ELF file"));
        }
        if u16::from_le_bytes([head[18], head[19]]) != 62 {
            return Err(invalid("an ELF file for another architecture"));
        }
        return Ok(());
    }
    if n >= 0x206 && &head[0x202..0x206] == b"HdrS" {
        return Ok(());
    }
    Err(invalid("neither an ELF vmlinux nor a bzImage"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_what_is_not_a_kernel() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk");
        std::fs::write(&junk, b"not a kernel at all").unwrap();
        assert!(matches!(check(&junk), Err(KernelError::Invalid { .. })));
        let missing = dir.path().join("missing");
        assert!(matches!(check(&missing), Err(KernelError::Missing(_))));
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[18] = 62;
        let vmlinux = dir.path().join("vmlinux");
        std::fs::write(&vmlinux, &elf).unwrap();
        assert!(check(&vmlinux).is_ok());
        let mut bz = vec![0u8; 0x300];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        let bzimage = dir.path().join("bzImage");
        std::fs::write(&bzimage, &bz).unwrap();
        assert!(check(&bzimage).is_ok());
    }
}
