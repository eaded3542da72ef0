//! Engine `qemu`: `qemu-system-x86_64 -M microvm` given the same kernel,
//! initramfs, disks and consoles as the kvm engine.
//!
//! Each console is a single-port virtio-console (`virtio-serial-device,
//! max_ports=1` + `virtconsole`) on its own virtio-mmio transport; with
//! `acpi=off` QEMU appends their `virtio_mmio.device=` entries to the
//! command line in declaration order, so the guest's `/dev/hvcN` is
//! `VmConfig::consoles[N]`. A console whose host end is a socket is handed
//! to QEMU as it is (`-chardev socket,fd=N`); any other descriptor is
//! relayed through a socketpair by a thread here.

use std::ffi::OsString;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};

use crate::config::{Console, VmConfig};
use crate::engine::{Accel, RunningVm};

const DEFAULT_BINARY: &str = "qemu-system-x86_64";
/// The first descriptor number QEMU receives consoles on.
const FIRST_FD: RawFd = 3;

#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    #[error("vm engine qemu: {0} not found (install qemu-system-x86, or set SBX_QEMU)")]
    Missing(String),
    #[error("vm engine qemu: start {}: {source}", binary.display())]
    Spawn {
        binary: PathBuf,
        source: std::io::Error,
    },
    #[error("vm engine qemu: {what}: {source}")]
    Setup {
        what: &'static str,
        source: nix::errno::Errno,
    },
    #[error("vm engine qemu: open {}: {source}", path.display())]
    Log {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// `SBX_QEMU`, else `qemu-system-x86_64` from PATH.
pub fn binary() -> Result<PathBuf, QemuError> {
    let name: OsString = std::env::var_os("SBX_QEMU").unwrap_or_else(|| DEFAULT_BINARY.into());
    let name = PathBuf::from(name);
    if name.components().count() > 1 {
        return if is_executable(&name) {
            Ok(name)
        } else {
            Err(QemuError::Missing(name.display().to_string()))
        };
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(&name))
        .find(|p| is_executable(p))
        .ok_or_else(|| QemuError::Missing(name.display().to_string()))
}

fn is_executable(p: &Path) -> bool {
    nix::unistd::access(p, nix::unistd::AccessFlags::X_OK).is_ok() && p.is_file()
}

/// QEMU's option syntax doubles commas inside a value.
fn escape(p: &Path) -> String {
    p.display().to_string().replace(',', ",,")
}

/// A running QEMU and the threads relaying its non-socket consoles.
pub struct QemuVm {
    pid: i32,
    child: Mutex<Child>,
    relays: Mutex<Vec<JoinHandle<()>>>,
    /// Set once reaped, so that a late kill cannot hit a recycled pid.
    reaped: Mutex<Option<std::process::ExitStatus>>,
}

/// Start QEMU on `config`; its stderr goes to `log`.
pub fn spawn(
    binary: &Path,
    accel: Accel,
    mut config: VmConfig,
    log: &Path,
) -> Result<QemuVm, QemuError> {
    let mut args: Vec<String> = vec![
        "-M".into(),
        // No ACPI: QEMU then declares the virtio-mmio devices on the kernel
        // command line. No option ROMs. The legacy PIC, PIT and RTC stay
        // (their defaults): without the PIC the guest finds no timer
        // interrupt and hangs calibrating; without the RTC it spends ~1 s
        // failing to read the time.
        "microvm,acpi=off,x-option-roms=off".into(),
        "-nodefaults".into(),
        "-no-user-config".into(),
        "-display".into(),
        "none".into(),
        "-no-reboot".into(),
        "-m".into(),
        format!("{}M", config.memory_mib),
        "-smp".into(),
        config.vcpus.max(1).to_string(),
    ];
    match accel {
        Accel::Tcg => args.extend(["-accel".into(), "tcg".into()]),
        // `-cpu host` alone aborts on MSR 0x10a (IA32_ARCH_CAPABILITIES).
        Accel::Kvm => args.extend([
            "-accel".into(),
            "kvm".into(),
            "-cpu".into(),
            "host,-arch-capabilities".into(),
        ]),
    }
    args.extend(["-kernel".into(), config.kernel.display().to_string()]);
    if let Some(initrd) = &config.initramfs {
        args.extend(["-initrd".into(), initrd.display().to_string()]);
    }
    args.extend(["-append".into(), config.cmdline.clone()]);
    match &config.serial_log {
        Some(p) => args.extend([
            "-chardev".into(),
            format!("file,id=serial,path={}", escape(p)),
            "-serial".into(),
            "chardev:serial".into(),
        ]),
        None => args.extend(["-serial".into(), "null".into()]),
    }
    for (i, d) in config.disks.iter().enumerate() {
        args.extend([
            "-drive".into(),
            format!(
                "id=disk{i},file={},format=raw,if=none,readonly={}",
                escape(&d.path),
                if d.read_only { "on" } else { "off" }
            ),
            "-device".into(),
            format!("virtio-blk-device,drive=disk{i}"),
        ]);
    }

    // Network: taps the caller made and put on their bridges.
    for (i, n) in config.nets.iter().enumerate() {
        args.extend([
            "-netdev".into(),
            format!(
                "tap,id=net{i},ifname={},script=no,downscript=no",
                n.tap.replace(',', ",,")
            ),
            "-device".into(),
            format!(
                "virtio-net-device,netdev=net{i},mac={}",
                n.mac
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":")
            ),
        ]);
    }

    // Consoles: descriptors QEMU inherits, and relays for the rest.
    let mut pass: Vec<OwnedFd> = Vec::new();
    let mut relays: Vec<(OwnedFd, Option<OwnedFd>, Option<OwnedFd>)> = Vec::new();
    for (i, console) in std::mem::take(&mut config.consoles).into_iter().enumerate() {
        let chardev = match direct_socket(console)? {
            Direct::Null => format!("null,id=con{i}"),
            Direct::Socket(fd) => {
                pass.push(fd);
                format!("socket,id=con{i},fd={}", FIRST_FD + pass.len() as RawFd - 1)
            }
            Direct::Relay(c) => {
                let (ours, theirs) = socketpair(
                    AddressFamily::Unix,
                    SockType::Stream,
                    None,
                    SockFlag::SOCK_CLOEXEC,
                )
                .map_err(|source| QemuError::Setup {
                    what: "socketpair for a console",
                    source,
                })?;
                pass.push(theirs);
                relays.push((ours, c.to_host, c.from_host));
                format!("socket,id=con{i},fd={}", FIRST_FD + pass.len() as RawFd - 1)
            }
        };
        args.extend([
            "-chardev".into(),
            chardev,
            "-device".into(),
            format!("virtio-serial-device,id=vser{i},max_ports=1"),
            "-device".into(),
            format!("virtconsole,bus=vser{i}.0,chardev=con{i}"),
        ]);
    }

    if std::env::var("SBX_DEBUG").is_ok_and(|v| !v.is_empty() && v != "0") {
        eprintln!("sbx: vm: {} {}", binary.display(), args.join(" "));
    }
    let stderr = File::create(log).map_err(|source| QemuError::Log {
        path: log.to_path_buf(),
        source,
    })?;
    let mut cmd = Command::new(binary);
    cmd.args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    let raw: Vec<RawFd> = pass.iter().map(|f| f.as_raw_fd()).collect();
    // SAFETY: runs in the forked child before exec, making only raw
    // syscalls (fcntl, dup2, setpgid, prctl) on descriptors it owns.
    unsafe {
        cmd.pre_exec(move || {
            // Own process group: the terminal's ^C is for the workload
            // (sbx forwards it), not for the VMM.
            libc::setpgid(0, 0);
            // Die with sbx.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            // Move every descriptor out of the target range, then into it.
            let mut high = Vec::with_capacity(raw.len());
            for &fd in &raw {
                let h = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 100);
                if h < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                high.push(h);
            }
            for (i, h) in high.into_iter().enumerate() {
                if libc::dup2(h, FIRST_FD + i as RawFd) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|source| QemuError::Spawn {
        binary: binary.to_path_buf(),
        source,
    })?;
    drop(pass);
    let relays = relays
        .into_iter()
        .map(|(sock, to_host, from_host)| {
            std::thread::spawn(move || relay(sock, to_host, from_host))
        })
        .collect();
    Ok(QemuVm {
        pid: child.id() as i32,
        child: Mutex::new(child),
        relays: Mutex::new(relays),
        reaped: Mutex::new(None),
    })
}

enum Direct {
    Null,
    Socket(OwnedFd),
    Relay(Console),
}

fn is_socket(fd: &OwnedFd) -> bool {
    nix::sys::stat::fstat(fd.as_raw_fd())
        .map(|s| s.st_mode & libc::S_IFMT == libc::S_IFSOCK)
        .unwrap_or(false)
}

fn same_file(a: &OwnedFd, b: &OwnedFd) -> bool {
    match (
        nix::sys::stat::fstat(a.as_raw_fd()),
        nix::sys::stat::fstat(b.as_raw_fd()),
    ) {
        (Ok(x), Ok(y)) => x.st_dev == y.st_dev && x.st_ino == y.st_ino,
        _ => false,
    }
}

/// A console QEMU can be given as it is: nothing, or one socket.
fn direct_socket(c: Console) -> Result<Direct, QemuError> {
    Ok(match (c.to_host, c.from_host) {
        (None, None) => Direct::Null,
        (Some(s), None) | (None, Some(s)) if is_socket(&s) => Direct::Socket(s),
        (Some(a), Some(b)) if is_socket(&a) && same_file(&a, &b) => Direct::Socket(a),
        (to_host, from_host) => Direct::Relay(Console { to_host, from_host }),
    })
}

/// Copy between QEMU's end of a console and its host descriptors until
/// QEMU goes away.
fn relay(sock: OwnedFd, to_host: Option<OwnedFd>, from_host: Option<OwnedFd>) {
    // SAFETY: each descriptor is owned here and wrapped once.
    let mut sock = unsafe { File::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(sock)) };
    let mut to_host = to_host.map(File::from);
    let mut from_host = from_host;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut fds = vec![libc::pollfd {
            fd: sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        if let Some(f) = &from_host {
            fds.push(libc::pollfd {
                fd: f.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        // SAFETY: poll(2) over a pollfd array we own, of its length.
        if unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) } < 0 {
            continue;
        }
        if fds[0].revents != 0 {
            match nix::unistd::read(sock.as_raw_fd(), &mut buf) {
                Ok(0) | Err(nix::errno::Errno::ECONNRESET) => return,
                Ok(n) => {
                    if let Some(t) = &mut to_host {
                        if t.write_all(&buf[..n]).is_err() {
                            to_host = None;
                        }
                    }
                }
                Err(nix::errno::Errno::EINTR) | Err(nix::errno::Errno::EAGAIN) => {}
                Err(_) => return,
            }
        }
        if fds.get(1).is_some_and(|f| f.revents != 0) {
            let Some(f) = &from_host else { continue };
            match nix::unistd::read(f.as_raw_fd(), &mut buf) {
                Ok(0) => from_host = None,
                Ok(n) => {
                    if sock.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
                Err(nix::errno::Errno::EINTR) | Err(nix::errno::Errno::EAGAIN) => {}
                // EIO: a pty whose other side is gone.
                Err(_) => from_host = None,
            }
        }
    }
}

impl RunningVm for QemuVm {
    fn pid(&self) -> i32 {
        self.pid
    }

    fn wait_timeout(&self, limit: Option<Duration>) -> Option<String> {
        let deadline = limit.map(|l| Instant::now() + l);
        let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        let status = loop {
            if deadline.is_none() {
                match child.wait() {
                    Ok(s) => break s,
                    Err(_) => return Some("lost".into()),
                }
            }
            match child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) => {}
                Err(_) => return Some("lost".into()),
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return None;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        *self.reaped.lock().unwrap_or_else(|p| p.into_inner()) = Some(status);
        drop(child);
        for r in std::mem::take(&mut *self.relays.lock().unwrap_or_else(|p| p.into_inner())) {
            let _ = r.join();
        }
        Some(status.to_string())
    }

    fn kill(&self) {
        let reaped = self.reaped.lock().unwrap_or_else(|p| p.into_inner());
        if reaped.is_none() {
            // SAFETY: kill(2) takes no pointers; the pid is our unreaped child.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
        }
    }
}
