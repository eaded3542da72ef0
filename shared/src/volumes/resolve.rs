//! From the mounts a user asked for (and the image's `VOLUME`s) to the
//! spec's [`Mount`]s: volumes created on first use, anonymous volumes
//! made, bind sources checked, the isolation level's limits applied.

use std::collections::HashSet;

use super::flags::{MountRequest, RequestKind};
use super::usage::UsedVolume;
use super::{CreateOptions, VolumeError, Volumes};
use crate::spec::{Isolation, Mount, MountSource};

/// The mounts of a new sandbox and the volumes it uses.
#[derive(Debug, Default)]
pub struct Resolved {
    /// Sorted so that a parent is mounted before what lies under it.
    pub mounts: Vec<Mount>,
    pub used: Vec<UsedVolume>,
}

impl Volumes {
    /// Settle `requests` plus an anonymous volume for each of the image's
    /// `VOLUME` paths no request covers. On error, the anonymous volumes
    /// made so far are removed again.
    pub fn resolve(
        &self,
        requests: &[MountRequest],
        image_volumes: &[String],
        isolation: Isolation,
    ) -> Result<Resolved, VolumeError> {
        let mut out = Resolved::default();
        let result = self.resolve_into(requests, image_volumes, isolation, &mut out);
        if result.is_err() {
            for v in out.used.iter().filter(|v| v.anonymous) {
                let _ = self.remove(&v.name, true);
            }
        }
        result.map(|()| out)
    }

    fn resolve_into(
        &self,
        requests: &[MountRequest],
        image_volumes: &[String],
        isolation: Isolation,
        out: &mut Resolved,
    ) -> Result<(), VolumeError> {
        let mut targets = HashSet::new();
        for r in requests {
            if !targets.insert(r.target.clone()) {
                return Err(VolumeError::DuplicateTarget(r.target.clone()));
            }
        }
        // Checked first: nothing is created for a run that cannot start.
        for r in requests {
            if let RequestKind::Bind(path) = &r.kind {
                if isolation == Isolation::Vm {
                    return Err(VolumeError::BindIntoVm(
                        format!("-v {}:{}", path.display(), r.target),
                        r.target.clone(),
                    ));
                }
                if std::fs::metadata(path).is_err() {
                    return Err(VolumeError::BindMissing(path.clone()));
                }
            }
        }
        let implied = image_volumes
            .iter()
            .map(|p| p.trim_end_matches('/').to_string())
            .filter(|p| p.starts_with('/') && !p.split('/').any(|c| c == ".."))
            .filter(|p| !targets.contains(p))
            .collect::<HashSet<_>>()
            .into_iter()
            .map(|target| MountRequest {
                target,
                read_only: false,
                kind: RequestKind::Volume(None),
            });
        let all: Vec<MountRequest> = requests.iter().cloned().chain(implied).collect();
        for r in all {
            let source = match r.kind {
                RequestKind::Bind(path) => MountSource::Bind { path },
                RequestKind::Tmpfs { size, mode } => MountSource::Tmpfs { size, mode },
                RequestKind::Volume(name) => {
                    let (volume, anonymous) = match name {
                        Some(name) => (self.ensure(&name)?.0, false),
                        None => {
                            let opts = CreateOptions {
                                anonymous: true,
                                ..CreateOptions::default()
                            };
                            (self.create(&crate::ids::new_id(), &opts)?, true)
                        }
                    };
                    if out.used.iter().any(|u| u.name == volume.name) {
                        return Err(VolumeError::Twice(volume.name));
                    }
                    out.used.push(UsedVolume {
                        name: volume.name.clone(),
                        anonymous,
                    });
                    MountSource::Volume {
                        dir: self.dir().join(&volume.name),
                        name: volume.name,
                        anonymous,
                    }
                }
            };
            out.mounts.push(Mount {
                target: r.target,
                read_only: r.read_only,
                source,
            });
        }
        out.mounts
            .sort_by_key(|m| m.target.split('/').filter(|c| !c.is_empty()).count());
        Ok(())
    }
}
