//! `-u USER[:GROUP]` resolved against the sandbox's own /etc/passwd and
//! /etc/group, as Docker does (names or numbers; a number need not exist).

use std::fs;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups from /etc/group.
    pub groups: Vec<u32>,
    pub home: String,
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

fn passwd(text: &str) -> impl Iterator<Item = PasswdEntry> + '_ {
    text.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 7 {
            return None;
        }
        Some(PasswdEntry {
            name: f[0].to_string(),
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            home: f[5].to_string(),
        })
    })
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

fn groups(text: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    text.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 4 {
            return None;
        }
        Some(GroupEntry {
            name: f[0],
            gid: f[2].parse().ok()?,
            members: f[3].split(',').filter(|m| !m.is_empty()).collect(),
        })
    })
}

/// Resolve `spec` (`""`, `name`, `uid`, `name:group`, `uid:gid`) using the
/// given passwd and group file contents.
pub fn resolve_with(spec: &str, passwd_text: &str, group_text: &str) -> Result<User, String> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user = if user.is_empty() { "0" } else { user };
    let entry =
        passwd(passwd_text).find(|e| e.name == user || (user.parse::<u32>().ok() == Some(e.uid)));
    let (uid, mut gid, home, name) = match (&entry, user.parse::<u32>()) {
        (Some(e), _) => (e.uid, e.gid, e.home.clone(), Some(e.name.clone())),
        // A bare uid with no passwd entry runs with gid 0, as Docker does.
        (None, Ok(uid)) => (uid, 0, "/".to_string(), None),
        (None, Err(_)) => {
            return Err(format!(
                "unable to find user {user}: no matching entries in passwd file"
            ))
        }
    };
    if let Some(g) = group {
        gid = match groups(group_text).find(|e| e.name == g) {
            Some(e) => e.gid,
            None => g.parse().map_err(|_| {
                format!("unable to find group {g}: no matching entries in group file")
            })?,
        };
    }
    let mut supplementary: Vec<u32> = match (&name, group) {
        (Some(n), None) => groups(group_text)
            .filter(|e| e.members.iter().any(|m| m == n))
            .map(|e| e.gid)
            .collect(),
        _ => Vec::new(),
    };
    if !supplementary.contains(&gid) {
        supplementary.insert(0, gid);
    }
    Ok(User {
        uid,
        gid,
        groups: supplementary,
        home: if home.is_empty() { "/".into() } else { home },
    })
}

/// Resolve against the files of the current root (called after pivot_root).
pub fn resolve(spec: &str) -> Result<User, String> {
    let passwd_text = fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group_text = fs::read_to_string("/etc/group").unwrap_or_default();
    resolve_with(spec, &passwd_text, &group_text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\nuser:x:1000:1000::/home/user:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nusers:x:100:user\nuser:x:1000:\nnogroup:x:65534:\n";

    #[test]
    fn resolves_names_and_numbers() {
        let u = resolve_with("user", PASSWD, GROUP).unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (1000, 1000, "/home/user"));
        assert_eq!(u.groups, vec![1000, 100]);
        let u = resolve_with("nobody:users", PASSWD, GROUP).unwrap();
        assert_eq!((u.uid, u.gid), (65534, 100));
        let u = resolve_with("4242:4343", PASSWD, GROUP).unwrap();
        assert_eq!((u.uid, u.gid), (4242, 4343));
        let u = resolve_with("", PASSWD, GROUP).unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (0, 0, "/root"));
    }

    #[test]
    fn unknown_names_fail() {
        assert!(resolve_with("ghost", PASSWD, GROUP).is_err());
        assert!(resolve_with("user:ghosts", PASSWD, GROUP).is_err());
    }
}
