//! `sbx pull`: manifest (an index picks linux/amd64), config and layers,
//! layers fetched concurrently, each staged under the store's `tmp/` and
//! checked against its digest as it is written; the store commits the lot
//! only when every digest and size checks out (see
//! [`sbx_shared::store::Fetched`]). The manifest is stored byte for byte,
//! so its digest is the registry's.

use std::io::Read;

use sbx_shared::digest::Digest;
use sbx_shared::reference::Reference;
use sbx_shared::store::blobs::Staged;
use sbx_shared::store::{Fetched, Image, Store};
use ureq::http::StatusCode;

use crate::auth_file::Credentials;
use crate::client::{check, Client};
use crate::endpoint::Endpoint;
use crate::error::RegistryError;
use crate::manifest::{self, Descriptor, Manifest};
use crate::progress::{Progress, Silent};
use crate::workers;

/// What pull and push need besides the name.
pub struct Options<'a> {
    /// Registries named with `--insecure-registry` (plain http).
    pub insecure: &'a [String],
    pub creds: Option<Credentials>,
    pub progress: &'a dyn Progress,
    /// Blobs moved at once.
    pub workers: usize,
}

/// What `pull` stored.
pub struct Pulled {
    pub image: Image,
    /// The digest the name had at the registry (an index's, for a
    /// multi-platform image): what Docker prints as `Digest:`.
    pub digest: Digest,
    /// Whether any blob was new (Docker's "Downloaded newer image").
    pub downloaded: bool,
}

pub fn pull(store: &Store, name: &Reference, opts: &Options) -> Result<Pulled, RegistryError> {
    let client = Client::new(
        Endpoint::new(&name.registry, opts.insecure),
        opts.creds.clone(),
        vec![format!("repository:{}:pull", name.repository)],
    );
    let repo = &name.repository;
    let target = name
        .digest
        .as_ref()
        .map_or_else(|| name.tag.clone(), Digest::to_string);
    let (bytes, content_type) = get_manifest(&client, repo, &target)?;
    let top = Digest::of(&bytes);
    if let Some(pinned) = &name.digest {
        if *pinned != top {
            return Err(mismatch(&client, "manifest", pinned, top));
        }
    }
    let bad = |reason: String| RegistryError::BadManifest {
        reference: name.familiar(),
        reason,
    };
    let parsed = Manifest::parse(&bytes, content_type.as_deref()).map_err(bad)?;
    let (bytes, media_type, config, layers, store_name) = match parsed {
        Manifest::Image {
            media_type,
            config,
            layers,
        } => (bytes, media_type, config, layers, name.clone()),
        Manifest::Index { manifests, .. } => {
            let pick = manifest::pick_linux_amd64(&manifests)
                .ok_or_else(|| bad("the index has no linux/amd64 image".into()))?;
            let digest = pick.digest().map_err(bad)?;
            let (inner, inner_type) = get_manifest(&client, repo, &digest.to_string())?;
            let actual = Digest::of(&inner);
            if actual != digest {
                return Err(mismatch(&client, "manifest", &digest, actual));
            }
            match Manifest::parse(&inner, inner_type.as_deref()).map_err(bad)? {
                Manifest::Image {
                    media_type,
                    config,
                    layers,
                } => {
                    // A name pinned to the index is stored by the image's digest.
                    let mut store_name = name.clone();
                    if store_name.digest.is_some() {
                        store_name.digest = Some(actual);
                    }
                    (inner, media_type, config, layers, store_name)
                }
                Manifest::Index { .. } => return Err(bad("an index inside an index".into())),
            }
        }
    };
    // The config quietly, then each layer not stored yet, a few at a time.
    let mut todo: Vec<(Descriptor, bool)> = Vec::new();
    for (desc, is_layer) in
        std::iter::once((config, false)).chain(layers.into_iter().map(|l| (l, true)))
    {
        let digest = desc.digest().map_err(bad)?;
        if store.blobs().exists(&digest) || todo.iter().any(|(d, _)| d.digest == desc.digest) {
            if is_layer {
                opts.progress.done(&digest, "Already exists");
            }
            continue;
        }
        todo.push((desc, is_layer));
    }
    let staged = workers::each(&todo, opts.workers, |(desc, is_layer)| {
        let progress: &dyn Progress = if *is_layer { opts.progress } else { &Silent };
        fetch_blob(&client, store, repo, desc, progress)
    })?;
    let downloaded = !staged.is_empty();
    let image = store.commit_fetched(
        &store_name,
        Fetched {
            manifest: bytes,
            media_type,
            blobs: staged,
        },
    )?;
    Ok(Pulled {
        image,
        digest: top,
        downloaded,
    })
}

/// GET a manifest by tag or digest: its bytes and Content-Type. A
/// `Docker-Content-Digest` the registry sends must match the bytes.
fn get_manifest(
    client: &Client,
    repo: &str,
    target: &str,
) -> Result<(Vec<u8>, Option<String>), RegistryError> {
    let url = client.endpoint().url(&format!("{repo}/manifests/{target}"));
    let resp = client.send("GET", &url, &[("Accept", manifest::ACCEPT.into())], &[])?;
    if resp.status() == StatusCode::NOT_FOUND {
        return Err(RegistryError::NotFound {
            what: format!("manifest for {repo}:{target}"),
            registry: client.registry().to_string(),
        });
    }
    let mut resp = check(resp, "GET", &url)?;
    let header = |k: &str| {
        resp.headers()
            .get(k)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let content_type = header("content-type");
    let claimed = header("docker-content-digest");
    let bytes = resp
        .body_mut()
        .with_config()
        .limit(manifest::MANIFEST_LIMIT)
        .read_to_vec()
        .map_err(|e| RegistryError::Http {
            method: "GET".into(),
            url: url.clone(),
            source: Box::new(e),
        })?;
    if let Some(claimed) = claimed.and_then(|c| c.parse::<Digest>().ok()) {
        let actual = Digest::of(&bytes);
        if claimed != actual {
            return Err(mismatch(client, "manifest", &claimed, actual));
        }
    }
    Ok((bytes, content_type))
}

/// Download one blob into a staged file, refusing it unless it hashes to
/// its digest and has its size.
fn fetch_blob(
    client: &Client,
    store: &Store,
    repo: &str,
    desc: &Descriptor,
    progress: &dyn Progress,
) -> Result<Staged, RegistryError> {
    let digest = desc.digest().map_err(|reason| RegistryError::BadManifest {
        reference: repo.to_string(),
        reason,
    })?;
    let url = client.endpoint().url(&format!("{repo}/blobs/{digest}"));
    let resp = client.send("GET", &url, &[], &[])?;
    if resp.status() == StatusCode::NOT_FOUND {
        return Err(RegistryError::NotFound {
            what: format!("blob {digest} of {repo}"),
            registry: client.registry().to_string(),
        });
    }
    let resp = check(resp, "GET", &url)?;
    progress.begin(&digest, desc.size, "Downloading");
    // One byte past the size is enough to know it is too long.
    let body = resp.into_body().into_reader().take(desc.size + 1);
    let mut counted = Counted {
        inner: body,
        digest: &digest,
        progress,
    };
    let staged = store
        .blobs()
        .stage(&mut counted)
        .map_err(|e| RegistryError::Io {
            op: format!("download blob {digest} from {}", client.registry()),
            source: std::io::Error::other(e.to_string()),
        })?;
    if staged.digest != digest {
        return Err(mismatch(client, "blob", &digest, staged.digest));
    }
    if staged.size != desc.size {
        return Err(RegistryError::Protocol {
            registry: client.registry().to_string(),
            reason: format!(
                "blob {digest} is {} bytes, the manifest says {}",
                staged.size, desc.size
            ),
        });
    }
    progress.done(&digest, "Pull complete");
    Ok(staged)
}

fn mismatch(
    client: &Client,
    what: &'static str,
    expected: &Digest,
    actual: Digest,
) -> RegistryError {
    RegistryError::DigestMismatch {
        what,
        registry: client.registry().to_string(),
        expected: expected.clone(),
        actual,
    }
}

/// A reader that reports what passes through it.
struct Counted<'a, R> {
    inner: R,
    digest: &'a Digest,
    progress: &'a dyn Progress,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.advance(self.digest, n as u64);
        Ok(n)
    }
}
