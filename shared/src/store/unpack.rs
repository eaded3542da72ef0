//! Unpacking one layer tar into a directory, safely and in overlayfs form.
//!
//! The tar is untrusted. Every entry's parent is opened with `openat2`
//! (`RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS`), so `..`, absolute paths and
//! symlinks planted by earlier entries all resolve inside the layer
//! directory; the entry itself is then made relative to that parent fd
//! without following symlinks (`O_NOFOLLOW|O_EXCL`, `mkdirat`, `symlinkat`,
//! `linkat` without `AT_SYMLINK_FOLLOW`), replacing an existing non-directory
//! as tar does.
//!
//! Policy:
//! - absolute names are taken relative to the layer (`/etc/x` is `etc/x`);
//!   a name whose `..` climbs above the layer refuses the whole layer, as
//!   does a hardlink to a path that is not in the layer;
//! - character and block devices are skipped (and counted in
//!   [`UnpackStats::skipped_devices`]): the only device node created is the
//!   overlay whiteout; fifos are created;
//! - OCI whiteouts become overlayfs ones: `.wh.NAME` is a 0:0 character
//!   device `NAME`, `.wh..wh..opq` sets `trusted.overlay.opaque=y` on its
//!   directory; other `.wh..wh.` names (aufs metadata) are skipped;
//! - owners (when running as root), modes with setuid/setgid/sticky, mtimes
//!   and the `user.*` / `security.capability` PAX xattrs are applied.

use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, ResolveFlag};
use nix::sys::stat::{
    fchmod, fchmodat, futimens, mkdirat, mknodat, utimensat, FchmodatFlags, Mode, SFlag,
    UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, linkat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};

use super::sys::{fsetxattr, open_at, open_in_root};

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const WHITEOUT_META_PREFIX: &[u8] = b".wh..wh.";
const WHITEOUT_OPAQUE: &[u8] = b".wh..wh..opq";
const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const PAX_XATTR_PREFIX: &str = "SCHILY.xattr.";

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("read tar: {0}")]
    Tar(#[source] io::Error),
    #[error("entry {0:?} leaves the layer (\"..\" above its root)")]
    Escape(String),
    #[error("hardlink {path:?} points at {target:?}, which is not in the layer")]
    LinkTarget { path: String, target: String },
    #[error("invalid whiteout {0:?}")]
    BadWhiteout(String),
    #[error("{op} {path:?}: {source}")]
    Entry {
        op: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
}

#[derive(Debug, Default, Clone)]
pub struct UnpackStats {
    pub entries: u64,
    /// Character and block devices that were not created.
    pub skipped_devices: Vec<String>,
}

/// Unpack the tar read from `reader` into the existing directory `dest`.
/// The reader is not drained past the end-of-archive marker.
pub fn unpack<R: Read>(reader: R, dest: &Path) -> Result<UnpackStats, UnpackError> {
    let root = nix::fcntl::open(
        dest,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map(|fd| {
        // SAFETY: open just returned this fd and nothing else owns it.
        unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) }
    })
    .map_err(entry_err(
        "open layer directory",
        &dest.display().to_string(),
    ))?;
    let mut unpacker = Unpacker {
        root,
        as_root: Uid::effective().is_root(),
        cache: None,
        dir_times: Vec::new(),
        stats: UnpackStats::default(),
    };
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(UnpackError::Tar)? {
        let mut entry = entry.map_err(UnpackError::Tar)?;
        unpacker.entry(&mut entry)?;
        unpacker.stats.entries += 1;
    }
    unpacker.finish();
    Ok(unpacker.stats)
}

fn entry_err(op: &'static str, path: &str) -> impl FnOnce(Errno) -> UnpackError {
    let path = path.to_string();
    move |e| UnpackError::Entry {
        op,
        path,
        source: io::Error::from(e),
    }
}

/// Split a tar name into components, dropping `.`, empty parts and a
/// leading `/`; `..` pops, and popping past the root is an error.
fn components(raw: &[u8]) -> Result<Vec<OsString>, UnpackError> {
    let mut out: Vec<OsString> = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                if out.pop().is_none() {
                    return Err(UnpackError::Escape(
                        String::from_utf8_lossy(raw).into_owned(),
                    ));
                }
            }
            _ => out.push(OsStr::from_bytes(c).to_os_string()),
        }
    }
    Ok(out)
}

/// What the header (and PAX records) say about an entry's metadata.
struct Meta {
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: i64,
    xattrs: Vec<(OsString, Vec<u8>)>,
}

fn meta_of<R: Read>(entry: &mut tar::Entry<'_, R>) -> Meta {
    let h = entry.header();
    let mut m = Meta {
        mode: h.mode().unwrap_or(0o644) & 0o7777,
        uid: h.uid().unwrap_or(0),
        gid: h.gid().unwrap_or(0),
        mtime: h.mtime().unwrap_or(0) as i64,
        xattrs: Vec::new(),
    };
    if let Ok(Some(pax)) = entry.pax_extensions() {
        for ext in pax.flatten() {
            let (Ok(key), value) = (ext.key(), ext.value_bytes()) else {
                continue;
            };
            let num = || {
                std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.split('.').next()?.parse().ok())
            };
            match key {
                "uid" => m.uid = num().unwrap_or(m.uid as i64) as u64,
                "gid" => m.gid = num().unwrap_or(m.gid as i64) as u64,
                "mtime" => m.mtime = num().unwrap_or(m.mtime),
                _ => {
                    if let Some(name) = key.strip_prefix(PAX_XATTR_PREFIX) {
                        if name.starts_with("user.") || name == "security.capability" {
                            m.xattrs.push((OsString::from(name), value.to_vec()));
                        }
                    }
                }
            }
        }
    }
    m
}

struct Unpacker {
    root: OwnedFd,
    as_root: bool,
    /// The last parent directory opened, by its components. Shared, so an
    /// entry keeps its parent open when a removal empties the cache.
    cache: Option<(Vec<OsString>, Rc<OwnedFd>)>,
    /// Directory mtimes, set at the end (creating children changes them).
    dir_times: Vec<(PathBuf, i64)>,
    stats: UnpackStats,
}

impl Unpacker {
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), UnpackError> {
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let mut comps = components(&raw)?;
        let kind = entry.header().entry_type();
        let meta = meta_of(entry);
        let Some(name) = comps.pop() else {
            // The layer root itself (`./`).
            if kind.is_dir() {
                let fd = self.root.try_clone().map_err(|e| UnpackError::Entry {
                    op: "dup",
                    path: shown.clone(),
                    source: e,
                })?;
                self.apply(fd.as_fd(), &meta, &shown)?;
            }
            return Ok(());
        };
        let name_bytes = name.as_bytes();
        if name_bytes.starts_with(WHITEOUT_PREFIX) {
            return self.whiteout(&comps, &name, &meta, &shown);
        }
        match kind {
            tar::EntryType::Directory => self.directory(&comps, &name, &meta, &shown),
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                self.file(entry, &comps, &name, &meta, &shown)
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| UnpackError::Entry {
                        op: "read symlink target of",
                        path: shown.clone(),
                        source: io::ErrorKind::InvalidData.into(),
                    })?
                    .into_owned();
                self.symlink(&comps, &name, OsStr::from_bytes(&target), &meta, &shown)
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                self.hardlink(&comps, &name, &target, &shown)
            }
            tar::EntryType::Fifo => self.fifo(&comps, &name, &meta, &shown),
            tar::EntryType::Char | tar::EntryType::Block => {
                self.stats.skipped_devices.push(shown);
                Ok(())
            }
            // Global PAX headers, GNU volume labels and the like.
            _ => Ok(()),
        }
    }

    /// Open (creating missing directories) the parent `comps` in the layer.
    fn parent(&mut self, comps: &[OsString], shown: &str) -> Result<Rc<OwnedFd>, UnpackError> {
        if let Some((c, fd)) = &self.cache {
            if c.as_slice() == comps {
                return Ok(fd.clone());
            }
        }
        let fd = Rc::new(self.open_parent(comps, shown)?);
        self.cache = Some((comps.to_vec(), fd.clone()));
        Ok(fd)
    }

    fn open_parent(&self, comps: &[OsString], shown: &str) -> Result<OwnedFd, UnpackError> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY;
        let full: PathBuf = comps.iter().collect();
        match open_in_root(self.root.as_fd(), &full, flags, ResolveFlag::empty()) {
            Ok(fd) => return Ok(fd),
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(entry_err("open parent directory of", shown)(e)),
        }
        // Create what is missing, one component at a time.
        let mut cur = self.root.try_clone().map_err(|e| UnpackError::Entry {
            op: "dup",
            path: shown.to_string(),
            source: e,
        })?;
        for i in 0..comps.len() {
            let prefix: PathBuf = comps[..=i].iter().collect();
            cur = match open_in_root(self.root.as_fd(), &prefix, flags, ResolveFlag::empty()) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) => {
                    match mkdirat(
                        Some(cur.as_raw_fd()),
                        comps[i].as_os_str(),
                        Mode::from_bits_truncate(0o755),
                    ) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => return Err(entry_err("create parent directory of", shown)(e)),
                    }
                    open_in_root(self.root.as_fd(), &prefix, flags, ResolveFlag::empty())
                        .map_err(entry_err("open parent directory of", shown))?
                }
                Err(e) => return Err(entry_err("open parent directory of", shown)(e)),
            };
        }
        Ok(cur)
    }

    /// Remove whatever `name` is in `dir` (recursively for a directory).
    fn remove(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        shown: &str,
    ) -> Result<(), UnpackError> {
        self.cache = None;
        remove_at(dir.as_raw_fd(), name).map_err(entry_err("replace", shown))
    }

    fn directory(
        &mut self,
        comps: &[OsString],
        name: &OsStr,
        meta: &Meta,
        shown: &str,
    ) -> Result<(), UnpackError> {
        let parent = self.parent(comps, shown)?;
        let dir = parent.as_fd();
        match mkdirat(Some(dir.as_raw_fd()), name, Mode::from_bits_truncate(0o700)) {
            Ok(()) => {}
            Err(Errno::EEXIST) => {
                let st = nix::sys::stat::fstatat(
                    Some(dir.as_raw_fd()),
                    name,
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(entry_err("stat", shown))?;
                if SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) != SFlag::S_IFDIR {
                    self.remove(dir, name, shown)?;
                    mkdirat(Some(dir.as_raw_fd()), name, Mode::from_bits_truncate(0o700))
                        .map_err(entry_err("mkdir", shown))?;
                }
            }
            Err(e) => return Err(entry_err("mkdir", shown)(e)),
        }
        let fd = open_at(
            dir,
            name,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW,
            Mode::empty(),
        )
        .map_err(entry_err("open directory", shown))?;
        self.apply(fd.as_fd(), meta, shown)?;
        let path: PathBuf = comps
            .iter()
            .chain(std::iter::once(&name.to_os_string()))
            .collect();
        self.dir_times.push((path, meta.mtime));
        Ok(())
    }

    fn file<R: Read>(
        &mut self,
        data: &mut tar::Entry<'_, R>,
        comps: &[OsString],
        name: &OsStr,
        meta: &Meta,
        shown: &str,
    ) -> Result<(), UnpackError> {
        let parent = self.parent(comps, shown)?;
        let dir = parent.as_fd();
        let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW;
        let mode = Mode::from_bits_truncate(0o600);
        let fd = match open_at(dir, name, flags, mode) {
            Err(Errno::EEXIST) => {
                self.remove(dir, name, shown)?;
                open_at(dir, name, flags, mode)
            }
            other => other,
        }
        .map_err(entry_err("create", shown))?;
        let mut file = std::fs::File::from(fd);
        io::copy(data, &mut file).map_err(UnpackError::Tar)?;
        self.apply(file.as_fd(), meta, shown)?;
        let t = TimeSpec::new(meta.mtime, 0);
        futimens(file.as_raw_fd(), &t, &t).map_err(entry_err("set times of", shown))
    }

    fn symlink(
        &mut self,
        comps: &[OsString],
        name: &OsStr,
        target: &OsStr,
        meta: &Meta,
        shown: &str,
    ) -> Result<(), UnpackError> {
        let parent = self.parent(comps, shown)?;
        let dir = parent.as_fd();
        match symlinkat(target, Some(dir.as_raw_fd()), name) {
            Err(Errno::EEXIST) => {
                self.remove(dir, name, shown)?;
                symlinkat(target, Some(dir.as_raw_fd()), name)
            }
            other => other,
        }
        .map_err(entry_err("symlink", shown))?;
        self.own_nofollow(dir, name, meta, shown)
    }

    fn hardlink(
        &mut self,
        comps: &[OsString],
        name: &OsStr,
        target: &[u8],
        shown: &str,
    ) -> Result<(), UnpackError> {
        let link_err = || UnpackError::LinkTarget {
            path: shown.to_string(),
            target: String::from_utf8_lossy(target).into_owned(),
        };
        let mut tcomps = components(target).map_err(|_| link_err())?;
        let Some(tname) = tcomps.pop() else {
            return Err(link_err());
        };
        let tparent: PathBuf = tcomps.iter().collect();
        let tdir = open_in_root(
            self.root.as_fd(),
            &tparent,
            OFlag::O_PATH | OFlag::O_DIRECTORY,
            ResolveFlag::empty(),
        )
        .map_err(|_| link_err())?;
        let st = nix::sys::stat::fstatat(
            Some(tdir.as_raw_fd()),
            tname.as_os_str(),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|_| link_err())?;
        if SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFDIR {
            return Err(link_err());
        }
        let parent = self.parent(comps, shown)?;
        let dir = parent.as_fd();
        if let Ok(existing) =
            nix::sys::stat::fstatat(Some(dir.as_raw_fd()), name, AtFlags::AT_SYMLINK_NOFOLLOW)
        {
            if existing.st_ino == st.st_ino && existing.st_dev == st.st_dev {
                return Ok(()); // already that file
            }
            self.remove(dir, name, shown)?;
        }
        linkat(
            Some(tdir.as_raw_fd()),
            tname.as_os_str(),
            Some(dir.as_raw_fd()),
            name,
            AtFlags::empty(),
        )
        .map_err(entry_err("hardlink", shown))
    }

    fn fifo(
        &mut self,
        comps: &[OsString],
        name: &OsStr,
        meta: &Meta,
        shown: &str,
    ) -> Result<(), UnpackError> {
        let parent = self.parent(comps, shown)?;
        let dir = parent.as_fd();
        self.mknod(dir, name, SFlag::S_IFIFO, shown)?;
        self.own_nofollow(dir, name, meta, shown)?;
        fchmodat(
            Some(dir.as_raw_fd()),
            name,
            Mode::from_bits_truncate(meta.mode),
            FchmodatFlags::FollowSymlink,
        )
        .map_err(entry_err("chmod", shown))
    }

    fn whiteout(
        &mut self,
        comps: &[OsString],
        name: &OsStr,
        meta: &Meta,
        shown: &str,
    ) -> Result<(), UnpackError> {
        let bytes = name.as_bytes();
        if bytes == WHITEOUT_OPAQUE {
            let dir = self.parent(comps, shown)?;
            return fsetxattr(dir.as_fd(), OsStr::new(OVERLAY_OPAQUE_XATTR), b"y").map_err(|e| {
                UnpackError::Entry {
                    op: "mark opaque",
                    path: shown.to_string(),
                    source: e,
                }
            });
        }
        if bytes.starts_with(WHITEOUT_META_PREFIX) {
            return Ok(());
        }
        let hidden = OsStr::from_bytes(&bytes[WHITEOUT_PREFIX.len()..]);
        if hidden.is_empty() || hidden == "." || hidden == ".." {
            return Err(UnpackError::BadWhiteout(shown.to_string()));
        }
        let parent = self.parent(comps, shown)?;
        let dir = parent.as_fd();
        self.remove(dir, hidden, shown)?;
        self.mknod(dir, hidden, SFlag::S_IFCHR, shown)?;
        self.own_nofollow(dir, hidden, meta, shown)
    }

    /// A fifo, or the 0:0 character device that is an overlay whiteout.
    fn mknod(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        kind: SFlag,
        shown: &str,
    ) -> Result<(), UnpackError> {
        let make = || {
            mknodat(
                Some(dir.as_raw_fd()),
                name,
                kind,
                Mode::from_bits_truncate(0o600),
                0,
            )
        };
        match make() {
            Err(Errno::EEXIST) => {
                self.remove(dir, name, shown)?;
                make()
            }
            other => other,
        }
        .map_err(entry_err("mknod", shown))
    }

    /// Owner and times of an entry that may be a symlink.
    fn own_nofollow(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        meta: &Meta,
        shown: &str,
    ) -> Result<(), UnpackError> {
        if self.as_root {
            fchownat(
                Some(dir.as_raw_fd()),
                name,
                Some(Uid::from_raw(meta.uid as u32)),
                Some(Gid::from_raw(meta.gid as u32)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(entry_err("chown", shown))?;
        }
        let t = TimeSpec::new(meta.mtime, 0);
        utimensat(
            Some(dir.as_raw_fd()),
            name,
            &t,
            &t,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(entry_err("set times of", shown))
    }

    /// Owner, then mode (chown clears setuid), then xattrs of an open entry.
    fn apply(&self, fd: BorrowedFd<'_>, meta: &Meta, shown: &str) -> Result<(), UnpackError> {
        if self.as_root {
            fchown(
                fd.as_raw_fd(),
                Some(Uid::from_raw(meta.uid as u32)),
                Some(Gid::from_raw(meta.gid as u32)),
            )
            .map_err(entry_err("chown", shown))?;
        }
        fchmod(fd.as_raw_fd(), Mode::from_bits_truncate(meta.mode))
            .map_err(entry_err("chmod", shown))?;
        for (name, value) in &meta.xattrs {
            // Best effort: the filesystem may not take user xattrs.
            let _ = fsetxattr(fd, name, value);
        }
        Ok(())
    }

    /// Directory mtimes, deepest first, never through a symlink.
    fn finish(&mut self) {
        self.cache = None;
        for (path, mtime) in self.dir_times.iter().rev() {
            let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW;
            if let Ok(fd) = open_in_root(
                self.root.as_fd(),
                path,
                flags,
                ResolveFlag::RESOLVE_NO_SYMLINKS,
            ) {
                let t = TimeSpec::new(*mtime, 0);
                let _ = futimens(fd.as_raw_fd(), &t, &t);
            }
        }
    }
}

/// Remove `name` in `dir`, recursing into a directory without following
/// symlinks. A missing entry is fine.
fn remove_at(dir: std::os::fd::RawFd, name: &OsStr) -> nix::Result<()> {
    match unlinkat(Some(dir), name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => return Ok(()),
        Err(Errno::EISDIR) | Err(Errno::EPERM) => {}
        Err(e) => return Err(e),
    }
    let mut sub = nix::dir::Dir::openat(
        Some(dir),
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let children: Vec<OsString> = sub
        .iter()
        .flatten()
        .map(|e| OsStr::from_bytes(e.file_name().to_bytes()).to_os_string())
        .filter(|n| n != "." && n != "..")
        .collect();
    for child in children {
        remove_at(sub.as_raw_fd(), &child)?;
    }
    unlinkat(Some(dir), name, UnlinkatFlags::RemoveDir)
}
