//! The distribution token flow: `GET <realm>?service=<service>&scope=<scope>…`
//! with the user's credentials as basic auth (anonymous without them);
//! the answer is `{"token": …}` or `{"access_token": …}` (Docker Hub sends
//! both), then sent as `Authorization: Bearer <token>`.
//! <https://distribution.github.io/distribution/spec/auth/token/>

use ureq::http::StatusCode;

use crate::auth_file::Credentials;
use crate::client::error_message;
use crate::error::RegistryError;

/// Largest token answer read.
const TOKEN_LIMIT: u64 = 1 << 20;

#[derive(serde::Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
}

/// The realm URL with the service, the account and each scope as query
/// parameters.
pub fn token_url(
    realm: &str,
    service: Option<&str>,
    scopes: &[String],
    creds: Option<&Credentials>,
) -> String {
    let mut url = realm.to_string();
    let mut sep = if realm.contains('?') { '&' } else { '?' };
    let mut push = |k: &str, v: &str| {
        url.push(sep);
        url.push_str(k);
        url.push('=');
        url.push_str(&encode(v));
        sep = '&';
    };
    if let Some(s) = service {
        push("service", s);
    }
    if let Some(c) = creds {
        push("account", &c.username);
    }
    for s in scopes {
        push("scope", s);
    }
    url
}

/// Ask the token endpoint for a token.
pub fn fetch(
    agent: &ureq::Agent,
    registry: &str,
    realm: &str,
    service: Option<&str>,
    scopes: &[String],
    creds: Option<&Credentials>,
) -> Result<String, RegistryError> {
    if !(realm.starts_with("https://") || realm.starts_with("http://")) {
        return Err(RegistryError::Token {
            realm: realm.to_string(),
            reason: "the realm is not an http(s) URL".into(),
        });
    }
    let url = token_url(realm, service, scopes, creds);
    let mut req = agent.get(&url);
    if let Some(c) = creds {
        req = req.header("Authorization", &c.basic_header());
    }
    let mut resp = req.call().map_err(|e| RegistryError::Http {
        method: "GET".into(),
        url: realm.to_string(),
        source: Box::new(e),
    })?;
    match resp.status() {
        s if s.is_success() => {}
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            let why = error_message(resp);
            return Err(RegistryError::Unauthorized(match creds {
                Some(c) => format!(
                    "{registry} refused the credentials of {:?} ({why})",
                    c.username
                ),
                None => format!("{registry} requires authentication (sbx login {registry}): {why}"),
            }));
        }
        s => {
            return Err(RegistryError::Token {
                realm: realm.to_string(),
                reason: format!("{} {}", s.as_u16(), error_message(resp)),
            })
        }
    }
    let text = resp
        .body_mut()
        .with_config()
        .limit(TOKEN_LIMIT)
        .read_to_string()
        .map_err(|e| RegistryError::Token {
            realm: realm.to_string(),
            reason: format!("read the answer: {e}"),
        })?;
    let answer: TokenAnswer = serde_json::from_str(&text).map_err(|e| RegistryError::Token {
        realm: realm.to_string(),
        reason: format!("parse the answer: {e}"),
    })?;
    answer
        .token
        .or(answer.access_token)
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| RegistryError::Token {
            realm: realm.to_string(),
            reason: "the answer holds no usable token".into(),
        })
}

/// Percent-encode a query value (RFC 3986 unreserved characters kept).
fn encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_carries_service_account_and_scopes() {
        let creds = Credentials {
            username: "me@x".into(),
            password: "p".into(),
        };
        assert_eq!(
            token_url(
                "https://auth.docker.io/token",
                Some("registry.docker.io"),
                &[
                    "repository:library/busybox:pull".into(),
                    "repository:a/b:pull,push".into()
                ],
                Some(&creds)
            ),
            "https://auth.docker.io/token?service=registry.docker.io&account=me%40x\
             &scope=repository%3Alibrary%2Fbusybox%3Apull&scope=repository%3Aa%2Fb%3Apull%2Cpush"
        );
        assert_eq!(
            token_url("http://h/t?x=1", None, &[], None),
            "http://h/t?x=1"
        );
    }
}
