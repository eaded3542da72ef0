//! One registry, one repository scope: HTTP requests with the
//! authentication handshake done on the first 401.
//!
//! A request goes out with whatever `Authorization` the client holds
//! (none at first). On 401 the `WWW-Authenticate` challenge says how to
//! authenticate: `Basic` sends the stored credentials; `Bearer` asks the
//! token endpoint named by its realm (with the credentials, if any, as
//! basic auth; anonymously otherwise) for a token covering the client's
//! scopes and the challenge's, and sends `Authorization: Bearer`. The
//! request is then sent once more; a second 401 is a refusal. Bodies are
//! in memory (a chunk at most), so any request can be sent again.

use std::sync::Mutex;
use std::time::Duration;

use ureq::http::{Response, StatusCode};
use ureq::Body;

use crate::auth_file::Credentials;
use crate::challenge::{self, Challenge};
use crate::endpoint::Endpoint;
use crate::error::RegistryError;
use crate::token;

/// Largest error or token body read.
const SMALL_BODY: u64 = 1 << 20;

pub struct Client {
    endpoint: Endpoint,
    agent: ureq::Agent,
    creds: Option<Credentials>,
    /// Token scopes: `repository:team/app:pull` or `…:pull,push`.
    scopes: Vec<String>,
    /// The `Authorization` header value that worked last.
    auth: Mutex<Option<String>>,
}

impl Client {
    pub fn new(endpoint: Endpoint, creds: Option<Credentials>, scopes: Vec<String>) -> Client {
        let proxy = if endpoint.is_loopback() {
            None
        } else {
            ureq::Proxy::try_from_env()
        };
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(proxy)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(120)))
            .user_agent(concat!("sbx/", env!("CARGO_PKG_VERSION")))
            .build();
        Client {
            endpoint,
            agent: ureq::Agent::new_with_config(config),
            creds,
            scopes,
            auth: Mutex::new(None),
        }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    pub fn registry(&self) -> &str {
        &self.endpoint.registry
    }

    /// Send a request, authenticating on a 401 and sending it once more.
    /// Any status other than 401 is returned for the caller to judge.
    pub fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> Result<Response<Body>, RegistryError> {
        let held = self.auth.lock().map(|a| a.clone()).unwrap_or_default();
        let resp = self.send_once(method, url, headers, body, held.as_deref())?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        let header = self.authorize(&resp)?;
        let resp = self.send_once(method, url, headers, body, Some(&header))?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            return Err(self.refused(resp));
        }
        if let Ok(mut a) = self.auth.lock() {
            *a = Some(header);
        }
        Ok(resp)
    }

    /// `GET /v2/`, authenticated: what `login` checks credentials with.
    pub fn ping(&self) -> Result<(), RegistryError> {
        let url = self.endpoint.url("");
        let resp = self.send("GET", &url, &[], &[])?;
        check(resp, "GET", &url).map(drop)
    }

    fn send_once(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, String)],
        body: &[u8],
        auth: Option<&str>,
    ) -> Result<Response<Body>, RegistryError> {
        let mut b = ureq::http::Request::builder().method(method).uri(url);
        for (k, v) in headers {
            b = b.header(*k, v.as_str());
        }
        if let Some(a) = auth {
            b = b.header("Authorization", a);
        }
        let bodiless = body.is_empty() && matches!(method, "GET" | "HEAD" | "DELETE");
        let result = if bodiless {
            b.body(()).map(|r| self.agent.run(r))
        } else {
            b.body(body).map(|r| self.agent.run(r))
        };
        let sent = result.map_err(|e| RegistryError::Protocol {
            registry: self.endpoint.registry.clone(),
            reason: format!("bad request {method} {url}: {e}"),
        })?;
        sent.map_err(|e| RegistryError::Http {
            method: method.to_string(),
            url: url.to_string(),
            source: Box::new(e),
        })
    }

    /// The `Authorization` value that answers a 401's challenge.
    fn authorize(&self, resp: &Response<Body>) -> Result<String, RegistryError> {
        let challenges: Vec<Challenge> = resp
            .headers()
            .get_all("www-authenticate")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(challenge::parse)
            .collect();
        let bearer = challenges.iter().find_map(|c| match c {
            Challenge::Bearer {
                realm,
                service,
                scope,
            } => Some((realm, service, scope)),
            Challenge::Basic { .. } => None,
        });
        if let Some((realm, service, scope)) = bearer {
            let mut scopes = self.scopes.clone();
            for s in scope.iter().flat_map(|s| s.split(' ')) {
                if !s.is_empty() && !scopes.iter().any(|x| x == s) {
                    scopes.push(s.to_string());
                }
            }
            let tok = token::fetch(
                &self.agent,
                &self.endpoint.registry,
                realm,
                service.as_deref(),
                &scopes,
                self.creds.as_ref(),
            )?;
            return Ok(format!("Bearer {tok}"));
        }
        if challenges
            .iter()
            .any(|c| matches!(c, Challenge::Basic { .. }))
        {
            return match &self.creds {
                Some(c) => Ok(c.basic_header()),
                None => Err(self.needs_login()),
            };
        }
        Err(RegistryError::Protocol {
            registry: self.endpoint.registry.clone(),
            reason: "401 without a Basic or Bearer challenge".into(),
        })
    }

    fn needs_login(&self) -> RegistryError {
        RegistryError::Unauthorized(format!(
            "{} requires authentication (sbx login {})",
            self.endpoint.registry, self.endpoint.registry
        ))
    }

    /// The error for a 401 after authenticating.
    fn refused(&self, resp: Response<Body>) -> RegistryError {
        match &self.creds {
            None => self.needs_login(),
            Some(c) => RegistryError::Unauthorized(format!(
                "{} refused the credentials of {:?} ({})",
                self.endpoint.registry,
                c.username,
                error_message(resp)
            )),
        }
    }
}

/// The registry's own message from an error body
/// (`{"errors":[{"code":…,"message":…}]}`), else the status' reason.
pub fn error_message(mut resp: Response<Body>) -> String {
    let status = resp.status();
    let text = resp
        .body_mut()
        .with_config()
        .limit(SMALL_BODY)
        .read_to_string()
        .unwrap_or_default();
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrorEntry>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorEntry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let parsed = serde_json::from_str::<Errors>(&text)
        .ok()
        .filter(|e| !e.errors.is_empty())
        .map(|e| {
            e.errors
                .iter()
                .map(|x| match (x.code.is_empty(), x.message.is_empty()) {
                    (false, false) => format!("{}: {}", x.code.to_lowercase(), x.message),
                    (true, false) => x.message.clone(),
                    _ => x.code.to_lowercase(),
                })
                .collect::<Vec<_>>()
                .join("; ")
        });
    parsed.unwrap_or_else(|| {
        let line = text.lines().next().unwrap_or("").trim();
        if line.is_empty() || line.len() > 200 {
            status.canonical_reason().unwrap_or("error").to_string()
        } else {
            line.to_string()
        }
    })
}

/// Pass a 2xx through; turn anything else into the error it means.
pub fn check(
    resp: Response<Body>,
    method: &str,
    url: &str,
) -> Result<Response<Body>, RegistryError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let message = error_message(resp);
    Err(match status {
        StatusCode::UNAUTHORIZED => RegistryError::Unauthorized(message),
        StatusCode::FORBIDDEN => RegistryError::Denied(message),
        _ => RegistryError::Status {
            method: method.to_string(),
            url: url.to_string(),
            status: status.as_u16(),
            message,
        },
    })
}
