//! Manifests as registries serve them: OCI image manifests and indexes,
//! Docker schema2 manifests and manifest lists. Only what pull and push
//! need is parsed; the bytes themselves are stored and sent as they came,
//! so digests are preserved.

use sbx_shared::digest::Digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// The `Accept` header of a manifest GET.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// Registries cap manifests at 4 MiB (distribution's default).
pub const MANIFEST_LIMIT: u64 = 4 << 20;

#[derive(Debug, Clone, serde::Deserialize)]
pub struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
}

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default)]
    pub platform: Option<Platform>,
}

impl Descriptor {
    /// The digest as ours: only sha256 is handled.
    pub fn digest(&self) -> Result<Digest, String> {
        self.digest
            .parse()
            .map_err(|_| format!("unsupported digest {:?}", self.digest))
    }
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    #[serde(default)]
    schema_version: u32,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
}

#[derive(Debug, Clone)]
pub enum Manifest {
    Image {
        media_type: String,
        config: Descriptor,
        layers: Vec<Descriptor>,
    },
    Index {
        media_type: String,
        manifests: Vec<Descriptor>,
    },
}

impl Manifest {
    /// Parse manifest bytes; `content_type` is the HTTP header, used when
    /// the document does not say its own media type.
    pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Manifest, String> {
        let raw: Raw = serde_json::from_slice(bytes).map_err(|e| format!("not a manifest: {e}"))?;
        if raw.schema_version != 2 {
            return Err(format!(
                "schema version {} is not supported (Docker schema 2 and OCI only)",
                raw.schema_version
            ));
        }
        let header = content_type
            .map(|c| c.split(';').next().unwrap_or(c).trim().to_string())
            .filter(|c| !c.is_empty() && c != "application/json");
        let media_type = raw.media_type.or(header);
        match (raw.manifests, raw.config) {
            (Some(manifests), None) => Ok(Manifest::Index {
                media_type: media_type.unwrap_or_else(|| OCI_INDEX.into()),
                manifests,
            }),
            (None, Some(config)) => Ok(Manifest::Image {
                media_type: media_type.unwrap_or_else(|| OCI_MANIFEST.into()),
                config,
                layers: raw.layers.unwrap_or_default(),
            }),
            _ => Err("neither an image manifest nor an index".into()),
        }
    }
}

/// The linux/amd64 entry of an index (a plain `amd64` before `amd64/v2`…).
pub fn pick_linux_amd64(manifests: &[Descriptor]) -> Option<&Descriptor> {
    let mut hits = manifests.iter().filter(|d| {
        d.platform
            .as_ref()
            .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
    });
    let first = hits.next()?;
    let plain = |d: &&Descriptor| {
        d.platform.as_ref().is_some_and(|p| {
            p.variant
                .as_deref()
                .is_none_or(|v| v.is_empty() || v == "v1")
        })
    };
    Some(
        std::iter::once(first)
            .chain(hits)
            .find(plain)
            .unwrap_or(first),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(hex: char, os: &str, arch: &str, variant: Option<&str>) -> String {
        let v = variant.map_or(String::new(), |v| format!(r#","variant":"{v}""#));
        format!(
            r#"{{"mediaType":"{OCI_MANIFEST}","digest":"sha256:{}","size":1,"platform":{{"os":"{os}","architecture":"{arch}"{v}}}}}"#,
            hex.to_string().repeat(64)
        )
    }

    #[test]
    fn index_picks_linux_amd64() {
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_LIST}","manifests":[{},{},{},{}]}}"#,
            d('a', "linux", "arm64", Some("v8")),
            d('b', "windows", "amd64", None),
            d('c', "linux", "amd64", Some("v3")),
            d('e', "linux", "amd64", None)
        );
        let Ok(Manifest::Index {
            media_type,
            manifests,
        }) = Manifest::parse(index.as_bytes(), None)
        else {
            panic!("an index");
        };
        assert_eq!(media_type, DOCKER_LIST);
        let pick = pick_linux_amd64(&manifests).unwrap();
        assert_eq!(pick.digest().unwrap().hex(), "e".repeat(64));
        assert!(pick_linux_amd64(&manifests[..2]).is_none());
    }

    #[test]
    fn image_manifest_and_refusals() {
        let m = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"x","digest":"sha256:{0}","size":2}},"layers":[]}}"#,
            "1".repeat(64)
        );
        match Manifest::parse(
            m.as_bytes(),
            Some(&format!("{DOCKER_MANIFEST}; charset=utf-8")),
        ) {
            Ok(Manifest::Image { media_type, .. }) => assert_eq!(media_type, DOCKER_MANIFEST),
            other => panic!("{other:?}"),
        }
        assert!(Manifest::parse(br#"{"schemaVersion":1,"fsLayers":[]}"#, None).is_err());
        assert!(Manifest::parse(b"nope", None).is_err());
        assert!(Manifest::parse(br#"{"schemaVersion":2}"#, None).is_err());
    }
}
