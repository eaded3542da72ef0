//! Docker's `--change` instructions for `sbx import`: `CMD`, `ENTRYPOINT`
//! (JSON array or shell form), `ENV`, `WORKDIR`, `USER`, `VOLUME`, `EXPOSE`.

use super::error::StoreError;
use super::RuntimeConfig;

/// Apply one `--change` line to `config`.
pub fn apply(config: &mut RuntimeConfig, change: &str) -> Result<(), StoreError> {
    let bad = |why: &str| StoreError::BadChange(change.to_string(), why.to_string());
    let line = change.trim();
    let (instruction, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let rest = rest.trim();
    match instruction.to_ascii_uppercase().as_str() {
        "CMD" => {
            config.set_cmd(Some(
                command(rest).ok_or_else(|| bad("CMD needs a command"))?,
            ));
        }
        "ENTRYPOINT" => {
            config.set_entrypoint(Some(
                command(rest).ok_or_else(|| bad("ENTRYPOINT needs a command"))?,
            ));
        }
        "ENV" => {
            let pairs = env_pairs(rest).map_err(|why| bad(&why))?;
            let mut env = config.env().clone().unwrap_or_default();
            for (key, value) in pairs {
                let prefix = format!("{key}=");
                env.retain(|e| !e.starts_with(&prefix));
                env.push(format!("{key}={value}"));
            }
            config.set_env(Some(env));
        }
        "WORKDIR" if !rest.is_empty() => {
            config.set_working_dir(Some(rest.to_string()));
        }
        "USER" if !rest.is_empty() => {
            config.set_user(Some(rest.to_string()));
        }
        "WORKDIR" | "USER" => return Err(bad("needs a value")),
        "VOLUME" => {
            let paths = volume_paths(rest).ok_or_else(|| bad("VOLUME needs a path"))?;
            let mut volumes = config.volumes().clone().unwrap_or_default();
            for p in paths {
                if !volumes.contains(&p) {
                    volumes.push(p);
                }
            }
            config.set_volumes(Some(volumes));
        }
        "EXPOSE" => {
            let ports = exposed_ports(rest).map_err(|why| bad(&why))?;
            let mut exposed = config.exposed_ports().clone().unwrap_or_default();
            for p in ports {
                if !exposed.contains(&p) {
                    exposed.push(p);
                }
            }
            config.set_exposed_ports(Some(exposed));
        }
        _ => {
            return Err(bad(
                "supported instructions are CMD, ENTRYPOINT, ENV, WORKDIR, USER, VOLUME and EXPOSE",
            ))
        }
    }
    Ok(())
}

/// A JSON array (exec form) or anything else (shell form, run by `/bin/sh -c`).
fn command(rest: &str) -> Option<Vec<String>> {
    if rest.is_empty() {
        return None;
    }
    if rest.starts_with('[') {
        if let Ok(argv) = serde_json::from_str::<Vec<String>>(rest) {
            return Some(argv);
        }
    }
    Some(vec!["/bin/sh".into(), "-c".into(), rest.into()])
}

/// `EXPOSE 80 53/udp`, as the image config keys them (`80/tcp`).
fn exposed_ports(rest: &str) -> Result<Vec<String>, String> {
    let words: Vec<&str> = rest.split_whitespace().collect();
    if words.is_empty() {
        return Err("EXPOSE needs a port".into());
    }
    words
        .iter()
        .map(|w| {
            let (port, proto) = w.split_once('/').unwrap_or((w, "tcp"));
            let proto = proto.to_ascii_lowercase();
            match (port.parse::<u16>(), proto.as_str()) {
                (Ok(p), "tcp" | "udp") if p > 0 => Ok(format!("{p}/{proto}")),
                _ => Err(format!("{w:?} is not PORT[/tcp|udp]")),
            }
        })
        .collect()
}

/// `VOLUME ["/a", "/b"]` or `VOLUME /a /b`.
fn volume_paths(rest: &str) -> Option<Vec<String>> {
    let paths: Vec<String> = if rest.starts_with('[') {
        serde_json::from_str(rest).ok()?
    } else {
        rest.split_whitespace().map(str::to_string).collect()
    };
    (!paths.is_empty() && paths.iter().all(|p| !p.is_empty())).then_some(paths)
}

/// `K=V [K2=V2 …]` (values may be quoted) or the legacy `K V…`.
fn env_pairs(rest: &str) -> Result<Vec<(String, String)>, String> {
    let words = shell_words(rest)?;
    let first = words.first().ok_or("ENV needs a variable")?;
    let pairs = if first.contains('=') {
        words
            .iter()
            .map(|w| match w.split_once('=') {
                Some((k, v)) => Ok((k.to_string(), v.to_string())),
                None => Err(format!("{w:?} is not KEY=VALUE")),
            })
            .collect::<Result<Vec<_>, _>>()?
    } else {
        let value = rest.trim_start()[first.len()..].trim().to_string();
        vec![(first.clone(), value)]
    };
    for (key, _) in &pairs {
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(format!("invalid variable name {key:?}"));
        }
    }
    Ok(pairs)
}

/// Split on blanks, honouring '…', "…" and backslash escapes.
fn shell_words(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' | '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some(q) if q == c => break,
                        Some('\\') if c == '"' => cur.extend(chars.next()),
                        Some(x) => cur.push(x),
                        None => return Err("unterminated quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                cur.extend(chars.next());
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes() {
        let mut c = RuntimeConfig::default();
        apply(&mut c, r#"CMD ["/bin/echo", "hi"]"#).unwrap();
        assert_eq!(
            c.cmd().as_deref(),
            Some(&["/bin/echo".to_string(), "hi".to_string()][..])
        );
        apply(&mut c, "ENTRYPOINT echo $HOME").unwrap();
        assert_eq!(
            c.entrypoint().clone().unwrap(),
            vec!["/bin/sh", "-c", "echo $HOME"]
        );
        apply(&mut c, "ENV A=1 B=\"two words\"").unwrap();
        apply(&mut c, "ENV A 3").unwrap();
        assert_eq!(c.env().clone().unwrap(), vec!["B=two words", "A=3"]);
        apply(&mut c, "WORKDIR /srv").unwrap();
        apply(&mut c, "user nobody").unwrap();
        assert_eq!(c.working_dir().as_deref(), Some("/srv"));
        assert_eq!(c.user().as_deref(), Some("nobody"));
        apply(&mut c, r#"VOLUME ["/data"]"#).unwrap();
        apply(&mut c, "VOLUME /cache /data").unwrap();
        assert_eq!(c.volumes().clone().unwrap(), vec!["/data", "/cache"]);
        assert!(apply(&mut c, "VOLUME").is_err());
        apply(&mut c, "EXPOSE 80 53/udp").unwrap();
        assert_eq!(c.exposed_ports().clone().unwrap(), vec!["80/tcp", "53/udp"]);
        assert!(apply(&mut c, "EXPOSE http").is_err());
        assert!(apply(&mut c, "HEALTHCHECK NONE").is_err());
        assert!(apply(&mut c, "CMD").is_err());
        assert!(apply(&mut c, "ENV A=\"x").is_err());
    }
}
