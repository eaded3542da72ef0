//! Where a registry name's API lives: `https://HOST/v2/…`, or plain http for
//! a loopback registry (127.0.0.0/8, `localhost`, `::1`) or one the user
//! named with `--insecure-registry`. Docker Hub (`docker.io`) answers at
//! `registry-1.docker.io`.

use std::net::IpAddr;

use sbx_shared::reference::DEFAULT_REGISTRY;

/// Docker Hub's API host.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The registry as it is named (`docker.io`, `127.0.0.1:5000`): the key
    /// for credentials and messages.
    pub registry: String,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// `host[:port]` the API is reached at.
    pub host: String,
}

impl Endpoint {
    /// `insecure` holds the registries named with `--insecure-registry`.
    pub fn new(registry: &str, insecure: &[String]) -> Endpoint {
        let host = if registry == DEFAULT_REGISTRY || registry == "index.docker.io" {
            DOCKER_HUB_API.to_string()
        } else {
            registry.to_string()
        };
        let plain = is_loopback(registry) || insecure.iter().any(|r| r == registry);
        Endpoint {
            registry: registry.to_string(),
            scheme: if plain { "http" } else { "https" },
            host,
        }
    }

    /// `/v2/<path>` on this registry.
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}/v2/{}", self.scheme, self.host, path)
    }

    /// An absolute URL for a `Location` the registry sent (which may be
    /// relative to the registry).
    pub fn absolute(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else if location.starts_with('/') {
            format!("{}://{}{}", self.scheme, self.host, location)
        } else {
            format!("{}://{}/{}", self.scheme, self.host, location)
        }
    }

    pub fn is_loopback(&self) -> bool {
        is_loopback(&self.registry)
    }
}

/// `localhost`, 127.0.0.0/8 or `::1`, with or without a port.
pub fn is_loopback(registry: &str) -> bool {
    let host = if let Some(v6) = registry.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        registry.rsplit_once(':').map_or(registry, |(h, _)| h)
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_for_loopback_or_named() {
        for r in [
            "127.0.0.1:5000",
            "127.1.2.3",
            "localhost:80",
            "localhost",
            "[::1]:5000",
        ] {
            assert_eq!(Endpoint::new(r, &[]).scheme, "http", "{r}");
        }
        for r in [
            "10.0.0.1:5000",
            "quay.io",
            "[::2]:5000",
            "localhost.example.com",
            "docker.io",
        ] {
            assert_eq!(Endpoint::new(r, &[]).scheme, "https", "{r}");
        }
        let e = Endpoint::new("reg.lan:5000", &["reg.lan:5000".into()]);
        assert_eq!(
            e.url("a/b/tags/list"),
            "http://reg.lan:5000/v2/a/b/tags/list"
        );
    }

    #[test]
    fn docker_hub_and_locations() {
        let e = Endpoint::new("docker.io", &[]);
        assert_eq!(e.url(""), "https://registry-1.docker.io/v2/");
        assert_eq!(e.registry, "docker.io");
        let l = Endpoint::new("127.0.0.1:5000", &[]);
        assert_eq!(
            l.absolute("/v2/a/blobs/uploads/x?_state=1"),
            "http://127.0.0.1:5000/v2/a/blobs/uploads/x?_state=1"
        );
        assert_eq!(l.absolute("https://s3/x"), "https://s3/x");
    }
}
