//! A build step's changes out of the VM: a sparse scratch disk declared
//! after the others, onto which the guest init writes the writable layer
//! as a tar once the workload has ended (and says how long it is); the
//! host reads it after the VM is gone.
//!
//! The tar comes from the guest and is not trusted: its length is bounded
//! by the disk, every header is checked (checksum, magic, size within what
//! is left) as it is copied, and it must end with the end-of-archive
//! blocks. Paths are left to the store's safe unpacker, which takes the
//! layer later. One 512-byte header and a 64 KiB buffer in memory at a
//! time.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The changes disk's size: the most a step may change, tar included. The
/// file is sparse; only what the guest writes takes room.
pub const DISK_BYTES: u64 = 8 << 30;
/// Its name in the sandbox directory.
pub const DISK_NAME: &str = "changes.disk";

const BLOCK: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum ChangesError {
    #[error("vm: changes disk {}: {what}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("vm: writing the sandbox's changes: {0}")]
    Write(std::io::Error),
    #[error("vm: the guest's changes are not a valid tar: {0}")]
    Invalid(String),
}

/// Create the empty (sparse) changes disk in the sandbox directory.
pub fn create(dir: &Path) -> Result<PathBuf, ChangesError> {
    let path = dir.join(DISK_NAME);
    let io = |what| {
        let path = path.clone();
        move |source| ChangesError::Io { what, path, source }
    };
    let f = File::create(&path).map_err(io("create"))?;
    f.set_len(DISK_BYTES).map_err(io("size"))?;
    Ok(path)
}

fn invalid(m: impl Into<String>) -> ChangesError {
    ChangesError::Invalid(m.into())
}

/// A header's size field: octal, or GNU base-256 (high bit of the first
/// byte set).
fn size_field(f: &[u8]) -> Result<u64, ChangesError> {
    if f[0] & 0x80 != 0 {
        let mut n: u64 = u64::from(f[0] & 0x7f);
        for &b in &f[1..] {
            n = n
                .checked_mul(256)
                .and_then(|n| n.checked_add(u64::from(b)))
                .ok_or_else(|| invalid("an entry size out of range"))?;
        }
        return Ok(n);
    }
    let text = f
        .iter()
        .skip_while(|&&b| b == b' ')
        .take_while(|&&b| b != 0 && b != b' ');
    let mut n = 0u64;
    for &b in text {
        if !(b'0'..=b'7').contains(&b) {
            return Err(invalid("an entry size that is not octal"));
        }
        n = n
            .checked_mul(8)
            .and_then(|n| n.checked_add(u64::from(b - b'0')))
            .ok_or_else(|| invalid("an entry size out of range"))?;
    }
    Ok(n)
}

fn check_header(h: &[u8; BLOCK]) -> Result<u64, ChangesError> {
    if &h[257..262] != b"ustar" {
        return Err(invalid("a header without the ustar magic"));
    }
    let stored = size_field(&h[148..156])?;
    let sum: u64 = h
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(b)
            }
        })
        .sum();
    if sum != stored {
        return Err(invalid("a header with a bad checksum"));
    }
    size_field(&h[124..136])
}

/// Copy the tar of `bytes` bytes at the start of the changes disk to
/// `out`, checking it on the way.
pub fn copy_checked(disk: &Path, bytes: u64, out: &mut dyn Write) -> Result<(), ChangesError> {
    let io = |what| {
        let path = disk.to_path_buf();
        move |source| ChangesError::Io { what, path, source }
    };
    let file = File::open(disk).map_err(io("open"))?;
    let len = file.metadata().map_err(io("stat"))?.len();
    if bytes > len.min(DISK_BYTES) {
        return Err(invalid(format!(
            "it claims {bytes} bytes, more than the {len}-byte disk holds"
        )));
    }
    copy_tar(&mut file.take(bytes), out)
}

fn copy_tar(src: &mut dyn Read, out: &mut dyn Write) -> Result<(), ChangesError> {
    let mut h = [0u8; BLOCK];
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        src.read_exact(&mut h)
            .map_err(|_| invalid("it ends before its end-of-archive blocks"))?;
        if h.iter().all(|&b| b == 0) {
            // The end: a second zero block should follow; it is written
            // whether or not the guest wrote it.
            out.write_all(&[0u8; 2 * BLOCK])
                .map_err(ChangesError::Write)?;
            return Ok(());
        }
        let size = check_header(&h)?;
        out.write_all(&h).map_err(ChangesError::Write)?;
        let mut left = size.div_ceil(BLOCK as u64) * BLOCK as u64;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            src.read_exact(&mut buf[..n])
                .map_err(|_| invalid("an entry's data is cut short"))?;
            out.write_all(&buf[..n]).map_err(ChangesError::Write)?;
            left -= n as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str, size: usize) -> [u8; BLOCK] {
        let mut h = [0u8; BLOCK];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(b"0000644\0");
        h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        seal(&mut h);
        h
    }

    fn seal(h: &mut [u8]) {
        h[148..156].fill(b' ');
        let sum: u32 = h[..BLOCK].iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    }

    fn sample() -> Vec<u8> {
        let mut t = header("a/file", 5).to_vec();
        let mut data = [0u8; BLOCK];
        data[..5].copy_from_slice(b"hello");
        t.extend_from_slice(&data);
        t.extend_from_slice(&header("a/.wh.gone", 0));
        t.extend_from_slice(&[0u8; 2 * BLOCK]);
        t
    }

    #[test]
    fn a_good_tar_passes_unchanged() {
        let t = sample();
        let mut out = Vec::new();
        copy_tar(&mut &t[..], &mut out).unwrap();
        assert_eq!(out, t);
    }

    #[test]
    fn bad_tars_are_refused() {
        let t = sample();
        // Cut short.
        assert!(copy_tar(&mut &t[..700], &mut Vec::new()).is_err());
        // No end blocks.
        assert!(copy_tar(&mut &t[..1536], &mut Vec::new()).is_err());
        // A flipped byte in a header.
        let mut bad = t.clone();
        bad[0] ^= 1;
        assert!(copy_tar(&mut &bad[..], &mut Vec::new()).is_err());
        // Garbage.
        assert!(copy_tar(&mut &[7u8; 4096][..], &mut Vec::new()).is_err());
        // A size larger than what is there.
        let mut big = t.clone();
        big[124..136].copy_from_slice(b"77777777777\0");
        seal(&mut big);
        assert!(copy_tar(&mut &big[..], &mut Vec::new()).is_err());
    }

    #[test]
    fn the_claimed_length_is_bounded_by_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d");
        std::fs::write(&p, sample()).unwrap();
        assert!(copy_checked(&p, 1 << 40, &mut Vec::new()).is_err());
        let len = std::fs::metadata(&p).unwrap().len();
        copy_checked(&p, len, &mut Vec::new()).unwrap();
    }
}
