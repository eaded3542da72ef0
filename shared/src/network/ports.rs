//! Published ports: `-p [IP:][HOSTPORT:]PORT[/tcp|udp]` and `-P`.
//!
//! The host address defaults to 127.0.0.1, not Docker's 0.0.0.0: a port
//! is published to this machine only unless an address is given
//! (`-p 0.0.0.0:8080:80` to publish on every interface).

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket};
use std::os::fd::OwnedFd;

use serde::{Deserialize, Serialize};

use super::NetworkError;

pub const DEFAULT_HOST_IP: Ipv4Addr = Ipv4Addr::LOCALHOST;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortMapping {
    pub host_ip: Ipv4Addr,
    /// 0 until bound: any free port.
    pub host_port: u16,
    pub port: u16,
    pub protocol: Protocol,
}

impl PortMapping {
    /// `80/tcp`
    pub fn sandbox_side(&self) -> String {
        format!("{}/{}", self.port, self.protocol)
    }

    /// `127.0.0.1:8080`
    pub fn host_side(&self) -> String {
        format!("{}:{}", self.host_ip, self.host_port)
    }
}

/// Docker's PORTS column: `127.0.0.1:8080->80/tcp`.
impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}->{}", self.host_side(), self.sandbox_side())
    }
}

fn port_number(s: &str, spec: &str, zero_ok: bool) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(0) if !zero_ok => Err(format!("invalid port {spec:?}: port 0 is not a port")),
        Ok(p) => Ok(p),
        Err(_) => Err(format!("invalid port {spec:?}: {s:?} is not a port number")),
    }
}

/// Parse one `-p` value.
pub fn parse(spec: &str) -> Result<PortMapping, String> {
    let (rest, protocol) = match spec.rsplit_once('/') {
        Some((r, "tcp")) => (r, Protocol::Tcp),
        Some((r, "udp")) => (r, Protocol::Udp),
        Some((_, p)) => return Err(format!("invalid port {spec:?}: unknown protocol {p:?}")),
        None => (spec, Protocol::Tcp),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let (ip, host, port) = match parts.as_slice() {
        [p] => (None, "", *p),
        [h, p] => (None, *h, *p),
        [ip, h, p] => (Some(*ip), *h, *p),
        _ => {
            return Err(format!(
                "invalid port {spec:?}: expected [IP:][HOSTPORT:]PORT[/tcp|udp]"
            ))
        }
    };
    if port.contains('-') || host.contains('-') {
        return Err(format!(
            "invalid port {spec:?}: port ranges are not supported"
        ));
    }
    let host_ip = match ip {
        None | Some("") => DEFAULT_HOST_IP,
        Some(ip) => ip
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| format!("invalid port {spec:?}: {ip:?} is not an IPv4 address"))?,
    };
    Ok(PortMapping {
        host_ip,
        host_port: if host.is_empty() {
            0
        } else {
            port_number(host, spec, true)?
        },
        port: port_number(port, spec, false)?,
        protocol,
    })
}

/// An image's `ExposedPorts` key (`80/tcp`, `53/udp`, `8080`) as a mapping
/// to any free host port.
pub fn exposed(key: &str) -> Result<PortMapping, String> {
    let (port, proto) = key.split_once('/').unwrap_or((key, "tcp"));
    parse(&format!(":{port}/{proto}"))
}

/// A host socket bound for a mapping.
#[derive(Debug)]
pub struct Bound {
    pub mapping: PortMapping,
    pub socket: OwnedFd,
}

/// Bind every mapping's host side now (port 0: a free one, filled in), so
/// that a taken port is an error before anything starts. Duplicates (the
/// same `-p` twice, or `-P` over a `-p`) are folded.
pub fn bind_all(mappings: &[PortMapping]) -> Result<Vec<Bound>, NetworkError> {
    let mut out: Vec<Bound> = Vec::new();
    for m in mappings {
        if out.iter().any(|b| {
            b.mapping.port == m.port && b.mapping.protocol == m.protocol && m.host_port == 0
        }) {
            continue;
        }
        if out.iter().any(|b| {
            m.host_port != 0
                && b.mapping.host_port == m.host_port
                && b.mapping.protocol == m.protocol
                && b.mapping.host_ip == m.host_ip
        }) {
            return Err(NetworkError::Invalid(format!(
                "port {} is published twice",
                m.host_side()
            )));
        }
        out.push(bind(m)?);
    }
    Ok(out)
}

pub fn bind(m: &PortMapping) -> Result<Bound, NetworkError> {
    let addr = SocketAddrV4::new(m.host_ip, m.host_port);
    let taken = |e: std::io::Error| {
        let why = match e.kind() {
            std::io::ErrorKind::AddrInUse => "the port is already in use".to_string(),
            std::io::ErrorKind::AddrNotAvailable => "that address is not on this host".to_string(),
            _ => e.to_string(),
        };
        NetworkError::Invalid(format!(
            "cannot publish {}/{} for port {}: {why}",
            addr, m.protocol, m.port
        ))
    };
    let (socket, local) = match m.protocol {
        Protocol::Tcp => {
            let l = TcpListener::bind(addr).map_err(taken)?;
            let local = l.local_addr().map_err(taken)?;
            (OwnedFd::from(l), local)
        }
        Protocol::Udp => {
            let s = UdpSocket::bind(addr).map_err(taken)?;
            let local = s.local_addr().map_err(taken)?;
            (OwnedFd::from(s), local)
        }
    };
    Ok(Bound {
        mapping: PortMapping {
            host_port: local.port(),
            ..*m
        },
        socket,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_forms() {
        let m = parse("127.0.0.1:8080:80").unwrap();
        assert_eq!(m.to_string(), "127.0.0.1:8080->80/tcp");
        let m = parse("80").unwrap();
        assert_eq!((m.host_ip, m.host_port, m.port), (DEFAULT_HOST_IP, 0, 80));
        let m = parse("9000:53/udp").unwrap();
        assert_eq!((m.host_port, m.port, m.protocol), (9000, 53, Protocol::Udp));
        let m = parse("0.0.0.0::80").unwrap();
        assert_eq!((m.host_ip, m.host_port), (Ipv4Addr::UNSPECIFIED, 0));
        assert!(parse("80/sctp").is_err());
        assert!(parse("a:b:c:d").is_err());
        assert!(parse("x:80").is_err());
        assert!(parse("0").is_err());
        assert!(parse("8000-8001:80").is_err());
        assert_eq!(exposed("80/tcp").unwrap().port, 80);
    }

    #[test]
    fn a_taken_port_is_an_error() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let e = bind_all(&[parse(&format!("127.0.0.1:{port}:80")).unwrap()]).unwrap_err();
        assert!(e.to_string().contains("already in use"), "{e}");
        let b = bind_all(&[parse("127.0.0.1::80").unwrap()]).unwrap();
        assert_ne!(b[0].mapping.host_port, 0);
    }
}
