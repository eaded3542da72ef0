//! The monitor's control socket, `<dir>/ctl`: one JSON request per
//! connection, one JSON line back. `wait` and `stop` answer when the
//! workload has ended, so the connection is held until then.
//!
//! The socket is reached through `/proc/self/fd/N/ctl`, N a descriptor on
//! the sandbox directory, so a deep `--root` never exceeds the 108 bytes a
//! unix socket path may have.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::MonitorError;

/// The socket's name in the sandbox directory.
pub const SOCKET: &str = "ctl";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    /// Deliver a signal. `stop` marks the sandbox as stopped by hand, so
    /// its restart policy does not apply (what `sbx kill` does).
    Signal { signal: i32, stop: bool },
    /// Send `signal`, then SIGKILL after `timeout_secs`; answers at exit.
    Stop { signal: i32, timeout_secs: f64 },
    /// Answers with the exit code when the workload next ends.
    Wait,
    /// Start `process` in the running sandbox through its holder
    /// ([`Sandbox::exec`](crate::backend::Sandbox::exec)), its streams on
    /// the descriptors sent with the request (SCM_RIGHTS), in the order
    /// stdin, stdout, stderr, those present. Answers twice: `exec_id` once
    /// it runs, `exit_code` when it ends.
    Exec {
        process: crate::spec::Process,
        stdin: bool,
        stdout: bool,
        stderr: bool,
    },
    /// Deliver a signal to a process `Exec` started.
    ExecSignal { exec: u32, signal: i32 },
    /// That process's terminal has a new size.
    ExecResize { exec: u32, rows: u16, cols: u16 },
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Response {
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub error: Option<String>,
    /// `Exec`: the started process's id for `ExecSignal`/`ExecResize`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec_id: Option<u32>,
}

/// A descriptor on the sandbox directory and the short path of its socket.
fn short_path(dir: &Path) -> Result<(OwnedFd, String), MonitorError> {
    let fd = nix::fcntl::open(
        dir,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| MonitorError::io(format!("opening {}", dir.display()), e.into()))?;
    // SAFETY: `open` returned a fresh descriptor nothing else owns.
    let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let path = format!("/proc/self/fd/{}/{SOCKET}", fd.as_raw_fd());
    Ok((fd, path))
}

/// Bind the control socket of the sandbox in `dir` (a stale one is replaced).
pub fn listen(dir: &Path) -> Result<UnixListener, MonitorError> {
    let _ = std::fs::remove_file(dir.join(SOCKET));
    let (_fd, path) = short_path(dir)?;
    let l = UnixListener::bind(&path)
        .map_err(|e| MonitorError::io(format!("binding {}", dir.join(SOCKET).display()), e))?;
    l.set_nonblocking(true)
        .map_err(|e| MonitorError::io("setting up the control socket", e))?;
    Ok(l)
}

/// Send one request to the monitor of the sandbox in `dir` and wait for its
/// answer. [`MonitorError::NoMonitor`] when nothing listens there.
pub fn request(dir: &Path, req: &Request) -> Result<Response, MonitorError> {
    let (_fd, path) = short_path(dir)?;
    let mut stream = match UnixStream::connect(&path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(MonitorError::NoMonitor)
        }
        Err(e) => return Err(MonitorError::io("connecting to the monitor", e)),
    };
    let mut line = serde_json::to_vec(req).map_err(std::io::Error::other);
    if let Ok(l) = &mut line {
        l.push(b'\n');
    }
    line.and_then(|l| stream.write_all(&l))
        .map_err(|e| MonitorError::io("sending to the monitor", e))?;
    let mut answer = String::new();
    BufReader::new(&stream)
        .read_line(&mut answer)
        .map_err(|e| MonitorError::io("reading the monitor's answer", e))?;
    if answer.is_empty() {
        // The monitor went away without answering (killed, or ended
        // between our connect and its accept).
        return Err(MonitorError::NoMonitor);
    }
    serde_json::from_str(&answer)
        .map_err(|e| MonitorError::io("reading the monitor's answer", std::io::Error::other(e)))
}

/// Send an `Exec` request with its descriptors and read the first answer;
/// the connection stays open for the second (the exit).
pub fn request_exec(
    dir: &Path,
    req: &Request,
    fds: &[std::os::fd::BorrowedFd<'_>],
) -> Result<(BufReader<UnixStream>, Response), MonitorError> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let (_fd, path) = short_path(dir)?;
    let stream = match UnixStream::connect(&path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(MonitorError::NoMonitor)
        }
        Err(e) => return Err(MonitorError::io("connecting to the monitor", e)),
    };
    let mut line = serde_json::to_vec(req)
        .map_err(|e| MonitorError::io("sending to the monitor", std::io::Error::other(e)))?;
    line.push(b'\n');
    let raw: Vec<std::os::fd::RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let cmsg = [ControlMessage::ScmRights(&raw)];
    let iov = [std::io::IoSlice::new(&line)];
    let cmsgs: &[ControlMessage] = if raw.is_empty() { &[] } else { &cmsg };
    let sent = sendmsg::<()>(stream.as_raw_fd(), &iov, cmsgs, MsgFlags::empty(), None)
        .map_err(|e| MonitorError::io("sending to the monitor", e.into()))?;
    if sent < line.len() {
        (&stream)
            .write_all(&line[sent..])
            .map_err(|e| MonitorError::io("sending to the monitor", e))?;
    }
    let mut reader = BufReader::new(stream);
    let resp = read_answer(&mut reader)?;
    Ok((reader, resp))
}

/// The next answer line on a connection; [`MonitorError::NoMonitor`] when
/// the monitor went away without one.
pub fn read_answer(reader: &mut BufReader<UnixStream>) -> Result<Response, MonitorError> {
    let mut answer = String::new();
    reader
        .read_line(&mut answer)
        .map_err(|e| MonitorError::io("reading the monitor's answer", e))?;
    if answer.is_empty() {
        return Err(MonitorError::NoMonitor);
    }
    serde_json::from_str(&answer)
        .map_err(|e| MonitorError::io("reading the monitor's answer", std::io::Error::other(e)))
}

/// Write one answer line; a client that went away is not an error.
pub fn answer(mut stream: &UnixStream, resp: &Response) {
    if let Ok(mut line) = serde_json::to_vec(resp) {
        line.push(b'\n');
        let _ = stream.write_all(&line);
    }
}

/// Read one request line from a freshly accepted client, with the
/// descriptors sent along (at most three; bounded wait, bounded size).
pub fn read_request_fds(stream: &UnixStream) -> Result<(Request, Vec<OwnedFd>), String> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::FromRawFd;
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(2)));
    let mut line = Vec::new();
    let mut fds = Vec::new();
    let mut buf = [0u8; 4096];
    while !line.contains(&b'\n') {
        if line.len() > 64 * 1024 {
            return Err("bad request: too long".into());
        }
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 3]);
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(|e| format!("reading a request: {}", e.desc()))?;
        let n = msg.bytes;
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                if let ControlMessageOwned::ScmRights(raw) = c {
                    // SAFETY: the kernel just installed these descriptors
                    // in this process for us; nothing else owns them.
                    fds.extend(raw.into_iter().map(|f| unsafe { OwnedFd::from_raw_fd(f) }));
                }
            }
        }
        if n == 0 {
            break;
        }
        line.extend_from_slice(&buf[..n]);
    }
    let req = serde_json::from_slice(&line).map_err(|e| format!("bad request: {e}"))?;
    Ok((req, fds))
}

/// Read one request line from a freshly accepted client (bounded wait,
/// bounded size: a request is small).
pub fn read_request(stream: &UnixStream) -> Result<Request, String> {
    use std::io::Read;
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(2)));
    let mut line = String::new();
    BufReader::new(stream.take(64 * 1024))
        .read_line(&mut line)
        .map_err(|e| format!("reading a request: {e}"))?;
    serde_json::from_str(&line).map_err(|e| format!("bad request: {e}"))
}
