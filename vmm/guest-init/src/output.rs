//! One output stream of the workload: its pipe (or pty master) copied to a
//! console, with no more in flight than the host has said it has room for.
//!
//! QEMU drops what a console's host end cannot take at once, so the host
//! acknowledges what it has taken ([`HostMessage::Ack`]) and the guest
//! stops reading the workload's output while [`OUTPUT_WINDOW`] is in flight:
//! the workload then blocks on its pipe, as it would on a slow reader.
//!
//! [`HostMessage::Ack`]: sbx_vm_protocol::HostMessage::Ack

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use sbx_vm_protocol::{output_cost, OUTPUT_WINDOW};

use crate::console;

pub struct Output {
    /// The workload's end; None once it reached EOF.
    source: Option<OwnedFd>,
    console: File,
    /// Bytes written to the console so far.
    sent: u64,
    /// Writes not yet acknowledged: (`sent` after the write, its cost).
    inflight: VecDeque<(u64, u64)>,
    cost: u64,
}

impl Output {
    pub fn new(source: Option<OwnedFd>, console: File) -> Self {
        Output {
            source,
            console,
            sent: 0,
            inflight: VecDeque::new(),
            cost: 0,
        }
    }

    pub fn is_open(&self) -> bool {
        self.source.is_some()
    }

    /// The descriptor to poll for input, while the window has room.
    pub fn readable_fd(&self) -> Option<RawFd> {
        self.source
            .as_ref()
            .filter(|_| self.cost < OUTPUT_WINDOW)
            .map(|s| s.as_raw_fd())
    }

    /// Waiting for the host rather than for the workload.
    pub fn window_full(&self) -> bool {
        self.source.is_some() && self.cost >= OUTPUT_WINDOW
    }

    /// The pty master, for window-size changes.
    pub fn source_fd(&self) -> Option<RawFd> {
        self.source.as_ref().map(|s| s.as_raw_fd())
    }

    /// Copy what is readable to the console; whether anything moved. At EOF
    /// (a pty master reads EIO once no slave is open) the source closes.
    pub fn pump(&mut self, buf: &mut [u8]) -> bool {
        let Some(fd) = &self.source else { return false };
        // SAFETY: read(2) into a buffer we own, of its length.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        match Errno::result(n) {
            Ok(0) => {
                self.source = None;
                false
            }
            Ok(n) => {
                let n = n as usize;
                let _ = self.console.write_all(&buf[..n]);
                let cost = output_cost(n as u64);
                self.sent += n as u64;
                self.cost += cost;
                self.inflight.push_back((self.sent, cost));
                true
            }
            Err(Errno::EAGAIN) | Err(Errno::EINTR) => false,
            Err(_) => {
                self.source = None;
                false
            }
        }
    }

    /// The host has taken `bytes` in all.
    pub fn ack(&mut self, bytes: u64) {
        while let Some(&(end, cost)) = self.inflight.front() {
            if end > bytes {
                break;
            }
            self.cost -= cost;
            self.inflight.pop_front();
        }
    }

    /// Wait until everything written has gone to the host.
    pub fn flush(&self) {
        console::drain(&self.console);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_stops_reading_until_acknowledged() {
        let (src_r, src_w) = nix::unistd::pipe().unwrap();
        let (con_r, con_w) = nix::unistd::pipe().unwrap();
        let mut out = Output::new(Some(src_r), File::from(con_w));
        let mut workload = File::from(src_w);
        let mut buf = [0u8; 10];
        let mut sent = 0u64;
        while out.readable_fd().is_some() {
            workload.write_all(b"0123456789").unwrap();
            assert!(out.pump(&mut buf));
            sent += 10;
        }
        assert!(out.window_full());
        // Small writes are counted by their overhead, not only their bytes.
        assert!(sent < OUTPUT_WINDOW / 100, "{sent} bytes filled the window");
        out.ack(sent / 2);
        assert!(!out.window_full());
        out.ack(sent);
        assert_eq!(out.cost, 0);
        drop(workload);
        assert!(!out.pump(&mut buf));
        assert!(!out.is_open());
        drop(out);
        let mut copied = Vec::new();
        std::io::Read::read_to_end(&mut File::from(con_r), &mut copied).unwrap();
        assert_eq!(copied.len() as u64, sent);
    }
}
