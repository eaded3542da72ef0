//! `WWW-Authenticate` challenges (RFC 7235), as registries send them:
//! `Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull"`
//! (the distribution token flow) or `Basic realm="basic-realm"` (htpasswd).

use std::collections::BTreeMap;

/// One challenge: a scheme and its parameters (names lowercased).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic {
        realm: Option<String>,
    },
    Bearer {
        realm: String,
        service: Option<String>,
        /// Space-separated scopes the registry says the request needs.
        scope: Option<String>,
    },
}

/// Every challenge in a header value we know how to answer, in order;
/// unknown schemes and a Bearer without a realm are skipped.
pub fn parse(header: &str) -> Vec<Challenge> {
    let mut out = Vec::new();
    for (scheme, params) in split(header) {
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => out.push(Challenge::Basic {
                realm: params.get("realm").cloned(),
            }),
            "bearer" => {
                if let Some(realm) = params.get("realm") {
                    out.push(Challenge::Bearer {
                        realm: realm.clone(),
                        service: params.get("service").cloned(),
                        scope: params.get("scope").cloned(),
                    });
                }
            }
            _ => {}
        }
    }
    out
}

/// Split into (scheme, params): a token not followed by `=` starts a new
/// challenge; `name=value` and `name="quoted \" value"` are its params.
fn split(header: &str) -> Vec<(String, BTreeMap<String, String>)> {
    let mut out: Vec<(String, BTreeMap<String, String>)> = Vec::new();
    let mut chars = header.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let token: String =
            std::iter::from_fn(|| chars.next_if(|c| !c.is_whitespace() && *c != ',' && *c != '='))
                .collect();
        if token.is_empty() {
            if chars.next().is_none() {
                return out;
            }
            continue;
        }
        while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
            chars.next();
        }
        if chars.peek() != Some(&'=') {
            out.push((token, BTreeMap::new()));
            continue;
        }
        chars.next();
        while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
            chars.next();
        }
        let value = if chars.peek() == Some(&'"') {
            chars.next();
            let mut v = String::new();
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => v.extend(chars.next()),
                    c => v.push(c),
                }
            }
            v
        } else {
            std::iter::from_fn(|| chars.next_if(|c| !c.is_whitespace() && *c != ',')).collect()
        };
        // A param before any scheme has nowhere to go; it is dropped.
        if let Some((_, params)) = out.last_mut() {
            params.insert(token.to_ascii_lowercase(), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_bearer() {
        let h = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#;
        assert_eq!(
            parse(h),
            vec![Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/busybox:pull".into()),
            }]
        );
    }

    #[test]
    fn bearer_without_scope_and_odd_spacing() {
        let h = r#"bearer  realm = "http://127.0.0.1:1/t" , service=reg"#;
        assert_eq!(
            parse(h),
            vec![Challenge::Bearer {
                realm: "http://127.0.0.1:1/t".into(),
                service: Some("reg".into()),
                scope: None,
            }]
        );
    }

    #[test]
    fn basic_and_several_challenges() {
        assert_eq!(
            parse(r#"Basic realm="basic-realm""#),
            vec![Challenge::Basic {
                realm: Some("basic-realm".into())
            }]
        );
        let h = r#"Negotiate, Basic realm="a \"quoted\" realm", Bearer realm="https://x/token",scope="repository:a/b:pull,push""#;
        assert_eq!(
            parse(h),
            vec![
                Challenge::Basic {
                    realm: Some(r#"a "quoted" realm"#.into())
                },
                Challenge::Bearer {
                    realm: "https://x/token".into(),
                    service: None,
                    scope: Some("repository:a/b:pull,push".into()),
                }
            ]
        );
    }

    #[test]
    fn garbage_is_no_challenge() {
        for h in [
            "",
            "   ",
            "=",
            "Bearer",
            "Bearer service=x",
            ",,,",
            "\"unterminated",
        ] {
            assert!(
                parse(h)
                    .iter()
                    .all(|c| matches!(c, Challenge::Basic { .. })),
                "{h:?}"
            );
        }
        assert_eq!(parse("Bearer"), vec![]);
    }
}
