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
    /// Output consoles: (console number, host end, where it goes), for
    /// [`relay_output`].
    pub outputs: Vec<(u8, OwnedFd, OwnedFd)>,
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

/// An output console: the VMM's end (with room for a whole window of
/// output, see [`sbx_vm_protocol::OUTPUT_WINDOW`]) and ours.
fn output_pair() -> Result<(OwnedFd, OwnedFd)> {
    use nix::sys::socket::{setsockopt, sockopt};
    let (ours, vmm) = pair()?;
    // Above wmem_max needs CAP_NET_ADMIN; the plain option is capped there.
    if setsockopt(&vmm, sockopt::SndBufForce, &sbx_vm_protocol::OUTPUT_SNDBUF).is_err() {
        setsockopt(&vmm, sockopt::SndBuf, &sbx_vm_protocol::OUTPUT_SNDBUF)?;
    }
    Ok((ours, vmm))
}

pub fn plumb(spec: &SandboxSpec, stdio: Stdio) -> Result<Plumbing> {
    let (control, guest_ctl) = pair()?;
    // The control port carries exec output too, within windows the guest
    // keeps (see sbx_vm_protocol::EXEC_WINDOW): room for all of them.
    {
        use nix::sys::socket::{setsockopt, sockopt};
        if setsockopt(
            &guest_ctl,
            sockopt::SndBufForce,
            &sbx_vm_protocol::OUTPUT_SNDBUF,
        )
        .is_err()
        {
            setsockopt(&guest_ctl, sockopt::SndBuf, &sbx_vm_protocol::OUTPUT_SNDBUF)?;
        }
    }
    let ctl = console(Some(dup(&guest_ctl)?), Some(guest_ctl));
    let mut io = SandboxIo::default();
    let mut stdin = None;
    let mut tty_size = None;

    let mut outputs = Vec::new();
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
        let (ours, vmm) = output_pair()?;
        outputs.push((1, ours, pty.slave));
        io.tty = Some(File::from(pty.master));
        (
            console(Some(vmm), None),
            console(None, None),
            console(None, Some(input)),
        )
    } else {
        let (out_dest, err_dest) = match stdio {
            Stdio::Inherit => (dup(std::io::stdout())?, dup(std::io::stderr())?),
            Stdio::Piped => {
                let (out_r, out_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
                let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
                io.stdout = Some(File::from(out_r));
                io.stderr = Some(File::from(err_r));
                (out_w, err_w)
            }
        };
        let (out_ours, out_vmm) = output_pair()?;
        let (err_ours, err_vmm) = output_pair()?;
        outputs.push((1, out_ours, out_dest));
        outputs.push((2, err_ours, err_dest));
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
        (
            console(Some(out_vmm), None),
            console(Some(err_vmm), None),
            input,
        )
    };
    Ok(Plumbing {
        consoles: vec![ctl, out, err, input],
        control,
        io,
        stdin,
        outputs,
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

/// Acknowledge output at least this often, so the guest's window moves.
const ACK_EVERY: u64 = 256 * 1024;

/// Copy an output console to where it goes (the caller's stdout or
/// stderr, a pipe, the pty), acknowledging what was taken so that the guest
/// never has more in flight than the VMM's end can hold. Ends when the VM
/// does, closing `dest`.
pub fn relay_output(console: u8, sock: OwnedFd, dest: OwnedFd, control: Arc<Mutex<File>>) {
    let mut sock = File::from(sock);
    let mut dest = Some(File::from(dest));
    let mut buf = vec![0u8; 64 * 1024];
    let (mut total, mut acked) = (0u64, 0u64);
    let mut vm_listens = true;
    loop {
        let n = match sock.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        // A reader that went away (EPIPE) no longer gets output; the guest
        // still gets its acknowledgements.
        if let Some(d) = &mut dest {
            if d.write_all(&buf[..n]).is_err() {
                dest = None;
            }
        }
        total += n as u64;
        // A short read means the socket is drained for now.
        if vm_listens && (total - acked >= ACK_EVERY || n < buf.len()) {
            let msg = sbx_vm_protocol::to_line(&HostMessage::Ack {
                console,
                bytes: total,
            });
            let mut c = control.lock().unwrap_or_else(|p| p.into_inner());
            // Failing, the VM is gone: keep draining what it left.
            vm_listens = c.write_all(&msg).is_ok();
            acked = total;
        }
    }
}
