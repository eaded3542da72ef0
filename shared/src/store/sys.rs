//! Syscall wrappers the unpacker needs that nix lacks or that must hand
//! back an `OwnedFd`: `openat2` confined to a root, plain `openat`, and
//! `fsetxattr`. All unsafe code of the store is here.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

/// Open `path` below `root` as if `root` were `/`: `..`, absolute paths and
/// symlinks (absolute or relative) can never leave it, and magic links
/// (`/proc/self/fd/…`) are refused. An empty path is `root` itself.
pub fn open_in_root(
    root: BorrowedFd<'_>,
    path: &Path,
    flags: OFlag,
    extra: ResolveFlag,
) -> nix::Result<OwnedFd> {
    let path = if path.as_os_str().is_empty() {
        Path::new(".")
    } else {
        path
    };
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS | extra);
    // openat2 answers EAGAIN when a concurrent rename might have let the
    // lookup escape; trying again is what the man page advises.
    let mut tries = 0;
    loop {
        match nix::fcntl::openat2(root.as_raw_fd(), path, how) {
            Err(Errno::EAGAIN) if tries < 16 => tries += 1,
            Err(e) => return Err(e),
            // SAFETY: openat2 just returned this fd and nothing else owns it.
            Ok(fd) => return Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
        }
    }
}

/// `openat(dir, name)` as an `OwnedFd`; `name` is one path component.
pub fn open_at(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    flags: OFlag,
    mode: Mode,
) -> nix::Result<OwnedFd> {
    let fd = nix::fcntl::openat(Some(dir.as_raw_fd()), name, flags | OFlag::O_CLOEXEC, mode)?;
    // SAFETY: openat just returned this fd and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Set an extended attribute on an open file or directory.
pub fn fsetxattr(fd: BorrowedFd<'_>, name: &OsStr, value: &[u8]) -> io::Result<()> {
    let name =
        CString::new(name.as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `name` is a NUL-terminated string and `value` a live slice of
    // the length given; the kernel reads both and keeps neither.
    let rc = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
