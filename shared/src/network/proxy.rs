//! The published-port proxy: a process forked from the one that holds the
//! sandbox (its monitor, or a foreground `sbx`), named `sbx-proxy`, that
//! accepts on the host sockets bound by [`super::ports::bind_all`] and
//! forwards to the sandbox's address. One mechanism for a container's veth
//! and a VM's tap, since both put the sandbox on a bridge this host reaches.
//!
//! A process, not threads: the monitor must stay single-threaded whenever
//! the container backend clones. It is forked while the caller still is,
//! dies with it (parent-death signal) and is killed when the workload ends.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::ports::{Bound, Protocol};
use super::NetworkError;

/// How long a new connection waits for the sandbox's port to open (a VM
/// may still be starting its server).
const CONNECT_PATIENCE: Duration = Duration::from_secs(5);

/// The proxy process; killed and reaped on drop.
#[derive(Debug)]
pub struct Proxy {
    pid: Pid,
}

impl Proxy {
    /// Fork the proxy for `bound`, forwarding to `target`. Call while the
    /// process is single-threaded (the child runs threads of its own).
    pub fn spawn(bound: &[Bound], target: Ipv4Addr) -> Result<Proxy, NetworkError> {
        let parent = std::process::id() as i32;
        let keep: Vec<RawFd> = bound.iter().map(|b| b.socket.as_raw_fd()).collect();
        // SAFETY: the caller is single-threaded (documented above), so the
        // child's copy of the heap and its locks is consistent; the child
        // never returns from `child_main`.
        match unsafe { nix::unistd::fork() } {
            Err(e) => Err(NetworkError::io("forking the port proxy", e.into())),
            Ok(nix::unistd::ForkResult::Child) => child_main(parent, bound, &keep, target),
            Ok(nix::unistd::ForkResult::Parent { child }) => Ok(Proxy { pid: child }),
        }
    }

    pub fn pid(&self) -> i32 {
        self.pid.as_raw()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.pid, Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(self.pid, None);
    }
}

fn child_main(parent: i32, bound: &[Bound], keep: &[RawFd], target: Ipv4Addr) -> ! {
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    if nix::unistd::getppid().as_raw() != parent {
        // SAFETY: _exit ends this forked copy without running the parent's
        // destructors.
        unsafe { libc::_exit(0) };
    }
    let _ = nix::sys::prctl::set_name(c"sbx-proxy");
    close_others(keep);
    let mut handles = Vec::new();
    for b in bound {
        let port = b.mapping.port;
        let to = SocketAddr::V4(SocketAddrV4::new(target, port));
        // SAFETY: the descriptor was inherited over fork and is owned by
        // `bound` in the parent's copy only; this process takes it over.
        let fd = unsafe { OwnedFd::from_raw_fd(b.socket.as_raw_fd()) };
        handles.push(match b.mapping.protocol {
            Protocol::Tcp => {
                let l = TcpListener::from(fd);
                std::thread::spawn(move || serve_tcp(l, to))
            }
            Protocol::Udp => {
                let s = UdpSocket::from(fd);
                std::thread::spawn(move || serve_udp(s, to))
            }
        });
    }
    for h in handles {
        let _ = h.join();
    }
    // SAFETY: as above.
    unsafe { libc::_exit(0) }
}

/// Close every inherited descriptor but stdio and the listeners: above all
/// the pipe a detaching `sbx run` reads to its end.
fn close_others(keep: &[RawFd]) {
    let fds: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
                .collect()
        })
        .unwrap_or_default();
    for fd in fds {
        if fd > 2 && !keep.contains(&fd) {
            let _ = nix::unistd::close(fd);
        }
    }
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        let _ = nix::unistd::dup2(null.as_raw_fd(), 0);
        let _ = nix::unistd::dup2(null.as_raw_fd(), 1);
    }
}

fn serve_tcp(listener: TcpListener, to: SocketAddr) {
    loop {
        match listener.accept() {
            Ok((client, _)) => {
                std::thread::spawn(move || forward_tcp(client, to));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                eprintln!("sbx-proxy: accepting on {:?}: {e}", listener.local_addr());
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn connect_patiently(to: SocketAddr) -> io::Result<TcpStream> {
    let deadline = Instant::now() + CONNECT_PATIENCE;
    loop {
        match TcpStream::connect_timeout(&to, CONNECT_PATIENCE) {
            Ok(s) => return Ok(s),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(e),
        }
    }
}

fn forward_tcp(client: TcpStream, to: SocketAddr) {
    let upstream = match connect_patiently(to) {
        Ok(s) => s,
        Err(_) => return,
    };
    let (Ok(c2), Ok(u2)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    let t = std::thread::spawn(move || pipe(c2, u2));
    pipe(upstream, client);
    let _ = t.join();
}

/// Copy until EOF, then pass the EOF on.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// One upstream socket per client address; replies go back from the
/// published socket.
fn serve_udp(sock: UdpSocket, to: SocketAddr) {
    let sock = Arc::new(sock);
    let clients: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
    let mut buf = [0u8; 65536];
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let existing = clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&from)
            .cloned();
        let up = match existing {
            Some(u) => u,
            None => {
                let Ok(u) = UdpSocket::bind("0.0.0.0:0") else {
                    continue;
                };
                if u.connect(to).is_err() {
                    continue;
                }
                let u = Arc::new(u);
                clients
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(from, Arc::clone(&u));
                let (u2, back, map) = (Arc::clone(&u), Arc::clone(&sock), Arc::clone(&clients));
                std::thread::spawn(move || {
                    let _ = u2.set_read_timeout(Some(Duration::from_secs(120)));
                    let mut b = [0u8; 65536];
                    while let Ok(n) = u2.recv(&mut b) {
                        let _ = back.send_to(&b[..n], from);
                    }
                    map.lock().unwrap_or_else(|p| p.into_inner()).remove(&from);
                });
                u
            }
        };
        let _ = up.send(&buf[..n]);
    }
}
