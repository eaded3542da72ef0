//! `sbx load`: a docker-archive (`docker save`: `manifest.json` with
//! Config/RepoTags/Layers) or an OCI archive (`oci-layout`, `index.json`,
//! `blobs/`), possibly compressed.
//!
//! The archive is untrusted and is never extracted as a tree: it is read as
//! one stream, each file under `blobs/sha256/` goes straight into the blob
//! store (checked against its name), other large files are stored by their
//! content digest, small metadata files are kept in memory, and links are
//! remembered as aliases. Names are only ever keys in a map.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use oci_spec::image::{
    Descriptor, ImageConfiguration, ImageIndex, ImageManifest, ImageManifestBuilder, MediaType,
};

use super::blobs::Blobs;
use super::compress::{decoder, Compression};
use super::error::{io_err, StoreError};
use super::index::{digest_of, oci_digest, CONTAINERD_NAME, REF_NAME};
use crate::digest::Digest;
use crate::reference::Reference;

/// Small files kept in memory rather than stored as blobs.
const SMALL_FILE: u64 = 1 << 20;
/// At most this much of an archive's metadata is held in memory.
const SMALL_TOTAL: usize = 64 << 20;
/// Link hops followed before giving up.
const MAX_HOPS: usize = 16;

/// One image an archive held, its blobs now in the store.
pub struct Loaded {
    pub manifest: Digest,
    pub manifest_size: u64,
    /// Familiar names; empty for an unnamed image.
    pub names: Vec<String>,
}

enum Node {
    Blob(Digest),
    Small(Vec<u8>),
    Link(String),
}

struct Archive<'a> {
    path: PathBuf,
    blobs: &'a Blobs,
    files: HashMap<String, Node>,
}

#[derive(serde::Deserialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

pub fn load(blobs: &Blobs, path: &Path) -> Result<Vec<Loaded>, StoreError> {
    let archive = read_archive(blobs, path)?;
    if archive.files.contains_key("index.json") {
        archive.load_oci()
    } else if archive.files.contains_key("manifest.json") {
        archive.load_docker()
    } else {
        Err(archive
            .bad("neither an OCI archive (index.json) nor a docker-archive (manifest.json)".into()))
    }
}

/// A tar name as a key: relative, `.` and empty parts dropped; `None` when
/// `..` climbs out or the name is not UTF-8.
fn normalize(name: &[u8]) -> Option<String> {
    let name = std::str::from_utf8(name).ok()?;
    let mut out: Vec<&str> = Vec::new();
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            c => out.push(c),
        }
    }
    Some(out.join("/"))
}

fn read_archive<'a>(blobs: &'a Blobs, path: &Path) -> Result<Archive<'a>, StoreError> {
    let file = File::open(path).map_err(io_err("open archive", path))?;
    let bad = |reason: String| StoreError::BadArchive {
        path: path.to_path_buf(),
        reason,
    };
    let (_, decoded) = decoder(BufReader::new(file)).map_err(|e| bad(e.to_string()))?;
    let mut tar = tar::Archive::new(decoded);
    let mut files = HashMap::new();
    let mut small_total = 0usize;
    for entry in tar.entries().map_err(|e| bad(format!("read tar: {e}")))? {
        let mut entry = entry.map_err(|e| bad(format!("read tar: {e}")))?;
        let raw = entry.path_bytes().into_owned();
        let Some(name) = normalize(&raw) else {
            continue;
        };
        let node = match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let blob_name = name
                    .strip_prefix("blobs/sha256/")
                    .and_then(|h| format!("sha256:{h}").parse().ok());
                if let Some(digest) = blob_name {
                    match blobs.put_reader(&mut entry, Some(&digest)) {
                        Ok(_) => Node::Blob(digest),
                        Err(StoreError::DigestMismatch { expected, .. }) => {
                            return Err(bad(format!("{name} does not match its digest {expected}")))
                        }
                        Err(StoreError::Io { source, .. }) => {
                            return Err(bad(format!("read {name}: {source}")))
                        }
                        Err(e) => return Err(e),
                    }
                } else if entry.size() <= SMALL_FILE {
                    let mut bytes = Vec::new();
                    entry
                        .read_to_end(&mut bytes)
                        .map_err(|e| bad(format!("read {name}: {e}")))?;
                    small_total += bytes.len();
                    if small_total > SMALL_TOTAL {
                        return Err(bad("too much metadata".into()));
                    }
                    Node::Small(bytes)
                } else {
                    match blobs.put_reader(&mut entry, None) {
                        Ok((digest, _)) => Node::Blob(digest),
                        Err(StoreError::Io { source, .. }) => {
                            return Err(bad(format!("read {name}: {source}")))
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                let joined = if target.starts_with(b"/") {
                    target
                } else {
                    let dir = name.rsplit_once('/').map_or("", |(d, _)| d);
                    [dir.as_bytes(), b"/", &target].concat()
                };
                let Some(target) = normalize(&joined) else {
                    continue;
                };
                Node::Link(target)
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                let Some(target) = normalize(&target) else {
                    continue;
                };
                Node::Link(target)
            }
            _ => continue,
        };
        files.insert(name, node);
    }
    Ok(Archive {
        path: path.to_path_buf(),
        blobs,
        files,
    })
}

impl Archive<'_> {
    fn bad(&self, reason: String) -> StoreError {
        StoreError::BadArchive {
            path: self.path.clone(),
            reason,
        }
    }

    fn node(&self, name: &str) -> Result<&Node, StoreError> {
        let mut key = normalize(name.as_bytes()).unwrap_or_default();
        for _ in 0..MAX_HOPS {
            match self.files.get(&key) {
                Some(Node::Link(target)) => key = target.clone(),
                Some(node) => return Ok(node),
                None => break,
            }
        }
        Err(self.bad(format!("{name} is not in the archive")))
    }

    fn bytes(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        match self.node(name)? {
            Node::Small(b) => Ok(b.clone()),
            Node::Blob(d) => self.blobs.read_verified(d, "archive metadata"),
            Node::Link(_) => Err(self.bad(format!("{name}: too many links"))),
        }
    }

    /// The blob a file of the archive is (stored now if it was small).
    fn blob(&self, name: &str) -> Result<Digest, StoreError> {
        match self.node(name)? {
            Node::Blob(d) => Ok(d.clone()),
            Node::Small(b) => Ok(self.blobs.put_bytes(b)?.0),
            Node::Link(_) => Err(self.bad(format!("{name}: too many links"))),
        }
    }

    fn json<T: serde::de::DeserializeOwned>(
        &self,
        name: &str,
        bytes: &[u8],
    ) -> Result<T, StoreError> {
        serde_json::from_slice(bytes).map_err(|source| StoreError::Json {
            what: format!("{name} in {}", self.path.display()),
            source,
        })
    }

    /// `RepoTags` of manifest.json by config digest, when there is one.
    fn docker_tags(&self) -> HashMap<Digest, Vec<String>> {
        let mut out = HashMap::new();
        let Ok(bytes) = self.bytes("manifest.json") else {
            return out;
        };
        let Ok(entries) = serde_json::from_slice::<Vec<DockerEntry>>(&bytes) else {
            return out;
        };
        for e in entries {
            if let (Ok(Node::Blob(d)), Some(tags)) = (self.node(&e.config), e.repo_tags) {
                out.insert(
                    d.clone(),
                    tags.iter().filter_map(|t| familiar(t).ok()).collect(),
                );
            }
        }
        out
    }

    fn load_oci(&self) -> Result<Vec<Loaded>, StoreError> {
        let index: ImageIndex = self.json("index.json", &self.bytes("index.json")?)?;
        let tags = self.docker_tags();
        let mut out = Vec::new();
        for desc in index.manifests() {
            let mut names = names_of(desc);
            let manifest_desc = if is_index(desc.media_type()) {
                let digest = self.present(desc)?;
                let nested: ImageIndex = self.json(
                    &format!("index {digest}"),
                    &self.blobs.read_verified(&digest, "an image index")?,
                )?;
                pick_platform(nested.manifests())
                    .ok_or_else(|| self.bad(format!("index {digest} has no linux/amd64 manifest")))?
                    .clone()
            } else {
                desc.clone()
            };
            let manifest_digest = self.present(&manifest_desc)?;
            let bytes = self.blobs.read_verified(&manifest_digest, "a manifest")?;
            let manifest: ImageManifest =
                self.json(&format!("manifest {manifest_digest}"), &bytes)?;
            let config = self.present(manifest.config())?;
            for layer in manifest.layers() {
                self.present(layer)?;
            }
            if names.is_empty() {
                names = tags.get(&config).cloned().unwrap_or_default();
            }
            out.push(Loaded {
                manifest: manifest_digest,
                manifest_size: bytes.len() as u64,
                names,
            });
        }
        Ok(out)
    }

    /// The digest of a descriptor whose blob the store now holds.
    fn present(&self, desc: &Descriptor) -> Result<Digest, StoreError> {
        let digest = digest_of(desc)?;
        if !self.blobs.exists(&digest) {
            return Err(self.bad(format!("blob {digest} is not in the archive")));
        }
        Ok(digest)
    }

    fn load_docker(&self) -> Result<Vec<Loaded>, StoreError> {
        let entries: Vec<DockerEntry> =
            self.json("manifest.json", &self.bytes("manifest.json")?)?;
        let mut out = Vec::new();
        for entry in entries {
            let config_digest = self.blob(&entry.config)?;
            // Old archives name the config <image id>.json.
            let stem = entry
                .config
                .rsplit('/')
                .next()
                .unwrap_or("")
                .trim_end_matches(".json");
            if let Ok(named) = format!("sha256:{stem}").parse::<Digest>() {
                if named != config_digest {
                    return Err(self.bad(format!("{} does not match its digest", entry.config)));
                }
            }
            let config_bytes = self
                .blobs
                .read_verified(&config_digest, "an image config")?;
            let config: ImageConfiguration = self.json(&entry.config, &config_bytes)?;
            if config.rootfs().diff_ids().len() != entry.layers.len() {
                return Err(self.bad(format!(
                    "{} lists {} diff-ids but manifest.json {} layers",
                    entry.config,
                    config.rootfs().diff_ids().len(),
                    entry.layers.len()
                )));
            }
            let mut layers = Vec::new();
            for layer in &entry.layers {
                let digest = self.blob(layer)?;
                let size = self.blobs.size(&digest)?;
                let mut head = Vec::new();
                self.blobs
                    .open(&digest)?
                    .take(8)
                    .read_to_end(&mut head)
                    .map_err(io_err("read", self.blobs.path(&digest)))?;
                let kind =
                    Compression::detect(&head).map_err(|e| self.bad(format!("{layer}: {e}")))?;
                layers.push(Descriptor::new(
                    kind.layer_media_type(),
                    size,
                    oci_digest(&digest)?,
                ));
            }
            let manifest = ImageManifestBuilder::default()
                .schema_version(2u32)
                .media_type(MediaType::ImageManifest)
                .config(Descriptor::new(
                    MediaType::ImageConfig,
                    config_bytes.len() as u64,
                    oci_digest(&config_digest)?,
                ))
                .layers(layers)
                .build()
                .map_err(|e| StoreError::Other(format!("build manifest: {e}")))?;
            let bytes = serde_json::to_vec(&manifest).map_err(|source| StoreError::Json {
                what: "the new manifest".into(),
                source,
            })?;
            let (manifest_digest, manifest_size) = self.blobs.put_bytes(&bytes)?;
            let names = entry
                .repo_tags
                .unwrap_or_default()
                .iter()
                .map(|t| familiar(t).map_err(|_| self.bad(format!("invalid RepoTag {t:?}"))))
                .collect::<Result<Vec<_>, _>>()?;
            out.push(Loaded {
                manifest: manifest_digest,
                manifest_size,
                names,
            });
        }
        Ok(out)
    }
}

fn familiar(name: &str) -> Result<String, StoreError> {
    let r = Reference::parse(name)?;
    if r.digest.is_some() {
        return Err(StoreError::Other(format!(
            "{name}: a name with a digest cannot be a tag"
        )));
    }
    Ok(r.familiar())
}

fn is_index(m: &MediaType) -> bool {
    match m {
        MediaType::ImageIndex => true,
        MediaType::Other(s) => s == "application/vnd.docker.distribution.manifest.list.v2+json",
        _ => false,
    }
}

/// The names an archive's index entry gives its image: containerd's full
/// name first (Docker 25 puts only the tag in `ref.name`), else `ref.name`.
fn names_of(desc: &Descriptor) -> Vec<String> {
    let Some(a) = desc.annotations() else {
        return Vec::new();
    };
    [CONTAINERD_NAME, REF_NAME]
        .iter()
        .filter_map(|k| a.get(*k))
        .find_map(|n| familiar(n).ok())
        .into_iter()
        .collect()
}

/// The linux/amd64 manifest of an index (or its only one).
pub fn pick_platform(manifests: &[Descriptor]) -> Option<&Descriptor> {
    use oci_spec::image::{Arch, Os};
    manifests
        .iter()
        .find(|d| {
            d.platform()
                .as_ref()
                .is_some_and(|p| *p.os() == Os::Linux && *p.architecture() == Arch::Amd64)
        })
        .or(if manifests.len() == 1 {
            manifests.first()
        } else {
            None
        })
}
