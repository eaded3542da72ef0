//! `sbx import`: a rootfs tarball becomes a one-layer image.
//!
//! The tarball (plain, gzip or zstd) is stored decompressed, as an
//! `application/vnd.oci.image.layer.v1.tar` blob, so its digest is its
//! diff-id; a config and a manifest are written around it.

use std::io::{self, BufReader, Read};

use chrono::{SecondsFormat, Utc};
use oci_spec::image::{
    Arch, Descriptor, HistoryBuilder, ImageConfigurationBuilder, ImageManifestBuilder, MediaType,
    Os, RootFsBuilder,
};

use super::blobs::Blobs;
use super::compress::decoder;
use super::error::{io_err, StoreError};
use super::index::oci_digest;
use super::RuntimeConfig;
use crate::digest::Digest;

fn spec_err(e: oci_spec::OciSpecError) -> StoreError {
    StoreError::Other(format!("build image metadata: {e}"))
}

/// Store the layer, config and manifest; returns the manifest digest.
pub fn import(
    blobs: &Blobs,
    reader: &mut dyn Read,
    config: RuntimeConfig,
) -> Result<Digest, StoreError> {
    let (_, mut plain) =
        decoder(BufReader::new(reader)).map_err(|e| StoreError::BadTarball(e.to_string()))?;
    let staged = blobs.stage(&mut plain).map_err(|e| match e {
        StoreError::Io { source, .. } if is_decode_error(&source) => {
            StoreError::BadTarball(source.to_string())
        }
        e => e,
    })?;
    if staged.size == 0 {
        return Err(StoreError::BadTarball("the tarball is empty".into()));
    }
    let file = staged
        .file
        .reopen()
        .map_err(io_err("reopen", staged.file.path()))?;
    check_tar(file).map_err(|e| StoreError::BadTarball(format!("not a valid tar archive: {e}")))?;
    let (layer, layer_size) = blobs.commit(staged)?;

    let now = Utc::now().to_rfc3339_opts(SecondsFormat::Nanos, true);
    let history = HistoryBuilder::default()
        .created(now.clone())
        .created_by("sbx import")
        .comment("Imported from a rootfs tarball")
        .build()
        .map_err(spec_err)?;
    let rootfs = RootFsBuilder::default()
        .typ("layers")
        .diff_ids(vec![layer.to_string()])
        .build()
        .map_err(spec_err)?;
    let image_config = ImageConfigurationBuilder::default()
        .created(now)
        .architecture(Arch::Amd64)
        .os(Os::Linux)
        .config(config)
        .rootfs(rootfs)
        .history(vec![history])
        .build()
        .map_err(spec_err)?;
    let config_bytes = serde_json::to_vec(&image_config).map_err(|source| StoreError::Json {
        what: "the new image config".into(),
        source,
    })?;
    let (config_digest, config_size) = blobs.put_bytes(&config_bytes)?;

    let layer = Descriptor::new(MediaType::ImageLayer, layer_size, oci_digest(&layer)?);
    let manifest_bytes = manifest(&config_digest, config_size, &[layer])?;
    Ok(blobs.put_bytes(&manifest_bytes)?.0)
}

/// The manifest (JSON bytes) of a config and its uncompressed layers.
pub(crate) fn manifest(
    config: &Digest,
    config_size: u64,
    layers: &[Descriptor],
) -> Result<Vec<u8>, StoreError> {
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(Descriptor::new(
            MediaType::ImageConfig,
            config_size,
            oci_digest(config)?,
        ))
        .layers(layers.to_vec())
        .build()
        .map_err(spec_err)?;
    serde_json::to_vec(&manifest).map_err(|source| StoreError::Json {
        what: "the new manifest".into(),
        source,
    })
}

/// Errors a decompressor gives for bad input (not a disk problem).
fn is_decode_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::InvalidData
            | io::ErrorKind::InvalidInput
            | io::ErrorKind::UnexpectedEof
            | io::ErrorKind::Other
    )
}

/// Walk every entry of a stored tar so a malformed one is refused now,
/// not at the first `run`.
fn check_tar(file: std::fs::File) -> io::Result<()> {
    let mut archive = tar::Archive::new(BufReader::new(file));
    for entry in archive.entries()? {
        io::copy(&mut entry?, &mut io::sink())?;
    }
    Ok(())
}
