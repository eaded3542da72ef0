//! IPv4 subnets and address allocation: the lowest free host address of a
//! subnet, never its network or broadcast address nor the gateway.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An IPv4 subnet in CIDR form (`10.89.0.0/24`), the address masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Subnet {
    pub network: Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Subnet, String> {
        if !(8..=30).contains(&prefix) {
            return Err(format!(
                "invalid subnet {addr}/{prefix}: the prefix must be between 8 and 30"
            ));
        }
        let mask = mask(prefix);
        Ok(Subnet {
            network: Ipv4Addr::from(u32::from(addr) & mask),
            prefix,
        })
    }

    pub fn contains(&self, a: Ipv4Addr) -> bool {
        u32::from(a) & mask(self.prefix) == u32::from(self.network)
    }

    pub fn overlaps(&self, other: &Subnet) -> bool {
        let p = self.prefix.min(other.prefix);
        u32::from(self.network) & mask(p) == u32::from(other.network) & mask(p)
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !mask(self.prefix))
    }

    /// The first host address: the default gateway.
    pub fn first_host(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    /// Whether `a` may be given to a sandbox or the gateway.
    pub fn is_host(&self, a: Ipv4Addr) -> bool {
        self.contains(a) && a != self.network && a != self.broadcast()
    }

    /// The lowest host address that is neither `gateway` nor in `used`.
    pub fn allocate(&self, gateway: Ipv4Addr, used: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
        let first = u32::from(self.network) + 1;
        let last = u32::from(self.broadcast()) - 1;
        (first..=last)
            .map(Ipv4Addr::from)
            .find(|a| *a != gateway && !used.contains(a))
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

/// Only private ranges (RFC 1918): nothing sbx configures may shadow a
/// public address.
pub fn is_private(s: &Subnet) -> bool {
    let o = s.network.octets();
    let b = s.broadcast().octets();
    let private = |o: [u8; 4]| {
        o[0] == 10 || (o[0] == 172 && (16..32).contains(&o[1])) || (o[0] == 192 && o[1] == 168)
    };
    private(o) && private(b)
}

impl FromStr for Subnet {
    type Err = String;
    fn from_str(s: &str) -> Result<Subnet, String> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| format!("invalid subnet {s:?}: expected ADDRESS/PREFIX"))?;
        let addr: Ipv4Addr = a
            .parse()
            .map_err(|_| format!("invalid subnet {s:?}: {a:?} is not an IPv4 address"))?;
        let prefix: u8 = p
            .parse()
            .map_err(|_| format!("invalid subnet {s:?}: {p:?} is not a prefix length"))?;
        Subnet::new(addr, prefix)
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl Serialize for Subnet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Subnet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Subnet, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_mask() {
        let s: Subnet = "10.89.3.7/24".parse().unwrap();
        assert_eq!(s.to_string(), "10.89.3.0/24");
        assert_eq!(s.broadcast(), Ipv4Addr::new(10, 89, 3, 255));
        assert!(s.contains(Ipv4Addr::new(10, 89, 3, 200)));
        assert!(!s.contains(Ipv4Addr::new(10, 89, 4, 1)));
        assert!("10.0.0.0".parse::<Subnet>().is_err());
        assert!("10.0.0.0/31".parse::<Subnet>().is_err());
        assert!("x/24".parse::<Subnet>().is_err());
    }

    #[test]
    fn allocation_skips_gateway_and_used() {
        let s: Subnet = "10.89.0.0/29".parse().unwrap();
        let gw = s.first_host();
        let mut used = BTreeSet::new();
        let a = s.allocate(gw, &used).unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 89, 0, 2));
        used.insert(a);
        assert_eq!(s.allocate(gw, &used), Some(Ipv4Addr::new(10, 89, 0, 3)));
        for i in 3..=6 {
            used.insert(Ipv4Addr::new(10, 89, 0, i));
        }
        assert_eq!(s.allocate(gw, &used), None);
    }

    #[test]
    fn overlap_and_private() {
        let a: Subnet = "10.89.0.0/16".parse().unwrap();
        let b: Subnet = "10.89.5.0/24".parse().unwrap();
        let c: Subnet = "10.90.0.0/24".parse().unwrap();
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&c));
        assert!(is_private(&a));
        assert!(!is_private(&"8.8.8.0/24".parse().unwrap()));
        assert!(is_private(&"172.20.0.0/16".parse().unwrap()));
    }
}
