//! `sbx save`: an OCI archive that also carries Docker's `manifest.json`
//! (Config and Layers pointing at `blobs/sha256/<hex>`, RepoTags), as
//! Docker 25+ writes it, so docker, podman and skopeo all load it.
//!
//! Blobs are checked against their digest as they are copied, and the
//! archive is written to a temp file beside `out` and renamed into place.

use std::collections::{HashMap, HashSet};
use std::io::{BufWriter, Write};
use std::path::Path;

use oci_spec::image::{ImageIndexBuilder, MediaType};

use super::blobs::HashReader;
use super::error::{io_err, StoreError};
use super::index::{manifest_descriptor, CONTAINERD_NAME};
use super::{Image, Store};
use crate::digest::Digest;
use crate::reference::Reference;

#[derive(serde::Serialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags")]
    repo_tags: Vec<String>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

fn blob_path(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

pub fn save(store: &Store, images: &[Image], out: &Path) -> Result<(), StoreError> {
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".sbx-save-")
        .tempfile_in(dir)
        .map_err(io_err("create a temp file in", dir))?;
    let mut tar = tar::Builder::new(BufWriter::new(tmp.as_file()));
    let io = |e| io_err("write", out)(e);

    append(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(io)?;
    for d in ["blobs/", "blobs/sha256/"] {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        tar.append_data(&mut h, d, std::io::empty()).map_err(io)?;
    }

    let mut written = HashSet::new();
    let mut descriptors = Vec::new();
    let mut docker: Vec<DockerEntry> = Vec::new();
    let mut docker_at: HashMap<Digest, usize> = HashMap::new();
    for image in images {
        for blob in std::iter::once(&image.manifest_digest)
            .chain(std::iter::once(&image.config_digest))
            .chain(&image.layers)
        {
            if written.insert(blob.clone()) {
                copy_blob(store, &mut tar, blob).map_err(|e| match e {
                    StoreError::Io { source, .. }
                        if source.kind() != std::io::ErrorKind::NotFound =>
                    {
                        io(source)
                    }
                    e => e,
                })?;
            }
        }
        let name = Reference::parse(&image.name)
            .ok()
            .filter(|r| r.digest.is_none());
        let size = store.blobs.size(&image.manifest_digest)?;
        let mut desc = manifest_descriptor(
            &image.manifest_digest,
            size,
            name.as_ref().map(|r| r.familiar()).as_deref(),
        )?;
        if let (Some(r), Some(a)) = (&name, desc.annotations().clone()) {
            let mut a = a;
            a.insert(CONTAINERD_NAME.to_string(), r.full());
            desc.set_annotations(Some(a));
        }
        descriptors.push(desc);
        let at = *docker_at
            .entry(image.manifest_digest.clone())
            .or_insert_with(|| {
                docker.push(DockerEntry {
                    config: blob_path(&image.config_digest),
                    repo_tags: Vec::new(),
                    layers: image.layers.iter().map(blob_path).collect(),
                });
                docker.len() - 1
            });
        if let Some(r) = name {
            let tag = r.familiar();
            if !docker[at].repo_tags.contains(&tag) {
                docker[at].repo_tags.push(tag);
            }
        }
    }

    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(descriptors)
        .build()
        .map_err(|e| StoreError::Other(format!("build index.json: {e}")))?;
    let json = |v: &dyn erased::Json| v.bytes();
    append(&mut tar, "index.json", &json(&index)?).map_err(io)?;
    append(&mut tar, "manifest.json", &json(&docker)?).map_err(io)?;
    let mut w = tar.into_inner().map_err(io)?;
    w.flush().map_err(io)?;
    drop(w);
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(out)
        .map_err(|e| io_err("rename into place", out)(e.error))?;
    Ok(())
}

mod erased {
    use super::StoreError;

    /// Serialise different types through one closure.
    pub trait Json {
        fn bytes(&self) -> Result<Vec<u8>, StoreError>;
    }

    impl<T: serde::Serialize> Json for T {
        fn bytes(&self) -> Result<Vec<u8>, StoreError> {
            serde_json::to_vec(self).map_err(|source| StoreError::Json {
                what: "archive metadata".into(),
                source,
            })
        }
    }
}

fn header(size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(size);
    h.set_mtime(0);
    h
}

fn append<W: Write>(tar: &mut tar::Builder<W>, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    tar.append_data(&mut header(bytes.len() as u64), name, bytes)
}

/// Copy one blob in, checking it hashes to its name.
fn copy_blob<W: Write>(
    store: &Store,
    tar: &mut tar::Builder<W>,
    digest: &Digest,
) -> Result<(), StoreError> {
    let size = store.blobs.size(digest)?;
    let mut reader = HashReader::new(store.blobs.open(digest)?);
    tar.append_data(&mut header(size), blob_path(digest), &mut reader)
        .map_err(io_err("copy blob", store.blobs.path(digest)))?;
    let (actual, _) = reader
        .finish()
        .map_err(io_err("read blob", store.blobs.path(digest)))?;
    if actual != *digest {
        return Err(StoreError::Corrupt {
            digest: digest.clone(),
        });
    }
    Ok(())
}
