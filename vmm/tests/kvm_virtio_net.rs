//! kvm engine: a test guest sends and receives Ethernet frames through
//! virtio-net over a tap. The tap lives in a network namespace private to
//! the test thread; a packet socket on its host side checks the guest's
//! frame and answers it.

mod common;

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::time::Duration;

use sbx_vmm::config::Net;
use sbx_vmm::kvm::{VmExit, Vmm};

const TAP: &str = "sbxtap0";
const GUEST_MAC: [u8; 6] = [0x02, 0x53, 0x42, 0x58, 0x00, 0x01];
const HOST_MAC: [u8; 6] = [0x02, 0x53, 0x42, 0x58, 0x00, 0x02];
const ETHERTYPE: u16 = 0x88b5;

fn sh(args: &[&str]) {
    let status = Command::new(args[0]).args(&args[1..]).status();
    match status {
        Ok(s) if s.success() => {}
        other => panic!("{args:?}: {other:?}"),
    }
}

/// Moves this thread into a new network namespace: nothing done from here
/// (or by commands it starts) touches the host's interfaces.
fn private_netns() {
    // SAFETY: unshare takes flags only; CLONE_NEWNET affects this thread.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        panic!("unshare(CLONE_NEWNET): {}", io::Error::last_os_error());
    }
}

/// A packet socket bound to `ifname` for one EtherType.
fn packet_socket(ifname: &str) -> (OwnedFd, i32) {
    let proto = ETHERTYPE.to_be();
    // SAFETY: plain socket(2) call; the fd is owned at once below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
    assert!(fd >= 0, "socket(AF_PACKET): {}", io::Error::last_os_error());
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let name = std::ffi::CString::new(ifname).unwrap();
    // SAFETY: name is a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) } as i32;
    assert!(index > 0, "if_nametoindex {ifname}");
    // SAFETY: sockaddr_ll is plain data; zero is a valid start.
    let mut addr: libc::sockaddr_ll = unsafe { zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = proto;
    addr.sll_ifindex = index;
    // SAFETY: addr is a live sockaddr_ll of the length given.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &addr as *const libc::sockaddr_ll as *const libc::sockaddr,
            size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    assert_eq!(r, 0, "bind packet socket: {}", io::Error::last_os_error());
    let timeout = libc::timeval {
        tv_sec: 20,
        tv_usec: 0,
    };
    // SAFETY: SO_RCVTIMEO takes a timeval, passed with its size.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &timeout as *const libc::timeval as *const libc::c_void,
            size_of::<libc::timeval>() as u32,
        )
    };
    (fd, index)
}

#[test]
fn guest_sends_and_receives_frames_over_a_tap() {
    common::require_kvm();
    let dir = common::scratch("virtio-net");
    // A thread of its own: the namespace is this thread's alone.
    let worker = std::thread::spawn(move || {
        private_netns();
        sh(&["ip", "tuntap", "add", "dev", TAP, "mode", "tap"]);
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{TAP}/disable_ipv6"), "1");
        sh(&["ip", "link", "set", TAP, "up"]);
        let (sock, _index) = packet_socket(TAP);

        let mut config = common::config(common::payload("virtio_net"), &dir.join("serial.log"));
        config.nets.push(Net {
            tap: TAP.into(),
            mac: GUEST_MAC,
        });
        let log = dir.join("serial.log");
        let vmm = Vmm::new(config).unwrap_or_else(|e| panic!("build the VM: {e}"));
        let vm =
            std::thread::spawn(move || common::run_with_deadline(vmm, Duration::from_secs(30)));

        let mut frame = [0u8; 2048];
        // SAFETY: frame is a live buffer of the length given.
        let n = unsafe {
            libc::recv(
                sock.as_raw_fd(),
                frame.as_mut_ptr() as *mut libc::c_void,
                frame.len(),
                0,
            )
        };
        assert!(
            n > 0,
            "no frame from the guest: {}",
            io::Error::last_os_error()
        );
        let n = n as usize;
        assert_eq!(&frame[..6], &[0xff; 6], "broadcast destination");
        assert_eq!(&frame[6..12], &GUEST_MAC, "the guest's MAC as source");
        assert_eq!(&frame[14..14 + 15], b"sbx guest frame");
        assert_eq!(n, 60);

        let mut reply = Vec::new();
        reply.extend_from_slice(&GUEST_MAC);
        reply.extend_from_slice(&HOST_MAC);
        reply.extend_from_slice(&ETHERTYPE.to_be_bytes());
        reply.extend_from_slice(b"sbx host frame");
        reply.resize(60, 0);
        // SAFETY: reply is a live buffer of the length given.
        let sent = unsafe {
            libc::send(
                sock.as_raw_fd(),
                reply.as_ptr() as *const libc::c_void,
                reply.len(),
                0,
            )
        };
        assert_eq!(sent, 60, "send: {}", io::Error::last_os_error());

        let result = vm.join().expect("VMM thread");
        let serial = std::fs::read_to_string(&log).unwrap_or_default();
        (result, serial)
    });
    let (result, serial) = worker.join().expect("the netns thread panicked");
    let report = result.unwrap_or_else(|e| panic!("run failed: {e}\nserial:\n{serial}"));
    assert_eq!(report.exit, VmExit::ExitCode(0), "serial:\n{serial}");
    assert!(
        serial.contains("net: host frame received"),
        "serial:\n{serial}"
    );
}
