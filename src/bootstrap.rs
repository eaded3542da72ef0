//! Built-in images made from this machine's packages, so sbx runs with no
//! registry: `sbx image bootstrap busybox` turns Debian's busybox-static into
//! a one-layer `busybox:latest` image.
//!
//! The layer is built in memory and is byte-for-byte reproducible: every
//! entry has a fixed owner, mode and mtime (the busybox binary's), and the
//! entries are written in a fixed order, so re-running yields the same
//! diff-id, and bootstrapping again keeps the image (and its id) as it is.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Cursor, Read};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use sbx_shared::digest::Digest;
use sbx_shared::paths::Root;
use sbx_shared::store::{RuntimeConfig, Store};

/// Where Debian's busybox-static puts the binary.
const BUSYBOX: &str = "/bin/busybox";
const NOT_INSTALLED: &str = "busybox-static is not installed: apt-get install busybox-static";
const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
user:x:1000:1000:user:/home/user:/bin/sh
";

const GROUP: &str = "\
root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
tty:x:5:
users:x:100:
nogroup:x:65534:
user:x:1000:
";

/// Directories of the rootfs: (path, mode, uid/gid).
const DIRS: &[(&str, u32, u64)] = &[
    ("bin", 0o755, 0),
    ("dev", 0o755, 0),
    ("etc", 0o755, 0),
    ("home", 0o755, 0),
    ("home/user", 0o755, 1000),
    ("proc", 0o555, 0),
    ("root", 0o700, 0),
    ("sbin", 0o755, 0),
    ("sys", 0o555, 0),
    ("tmp", 0o1777, 0),
    ("usr", 0o755, 0),
    ("usr/bin", 0o755, 0),
    ("usr/sbin", 0o755, 0),
    ("var", 0o755, 0),
    ("var/tmp", 0o1777, 0),
];

/// `sbx image bootstrap NAME`.
pub fn bootstrap(root: &Root, name: &str) -> Result<u8> {
    let tag = match name {
        "busybox" | "busybox:latest" => "busybox:latest",
        _ => bail!("no built-in image named {name:?}: the only one is \"busybox\""),
    };
    let layer = busybox_rootfs(Path::new(BUSYBOX))?;
    let config = busybox_config();
    let store = Store::open(root)
        .with_context(|| format!("opening the image store in {}", root.dir().display()))?;
    // The store stamps each import with the time, so importing the same
    // layer again would make a new image id: keep the image that is there
    // when it already has this very layer and config.
    let diff_id = Digest::of(&layer);
    if let Ok(image) = store.resolve(tag) {
        if image.diff_ids == [diff_id.clone()] && image.config.config().as_ref() == Some(&config) {
            println!("{}", image.config_digest);
            return Ok(0);
        }
    }
    let image = store
        .import(&mut Cursor::new(layer), tag, config)
        .with_context(|| format!("importing {tag}"))?;
    println!("{}", image.config_digest);
    Ok(0)
}

fn busybox_config() -> RuntimeConfig {
    let mut config = RuntimeConfig::default();
    config.set_cmd(Some(vec!["sh".into()]));
    config.set_env(Some(vec![PATH_ENV.into()]));
    config
}

/// The applet paths busybox knows, relative to `/` (`bin/sh`, `usr/bin/env`),
/// without the binary itself, sorted and deduplicated.
fn applets(busybox: &Path) -> Result<Vec<String>> {
    let out = Command::new(busybox)
        .arg("--list-full")
        .output()
        .with_context(|| format!("running {} --list-full", busybox.display()))?;
    if !out.status.success() {
        bail!("{} --list-full failed ({})", busybox.display(), out.status);
    }
    let text = String::from_utf8(out.stdout).context("busybox --list-full printed non-UTF-8")?;
    let mut list: Vec<String> = text
        .lines()
        .map(|l| l.trim().trim_start_matches('/').to_string())
        .filter(|l| !l.is_empty() && l != "bin/busybox")
        .filter(|l| l.split('/').all(|c| !c.is_empty() && c != "." && c != ".."))
        .collect();
    list.sort();
    list.dedup();
    if !list.iter().any(|a| a == "bin/sh") {
        bail!("{} has no sh applet", busybox.display());
    }
    Ok(list)
}

/// A relative symlink target from `path` (relative to `/`) to `/bin/busybox`:
/// `bin/sh` -> `busybox`, `usr/bin/env` -> `../../bin/busybox`.
fn link_target(path: &str) -> String {
    let depth = path.matches('/').count();
    if path.starts_with("bin/") && depth == 1 {
        "busybox".to_string()
    } else {
        format!("{}bin/busybox", "../".repeat(depth))
    }
}

/// True if `bytes` is an ELF executable without a program interpreter
/// (statically linked, possibly static-pie).
fn is_static_elf(bytes: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 || bytes[5] != 1 {
        return false; // not a 64-bit little-endian ELF
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(bytes[32..40].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(54), u16_at(56));
    if phentsize < 4 || phnum == 0 {
        return false;
    }
    (0..phnum).all(|i| {
        let o = phoff.saturating_add(i * phentsize);
        match bytes.get(o..o + 4) {
            Some(t) => u32::from_le_bytes(t.try_into().unwrap()) != PT_INTERP,
            None => false,
        }
    })
}

/// The rootfs of the busybox image, as an uncompressed tar.
fn busybox_rootfs(busybox: &Path) -> Result<Vec<u8>> {
    let meta = match fs::metadata(busybox) {
        Ok(m) if m.is_file() => m,
        _ => bail!(NOT_INSTALLED),
    };
    let mut binary = Vec::with_capacity(meta.len() as usize);
    fs::File::open(busybox)
        .and_then(|mut f| f.read_to_end(&mut binary))
        .with_context(|| format!("reading {}", busybox.display()))?;
    if !is_static_elf(&binary) {
        bail!(
            "{} is not statically linked ({NOT_INSTALLED})",
            busybox.display()
        );
    }
    let mtime = u64::try_from(meta.mtime()).unwrap_or(0);
    let applets = applets(busybox)?;

    let mut tar = tar::Builder::new(Vec::new());
    let header = |kind: tar::EntryType, mode: u32, owner: u64, size: u64| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(owner);
        h.set_gid(owner);
        h.set_mtime(mtime);
        h.set_size(size);
        h
    };

    // DIRS plus any other directory an applet lives in; sorted, so every
    // parent comes before its children.
    let mut dirs: BTreeMap<String, (u32, u64)> = DIRS
        .iter()
        .map(|(p, m, o)| (p.to_string(), (*m, *o)))
        .collect();
    for applet in &applets {
        let mut parent = Path::new(applet.as_str()).parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            dirs.entry(p.to_string_lossy().into_owned())
                .or_insert((0o755, 0));
            parent = p.parent();
        }
    }
    for (path, (mode, owner)) in &dirs {
        let mut h = header(tar::EntryType::Directory, *mode, *owner, 0);
        tar.append_data(&mut h, format!("{path}/"), std::io::empty())?;
    }
    let mut h = header(tar::EntryType::Regular, 0o755, 0, binary.len() as u64);
    tar.append_data(&mut h, "bin/busybox", binary.as_slice())?;
    for (path, content) in [("etc/group", GROUP), ("etc/passwd", PASSWD)] {
        let mut h = header(tar::EntryType::Regular, 0o644, 0, content.len() as u64);
        tar.append_data(&mut h, path, content.as_bytes())?;
    }
    for applet in &applets {
        let mut h = header(tar::EntryType::Symlink, 0o777, 0, 0);
        tar.append_link(&mut h, applet, link_target(applet))?;
    }
    Ok(tar.into_inner()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn have_busybox() -> bool {
        let ok = fs::read(BUSYBOX)
            .map(|b| is_static_elf(&b))
            .unwrap_or(false);
        if !ok {
            eprintln!("skipped: {NOT_INSTALLED}");
        }
        ok
    }

    #[test]
    fn link_targets_are_relative_and_land_on_busybox() {
        assert_eq!(link_target("bin/sh"), "busybox");
        assert_eq!(link_target("sbin/reboot"), "../bin/busybox");
        assert_eq!(link_target("usr/bin/env"), "../../bin/busybox");
        assert_eq!(link_target("linuxrc"), "bin/busybox");
    }

    #[test]
    fn static_check() {
        assert!(!is_static_elf(b"#!/bin/sh\n"));
        if let Ok(ls) = fs::read("/usr/bin/ls") {
            assert!(!is_static_elf(&ls), "ls is dynamically linked");
        }
        if have_busybox() {
            assert!(is_static_elf(&fs::read(BUSYBOX).unwrap()));
        }
    }

    #[test]
    fn missing_busybox_is_one_clear_line() {
        let e = busybox_rootfs(Path::new("/nonexistent/busybox")).unwrap_err();
        assert_eq!(format!("{e:#}"), NOT_INSTALLED);
    }

    #[test]
    fn unknown_name_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let e = bootstrap(&Root::new(dir.path()), "alpine").unwrap_err();
        assert!(
            e.to_string().contains("no built-in image named \"alpine\""),
            "{e}"
        );
    }

    #[test]
    fn config_runs_sh_with_a_path() {
        let c = busybox_config();
        assert_eq!(c.cmd().as_deref(), Some(&["sh".to_string()][..]));
        assert_eq!(c.env().as_deref(), Some(&[PATH_ENV.to_string()][..]));
        assert!(c.entrypoint().is_none());
    }

    #[test]
    fn rootfs_tar_has_busybox_applets_and_users() {
        if !have_busybox() {
            return;
        }
        let bytes = busybox_rootfs(Path::new(BUSYBOX)).unwrap();
        assert_eq!(
            bytes,
            busybox_rootfs(Path::new(BUSYBOX)).unwrap(),
            "not reproducible"
        );

        let mut entries = BTreeMap::new();
        let mut archive = tar::Archive::new(bytes.as_slice());
        for e in archive.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e
                .path()
                .unwrap()
                .to_string_lossy()
                .trim_end_matches('/')
                .to_string();
            let h = e.header().clone();
            let link = e
                .link_name()
                .unwrap()
                .map(|l| l.to_string_lossy().into_owned());
            let mut body = String::new();
            if h.entry_type() == tar::EntryType::Regular && path.starts_with("etc/") {
                e.read_to_string(&mut body).unwrap();
            }
            assert!(
                entries.insert(path.clone(), (h, link, body)).is_none(),
                "{path} twice"
            );
        }

        let (h, _, _) = &entries["bin/busybox"];
        assert_eq!(h.entry_type(), tar::EntryType::Regular);
        assert_eq!(h.mode().unwrap(), 0o755);
        for (link, target) in [
            ("bin/sh", "busybox"),
            ("bin/true", "busybox"),
            ("usr/bin/env", "../../bin/busybox"),
            ("sbin/reboot", "../bin/busybox"),
        ] {
            let (h, l, _) = &entries[link];
            assert_eq!(h.entry_type(), tar::EntryType::Symlink, "{link}");
            assert_eq!(l.as_deref(), Some(target), "{link}");
        }
        // Every symlink resolves to bin/busybox.
        for (path, (h, l, _)) in &entries {
            if h.entry_type() == tar::EntryType::Symlink {
                let parent = Path::new("/").join(path).parent().unwrap().to_path_buf();
                let mut resolved = std::path::PathBuf::from("/");
                for c in parent.join(l.as_ref().unwrap()).components() {
                    match c {
                        std::path::Component::ParentDir => {
                            resolved.pop();
                        }
                        std::path::Component::Normal(n) => resolved.push(n),
                        _ => {}
                    }
                }
                assert_eq!(resolved, Path::new("/bin/busybox"), "{path}");
            }
        }
        for (dir, mode) in [
            ("tmp", 0o1777),
            ("root", 0o700),
            ("proc", 0o555),
            ("usr/sbin", 0o755),
        ] {
            let (h, _, _) = &entries[dir];
            assert_eq!(h.entry_type(), tar::EntryType::Directory, "{dir}");
            assert_eq!(h.mode().unwrap(), mode, "{dir}");
        }
        assert_eq!(entries["home/user"].0.uid().unwrap(), 1000);
        let passwd = &entries["etc/passwd"].2;
        assert!(passwd.starts_with("root:x:0:0:root:/root:/bin/sh\n"));
        assert!(passwd.contains("\nuser:x:1000:1000:user:/home/user:/bin/sh\n"));
        assert!(passwd.contains("\nnobody:x:65534:65534:"));
        let group = &entries["etc/group"].2;
        assert!(group.contains("\nnogroup:x:65534:\n") && group.contains("\nuser:x:1000:\n"));
        // Every entry has the same fixed mtime.
        let mtimes: std::collections::BTreeSet<u64> = entries
            .values()
            .map(|(h, _, _)| h.mtime().unwrap())
            .collect();
        assert_eq!(mtimes.len(), 1);
    }
}
