//! Docker's mount flags, parsed: `-v SRC:DST[:OPTS]`, `--mount k=v,…` and
//! `--tmpfs DST[:OPTS]`. Pure string work; what a request refers to (a
//! volume to create, a host path that must exist) is settled later by
//! [`super::Volumes::resolve`].

use std::path::PathBuf;

use crate::spec::parse_size;

/// One mount as the user asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountRequest {
    pub target: String,
    pub read_only: bool,
    pub kind: RequestKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestKind {
    Bind(PathBuf),
    /// A named volume; None: anonymous (a fresh volume for this sandbox).
    Volume(Option<String>),
    Tmpfs {
        size: Option<u64>,
        mode: Option<u32>,
    },
}

/// A volume name Docker would accept: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
pub fn valid_volume_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && name.len() <= 128
}

fn target(flag: &str, t: &str) -> Result<String, String> {
    if t.is_empty() {
        return Err(format!("invalid {flag}: the mount target is empty"));
    }
    if !t.starts_with('/') {
        return Err(format!(
            "invalid {flag}: the mount target {t:?} must be an absolute path"
        ));
    }
    if t.split('/').any(|c| c == "..") {
        return Err(format!("invalid {flag}: the mount target {t:?} holds '..'"));
    }
    let clean = t.trim_end_matches('/');
    if clean.is_empty() {
        return Err(format!("invalid {flag}: cannot mount over '/'"));
    }
    Ok(clean.to_string())
}

/// A `-v`/`--mount` source: an absolute host path, or a volume name.
fn source(flag: &str, s: &str) -> Result<RequestKind, String> {
    if s.starts_with('/') {
        return Ok(RequestKind::Bind(PathBuf::from(s)));
    }
    if valid_volume_name(s) {
        return Ok(RequestKind::Volume(Some(s.to_string())));
    }
    if s.contains('/') || s.starts_with('.') || s.starts_with('~') {
        return Err(format!(
            "invalid {flag}: {s:?} is a relative host path; a bind mount needs an absolute path"
        ));
    }
    Err(format!(
        "invalid {flag}: {s:?} is not a volume name (letters, digits, '_', '.', '-') or an absolute host path"
    ))
}

/// `-v SRC:DST[:OPTS]`, or `-v DST` for an anonymous volume.
pub fn parse_volume(spec: &str) -> Result<MountRequest, String> {
    let flag = format!("-v {spec}");
    let parts: Vec<&str> = spec.split(':').collect();
    let (src, dst, opts) = match parts.as_slice() {
        [dst] => (None, *dst, None),
        [src, dst] => (Some(*src), *dst, None),
        [src, dst, opts] => (Some(*src), *dst, Some(*opts)),
        _ => return Err(format!("invalid {flag}: expected [SOURCE:]TARGET[:ro|rw]")),
    };
    let kind = match src {
        None => RequestKind::Volume(None),
        Some("") => return Err(format!("invalid {flag}: the source is empty")),
        Some(s) => source(&flag, s)?,
    };
    let mut read_only = false;
    for o in opts.into_iter().flat_map(|o| o.split(',')) {
        match o {
            "ro" | "readonly" => read_only = true,
            "rw" => read_only = false,
            // SELinux relabelling and propagation: nothing to do here.
            "z" | "Z" | "rprivate" | "private" | "nocopy" => {}
            _ => return Err(format!("invalid {flag}: unknown option {o:?} (ro, rw)")),
        }
    }
    Ok(MountRequest {
        target: target(&flag, dst)?,
        read_only,
        kind,
    })
}

fn bool_value(flag: &str, key: &str, v: Option<&str>) -> Result<bool, String> {
    match v {
        None | Some("true") | Some("1") => Ok(true),
        Some("false") | Some("0") => Ok(false),
        Some(v) => Err(format!("invalid {flag}: {key}={v}: expected true or false")),
    }
}

fn mode(flag: &str, v: &str) -> Result<u32, String> {
    u32::from_str_radix(v, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("invalid {flag}: mode {v:?} is not an octal file mode"))
}

fn size(flag: &str, v: &str) -> Result<u64, String> {
    parse_size(v).map_err(|e| format!("invalid {flag}: {e}"))
}

/// `--mount type=bind|volume|tmpfs,source=…,target=…,readonly,tmpfs-size=…`.
pub fn parse_mount(spec: &str) -> Result<MountRequest, String> {
    let flag = format!("--mount {spec}");
    let (mut kind, mut src, mut dst) = (None, None, None);
    let (mut read_only, mut tmpfs_size, mut tmpfs_mode) = (false, None, None);
    for field in spec.split(',').filter(|f| !f.is_empty()) {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (field, None),
        };
        let need = || value.ok_or_else(|| format!("invalid {flag}: {key} needs a value"));
        match key {
            "type" => kind = Some(need()?),
            "source" | "src" => src = Some(need()?),
            "target" | "destination" | "dst" => dst = Some(need()?),
            "readonly" | "ro" => read_only = bool_value(&flag, key, value)?,
            "tmpfs-size" => tmpfs_size = Some(size(&flag, need()?)?),
            "tmpfs-mode" => tmpfs_mode = Some(mode(&flag, need()?)?),
            "bind-propagation" | "volume-nocopy" | "consistency" => {}
            _ => return Err(format!("invalid {flag}: unknown key {key:?}")),
        }
    }
    let dst = dst.ok_or_else(|| format!("invalid {flag}: target= is missing"))?;
    let tmpfs_opts = tmpfs_size.is_some() || tmpfs_mode.is_some();
    let kind = match kind {
        Some("bind") => {
            let s = src.ok_or_else(|| format!("invalid {flag}: a bind mount needs source="))?;
            match source(&flag, s)? {
                RequestKind::Bind(p) => RequestKind::Bind(p),
                _ => {
                    return Err(format!(
                        "invalid {flag}: a bind mount's source must be an absolute host path"
                    ))
                }
            }
        }
        Some("volume") => match src {
            None | Some("") => RequestKind::Volume(None),
            Some(s) if valid_volume_name(s) => RequestKind::Volume(Some(s.to_string())),
            Some(s) => return Err(format!("invalid {flag}: {s:?} is not a volume name")),
        },
        Some("tmpfs") => {
            if src.is_some_and(|s| !s.is_empty()) {
                return Err(format!("invalid {flag}: a tmpfs mount takes no source"));
            }
            RequestKind::Tmpfs {
                size: tmpfs_size,
                mode: tmpfs_mode,
            }
        }
        Some(t) => {
            return Err(format!(
                "invalid {flag}: unknown type {t:?} (bind, volume or tmpfs)"
            ))
        }
        None => return Err(format!("invalid {flag}: type= is missing")),
    };
    if tmpfs_opts && !matches!(kind, RequestKind::Tmpfs { .. }) {
        return Err(format!("invalid {flag}: tmpfs options need type=tmpfs"));
    }
    Ok(MountRequest {
        target: target(&flag, dst)?,
        read_only,
        kind,
    })
}

/// `--tmpfs DST[:size=64m,mode=1777,ro]`.
pub fn parse_tmpfs(spec: &str) -> Result<MountRequest, String> {
    let flag = format!("--tmpfs {spec}");
    let (dst, opts) = spec.split_once(':').unwrap_or((spec, ""));
    let (mut size_v, mut mode_v, mut read_only) = (None, None, false);
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o.split_once('=') {
            Some(("size", v)) => size_v = Some(size(&flag, v)?),
            Some(("mode", v)) => mode_v = Some(mode(&flag, v)?),
            None if o == "ro" => read_only = true,
            None if o == "rw" => read_only = false,
            None if matches!(
                o,
                "exec" | "noexec" | "suid" | "nosuid" | "dev" | "nodev" | "atime" | "noatime"
            ) => {}
            _ => {
                return Err(format!(
                    "invalid {flag}: unknown option {o:?} (size=, mode=, ro, rw)"
                ))
            }
        }
    }
    Ok(MountRequest {
        target: target(&flag, dst)?,
        read_only,
        kind: RequestKind::Tmpfs {
            size: size_v,
            mode: mode_v,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_flags() {
        let m = parse_volume("data:/srv/data:ro").unwrap();
        assert_eq!(m.kind, RequestKind::Volume(Some("data".into())));
        assert_eq!(m.target, "/srv/data");
        assert!(m.read_only);
        let m = parse_volume("/host/dir:/x").unwrap();
        assert_eq!(m.kind, RequestKind::Bind("/host/dir".into()));
        assert!(!m.read_only);
        assert_eq!(
            parse_volume("/cache").unwrap().kind,
            RequestKind::Volume(None)
        );
        for bad in [
            "rel/dir:/x",
            "./x:/x",
            ":/x",
            "data:x",
            "data:/",
            "data:/x:bogus",
            "a:b:c:d",
            "data:/a/../b",
        ] {
            assert!(parse_volume(bad).is_err(), "{bad} was accepted");
        }
        assert!(parse_volume("rel/dir:/x")
            .unwrap_err()
            .contains("relative host path"));
    }

    #[test]
    fn mount_flags() {
        let m = parse_mount("type=bind,source=/h,target=/c,readonly").unwrap();
        assert_eq!(m.kind, RequestKind::Bind("/h".into()));
        assert!(m.read_only);
        let m = parse_mount("type=tmpfs,target=/t,tmpfs-size=64m,tmpfs-mode=1770").unwrap();
        assert_eq!(
            m.kind,
            RequestKind::Tmpfs {
                size: Some(64 << 20),
                mode: Some(0o1770)
            }
        );
        let m = parse_mount("type=volume,src=v1,dst=/v").unwrap();
        assert_eq!(m.kind, RequestKind::Volume(Some("v1".into())));
        for bad in [
            "type=nope,target=/x",
            "target=/x",
            "type=bind,target=/x",
            "type=bind,source=rel,target=/x",
            "type=volume,source=v,target=/x,tmpfs-size=1m",
            "type=tmpfs,target=/x,color=red",
            "type=tmpfs",
        ] {
            assert!(parse_mount(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn tmpfs_flags() {
        let m = parse_tmpfs("/run:size=64m,noexec").unwrap();
        assert_eq!(
            m.kind,
            RequestKind::Tmpfs {
                size: Some(64 << 20),
                mode: None
            }
        );
        assert!(parse_tmpfs("run").is_err());
        assert!(parse_tmpfs("/run:size=lots").is_err());
    }
}
