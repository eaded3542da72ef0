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
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Response {
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub error: Option<String>,
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

/// Write one answer line; a client that went away is not an error.
pub fn answer(mut stream: &UnixStream, resp: &Response) {
    if let Ok(mut line) = serde_json::to_vec(resp) {
        line.push(b'\n');
        let _ = stream.write_all(&line);
    }
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
