//! The guest's filesystems: the initramfs basics, then the image's root
//! disk under a tmpfs writable layer, and the switch into it.
//!
//! The initramfs is the kernel's rootfs, which cannot be pivoted away from;
//! the switch is switch_root's: move the new root onto `/` and chroot.

use std::os::fd::AsRawFd;
use std::path::Path;

use nix::errno::Errno;
use nix::mount::{mount, MsFlags};
use sbx_vm_protocol::{GuestSpec, ROOT_DISK};

/// Where the root disk is mounted, read-only.
const LOWER: &str = "/sbx/lower";
/// The tmpfs that holds the writable layer (upper and work dirs).
const RW: &str = "/sbx/rw";
/// The overlay the workload sees as `/`.
const MERGED: &str = "/sbx/root";
/// Generated /etc files for a read-only root, bind-mounted over the image's.
const ETC: &str = "/sbx/etc";

type Result<T> = std::result::Result<T, String>;

fn mnt(
    source: &str,
    target: &str,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<()> {
    mount(Some(source), target, fstype, flags, data).map_err(|e| {
        format!(
            "mount {source} on {target} ({}): {}",
            fstype.unwrap_or("bind/move"),
            e.desc()
        )
    })
}

fn mkdir(path: &str) -> Result<()> {
    std::fs::create_dir_all(path).map_err(|e| format!("mkdir {path}: {e}"))
}

/// /dev, /proc and /sys in the initramfs, for the consoles and the disk.
pub fn early() -> Result<()> {
    let nodev = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
    for (fs, target, flags) in [
        ("devtmpfs", "/dev", MsFlags::MS_NOSUID),
        ("proc", "/proc", nodev),
        ("sysfs", "/sys", nodev),
    ] {
        mkdir(target)?;
        match mount(Some(fs), target, Some(fs), flags, None::<&str>) {
            Ok(()) | Err(Errno::EBUSY) => {}
            Err(e) => return Err(format!("mount {fs} on {target}: {}", e.desc())),
        }
    }
    Ok(())
}

/// Mount the root disk (and with it writable, the tmpfs layer over it),
/// give it /proc, /sys, /dev and the generated /etc files, and make it `/`.
pub fn root(spec: &GuestSpec) -> Result<()> {
    mkdir(LOWER)?;
    mnt(
        ROOT_DISK,
        LOWER,
        Some(&spec.rootfs_type),
        MsFlags::MS_RDONLY | MsFlags::MS_NOATIME,
        None,
    )?;
    let new_root = if spec.read_only {
        LOWER
    } else {
        mkdir(RW)?;
        mnt(
            "tmpfs",
            RW,
            Some("tmpfs"),
            MsFlags::empty(),
            Some("mode=0755"),
        )?;
        mkdir(&format!("{RW}/upper"))?;
        mkdir(&format!("{RW}/work"))?;
        mkdir(MERGED)?;
        let opts = format!("lowerdir={LOWER},upperdir={RW}/upper,workdir={RW}/work");
        mnt(
            "overlay",
            MERGED,
            Some("overlay"),
            MsFlags::empty(),
            Some(&opts),
        )?;
        keep_upper()?;
        MERGED
    };
    // Volumes and tmpfs mounts, while /dev (their disks) and /proc (the
    // descriptors they are mounted through) are still where they were.
    crate::volumes::mount_all(spec, new_root)?;
    let writable = !spec.read_only;
    let inside = |p: &str| format!("{new_root}{p}");
    // A mount point the image lacks can only be made on a writable root.
    let ensure_dir = |p: &str| -> Result<bool> {
        let path = inside(p);
        if Path::new(&path).is_dir() {
            return Ok(true);
        }
        if writable {
            mkdir(&path)?;
            return Ok(true);
        }
        Ok(false)
    };
    for p in ["/dev", "/proc", "/sys"] {
        if ensure_dir(p)? {
            mnt(p, &inside(p), None, MsFlags::MS_MOVE, None)?;
        }
    }
    if Path::new(&inside("/dev")).join("null").exists() {
        mkdir(&inside("/dev/pts"))?;
        mnt(
            "devpts",
            &inside("/dev/pts"),
            Some("devpts"),
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
        )?;
        mkdir(&inside("/dev/shm"))?;
        mnt(
            "shm",
            &inside("/dev/shm"),
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=1777"),
        )?;
    }
    etc_files(spec, new_root)?;
    switch_root(new_root)
}

/// /etc/hostname, /etc/hosts and an empty /etc/resolv.conf (a VM has no
/// network yet), as the container backend writes them.
fn etc_files(spec: &GuestSpec, new_root: &str) -> Result<()> {
    let h = &spec.hostname;
    let files = [
        ("hostname", format!("{h}\n")),
        (
            "hosts",
            spec.hosts.clone().unwrap_or_else(|| {
                format!(
                    "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{h}\n"
                )
            }),
        ),
        ("resolv.conf", String::new()),
    ];
    let etc = format!("{new_root}/etc");
    if !Path::new(&etc).is_dir() {
        return Ok(());
    }
    if !spec.read_only {
        for (name, text) in files {
            let path = format!("{etc}/{name}");
            // A dangling symlink (resolv.conf often is one) is replaced.
            let _ = std::fs::remove_file(&path);
            std::fs::write(&path, text).map_err(|e| format!("write {path}: {e}"))?;
        }
        return Ok(());
    }
    mkdir(ETC)?;
    for (name, text) in files {
        let target = format!("{etc}/{name}");
        if !Path::new(&target).is_file() {
            continue;
        }
        let source = format!("{ETC}/{name}");
        std::fs::write(&source, text).map_err(|e| format!("write {source}: {e}"))?;
        mnt(&source, &target, None, MsFlags::MS_BIND, None)?;
    }
    Ok(())
}

/// The writable layer's upper directory, held open across the switch
/// into the new root (which hides the tmpfs it lives on).
static UPPER: std::sync::OnceLock<std::fs::File> = std::sync::OnceLock::new();

fn keep_upper() -> Result<()> {
    let path = format!("{RW}/upper");
    let dir = std::fs::File::open(&path).map_err(|e| format!("open {path}: {e}"))?;
    let _ = UPPER.set(dir);
    Ok(())
}

/// The upper directory as a path that works from the new root (through
/// /proc); None with a read-only root.
pub fn upper_dir() -> Option<std::path::PathBuf> {
    UPPER
        .get()
        .map(|d| format!("/proc/self/fd/{}", d.as_raw_fd()).into())
}

fn switch_root(new_root: &str) -> Result<()> {
    nix::unistd::chdir(new_root).map_err(|e| format!("chdir {new_root}: {}", e.desc()))?;
    mnt(".", "/", None, MsFlags::MS_MOVE, None)?;
    nix::unistd::chroot(".").map_err(|e| format!("chroot {new_root}: {}", e.desc()))?;
    nix::unistd::chdir("/").map_err(|e| format!("chdir /: {}", e.desc()))
}
