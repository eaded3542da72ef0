//! The image store: an OCI image layout under the sbx root.
//!
//! `oci-layout`, `index.json` and `blobs/sha256/` sit at the top of the root
//! so skopeo and umoci read it as it is (`skopeo inspect oci:<root>:busybox:latest`);
//! refs are index descriptors annotated with the familiar name. Unpacked
//! layers live apart, in `layers/sha256/<diff-id hex>`, one per diff-id,
//! shared by every sandbox.
//!
//! Submodules: [`blobs`] (content-addressed, verified, atomic writes),
//! [`index`] (`index.json` and locks), [`unpack`] (safe tar extraction in
//! overlayfs form), [`layers`] (once-per-diff-id unpacking), [`import`],
//! [`load`] and [`save`] (archives), [`gc`] and [`change`] (`--change`).

pub mod blobs;
pub mod change;
pub mod compress;
mod error;
mod fetched;
mod gc;
mod import;
pub mod index;
pub mod layers;
mod load;
mod save;
mod sys;
pub mod unpack;

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest, MediaType};

use crate::digest::Digest;
use crate::paths::Root;
use crate::reference::Reference;
use blobs::Blobs;
pub use error::StoreError;
pub use fetched::Fetched;
use index::{digest_of, lock_exclusive, lock_shared, ref_name, Layout};

pub use oci_spec::image::{Config as RuntimeConfig, ImageConfiguration};

/// An image resolved from a name: everything `run` needs.
#[derive(Debug, Clone)]
pub struct Image {
    /// The familiar name it was resolved from (`busybox:latest`).
    pub name: String,
    pub manifest_digest: Digest,
    /// Docker's image id.
    pub config_digest: Digest,
    pub config: ImageConfiguration,
    /// Layer blob digests, bottom first.
    pub layers: Vec<Digest>,
    /// Uncompressed layer digests (the config's rootfs.diff_ids), bottom first.
    pub diff_ids: Vec<Digest>,
}

/// One row of `sbx images`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImageSummary {
    pub repository: String,
    pub tag: String,
    /// The config digest.
    pub id: Digest,
    pub created: Option<String>,
    /// Sum of the layer blobs and config, in bytes.
    pub size: u64,
}

/// What [`Store::remove`] did.
#[derive(Debug, Clone)]
pub struct Removed {
    /// The names taken off the image.
    pub untagged: Vec<String>,
    /// The image id (config digest).
    pub id: Digest,
    /// Whether no name points at the image any more, so it is gone.
    pub deleted: bool,
}

pub struct Store {
    root: Root,
    blobs: Blobs,
    layout: Layout,
}

impl Store {
    /// Open the store, creating an empty OCI layout if there is none.
    pub fn open(root: &Root) -> Result<Store, StoreError> {
        let store = Store {
            root: root.clone(),
            blobs: Blobs::new(root.dir(), &root.tmp()),
            layout: Layout::new(root.dir(), &root.tmp()),
        };
        store.layout.init()?;
        Ok(store)
    }

    pub fn root(&self) -> &Root {
        &self.root
    }

    pub fn blobs(&self) -> &Blobs {
        &self.blobs
    }

    /// `sbx import`: a rootfs tarball (plain, gzip or zstd) becomes a
    /// one-layer image named `name` with the given runtime config.
    pub fn import(
        &self,
        reader: &mut dyn Read,
        name: &str,
        config: RuntimeConfig,
    ) -> Result<Image, StoreError> {
        let name = Reference::parse(name)?;
        let _writing = lock_shared(&self.layout.gc_lock())?;
        let manifest = import::import(&self.blobs, reader, config)?;
        self.set_ref(&name, &manifest)?;
        self.resolve(&name.familiar())
    }

    /// `sbx load -i`: a docker-archive or OCI archive; returns the names loaded
    /// (or the manifest digests of unnamed images).
    pub fn load(&self, archive: &Path) -> Result<Vec<String>, StoreError> {
        let loaded = {
            let _writing = lock_shared(&self.layout.gc_lock())?;
            let loaded = load::load(&self.blobs, archive)?;
            self.layout.update(|manifests| {
                let mut out = Vec::new();
                for image in &loaded {
                    let desc =
                        index::manifest_descriptor(&image.manifest, image.manifest_size, None)?;
                    if image.names.is_empty() {
                        if !manifests.iter().any(|d| d.digest() == desc.digest()) {
                            manifests.push(desc);
                        }
                        out.push(image.manifest.to_string());
                    }
                    for name in &image.names {
                        let named = index::manifest_descriptor(
                            &image.manifest,
                            image.manifest_size,
                            Some(name),
                        )?;
                        index::set_ref(manifests, name, named);
                        out.push(name.clone());
                    }
                }
                Ok(out)
            })?
        };
        // Blobs the archive held but no image uses (other platforms, the
        // archive's own metadata) go now, unless another writer is busy.
        if let Some(_gc) = index::try_lock_exclusive(&self.layout.gc_lock())? {
            gc::collect(self)?;
        }
        Ok(loaded)
    }

    /// `sbx save -o`: an OCI archive that also carries Docker's manifest.json.
    pub fn save(&self, names: &[String], out: &Path) -> Result<(), StoreError> {
        let images = names
            .iter()
            .map(|n| self.resolve(n))
            .collect::<Result<Vec<_>, _>>()?;
        save::save(self, &images, out)
    }

    /// `sbx pull`: store an image fetched from a registry under `name`,
    /// manifest bytes as they came. Every blob is checked (staged with its
    /// digest and size as the manifest says, or already stored) before
    /// anything is committed; a refused image leaves the store unchanged.
    pub fn commit_fetched(&self, name: &Reference, fetched: Fetched) -> Result<Image, StoreError> {
        fetched::commit(self, name, fetched)
    }

    pub fn images(&self) -> Result<Vec<ImageSummary>, StoreError> {
        let index = self.layout.read()?;
        let mut out = Vec::new();
        for desc in index.manifests() {
            let name = ref_name(desc).map(str::to_string);
            let image = self.image_at(name.as_deref().unwrap_or("<none>"), desc)?;
            let manifest = self.manifest(&image.manifest_digest)?;
            let size =
                manifest.config().size() + manifest.layers().iter().map(|l| l.size()).sum::<u64>();
            let (repository, tag) = match name.as_deref().and_then(|n| Reference::parse(n).ok()) {
                Some(r) => (r.familiar_repository(), r.tag),
                None => ("<none>".to_string(), "<none>".to_string()),
            };
            out.push(ImageSummary {
                repository,
                tag,
                id: image.config_digest.clone(),
                created: image.config.created().clone(),
                size,
            });
        }
        out.sort_by(|a, b| {
            b.created
                .cmp(&a.created)
                .then(a.repository.cmp(&b.repository))
        });
        Ok(out)
    }

    pub fn tag(&self, src: &str, dst: &str) -> Result<(), StoreError> {
        let target = Reference::parse(dst)?;
        if target.digest.is_some() {
            return Err(StoreError::Other(format!(
                "cannot tag with a digest: {dst}"
            )));
        }
        let image = self.resolve(src)?;
        self.set_ref(&target, &image.manifest_digest)
    }

    /// Remove a name; blobs and unpacked layers no other name uses go too.
    /// Returns the config digest the name pointed at.
    pub fn untag(&self, name: &str) -> Result<Digest, StoreError> {
        Ok(self.remove(name)?.id)
    }

    /// Remove a name, or by id every name of that image, then collect what
    /// no remaining ref uses.
    pub fn remove(&self, name: &str) -> Result<Removed, StoreError> {
        let _gc = lock_exclusive(&self.layout.gc_lock())?;
        let image = self.resolve(name)?;
        let index = self.layout.read()?;
        // Which index entries lead to this image's config.
        let mut same_image = BTreeSet::new();
        for desc in index.manifests() {
            let d = digest_of(desc)?;
            if d == image.manifest_digest
                || self.config_of(desc).ok().as_ref() == Some(&image.config_digest)
            {
                same_image.insert(d);
            }
        }
        let familiar = Reference::parse(name)
            .ok()
            .filter(|r| r.digest.is_none())
            .map(|r| r.familiar());
        let by_name = familiar.filter(|f| index.manifests().iter().any(|d| ref_name(d) == Some(f)));
        let removed = self.layout.update(|manifests| {
            let mut untagged = Vec::new();
            manifests.retain(|d| {
                let hit = match &by_name {
                    Some(f) => ref_name(d) == Some(f.as_str()),
                    None => digest_of(d).is_ok_and(|x| same_image.contains(&x)),
                };
                if hit {
                    untagged.extend(ref_name(d).map(str::to_string));
                }
                !hit
            });
            let deleted = !manifests
                .iter()
                .any(|d| digest_of(d).is_ok_and(|x| same_image.contains(&x)));
            Ok(Removed {
                untagged,
                id: image.config_digest.clone(),
                deleted,
            })
        })?;
        gc::collect(self)?;
        Ok(removed)
    }

    /// The names (refs) that lead to the image with this config digest.
    pub fn names_of(&self, id: &Digest) -> Result<Vec<String>, StoreError> {
        let index = self.layout.read()?;
        Ok(index
            .manifests()
            .iter()
            .filter(|d| self.config_of(d).ok().as_ref() == Some(id))
            .filter_map(|d| ref_name(d).map(str::to_string))
            .collect())
    }

    /// Look a name (or an image id prefix) up; manifest and config digests
    /// are verified as they are read.
    pub fn resolve(&self, name: &str) -> Result<Image, StoreError> {
        let index = self.layout.read()?;
        let parsed = Reference::parse(name);
        if let Ok(r) = &parsed {
            let hit = match &r.digest {
                Some(d) => index
                    .manifests()
                    .iter()
                    .find(|m| digest_of(m).ok().as_ref() == Some(d)),
                None => {
                    let familiar = r.familiar();
                    index
                        .manifests()
                        .iter()
                        .find(|m| ref_name(m) == Some(familiar.as_str()))
                }
            };
            if let Some(desc) = hit {
                return self.image_at(&r.familiar(), desc);
            }
        }
        if let Some(image) = self.resolve_id(&index, name)? {
            return Ok(image);
        }
        match parsed {
            Err(e) if !looks_like_id(name) => Err(e.into()),
            _ => Err(StoreError::NotFound(name.to_string())),
        }
    }

    /// Docker-style lookup by image id (config digest) or a unique prefix.
    fn resolve_id(&self, index: &ImageIndex, id: &str) -> Result<Option<Image>, StoreError> {
        if !looks_like_id(id) {
            return Ok(None);
        }
        let hex = id.strip_prefix("sha256:").unwrap_or(id);
        let mut found: Option<(Digest, &Descriptor)> = None;
        for desc in index.manifests() {
            let Ok(config) = self.config_of(desc) else {
                continue;
            };
            if !config.hex().starts_with(hex) {
                continue;
            }
            match &found {
                Some((c, _)) if *c != config => return Err(StoreError::Ambiguous(id.to_string())),
                // Prefer a named entry to name the image by.
                Some((_, prev)) if ref_name(prev).is_some() => {}
                _ => found = Some((config, desc)),
            }
        }
        match found {
            Some((config, desc)) => {
                let name = ref_name(desc).map_or_else(|| config.to_string(), str::to_string);
                self.image_at(&name, desc).map(Some)
            }
            None => Ok(None),
        }
    }

    /// The unpacked layer directories of an image, bottom first, unpacking
    /// (and verifying) any that are not unpacked yet.
    pub fn rootfs(&self, image: &Image) -> Result<Vec<PathBuf>, StoreError> {
        let dirs: Vec<PathBuf> = image
            .diff_ids
            .iter()
            .map(|d| layers::layer_dir(&self.root, d))
            .collect();
        if dirs.iter().all(|d| d.is_dir()) {
            return Ok(dirs);
        }
        let _writing = lock_shared(&self.layout.gc_lock())?;
        image
            .layers
            .iter()
            .zip(&image.diff_ids)
            .map(|(blob, diff_id)| layers::ensure_unpacked(&self.root, &self.blobs, blob, diff_id))
            .collect()
    }

    /// Hold off garbage collection while blobs that no ref names yet are
    /// being written (a build's layers); released when dropped.
    pub fn writing(&self) -> Result<index::LockGuard, StoreError> {
        lock_shared(&self.layout.gc_lock())
    }

    /// The descriptors of an image's layer blobs, bottom first.
    pub fn layer_descriptors(&self, image: &Image) -> Result<Vec<Descriptor>, StoreError> {
        Ok(self.manifest(&image.manifest_digest)?.layers().clone())
    }

    /// Store a layer tar as it is (uncompressed, so its digest is its
    /// diff-id); returns the digest and size.
    pub fn put_layer(&self, reader: &mut dyn Read) -> Result<(Digest, u64), StoreError> {
        let _writing = lock_shared(&self.layout.gc_lock())?;
        self.blobs.put_reader(reader, None)
    }

    /// Write an image from a ready config (JSON bytes, whose
    /// `rootfs.diff_ids` has one entry per layer) and the descriptors of its
    /// stored layer blobs, bottom first; name it when `name` is given.
    /// Writing the same config and layers again stores nothing new.
    pub fn commit_image(
        &self,
        name: Option<&str>,
        config: &[u8],
        layers: &[Descriptor],
    ) -> Result<Image, StoreError> {
        let reference = name.map(Reference::parse).transpose()?;
        let parsed: ImageConfiguration =
            serde_json::from_slice(config).map_err(|source| StoreError::Json {
                what: "the new image config".into(),
                source,
            })?;
        if parsed.rootfs().diff_ids().len() != layers.len() {
            return Err(StoreError::Other(format!(
                "the image config lists {} diff-ids for {} layers",
                parsed.rootfs().diff_ids().len(),
                layers.len()
            )));
        }
        let _writing = lock_shared(&self.layout.gc_lock())?;
        for layer in layers {
            let digest = digest_of(layer)?;
            if !self.blobs.exists(&digest) {
                return Err(StoreError::MissingBlob(digest));
            }
        }
        let (config_digest, config_size) = self.blobs.put_bytes(config)?;
        let manifest = import::manifest(&config_digest, config_size, layers)?;
        let (manifest_digest, manifest_size) = self.blobs.put_bytes(&manifest)?;
        match &reference {
            Some(r) => self.set_ref(r, &manifest_digest)?,
            None => {
                let desc = index::manifest_descriptor(&manifest_digest, manifest_size, None)?;
                self.layout.update(|manifests| {
                    if !manifests.iter().any(|d| d.digest() == desc.digest()) {
                        manifests.push(desc);
                    }
                    Ok(())
                })?;
            }
        }
        let name = reference.map_or_else(|| config_digest.to_string(), |r| r.familiar());
        let desc = index::manifest_descriptor(&manifest_digest, manifest_size, None)?;
        self.image_at(&name, &desc)
    }

    /// Point `name` at a stored manifest.
    fn set_ref(&self, name: &Reference, manifest: &Digest) -> Result<(), StoreError> {
        let familiar = name.familiar();
        let size = self.blobs.size(manifest)?;
        let desc = index::manifest_descriptor(manifest, size, Some(&familiar))?;
        self.layout.update(|manifests| {
            index::set_ref(manifests, &familiar, desc);
            Ok(())
        })
    }

    /// A verified, parsed manifest.
    pub(crate) fn manifest(&self, digest: &Digest) -> Result<ImageManifest, StoreError> {
        let bytes = self.blobs.read_verified(digest, "a manifest")?;
        serde_json::from_slice(&bytes).map_err(|source| StoreError::Json {
            what: format!("manifest {digest}"),
            source,
        })
    }

    /// A verified, parsed image config.
    pub(crate) fn config(&self, digest: &Digest) -> Result<ImageConfiguration, StoreError> {
        let bytes = self.blobs.read_verified(digest, "an image config")?;
        serde_json::from_slice(&bytes).map_err(|source| StoreError::Json {
            what: format!("image config {digest}"),
            source,
        })
    }

    /// The manifest an index entry leads to (through a nested index: the
    /// linux/amd64 one).
    pub(crate) fn manifest_digest_of(&self, desc: &Descriptor) -> Result<Digest, StoreError> {
        let digest = digest_of(desc)?;
        if *desc.media_type() != MediaType::ImageIndex {
            return Ok(digest);
        }
        let bytes = self.blobs.read_verified(&digest, "an image index")?;
        let nested: ImageIndex =
            serde_json::from_slice(&bytes).map_err(|source| StoreError::Json {
                what: format!("image index {digest}"),
                source,
            })?;
        let pick = load::pick_platform(nested.manifests()).ok_or_else(|| StoreError::BadImage {
            name: digest.to_string(),
            reason: "the index has no linux/amd64 manifest".into(),
        })?;
        digest_of(pick)
    }

    fn config_of(&self, desc: &Descriptor) -> Result<Digest, StoreError> {
        let manifest = self.manifest(&self.manifest_digest_of(desc)?)?;
        digest_of(manifest.config())
    }

    /// The image an index entry leads to.
    fn image_at(&self, name: &str, desc: &Descriptor) -> Result<Image, StoreError> {
        let manifest_digest = self.manifest_digest_of(desc)?;
        let manifest = self.manifest(&manifest_digest)?;
        let config_digest = digest_of(manifest.config())?;
        let config = self.config(&config_digest)?;
        let bad = |reason: String| StoreError::BadImage {
            name: name.to_string(),
            reason,
        };
        let layers = manifest
            .layers()
            .iter()
            .map(digest_of)
            .collect::<Result<Vec<_>, _>>()?;
        let diff_ids = config
            .rootfs()
            .diff_ids()
            .iter()
            .map(|d| d.parse::<Digest>().map_err(|e| bad(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        if layers.len() != diff_ids.len() {
            return Err(bad(format!(
                "the manifest has {} layers but the config lists {} diff-ids",
                layers.len(),
                diff_ids.len()
            )));
        }
        Ok(Image {
            name: name.to_string(),
            manifest_digest,
            config_digest,
            config,
            layers,
            diff_ids,
        })
    }
}

/// 4 to 64 lowercase hex digits, optionally after `sha256:`.
fn looks_like_id(s: &str) -> bool {
    let hex = s.strip_prefix("sha256:").unwrap_or(s);
    (4..=64).contains(&hex.len()) && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}
