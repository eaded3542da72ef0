//! `sbx push`: every blob the image's manifest names (config and layers,
//! a few at a time), each checked with HEAD first and uploaded only when
//! the registry lacks it, by the chunked flow (POST an upload, PATCH each
//! chunk with its Content-Range, PUT `?digest=` to finish); then the
//! manifest, byte for byte as stored, so its digest is kept.

use std::io::Read;

use sbx_shared::digest::Digest;
use sbx_shared::reference::Reference;
use sbx_shared::store::Store;
use ureq::http::StatusCode;

use crate::client::{check, Client};
use crate::endpoint::Endpoint;
use crate::error::RegistryError;
use crate::manifest::{Descriptor, Manifest};
use crate::progress::{Progress, Silent};
use crate::pull::Options;
use crate::workers;

/// Bytes per PATCH (`$SBX_PUSH_CHUNK_SIZE` overrides it).
pub const CHUNK_SIZE: usize = 8 << 20;

/// What `push` sent.
pub struct Pushed {
    pub digest: Digest,
    pub size: u64,
}

/// Push the image stored as `local` to `target` (often the same name).
pub fn push(
    store: &Store,
    local: &str,
    target: &Reference,
    opts: &Options,
) -> Result<Pushed, RegistryError> {
    let image = store.resolve(local)?;
    let bytes = store
        .blobs()
        .read_verified(&image.manifest_digest, "a manifest")?;
    let bad = |reason: String| RegistryError::BadManifest {
        reference: local.to_string(),
        reason,
    };
    let Manifest::Image {
        media_type,
        config,
        layers,
    } = Manifest::parse(&bytes, None).map_err(bad)?
    else {
        return Err(bad("an index cannot be pushed as an image".into()));
    };
    let client = Client::new(
        Endpoint::new(&target.registry, opts.insecure),
        opts.creds.clone(),
        vec![format!("repository:{}:pull,push", target.repository)],
    );
    let chunk = chunk_size();
    let mut blobs: Vec<(Descriptor, bool)> = vec![(config, false)];
    for l in layers {
        if !blobs.iter().any(|(d, _)| d.digest == l.digest) {
            blobs.push((l, true));
        }
    }
    workers::each(&blobs, opts.workers, |(desc, is_layer)| {
        let progress: &dyn Progress = if *is_layer { opts.progress } else { &Silent };
        let digest = desc.digest().map_err(bad)?;
        push_blob(
            &client,
            store,
            &target.repository,
            &digest,
            desc.size,
            chunk,
            progress,
        )
    })?;
    let tag = if target.tag.is_empty() {
        image.manifest_digest.to_string()
    } else {
        target.tag.clone()
    };
    let url = client
        .endpoint()
        .url(&format!("{}/manifests/{tag}", target.repository));
    let resp = client.send("PUT", &url, &[("Content-Type", media_type)], &bytes)?;
    let resp = check(resp, "PUT", &url)?;
    let claimed = resp
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<Digest>().ok());
    if let Some(claimed) = claimed {
        if claimed != image.manifest_digest {
            return Err(RegistryError::Protocol {
                registry: client.registry().to_string(),
                reason: format!(
                    "stored the manifest as {claimed}, not as its digest {}",
                    image.manifest_digest
                ),
            });
        }
    }
    Ok(Pushed {
        digest: image.manifest_digest,
        size: bytes.len() as u64,
    })
}

fn chunk_size() -> usize {
    std::env::var("SBX_PUSH_CHUNK_SIZE")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(CHUNK_SIZE)
}

/// HEAD, then (when missing) the chunked upload of one blob.
fn push_blob(
    client: &Client,
    store: &Store,
    repo: &str,
    digest: &Digest,
    size: u64,
    chunk: usize,
    progress: &dyn Progress,
) -> Result<(), RegistryError> {
    let ep = client.endpoint();
    let head_url = ep.url(&format!("{repo}/blobs/{digest}"));
    let head = client.send("HEAD", &head_url, &[], &[])?;
    if head.status().is_success() {
        progress.done(digest, "Layer already exists");
        return Ok(());
    }
    if head.status() != StatusCode::NOT_FOUND {
        check(head, "HEAD", &head_url)?;
    }
    let start_url = ep.url(&format!("{repo}/blobs/uploads/"));
    let resp = client.send("POST", &start_url, &[], &[])?;
    let resp = check(resp, "POST", &start_url)?;
    let mut location = location(client, &resp, "POST", &start_url)?;
    progress.begin(digest, size, "Pushing");
    let mut file = store.blobs().open(digest)?;
    let mut offset = 0u64;
    let mut buf = vec![0u8; chunk];
    loop {
        let n = read_full(&mut file, &mut buf).map_err(|source| RegistryError::Io {
            op: format!("read blob {digest}"),
            source,
        })?;
        if n == 0 {
            break;
        }
        let range = format!("{}-{}", offset, offset + n as u64 - 1);
        let headers = [
            ("Content-Type", "application/octet-stream".to_string()),
            ("Content-Range", range),
        ];
        let resp = client.send("PATCH", &location, &headers, &buf[..n])?;
        let resp = check(resp, "PATCH", &location)?;
        location = self::location(client, &resp, "PATCH", &location)?;
        offset += n as u64;
        progress.advance(digest, n as u64);
    }
    if offset != size {
        return Err(RegistryError::Io {
            op: format!("read blob {digest}"),
            source: std::io::Error::other(format!(
                "{offset} bytes stored, the manifest says {size}"
            )),
        });
    }
    let sep = if location.contains('?') { '&' } else { '?' };
    let done_url = format!(
        "{location}{sep}digest={}",
        digest.to_string().replace(':', "%3A")
    );
    let resp = client.send(
        "PUT",
        &done_url,
        &[("Content-Type", "application/octet-stream".into())],
        &[],
    )?;
    check(resp, "PUT", &done_url)?;
    progress.done(digest, "Pushed");
    Ok(())
}

/// The upload URL a 202 names.
fn location(
    client: &Client,
    resp: &ureq::http::Response<ureq::Body>,
    method: &str,
    url: &str,
) -> Result<String, RegistryError> {
    resp.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(|l| client.endpoint().absolute(l))
        .ok_or_else(|| RegistryError::Protocol {
            registry: client.registry().to_string(),
            reason: format!("{method} {url} gave no upload Location"),
        })
}

/// Fill `buf` unless the reader ends first; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}
