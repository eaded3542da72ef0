//! A streaming tar writer: POSIX ustar headers, with a PAX extended header
//! (POSIX.1-2001 `pax` format) before an entry whose path, link target,
//! owner or size does not fit a ustar field. Enough for a layer; the guest
//! init carries no tar crate.

use std::io::{self, Read, Write};

const BLOCK: usize = 512;

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink(String),
    Hardlink(String),
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
}

#[derive(Debug, Clone)]
pub struct Entry {
    /// Relative, '/'-separated; a directory's ends with '/'.
    pub path: String,
    pub kind: Kind,
    /// Permission bits (with setuid, setgid, sticky).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u64,
    /// Data bytes (regular files only).
    pub size: u64,
}

pub struct TarWriter<W: Write> {
    out: W,
}

/// A NUL-terminated octal number in a field of `width` bytes, or None when
/// it does not fit.
fn octal(field: &mut [u8], value: u64) -> Option<()> {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    if text.len() > digits {
        return None;
    }
    field[..digits].copy_from_slice(text.as_bytes());
    field[digits] = 0;
    Some(())
}

/// One PAX record: `"<len> <key>=<value>\n"`, `len` counting itself.
fn pax_record(key: &str, value: &str) -> Vec<u8> {
    let base = key.len() + value.len() + 3;
    let mut len = base + 1;
    while len != base + len.to_string().len() {
        len = base + len.to_string().len();
    }
    format!("{len} {key}={value}\n").into_bytes()
}

impl<W: Write> TarWriter<W> {
    pub fn new(out: W) -> Self {
        TarWriter { out }
    }

    /// Write `e`, its data read from `data` (exactly `e.size` bytes: a
    /// short source is padded with zeros, a long one cut).
    pub fn append(&mut self, e: &Entry, data: impl Read) -> io::Result<()> {
        let (flag, link) = match &e.kind {
            Kind::File => (b'0', None),
            Kind::Hardlink(t) => (b'1', Some(t.as_str())),
            Kind::Symlink(t) => (b'2', Some(t.as_str())),
            Kind::Char(..) => (b'3', None),
            Kind::Block(..) => (b'4', None),
            Kind::Dir => (b'5', None),
            Kind::Fifo => (b'6', None),
        };
        let size = if e.kind == Kind::File { e.size } else { 0 };
        let mut h = [0u8; BLOCK];
        let mut pax = Vec::new();
        if e.path.len() > 100 || e.path.contains('\0') {
            pax.extend(pax_record("path", &e.path));
        }
        let name = &e.path.as_bytes()[..e.path.len().min(100)];
        h[..name.len()].copy_from_slice(name);
        if let Some(link) = link {
            if link.len() > 100 {
                pax.extend(pax_record("linkpath", link));
            }
            let l = &link.as_bytes()[..link.len().min(100)];
            h[157..157 + l.len()].copy_from_slice(l);
        }
        let _ = octal(&mut h[100..108], u64::from(e.mode & 0o7777));
        if octal(&mut h[108..116], u64::from(e.uid)).is_none() {
            pax.extend(pax_record("uid", &e.uid.to_string()));
        }
        if octal(&mut h[116..124], u64::from(e.gid)).is_none() {
            pax.extend(pax_record("gid", &e.gid.to_string()));
        }
        if octal(&mut h[124..136], size).is_none() {
            pax.extend(pax_record("size", &size.to_string()));
        }
        if octal(&mut h[136..148], e.mtime).is_none() {
            pax.extend(pax_record("mtime", &e.mtime.to_string()));
        }
        h[156] = flag;
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        if let Kind::Char(major, minor) | Kind::Block(major, minor) = e.kind {
            let _ = octal(&mut h[329..337], u64::from(major));
            let _ = octal(&mut h[337..345], u64::from(minor));
        }
        if !pax.is_empty() {
            let mut x = [0u8; BLOCK];
            let name = b"././@PaxHeader";
            x[..name.len()].copy_from_slice(name);
            let _ = octal(&mut x[100..108], 0o644);
            let _ = octal(&mut x[124..136], pax.len() as u64);
            x[156] = b'x';
            x[257..263].copy_from_slice(b"ustar\0");
            x[263..265].copy_from_slice(b"00");
            checksum(&mut x);
            self.out.write_all(&x)?;
            self.out.write_all(&pax)?;
            self.pad(pax.len() as u64)?;
        }
        checksum(&mut h);
        self.out.write_all(&h)?;
        if size > 0 {
            let copied = io::copy(&mut data.take(size), &mut self.out)?;
            io::copy(&mut io::repeat(0).take(size - copied), &mut self.out)?;
            self.pad(size)?;
        }
        Ok(())
    }

    fn pad(&mut self, len: u64) -> io::Result<()> {
        let rem = (len % BLOCK as u64) as usize;
        if rem != 0 {
            self.out.write_all(&[0u8; BLOCK][..BLOCK - rem])?;
        }
        Ok(())
    }

    /// The end-of-archive marker (two zero blocks); gives the writer back.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[0u8; 2 * BLOCK])?;
        Ok(self.out)
    }
}

fn checksum(h: &mut [u8; BLOCK]) {
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    let text = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_lengths_count_themselves() {
        let r = pax_record("path", "abc");
        assert_eq!(r, b"12 path=abc\n");
        let long = "x".repeat(95);
        let r = pax_record("path", &long);
        let text = String::from_utf8(r.clone()).unwrap();
        let n: usize = text.split(' ').next().unwrap().parse().unwrap();
        assert_eq!(n, r.len());
    }

    #[test]
    fn headers_are_well_formed() {
        let mut t = TarWriter::new(Vec::new());
        let e = Entry {
            path: "a/b".into(),
            kind: Kind::File,
            mode: 0o644,
            uid: 1000,
            gid: 1000,
            mtime: 1,
            size: 5,
        };
        t.append(&e, &b"hi"[..]).unwrap();
        let long = format!("{}/f", "d".repeat(150));
        let e2 = Entry {
            path: long.clone(),
            size: 0,
            ..e
        };
        t.append(&e2, io::empty()).unwrap();
        let out = t.finish().unwrap();
        assert_eq!(out.len() % BLOCK, 0);
        assert_eq!(&out[..3], b"a/b");
        assert_eq!(&out[124..135], b"00000000005");
        assert_eq!(&out[BLOCK..BLOCK + 5], b"hi\0\0\0");
        // The header's checksum holds.
        let mut h = [0u8; BLOCK];
        h.copy_from_slice(&out[..BLOCK]);
        let stored = h[148..156].to_vec();
        checksum(&mut h);
        assert_eq!(h[148..156], stored[..]);
        // The long path travels in a PAX header.
        assert_eq!(out[2 * BLOCK + 156], b'x');
        let text = String::from_utf8_lossy(&out[3 * BLOCK..4 * BLOCK]);
        assert!(text.contains(&format!("path={long}\n")));
    }
}
