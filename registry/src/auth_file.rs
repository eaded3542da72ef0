//! Credentials in a docker-compatible `auth.json`:
//! `{"auths": {"127.0.0.1:5000": {"auth": base64("user:pass")}}}`.
//!
//! Where: `$SBX_AUTH_FILE` if set, else `$XDG_CONFIG_HOME/sbx/auth.json`,
//! else `~/.config/sbx/auth.json`. The file is written with mode 0600 (its
//! directory, when sbx creates it, 0700), atomically; keys other than the
//! entries sbx changes are kept as they were, so a file shared with docker,
//! podman or skopeo (`--authfile`) survives.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{Map, Value};

use crate::error::RegistryError;

/// A user name and password (or identity token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <redacted>)", self.username)
    }
}

impl Credentials {
    /// The value of an `Authorization: Basic` header.
    pub fn basic_header(&self) -> String {
        format!(
            "Basic {}",
            B64.encode(format!("{}:{}", self.username, self.password))
        )
    }
}

/// Docker Hub's names: docker's own CLI keys its credentials by the first.
const DOCKER_HUB_KEYS: [&str; 4] = [
    "https://index.docker.io/v1/",
    "index.docker.io",
    "registry-1.docker.io",
    "docker.io",
];

#[derive(Debug, Clone)]
pub struct AuthFile {
    path: PathBuf,
}

impl AuthFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        AuthFile { path: path.into() }
    }

    /// The documented default place (see the module docs).
    pub fn default_path() -> PathBuf {
        let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        if let Some(p) = env("SBX_AUTH_FILE") {
            return PathBuf::from(p);
        }
        let config = env("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".config")))
            .unwrap_or_else(|| PathBuf::from("/root/.config"));
        config.join("sbx").join("auth.json")
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The credentials stored for `registry`, if any.
    pub fn get(&self, registry: &str) -> Result<Option<Credentials>, RegistryError> {
        let root = self.read()?;
        let Some(auths) = root.get("auths").and_then(Value::as_object) else {
            return Ok(None);
        };
        let Some(entry) = keys_for(registry)
            .iter()
            .find_map(|k| auths.get(k))
            .or_else(|| {
                auths
                    .iter()
                    .find(|(k, _)| host_of(k) == registry)
                    .map(|e| e.1)
            })
        else {
            return Ok(None);
        };
        let Some(auth) = entry.get("auth").and_then(Value::as_str) else {
            return Ok(None);
        };
        let bad = |reason: &str| RegistryError::BadAuthFile {
            path: self.path.clone(),
            reason: format!("auths.{registry}.auth {reason}"),
        };
        let decoded = B64.decode(auth.trim()).map_err(|_| bad("is not base64"))?;
        let decoded = String::from_utf8(decoded).map_err(|_| bad("is not UTF-8"))?;
        let (user, pass) = decoded
            .split_once(':')
            .ok_or_else(|| bad("is not user:password"))?;
        Ok(Some(Credentials {
            username: user.to_string(),
            password: pass.to_string(),
        }))
    }

    /// Store credentials for `registry`, replacing any it had.
    pub fn set(&self, registry: &str, creds: &Credentials) -> Result<(), RegistryError> {
        let mut root = self.read()?;
        let auths = auths_mut(&mut root);
        for k in keys_for(registry) {
            auths.remove(&k);
        }
        let auth = B64.encode(format!("{}:{}", creds.username, creds.password));
        let mut entry = Map::new();
        entry.insert("auth".into(), Value::String(auth));
        auths.insert(registry.to_string(), Value::Object(entry));
        self.write(&root)
    }

    /// Forget `registry`; says whether there was anything to forget.
    pub fn remove(&self, registry: &str) -> Result<bool, RegistryError> {
        let mut root = self.read()?;
        let auths = auths_mut(&mut root);
        let before = auths.len();
        let keys = keys_for(registry);
        auths.retain(|k, _| !keys.contains(k) && host_of(k) != registry);
        if auths.len() == before {
            return Ok(false);
        }
        self.write(&root)?;
        Ok(true)
    }

    fn read(&self) -> Result<Value, RegistryError> {
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Value::Object(Map::new())),
            Err(source) => {
                return Err(RegistryError::AuthFile {
                    op: "read",
                    path: self.path.clone(),
                    source,
                })
            }
        };
        let value: Value =
            serde_json::from_slice(&bytes).map_err(|e| RegistryError::BadAuthFile {
                path: self.path.clone(),
                reason: e.to_string(),
            })?;
        if !value.is_object() {
            return Err(RegistryError::BadAuthFile {
                path: self.path.clone(),
                reason: "not a JSON object".into(),
            });
        }
        Ok(value)
    }

    /// Write mode 0600 to a temp file beside it, then rename over it.
    fn write(&self, root: &Value) -> Result<(), RegistryError> {
        let io = |op: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| RegistryError::AuthFile { op, path, source }
        };
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !dir.is_dir() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(io("create", &dir))?;
        }
        let mut bytes = serde_json::to_vec_pretty(root).unwrap_or_default();
        bytes.push(b'\n');
        let mut tmp =
            tempfile::NamedTempFile::new_in(&dir).map_err(io("create a temp file in", &dir))?;
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(io("chmod", tmp.path()))?;
        tmp.write_all(&bytes).map_err(io("write", tmp.path()))?;
        tmp.as_file().sync_all().map_err(io("fsync", tmp.path()))?;
        tmp.persist(&self.path)
            .map_err(|e| RegistryError::AuthFile {
                op: "rename into place",
                path: self.path.clone(),
                source: e.error,
            })?;
        Ok(())
    }
}

fn auths_mut(root: &mut Value) -> &mut Map<String, Value> {
    let obj = match root {
        Value::Object(o) => o,
        other => {
            *other = Value::Object(Map::new());
            match other {
                Value::Object(o) => o,
                _ => unreachable!("just made an object"),
            }
        }
    };
    let auths = obj
        .entry("auths")
        .or_insert_with(|| Value::Object(Map::new()));
    if !auths.is_object() {
        *auths = Value::Object(Map::new());
    }
    match auths {
        Value::Object(o) => o,
        _ => unreachable!("just made an object"),
    }
}

/// The keys a registry's entry may be stored under.
fn keys_for(registry: &str) -> Vec<String> {
    if DOCKER_HUB_KEYS.contains(&registry) {
        DOCKER_HUB_KEYS.iter().map(|k| k.to_string()).collect()
    } else {
        vec![registry.to_string()]
    }
}

/// `https://host:port/v1/` → `host:port`.
fn host_of(key: &str) -> &str {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    k.split('/').next().unwrap_or(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(u: &str, p: &str) -> Credentials {
        Credentials {
            username: u.into(),
            password: p.into(),
        }
    }

    #[test]
    fn write_read_remove_with_0600() {
        let dir = tempfile::tempdir().unwrap();
        let file = AuthFile::new(dir.path().join("new").join("auth.json"));
        assert_eq!(file.get("127.0.0.1:5000").unwrap(), None);
        file.set("127.0.0.1:5000", &creds("user", "p:ss")).unwrap();
        let meta = fs::metadata(file.path()).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let dmeta = fs::metadata(dir.path().join("new")).unwrap();
        assert_eq!(dmeta.permissions().mode() & 0o777, 0o700);
        assert_eq!(
            file.get("127.0.0.1:5000").unwrap(),
            Some(creds("user", "p:ss"))
        );
        let json: Value = serde_json::from_slice(&fs::read(file.path()).unwrap()).unwrap();
        assert_eq!(json["auths"]["127.0.0.1:5000"]["auth"], "dXNlcjpwOnNz");
        assert!(file.remove("127.0.0.1:5000").unwrap());
        assert!(!file.remove("127.0.0.1:5000").unwrap());
        assert_eq!(file.get("127.0.0.1:5000").unwrap(), None);
    }

    #[test]
    fn keeps_other_keys_and_reads_docker_hub_and_url_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.json");
        fs::write(
            &path,
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"YTpi"},"https://quay.io/v2/":{"auth":"Yzpk"}},"credHelpers":{"x":"y"}}"#,
        )
        .unwrap();
        let file = AuthFile::new(&path);
        assert_eq!(file.get("docker.io").unwrap(), Some(creds("a", "b")));
        assert_eq!(file.get("quay.io").unwrap(), Some(creds("c", "d")));
        file.set("127.0.0.1:1", &creds("e", "f")).unwrap();
        let json: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(json["credHelpers"]["x"], "y");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(file.remove("docker.io").unwrap());
        assert_eq!(file.get("docker.io").unwrap(), None);
    }

    #[test]
    fn bad_files_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.json");
        for bad in [
            "[1]",
            "{",
            r#"{"auths":{"r":{"auth":"!!"}}}"#,
            r#"{"auths":{"r":{"auth":"bm9jb2xvbg=="}}}"#,
        ] {
            fs::write(&path, bad).unwrap();
            assert!(AuthFile::new(&path).get("r").is_err(), "{bad}");
        }
        fs::write(&path, r#"{"auths":[]}"#).unwrap();
        assert_eq!(AuthFile::new(&path).get("r").unwrap(), None);
        assert_eq!(
            format!("{:?}", creds("u", "secret")),
            "Credentials(u, <redacted>)"
        );
    }
}
