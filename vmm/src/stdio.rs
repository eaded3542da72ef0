//! The host ends of the guest's consoles: control, the workload's stdout,
//! stderr and stdin, connected to the caller's streams, pipes or a pty.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use sbx_shared::backend::{SandboxIo, Stdio};
use sbx_shared::spec::SandboxSpec;
use sbx_vm_protocol::HostMessage;

use crate::config::Console;

pub type Result<T> = std::result::Result<T, nix::errno::Errno>;

/// What `plumb` sets up.
pub struct Plumbing {
    /// `/dev/hvc0` … `/dev/hvc3`, in order.
    pub consoles: Vec<Console>,
    /// The host end of the control port.
    pub control: OwnedFd,
    /// What the caller gets from `take_io`.
    pub io: SandboxIo,
    /// Where the workload's input comes from, and the stdin console it is
    /// counted into (see [`relay_stdin`]).
    pub stdin: Option<(OwnedFd, OwnedFd)>,
    /// The terminal's size when the workload gets one.
    pub tty_size: Option<(u16, u16)>,
}

fn pair() -> Result<(OwnedFd, OwnedFd)> {
    socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
}

fn dup(fd: impl AsFd) -> Result<OwnedFd> {
    fd.as_fd()
        .try_clone_to_owned()
        .map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EBADF)))
}

fn console(to_host: Option<OwnedFd>, from_host: Option<OwnedFd>) -> Console {
    Console { to_host, from_host }
}

pub fn plumb(spec: &SandboxSpec, stdio: Stdio) -> Result<Plumbing> {
    let (control, guest_ctl) = pair()?;
    let ctl = console(Some(dup(&guest_ctl)?), Some(guest_ctl));
    let mut io = SandboxIo::default();
    let mut stdin = None;
    let mut tty_size = None;

    let (out, err, input) = if spec.process.terminal {
        // A host pty in raw mode carries the guest pty's bytes unchanged;
        // the caller relays its master as it would a container's.
        let pty = nix::pty::openpty(None, None)?;
        for fd in [&pty.master, &pty.slave] {
            nix::fcntl::fcntl(
                fd.as_raw_fd(),
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            )?;
        }
        let mut t = nix::sys::termios::tcgetattr(&pty.slave)?;
        nix::sys::termios::cfmakeraw(&mut t);
        nix::sys::termios::tcsetattr(&pty.slave, nix::sys::termios::SetArg::TCSANOW, &t)?;
        tty_size = host_winsize();
        let input = dup(&pty.slave)?;
        io.tty = Some(File::from(pty.master));
        (
            console(Some(pty.slave), None),
            console(None, None),
            console(None, Some(input)),
        )
    } else {
        let (out, err) = match stdio {
            Stdio::Inherit => (
                console(Some(dup(std::io::stdout())?), None),
                console(Some(dup(std::io::stderr())?), None),
            ),
            Stdio::Piped => {
                let (out_host, out_guest) = pair()?;
                let (err_host, err_guest) = pair()?;
                io.stdout = Some(File::from(out_host));
                io.stderr = Some(File::from(err_host));
                (
                    console(Some(out_guest), None),
                    console(Some(err_guest), None),
                )
            }
        };
        let input = if spec.process.stdin {
            let source = match stdio {
                Stdio::Inherit => dup(std::io::stdin())?,
                Stdio::Piped => {
                    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
                    io.stdin = Some(File::from(w));
                    r
                }
            };
            let (sink, guest_in) = pair()?;
            stdin = Some((source, sink));
            console(None, Some(guest_in))
        } else {
            console(None, None)
        };
        (out, err, input)
    };
    Ok(Plumbing {
        consoles: vec![ctl, out, err, input],
        control,
        io,
        stdin,
        tty_size,
    })
}

fn host_winsize() -> Option<(u16, u16)> {
    // SAFETY: TIOCGWINSZ writes into the winsize we own.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: as above; fd 1 is ours to query.
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    (ok && ws.ws_row > 0).then_some((ws.ws_row, ws.ws_col))
}

/// Copy the workload's input into the stdin console, counting bytes; at
/// EOF tell the guest how many there were, so that it closes the
/// workload's stdin once it has passed them all on (a console has no EOF
/// of its own).
///
/// `sink` must stay open until the VM ends (the caller keeps a clone):
/// QEMU drops a socket chardev on hang-up, with whatever it had not yet
/// passed to the guest.
pub fn relay_stdin(source: OwnedFd, sink: Arc<File>, control: Arc<Mutex<File>>) {
    let mut source = File::from(source);
    let mut sink: &File = &sink;
    let mut buf = vec![0u8; 64 * 1024];
    let mut bytes = 0u64;
    loop {
        match source.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if sink.write_all(&buf[..n]).is_err() {
                    return;
                }
                bytes += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let msg = sbx_vm_protocol::to_line(&HostMessage::StdinEof { bytes });
    let _ = control
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .write_all(&msg);
}
