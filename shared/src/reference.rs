//! Image names, normalised as Docker normalises them.
//!
//! `busybox` is `docker.io/library/busybox:latest`, shown (and keyed in the
//! store) as the familiar `busybox:latest`; `127.0.0.1:5000/team/app:1`
//! names a registry and keeps it in the familiar form; `name@sha256:…`
//! pins a digest. The grammar is distribution/reference's.

use std::fmt;

use crate::digest::Digest;

/// The registry Docker assumes when a name has none.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// The tag assumed when a name has neither a tag nor a digest.
pub const DEFAULT_TAG: &str = "latest";
const NAME_MAX: usize = 255;

#[derive(Debug, thiserror::Error)]
#[error("invalid image name {0:?}")]
pub struct InvalidReference(pub String);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Registry host (`docker.io`, `127.0.0.1:5000`).
    pub registry: String,
    /// Repository path (`library/busybox`, `team/app`).
    pub repository: String,
    /// The tag; empty only when a digest was given without one.
    pub tag: String,
    /// A pinned manifest digest (`name@sha256:…`).
    pub digest: Option<Digest>,
}

impl Reference {
    pub fn parse(s: &str) -> Result<Reference, InvalidReference> {
        let bad = || InvalidReference(s.to_string());
        let (rest, digest) = match s.split_once('@') {
            Some((name, d)) => (name, Some(d.parse::<Digest>().map_err(|_| bad())?)),
            None => (s, None),
        };
        // A tag follows the last ':' that comes after the last '/'.
        let slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[slash..].rfind(':') {
            Some(i) => (&rest[..slash + i], Some(&rest[slash + i + 1..])),
            None => (rest, None),
        };
        if name.is_empty() || name.len() > NAME_MAX {
            return Err(bad());
        }
        if let Some(tag) = tag {
            if !valid_tag(tag) {
                return Err(bad());
            }
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, remainder))
                if first.contains(['.', ':'])
                    || first == "localhost"
                    || first.chars().any(|c| c.is_ascii_uppercase()) =>
            {
                (first, remainder)
            }
            _ => (DEFAULT_REGISTRY, name),
        };
        let registry = if registry == "index.docker.io" {
            DEFAULT_REGISTRY
        } else {
            registry
        };
        if !valid_registry(registry) || !path.split('/').all(valid_component) {
            return Err(bad());
        }
        let repository = if registry == DEFAULT_REGISTRY && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_string()
        };
        let tag = match (tag, &digest) {
            (Some(t), _) => t.to_string(),
            (None, Some(_)) => String::new(),
            (None, None) => DEFAULT_TAG.to_string(),
        };
        Ok(Reference {
            registry: registry.to_string(),
            repository,
            tag,
            digest,
        })
    }

    /// The repository as Docker shows it (`busybox`, `127.0.0.1:5000/team/app`).
    pub fn familiar_repository(&self) -> String {
        if self.registry == DEFAULT_REGISTRY {
            let path = self
                .repository
                .strip_prefix("library/")
                .unwrap_or(&self.repository);
            if !path.contains('/') {
                return path.to_string();
            }
            return self.repository.clone();
        }
        format!("{}/{}", self.registry, self.repository)
    }

    /// The short form Docker shows and the store keys refs by
    /// (`busybox:latest`, `127.0.0.1:5000/team/app:1`).
    pub fn familiar(&self) -> String {
        self.with_repository(&self.familiar_repository())
    }

    /// The fully qualified form (`docker.io/library/busybox:latest`).
    pub fn full(&self) -> String {
        self.with_repository(&format!("{}/{}", self.registry, self.repository))
    }

    fn with_repository(&self, repo: &str) -> String {
        let mut s = repo.to_string();
        if !self.tag.is_empty() {
            s.push(':');
            s.push_str(&self.tag);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(&d.to_string());
        }
        s
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.familiar())
    }
}

fn valid_tag(tag: &str) -> bool {
    let mut chars = tag.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && tag.len() <= 128
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

/// A host name or IP with an optional port, or a bracketed IPv6 address.
fn valid_registry(r: &str) -> bool {
    let (host, port) = if let Some(v6) = r.strip_prefix('[') {
        match v6.split_once(']') {
            Some((addr, rest))
                if !addr.is_empty() && addr.chars().all(|c| c.is_ascii_hexdigit() || c == ':') =>
            {
                (
                    "v6",
                    rest.strip_prefix(':')
                        .map(Some)
                        .unwrap_or(if rest.is_empty() { None } else { Some("x") }),
                )
            }
            _ => return false,
        }
    } else {
        match r.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (r, None),
        }
    };
    let host_ok = host.split('.').all(|label| {
        !label.is_empty()
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    });
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.chars().all(|c| c.is_ascii_digit()));
    host_ok && port_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fam(s: &str) -> String {
        Reference::parse(s).unwrap().familiar()
    }

    #[test]
    fn docker_normalisation() {
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_str()),
            ("docker.io", "library/busybox", "latest")
        );
        assert_eq!(r.familiar(), "busybox:latest");
        assert_eq!(r.full(), "docker.io/library/busybox:latest");
        assert_eq!(fam("docker.io/library/busybox:1.36"), "busybox:1.36");
        assert_eq!(fam("index.docker.io/library/busybox"), "busybox:latest");
        assert_eq!(fam("docker.io/team/app"), "team/app:latest");
        assert_eq!(fam("team/app:v1.2"), "team/app:v1.2");
        assert_eq!(fam("localhost/app"), "localhost/app:latest");
    }

    #[test]
    fn registries_keep_their_host() {
        let r = Reference::parse("127.0.0.1:5000/team/app:1").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_str()),
            ("127.0.0.1:5000", "team/app", "1")
        );
        assert_eq!(r.familiar(), "127.0.0.1:5000/team/app:1");
        assert_eq!(fam("quay.io/podman/hello"), "quay.io/podman/hello:latest");
        assert_eq!(fam("[::1]:5000/app:2"), "[::1]:5000/app:2");
        assert_eq!(fam("registry:5000/app"), "registry:5000/app:latest");
    }

    #[test]
    fn digests() {
        let d = Digest::of(b"x");
        let r = Reference::parse(&format!("busybox@{d}")).unwrap();
        assert_eq!(r.tag, "");
        assert_eq!(r.digest.as_ref(), Some(&d));
        assert_eq!(r.familiar(), format!("busybox@{d}"));
        assert_eq!(fam(&format!("busybox:1@{d}")), format!("busybox:1@{d}"));
        assert!(Reference::parse("busybox@sha256:abc").is_err());
    }

    #[test]
    fn invalid_names() {
        for bad in [
            "",
            "Busybox",
            "busy box",
            "busybox:",
            ":tag",
            "a/../b",
            "../x",
            "/abs",
            "a//b",
            "busybox:-x",
            "a:b:c",
            "host:port/x",
            "-a",
            "a-",
            "a..b",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} should be invalid");
        }
        assert!(Reference::parse(&"a".repeat(300)).is_err());
    }
}
