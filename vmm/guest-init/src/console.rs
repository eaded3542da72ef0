//! The guest's consoles: `/dev/hvcN` in raw mode, and the control port's
//! line protocol on `hvc0`.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

use nix::sys::termios;
use sbx_vm_protocol::{GuestEvent, GuestSpec, HostMessage, LineBuffer, CONSOLES};

/// How long to wait for the virtio consoles to appear in /dev.
const APPEAR_TIMEOUT: Duration = Duration::from_secs(5);

/// Open `/dev/hvc0` … `/dev/hvc3`, each in raw mode: bytes pass unchanged
/// (no newline translation, no echo, no line editing).
pub fn open_all() -> Result<[File; CONSOLES], String> {
    let open = |i: usize| -> Result<File, String> {
        let path = format!("/dev/hvc{i}");
        let deadline = Instant::now() + APPEAR_TIMEOUT;
        let file = loop {
            match std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
                .open(&path)
            {
                Ok(f) => break f,
                Err(e) if Instant::now() < deadline && e.raw_os_error() == Some(libc::ENOENT) => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(format!("open {path}: {e}")),
            }
        };
        make_raw(&file).map_err(|e| format!("raw mode on {path}: {}", e.desc()))?;
        Ok(file)
    };
    Ok([open(0)?, open(1)?, open(2)?, open(3)?])
}

pub fn make_raw(fd: impl AsFd) -> nix::Result<()> {
    let mut t = termios::tcgetattr(&fd)?;
    termios::cfmakeraw(&mut t);
    termios::tcsetattr(&fd, termios::SetArg::TCSANOW, &t)
}

/// Wait until everything written to a console has gone to the host.
pub fn drain(fd: impl AsFd) {
    let _ = termios::tcdrain(fd);
}

/// The control port: spec and host messages in, events out.
pub struct Control {
    port: File,
    lines: LineBuffer,
}

impl Control {
    pub fn new(port: File) -> Self {
        Control {
            port,
            lines: LineBuffer::default(),
        }
    }

    pub fn port(&self) -> &File {
        &self.port
    }

    /// Block until the host's first line, the spec.
    pub fn read_spec(&mut self) -> Result<GuestSpec, String> {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(line) = self.lines.next_line() {
                return sbx_vm_protocol::from_line(&line)
                    .map_err(|e| format!("reading the spec from the control port: {e}"));
            }
            match self.port.read(&mut buf) {
                Ok(0) => return Err("the control port closed before the spec came".into()),
                Ok(n) => self.lines.push(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("reading the control port: {e}")),
            }
        }
    }

    /// Read what is available (the caller polled) and return the complete
    /// messages; malformed lines are skipped.
    pub fn read_messages(&mut self) -> Vec<HostMessage> {
        let mut buf = [0u8; 4096];
        if let Ok(n) = self.port.read(&mut buf) {
            self.lines.push(&buf[..n]);
        }
        let mut out = Vec::new();
        while let Some(line) = self.lines.next_line() {
            match sbx_vm_protocol::from_line(&line) {
                Ok(m) => out.push(m),
                Err(e) => eprintln!("sbx-guest-init: ignoring a control message: {e}"),
            }
        }
        out
    }

    pub fn send(&mut self, event: &GuestEvent) {
        if let Err(e) = self.port.write_all(&sbx_vm_protocol::to_line(event)) {
            eprintln!("sbx-guest-init: writing to the control port: {e}");
        }
    }

    pub fn drain(&self) {
        drain(&self.port);
    }
}
