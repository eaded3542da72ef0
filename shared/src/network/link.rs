//! Bridges, veth pairs and taps, made with iproute2's `ip`.
//!
//! Why `ip` rather than netlink from Rust (`rtnetlink`, `neli`): the few
//! operations sbx needs (a bridge with an address, a veth whose inner end
//! is born in another namespace, a tap on a bridge) are one well-tested
//! command each; `ip` is on every host that can run a bridge; its errors
//! ("RTNETLINK answers: File exists") are what an operator knows; and it
//! keeps an async runtime out of the single-threaded monitor, which must
//! stay single-threaded whenever the container backend clones. The cost,
//! ~2 ms per command, is paid once per sandbox start.

use std::io::Write;
use std::process::{Command, Stdio};

use super::{Attachment, NetworkError};

/// `SBX_IP` overrides the binary (tests, odd installs).
fn ip_binary() -> String {
    std::env::var("SBX_IP").unwrap_or_else(|_| "ip".into())
}

/// Run `ip ARGS` (with `stdin` as a `-batch -` script when given).
fn ip(what: &str, args: &[&str], stdin: Option<&str>) -> Result<(), NetworkError> {
    let mut cmd = Command::new(ip_binary());
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    run(what, cmd, stdin)
}

fn run(what: &str, mut cmd: Command, stdin: Option<&str>) -> Result<(), NetworkError> {
    let mut child = cmd.spawn().map_err(|e| NetworkError::Command {
        what: what.to_string(),
        detail: format!("running ip: {e}"),
    })?;
    if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
        let _ = input.write_all(text.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| NetworkError::Command {
            what: what.to_string(),
            detail: e.to_string(),
        })?;
    if out.status.success() {
        return Ok(());
    }
    let detail = String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    Err(NetworkError::Command {
        what: what.to_string(),
        detail: if detail.is_empty() {
            format!("ip exited with {}", out.status)
        } else {
            detail
        },
    })
}

/// Whether a link of that name exists in this network namespace.
pub fn exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
        || Command::new(ip_binary())
            .args(["link", "show", "dev", name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// Delete a link if it is there.
pub fn delete(name: &str) -> Result<(), NetworkError> {
    if !exists(name) {
        return Ok(());
    }
    match ip(
        &format!("deleting {name}"),
        &["link", "del", "dev", name],
        None,
    ) {
        Err(_) if !exists(name) => Ok(()),
        r => r,
    }
}

/// The network's bridge, up and holding the gateway address. Forwarding
/// is never turned on: nothing crosses from one bridge to another.
pub fn ensure_bridge(att: &Attachment) -> Result<(), NetworkError> {
    let br = att.bridge.as_str();
    if !exists(br) {
        let made = ip(
            &format!("creating bridge {br}"),
            &["link", "add", "name", br, "type", "bridge"],
            None,
        );
        // Another sbx may have made it meanwhile.
        if let Err(e) = made {
            if !exists(br) {
                return Err(e);
            }
        }
    }
    let gw = format!("{}/{}", att.gateway, att.subnet.prefix);
    let script = format!("addr replace {gw} dev {br}\nlink set dev {br} up\n");
    ip(
        &format!("configuring bridge {br}"),
        &["-batch", "-"],
        Some(&script),
    )
}

/// A veth pair: `host` on the bridge, its peer born as `inner` in the
/// network namespace at `netns` (a path such as /proc/PID/fd/N), then
/// addressed and brought up there, `lo` too.
pub fn veth_into(
    att: &Attachment,
    host: &str,
    inner: &str,
    netns: &str,
) -> Result<(), NetworkError> {
    ensure_bridge(att)?;
    delete(host)?;
    ip(
        &format!("creating veth {host}"),
        &[
            "link", "add", "name", host, "type", "veth", "peer", "name", inner, "address",
            &att.mac, "netns", netns,
        ],
        None,
    )?;
    let script = format!(
        "link set dev {host} master {br}\nlink set dev {host} up\n",
        br = att.bridge
    );
    if let Err(e) = ip(
        &format!("attaching {host}"),
        &["-batch", "-"],
        Some(&script),
    ) {
        let _ = delete(host);
        return Err(e);
    }
    let inside = format!(
        "link set dev lo up\naddr add {cidr} dev {inner}\nlink set dev {inner} up\n",
        cidr = att.cidr()
    );
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={netns}"))
        .arg(ip_binary())
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Err(e) = run(&format!("configuring {inner}"), cmd, Some(&inside)) {
        let _ = delete(host);
        return Err(e);
    }
    Ok(())
}

/// A persistent tap on the bridge, for a VM's engine to open by name.
pub fn tap(att: &Attachment, name: &str) -> Result<(), NetworkError> {
    ensure_bridge(att)?;
    delete(name)?;
    ip(
        &format!("creating tap {name}"),
        &["tuntap", "add", "dev", name, "mode", "tap"],
        None,
    )?;
    let script = format!(
        "link set dev {name} master {br}\nlink set dev {name} up\n",
        br = att.bridge
    );
    if let Err(e) = ip(
        &format!("attaching {name}"),
        &["-batch", "-"],
        Some(&script),
    ) {
        let _ = delete(name);
        return Err(e);
    }
    Ok(())
}

/// Deletes the link when dropped: a half-made sandbox cleans up after
/// itself.
#[derive(Debug)]
pub struct LinkGuard(pub String);

impl Drop for LinkGuard {
    fn drop(&mut self) {
        let _ = delete(&self.0);
    }
}
