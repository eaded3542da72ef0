//! The Bearer token flow against a tiny HTTP server on 127.0.0.1 that plays
//! both the registry and its token endpoint, as Docker Hub splits them:
//! 401 + `WWW-Authenticate: Bearer realm=…,service=…,scope=…` → token
//! request with basic credentials, service, account and scopes → the
//! request again with `Authorization: Bearer`.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use sbx_registry::client::Client;
use sbx_registry::endpoint::Endpoint;
use sbx_registry::{Credentials, RegistryError};

/// (path, Authorization) of each request served.
type Seen = Arc<Mutex<Vec<(String, String)>>>;

/// Serve `n` requests; each request's first line and Authorization header
/// are recorded.
fn serve(n: usize) -> (u16, Seen, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let handle = std::thread::spawn(move || {
        for stream in listener.incoming().take(n) {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let mut auth = String::new();
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap() == 0 || h == "\r\n" {
                    break;
                }
                if let Some(v) = h
                    .strip_prefix("authorization: ")
                    .or(h.strip_prefix("Authorization: "))
                {
                    auth = v.trim().to_string();
                }
            }
            let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            log.lock().unwrap().push((path.clone(), auth.clone()));
            let (status, extra, body) = if path.starts_with("/token") {
                // alice:pw
                if auth == "Basic YWxpY2U6cHc=" {
                    (
                        "200 OK",
                        String::new(),
                        r#"{"token":"T0K3N","expires_in":300}"#,
                    )
                } else {
                    (
                        "401 Unauthorized",
                        String::new(),
                        r#"{"details":"incorrect username or password"}"#,
                    )
                }
            } else if auth == "Bearer T0K3N" {
                ("200 OK", String::new(), "{}")
            } else {
                (
                    "401 Unauthorized",
                    format!(
                        "WWW-Authenticate: Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"test-registry\",scope=\"repository:team/app:pull\"\r\n"
                    ),
                    r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
                )
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (port, seen, handle)
}

#[test]
fn bearer_token_flow_with_basic_credentials() {
    let (port, seen, server) = serve(3);
    let client = Client::new(
        Endpoint::new(&format!("127.0.0.1:{port}"), &[]),
        Some(Credentials {
            username: "alice".into(),
            password: "pw".into(),
        }),
        vec!["repository:team/app:pull,push".into()],
    );
    client.ping().unwrap();
    server.join().unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0], ("/v2/".to_string(), String::new()));
    assert_eq!(
        seen[1].0,
        "/token?service=test-registry&account=alice\
         &scope=repository%3Ateam%2Fapp%3Apull%2Cpush&scope=repository%3Ateam%2Fapp%3Apull"
    );
    assert_eq!(seen[1].1, "Basic YWxpY2U6cHc=");
    assert_eq!(seen[2], ("/v2/".to_string(), "Bearer T0K3N".to_string()));
}

#[test]
fn refused_credentials_are_a_clear_error() {
    let (port, _seen, server) = serve(2);
    let client = Client::new(
        Endpoint::new(&format!("127.0.0.1:{port}"), &[]),
        Some(Credentials {
            username: "alice".into(),
            password: "nope".into(),
        }),
        Vec::new(),
    );
    let err = client.ping().unwrap_err();
    server.join().unwrap();
    assert!(matches!(err, RegistryError::Unauthorized(_)), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("refused the credentials of \"alice\""),
        "{msg}"
    );
    assert!(!msg.contains("nope"), "{msg}");
}
