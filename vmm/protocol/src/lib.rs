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
    /// After the workload: write the writable layer's changes as an OCI
    /// layer tar to this disk (`/dev/vdX`), then report
    /// [`GuestEvent::Changes`] before [`GuestEvent::Exit`].
    #[serde(default)]
    pub changes_disk: Option<String>,
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HostMessage {
    /// Start another process in the sandbox (`sbx exec`); `id` is the
    /// host's, unique for the VM's life.
    Exec { id: u32, process: ExecProcess },
    /// Input for exec `id` ([`encode`]d).
    ExecInput { id: u32, data: String },
    /// Exec `id`'s input ended: close its stdin once the input before is
    /// passed on.
    ExecInputEof { id: u32 },
    /// Deliver a signal to exec `id`.
    ExecSignal { id: u32, signal: i32 },
    /// Exec `id`'s terminal has a new size.
    ExecResize { id: u32, rows: u16, cols: u16 },
    /// The host has passed on this many bytes (in all, both streams) of
    /// exec `id`'s output: the guest keeps below [`EXEC_WINDOW`] in flight.
    ExecAck { id: u32, bytes: u64 },
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
    /// The writable layer's changes are on the changes disk: a tar of
    /// `bytes` bytes from its start.
    Changes { bytes: u64 },
    /// The changes could not be written.
    ChangesFailed { message: String },
    /// Exec `id` runs.
    ExecStarted { id: u32, pid: i32 },
    /// Exec `id` could not be started (`code` as for `ExecFailed`).
    ExecStartFailed { id: u32, code: i32, message: String },
    /// Output of exec `id` ([`encode`]d); `stream` 1 stdout (or the
    /// terminal), 2 stderr.
    ExecOutput { id: u32, stream: u8, data: String },
    /// The guest has passed on this many bytes (in all) of exec `id`'s
    /// input: the host keeps below [`EXEC_WINDOW`] in flight.
    ExecInputAck { id: u32, bytes: u64 },
    /// Exec `id` ended and its output is all sent.
    ExecExit {
        id: u32,
        code: i32,
        signal: Option<i32>,
    },
}

/// A process `sbx exec` starts in a running VM: the sandbox's own settings
/// with the exec flags on top, composed by the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecProcess {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: String,
    pub terminal: bool,
    pub stdin: bool,
    pub tty_size: Option<(u16, u16)>,
    pub rlimits: Vec<(u32, u64, u64)>,
}

/// Exec data in flight on the control port, per exec and direction, in
/// bytes before encoding. The control port shares the VMM's socket buffer
/// with every exec: see [`EXEC_MAX`].
pub const EXEC_WINDOW: u64 = 64 * 1024;
/// Execs at once in one VM: their windows, encoded, stay well inside the
/// control port's [`OUTPUT_SNDBUF`].
pub const EXEC_MAX: usize = 32;
/// Largest piece of exec data in one message.
pub const EXEC_CHUNK: usize = 16 * 1024;

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Bytes as base64 (RFC 4648, padded): exec data inside a JSON line.
pub fn encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The bytes of [`encode`]'s text; None when it is not base64.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    let t = text.as_bytes();
    if !t.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(t.len() / 4 * 3);
    for (i, q) in t.chunks(4).enumerate() {
        let last = i + 1 == t.len() / 4;
        let pad = q.iter().rev().take_while(|&&b| b == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for &b in &q[..4 - pad] {
            let v = B64.iter().position(|&x| x == b)? as u32;
            n = (n << 6) | v;
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
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
    fn base64_round_trips() {
        for data in [
            &b""[..],
            b"f",
            b"fo",
            b"foo",
            b"foob",
            b"fooba",
            b"foobar",
            &[0, 255, 128],
        ] {
            assert_eq!(decode(&encode(data)).unwrap(), data);
        }
        assert_eq!(encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(encode(b"fo"), "Zm8=");
        assert!(decode("Zm8").is_none());
        assert!(decode("Z=m8").is_none());
        assert!(decode("Zm*=").is_none());
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
