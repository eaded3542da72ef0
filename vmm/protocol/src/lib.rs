//! The control port protocol between sbx (host) and its guest init.
//!
//! One JSON object per line on `/dev/hvc0`. The guest speaks first,
//! [`GuestEvent::Hello`] once its consoles are open: a virtio console
//! discards what arrives before the guest has set the port up, so the host
//! waits for it. Then the host writes a [`GuestSpec`], then any number of
//! [`HostMessage`]s; the guest answers with [`GuestEvent`]s, the last of
//! which is [`GuestEvent::Exit`] before it powers off.

use serde::{Deserialize, Serialize};

/// The guest's consoles, in the order the host declares them on the kernel
/// command line; the guest sees console N as `/dev/hvcN`.
pub const CONSOLE_CONTROL: usize = 0;
pub const CONSOLE_STDOUT: usize = 1;
pub const CONSOLE_STDERR: usize = 2;
pub const CONSOLE_STDIN: usize = 3;
pub const CONSOLES: usize = 4;

/// Where the root disk is in the guest (the first virtio-blk device).
pub const ROOT_DISK: &str = "/dev/vda";

/// What the guest init must run, and how. The host has already composed
/// image config and flags; the guest only applies them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestSpec {
    pub args: Vec<String>,
    /// `KEY=VALUE`, in order (later wins).
    pub env: Vec<String>,
    pub cwd: String,
    /// `user[:group]`, names or numbers; empty means root.
    pub user: String,
    pub hostname: String,
    /// `(resource, soft, hard)`, resources numbered as the kernel does.
    pub rlimits: Vec<(u32, u64, u64)>,
    /// Run the workload on a pseudo-terminal relayed over the stdout and
    /// stdin consoles.
    pub terminal: bool,
    /// Relay the stdin console to the workload (else it reads /dev/null).
    pub stdin: bool,
    /// No writable layer over the root disk.
    pub read_only: bool,
    /// The root disk's filesystem type (`ext4`).
    pub rootfs_type: String,
    /// Initial terminal size `(rows, cols)` with `terminal`.
    pub tty_size: Option<(u16, u16)>,
    /// Volumes and tmpfs mounts over the root, parents first.
    #[serde(default)]
    pub mounts: Vec<GuestMount>,
    /// Network interfaces, one per virtio-net device in declaration order.
    #[serde(default)]
    pub nets: Vec<GuestNet>,
    /// The whole /etc/hosts (bridge networks: own address, peers' names);
    /// None: localhost and the hostname only.
    #[serde(default)]
    pub hosts: Option<String>,
}

/// One interface the init addresses and brings up: found by its MAC
/// address (else the Nth `ethN`), given `address` (`10.89.0.3/24`). No
/// routes beyond the subnet's own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestNet {
    pub mac: String,
    pub address: String,
}

/// One mount the init makes in the new root before switching into it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestMount {
    /// Absolute path inside the guest's root (resolved in it).
    pub target: String,
    pub read_only: bool,
    pub source: GuestMountSource,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum GuestMountSource {
    /// A virtio-blk disk holding a filesystem (a volume): `/dev/vdb`…
    Disk { device: String, fstype: String },
    /// A fresh tmpfs; `size` in bytes, `mode` as chmod takes it.
    Tmpfs {
        size: Option<u64>,
        mode: Option<u32>,
    },
}

/// The guest's name for the virtio-blk disk declared `index`th (0: the
/// root disk, `/dev/vda`), as the kernel's virtio_blk names them.
pub fn disk_device(index: usize) -> String {
    // vda..vdz, then vdaa..vdzz (virtio_blk's virtblk_name_format).
    let mut name = String::new();
    let mut n = index;
    loop {
        name.insert(0, (b'a' + (n % 26) as u8) as char);
        if n < 26 {
            break;
        }
        n = n / 26 - 1;
    }
    format!("/dev/vd{name}")
}

/// Host → guest, after the spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HostMessage {
    /// Deliver a signal to the workload.
    Signal { signal: i32 },
    /// The workload's terminal has a new size.
    Resize { rows: u16, cols: u16 },
    /// The host's stdin ended after this many bytes: once the guest has
    /// passed them all on, it closes the workload's stdin.
    StdinEof { bytes: u64 },
    /// The host has taken this many bytes (in all) off an output console.
    /// QEMU drops console output its host end cannot take at once, so the
    /// guest keeps what is in flight below [`OUTPUT_WINDOW`].
    Ack { console: u8, bytes: u64 },
}

/// How much output may be in flight on a console, unacknowledged, counted
/// in [`output_cost`] units. The host gives the VMM's end of each output
/// console a send buffer of [`OUTPUT_SNDBUF`], well above what the window
/// can put in it.
pub const OUTPUT_WINDOW: u64 = 1 << 20;
pub const OUTPUT_SNDBUF: usize = 8 << 20;

/// What one write of `n` bytes to a console may cost the host end's send
/// buffer: the bytes, plus a socket buffer's overhead for each page-sized
/// piece the console driver sends separately.
pub fn output_cost(n: u64) -> u64 {
    n + 2048 * n.div_ceil(4096).max(1)
}

/// Guest → host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum GuestEvent {
    /// The init runs and its consoles are open: send the spec. Times are
    /// the guest's CLOCK_BOOTTIME in nanoseconds: since its kernel started.
    Hello { init_start_ns: u64, hello_ns: u64 },
    /// The init has set the sandbox up and is about to start the workload
    /// (guest CLOCK_BOOTTIME, ns).
    Ready { ready_ns: u64 },
    /// The workload is running.
    Started { pid: i32 },
    /// The workload could not be started. `code` is Docker's: 126 not
    /// executable, 127 not found, 125 any other setup failure.
    ExecFailed { code: i32, message: String },
    /// The workload ended: its exit code, or 128 + `signal`.
    Exit { code: i32, signal: Option<i32> },
}

/// Serialise one message as a line.
pub fn to_line<T: Serialize>(msg: &T) -> Vec<u8> {
    // Serialising these plain structs cannot fail.
    let mut line = serde_json::to_vec(msg).unwrap_or_default();
    line.push(b'\n');
    line
}

/// Parse one line (without its newline).
pub fn from_line<'a, T: Deserialize<'a>>(line: &'a [u8]) -> Result<T, serde_json::Error> {
    serde_json::from_slice(line)
}

/// Splits a byte stream into lines.
#[derive(Debug, Default)]
pub struct LineBuffer {
    buf: Vec<u8>,
}

/// Lines longer than this are dropped: neither side sends them.
const MAX_LINE: usize = 1 << 20;

impl LineBuffer {
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        if self.buf.len() > MAX_LINE && !self.buf.contains(&b'\n') {
            self.buf.clear();
        }
    }

    /// The next complete line, without its newline.
    pub fn next_line(&mut self) -> Option<Vec<u8>> {
        let end = self.buf.iter().position(|&b| b == b'\n')?;
        let mut line: Vec<u8> = self.buf.drain(..=end).collect();
        line.pop();
        Some(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let msgs = [
            HostMessage::Signal { signal: 15 },
            HostMessage::Resize { rows: 24, cols: 80 },
            HostMessage::StdinEof { bytes: 3 },
            HostMessage::Ack {
                console: 1,
                bytes: 1 << 40,
            },
        ];
        let mut lb = LineBuffer::default();
        for m in &msgs {
            lb.push(&to_line(m));
        }
        for m in &msgs {
            let line = lb.next_line().unwrap();
            assert_eq!(&from_line::<HostMessage>(&line).unwrap(), m);
        }
        assert!(lb.next_line().is_none());
        let e = GuestEvent::Exit {
            code: 137,
            signal: Some(9),
        };
        let line = to_line(&e);
        assert_eq!(from_line::<GuestEvent>(&line[..line.len() - 1]).unwrap(), e);
    }

    #[test]
    fn disk_names() {
        assert_eq!(disk_device(0), ROOT_DISK);
        assert_eq!(disk_device(1), "/dev/vdb");
        assert_eq!(disk_device(25), "/dev/vdz");
        assert_eq!(disk_device(26), "/dev/vdaa");
    }

    #[test]
    fn partial_lines_wait() {
        let mut lb = LineBuffer::default();
        lb.push(b"{\"type\":\"sig");
        assert!(lb.next_line().is_none());
        lb.push(b"nal\",\"signal\":2}\n");
        assert_eq!(
            from_line::<HostMessage>(&lb.next_line().unwrap()).unwrap(),
            HostMessage::Signal { signal: 2 }
        );
    }
}
