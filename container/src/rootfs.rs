//! The container's root filesystem, built inside its new mount namespace:
//! overlayfs over the shared layers, /proc, a minimal /dev, read-only /sys,
//! the generated /etc files, runc's masked and read-only paths, pivot_root.
//!
//! Every path inside the image is resolved with openat2(RESOLVE_IN_ROOT) and
//! mounted on through /proc/self/fd, so an image whose /proc or /etc is a
//! symlink (to `/` or `../..`) cannot make us mount or write on the host.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{Mode, SFlag};

use sbx_shared::spec::SandboxSpec;

/// runc's default masked paths: a file gets /dev/null bound over it, a
/// directory an empty read-only tmpfs.
const MASKED: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// runc's default read-only paths.
const READ_ONLY: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Character devices of the minimal /dev: name, major, minor.
const DEVICES: &[(&str, u64, u64)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

const DEV_LINKS: &[(&str, &str)] = &[
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
    ("core", "/proc/kcore"),
];

pub type SetupResult<T> = Result<T, String>;

pub(crate) fn err(what: impl std::fmt::Display, e: Errno) -> String {
    format!("{what}: {}", e.desc())
}

/// Paths of the per-sandbox directory used while building the rootfs.
pub struct SandboxDirs {
    pub upper: PathBuf,
    pub work: PathBuf,
    pub rootfs: PathBuf,
    pub hosts: PathBuf,
    pub hostname: PathBuf,
    pub resolv: PathBuf,
    /// The loop device attached for each volume mount, by target.
    pub volume_devices: Vec<(String, PathBuf)>,
}

impl SandboxDirs {
    pub fn new(dir: &Path) -> Self {
        SandboxDirs {
            upper: dir.join("upper"),
            work: dir.join("work"),
            rootfs: dir.join("rootfs"),
            hosts: dir.join("hosts"),
            hostname: dir.join("hostname"),
            resolv: dir.join("resolv.conf"),
            volume_devices: Vec::new(),
        }
    }
}

pub(crate) fn fd_path(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// openat2 with RESOLVE_IN_ROOT: `path` is looked up as if `root` were `/`.
pub(crate) fn open_in_root(root: RawFd, path: &str, flags: OFlag) -> Result<OwnedFd, Errno> {
    let c = CString::new(path.trim_start_matches('/')).map_err(|_| Errno::EINVAL)?;
    let c = if c.as_bytes().is_empty() {
        CString::new(".").unwrap_or_default()
    } else {
        c
    };
    // SAFETY: open_how is plain old data; all-zero is its documented default.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | OFlag::O_CLOEXEC).bits() as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: openat2 reads `how` (size passed) and the NUL-terminated path;
    // both outlive the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root,
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the kernel just returned this descriptor; we own it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Dir,
    File,
}

/// Open `path` inside `root`, creating it (and its parents) when missing.
pub(crate) fn ensure_in_root(root: RawFd, path: &str, kind: Kind) -> Result<OwnedFd, Errno> {
    match open_in_root(root, path, OFlag::O_PATH) {
        Ok(fd) => return Ok(fd),
        Err(Errno::ENOENT) => {}
        Err(e) => return Err(e),
    }
    let path = path.trim_end_matches('/');
    let (parent, name) = match path.rsplit_once('/') {
        Some((p, n)) => (p, n),
        None => ("", path),
    };
    if name.is_empty() || name == ".." || name == "." {
        return Err(Errno::EINVAL);
    }
    let parent_fd = ensure_in_root(root, parent, Kind::Dir)?;
    let dir = open_in_root(parent_fd.as_raw_fd(), ".", OFlag::O_DIRECTORY)?;
    match kind {
        Kind::Dir => match nix::sys::stat::mkdirat(
            Some(dir.as_raw_fd()),
            name,
            Mode::from_bits_truncate(0o755),
        ) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(e),
        },
        Kind::File => {
            let fd = nix::fcntl::openat(
                Some(dir.as_raw_fd()),
                name,
                OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_WRONLY,
                Mode::from_bits_truncate(0o644),
            )?;
            let _ = nix::unistd::close(fd);
        }
    }
    open_in_root(dir.as_raw_fd(), name, OFlag::O_PATH)
}

fn mount_at(
    src: Option<&str>,
    target: &OwnedFd,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
    what: &str,
) -> SetupResult<()> {
    mount(src, fd_path(target).as_str(), fstype, flags, data)
        .map_err(|e| err(format!("mounting {what}"), e))
}

/// Build the root filesystem under `dirs.rootfs` and pivot into it.
/// Runs in the child, inside its new mount, pid and ipc namespaces.
pub fn setup(spec: &SandboxSpec, dirs: &SandboxDirs) -> SetupResult<()> {
    // Nothing we mount may propagate back to the host.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| err("making / private", e))?;

    mount_overlay(spec, dirs)?;
    let root = nix::fcntl::open(
        &dirs.rootfs,
        OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_PATH,
        Mode::empty(),
    )
    .map_err(|e| err("opening the rootfs", e))?;
    // SAFETY: `open` returned a fresh descriptor that nothing else owns.
    let root = unsafe { OwnedFd::from_raw_fd(root) };
    let r = root.as_raw_fd();

    let nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let proc_dir = ensure_in_root(r, "/proc", Kind::Dir).map_err(|e| err("creating /proc", e))?;
    mount_at(Some("proc"), &proc_dir, Some("proc"), nodev, None, "/proc")?;

    mount_dev(r)?;

    let sys = ensure_in_root(r, "/sys", Kind::Dir).map_err(|e| err("creating /sys", e))?;
    mount_at(
        Some("sysfs"),
        &sys,
        Some("sysfs"),
        nodev | MsFlags::MS_RDONLY,
        None,
        "/sys",
    )?;

    for (path, src) in [
        ("/etc/hosts", &dirs.hosts),
        ("/etc/hostname", &dirs.hostname),
        ("/etc/resolv.conf", &dirs.resolv),
    ] {
        let target =
            ensure_in_root(r, path, Kind::File).map_err(|e| err(format!("creating {path}"), e))?;
        mount_at(src.to_str(), &target, None, MsFlags::MS_BIND, None, path)?;
    }

    // The spec's bind mounts, volumes and tmpfs mounts.
    crate::mounts::mount_all(r, spec, &dirs.volume_devices)?;

    for path in MASKED {
        mask(r, path)?;
    }
    for path in READ_ONLY {
        read_only(r, path)?;
    }

    // The working directory is created (as Docker does) while / is still
    // writable; the chdir itself happens after the user switch.
    if !spec.process.cwd.is_empty() && spec.process.cwd != "/" {
        ensure_in_root(r, &spec.process.cwd, Kind::Dir).map_err(|e| {
            err(
                format!("creating working directory {}", spec.process.cwd),
                e,
            )
        })?;
    }
    drop(root);

    pivot(&dirs.rootfs)?;

    if spec.rootfs.read_only {
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(|e| err("making / read-only", e))?;
    }
    Ok(())
}

fn mount_overlay(spec: &SandboxSpec, dirs: &SandboxDirs) -> SetupResult<()> {
    let mut lower = String::new();
    for layer in spec.rootfs.layers.iter().rev() {
        let s = layer.to_str().ok_or("layer path is not UTF-8")?;
        if s.contains([',', ':']) {
            return Err(format!(
                "layer path {s} holds ',' or ':' which overlayfs cannot take"
            ));
        }
        if !lower.is_empty() {
            lower.push(':');
        }
        lower.push_str(s);
    }
    if spec.rootfs.layers.is_empty() {
        // An image with no layers (FROM scratch, nothing added) still needs
        // a lower dir: an empty one next to the upper.
        let empty = dirs.upper.with_file_name("empty");
        std::fs::create_dir_all(&empty)
            .map_err(|e| format!("creating {}: {e}", empty.display()))?;
        lower.push_str(empty.to_str().ok_or("sandbox path is not UTF-8")?);
    }
    // `volatile`: the upper dir is scratch (discarded with an --rm
    // sandbox), so overlayfs need not sync it. Without it, unmounting the
    // overlay when the mount namespace dies calls syncfs on the whole host
    // filesystem under the upper dir: 50 ms and more on a busy host.
    let data = format!(
        "lowerdir={lower},upperdir={},workdir={},volatile",
        dirs.upper.display(),
        dirs.work.display()
    );
    mount(
        Some("overlay"),
        &dirs.rootfs,
        Some("overlay"),
        MsFlags::empty(),
        Some(data.as_str()),
    )
    .map_err(|e| err("mounting the overlay root filesystem", e))
}

fn mount_dev(root: RawFd) -> SetupResult<()> {
    let dev = ensure_in_root(root, "/dev", Kind::Dir).map_err(|e| err("creating /dev", e))?;
    mount_at(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
        "/dev",
    )?;
    // Reopen: the fd above still names the directory under the new tmpfs.
    let dev = open_in_root(root, "/dev", OFlag::O_DIRECTORY).map_err(|e| err("opening /dev", e))?;
    let d = dev.as_raw_fd();
    let old = nix::sys::stat::umask(Mode::empty());
    for (name, major, minor) in DEVICES {
        let r = nix::sys::stat::mknodat(
            Some(d),
            *name,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(*major, *minor),
        );
        if let Err(e) = r {
            nix::sys::stat::umask(old);
            return Err(err(format!("creating /dev/{name}"), e));
        }
    }
    nix::sys::stat::umask(old);
    for (name, target) in DEV_LINKS {
        nix::unistd::symlinkat(*target, Some(d), *name)
            .map_err(|e| err(format!("creating /dev/{name}"), e))?;
    }
    for (name, fstype, flags, data) in [
        (
            "pts",
            "devpts",
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            "newinstance,ptmxmode=0666,mode=0620,gid=5",
        ),
        (
            "shm",
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            "mode=1777,size=65536k",
        ),
        (
            "mqueue",
            "mqueue",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            "",
        ),
    ] {
        nix::sys::stat::mkdirat(Some(d), name, Mode::from_bits_truncate(0o755))
            .map_err(|e| err(format!("creating /dev/{name}"), e))?;
        let target = open_in_root(d, name, OFlag::O_PATH)
            .map_err(|e| err(format!("opening /dev/{name}"), e))?;
        let data = (!data.is_empty()).then_some(data);
        mount_at(
            Some(fstype),
            &target,
            Some(fstype),
            flags,
            data,
            &format!("/dev/{name}"),
        )?;
    }
    Ok(())
}

fn mask(root: RawFd, path: &str) -> SetupResult<()> {
    let target = match open_in_root(root, path, OFlag::O_PATH) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(err(format!("masking {path}"), e)),
    };
    let st =
        nix::sys::stat::fstat(target.as_raw_fd()).map_err(|e| err(format!("masking {path}"), e))?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR {
        mount_at(
            Some("tmpfs"),
            &target,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            Some("size=0"),
            path,
        )
    } else {
        mount_at(
            Some("/dev/null"),
            &target,
            None,
            MsFlags::MS_BIND,
            None,
            path,
        )
    }
}

fn read_only(root: RawFd, path: &str) -> SetupResult<()> {
    let target = match open_in_root(root, path, OFlag::O_PATH) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(err(format!("opening {path}"), e)),
    };
    let p = fd_path(&target);
    mount(
        Some(p.as_str()),
        p.as_str(),
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| err(format!("binding {path}"), e))?;
    // Reopen to reach the new bind mount rather than what lay beneath.
    let target =
        open_in_root(root, path, OFlag::O_PATH).map_err(|e| err(format!("opening {path}"), e))?;
    let p = fd_path(&target);
    mount(
        None::<&str>,
        p.as_str(),
        None::<&str>,
        MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV
            | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| err(format!("making {path} read-only"), e))
}

/// pivot_root(".", ".") then detach the old root: the trick runc uses, with
/// no directory for the old root left in the image.
fn pivot(rootfs: &Path) -> SetupResult<()> {
    nix::unistd::chdir(rootfs).map_err(|e| err("entering the rootfs", e))?;
    nix::unistd::pivot_root(".", ".").map_err(|e| err("pivot_root", e))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| err("detaching the old root", e))?;
    nix::unistd::chdir("/").map_err(|e| err("chdir /", e))
}

/// The generated /etc files: hosts, hostname, resolv.conf.
pub fn write_etc_files(spec: &SandboxSpec, dirs: &SandboxDirs) -> std::io::Result<()> {
    let h = &spec.hostname;
    // On bridge networks: its own address and its peers' names.
    std::fs::write(&dirs.hosts, sbx_shared::network::hosts::for_spec(spec))?;
    std::fs::write(&dirs.hostname, format!("{h}\n"))?;
    // With no network there is nobody to ask; with the host's network, ask
    // whom the host asks (systemd-resolved's stub is the host's loopback,
    // which the host network shares).
    let resolv = match spec.network {
        sbx_shared::spec::NetworkMode::Host => {
            std::fs::read("/etc/resolv.conf").unwrap_or_default()
        }
        // Bridge networks: names come from /etc/hosts; nothing leaves.
        sbx_shared::spec::NetworkMode::None | sbx_shared::spec::NetworkMode::Bridge => Vec::new(),
    };
    std::fs::write(&dirs.resolv, resolv)?;
    std::fs::create_dir_all(&dirs.upper)?;
    std::fs::create_dir_all(&dirs.work)?;
    std::fs::create_dir_all(&dirs.rootfs)
}
