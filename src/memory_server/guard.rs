//! The checks every MCP request passes before it reaches a transport: bearer token, `Host`
//! and `Origin` (DNS-rebinding protection, as the MCP spec asks of local servers). One
//! middleware for both transports, so they can never disagree.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::config::McpServerConfig;

/// Host names always accepted.
pub const LOOPBACK_HOSTS: &[&str] = &["localhost", "127.0.0.1", "::1"];

/// What the middleware checks, prepared once from the config.
#[derive(Debug, Clone)]
pub struct Guard {
    token: Option<String>,
    /// `None` accepts any host.
    allowed_hosts: Option<Vec<String>>,
    allowed_origins: Vec<String>,
    any_origin: bool,
}

impl Guard {
    /// Prepares the checks of `config`.
    pub fn new(config: &McpServerConfig) -> Guard {
        Guard {
            token: config.token.clone(),
            allowed_hosts: allowed_host_names(config),
            allowed_origins: config
                .allowed_origins
                .iter()
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect(),
            any_origin: config.allowed_origins.iter().any(|o| o == "*"),
        }
    }

    /// Checks one request's headers; `Err` is the response to send instead.
    pub fn check_headers(&self, headers: &HeaderMap) -> Result<(), Response> {
        if let Some(allowed) = &self.allowed_hosts {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(host_name)
                .unwrap_or_default();
            if !allowed.iter().any(|a| a.eq_ignore_ascii_case(&host)) {
                return Err(reject(
                    StatusCode::FORBIDDEN,
                    "forbidden_host",
                    &format!(
                        "Host {host:?} is not allowed; add it to mcp_server.allowed_hosts to serve it"
                    ),
                ));
            }
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let origin = origin
                .to_str()
                .unwrap_or("")
                .trim_end_matches('/')
                .to_ascii_lowercase();
            if !(self.any_origin
                || is_loopback_origin(&origin)
                || self.allowed_origins.contains(&origin))
            {
                return Err(reject(
                    StatusCode::FORBIDDEN,
                    "forbidden_origin",
                    &format!(
                        "Origin {origin:?} is not allowed; add it to mcp_server.allowed_origins"
                    ),
                ));
            }
        }
        if let Some(token) = &self.token {
            let presented = headers
                .get(header::AUTHORIZATION)
                .and_then(|h| h.to_str().ok())
                .and_then(|h| h.strip_prefix("Bearer "))
                .unwrap_or("");
            if !constant_time_eq(presented.as_bytes(), token.as_bytes()) {
                let mut response = reject(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "missing or wrong bearer token",
                );
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer"),
                );
                return Err(response);
            }
        }
        Ok(())
    }
}

/// The axum middleware.
pub async fn check(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    match guard.check_headers(request.headers()) {
        Ok(()) => next.run(request).await,
        Err(response) => response,
    }
}

/// The host names accepted, or `None` when `"*"` accepts any.
pub fn allowed_host_names(config: &McpServerConfig) -> Option<Vec<String>> {
    if config.allowed_hosts.iter().any(|h| h == "*") {
        return None;
    }
    let mut hosts: Vec<String> = LOOPBACK_HOSTS.iter().map(|h| h.to_string()).collect();
    hosts.extend(config.allowed_hosts.iter().map(|h| host_name(h)));
    Some(hosts)
}

/// `"[::1]:8000"` -> `"::1"`, `"localhost:8000"` -> `"localhost"`.
fn host_name(authority: &str) -> String {
    let authority = authority.trim();
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("").to_ascii_lowercase();
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !host.contains(':') => {
            host.to_ascii_lowercase()
        }
        _ => authority.to_ascii_lowercase(),
    }
}

fn is_loopback_origin(origin: &str) -> bool {
    let Some(rest) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    LOOPBACK_HOSTS.contains(&host_name(rest).as_str())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn reject(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({ "error": { "code": code, "message": message } })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(name.clone(), value.parse().unwrap());
        }
        map
    }

    #[test]
    fn host_and_origin_rules() {
        let guard = Guard::new(&McpServerConfig::default());
        let ok: &[&[(header::HeaderName, &str)]] = &[
            &[(header::HOST, "127.0.0.1:8000")],
            &[(header::HOST, "localhost")],
            &[(header::HOST, "[::1]:8000")],
            &[
                (header::HOST, "localhost:8000"),
                (header::ORIGIN, "http://localhost:6274"),
            ],
        ];
        for case in ok {
            assert!(guard.check_headers(&headers(case)).is_ok(), "{case:?}");
        }
        let bad: &[&[(header::HeaderName, &str)]] = &[
            &[],
            &[(header::HOST, "evil.example:8000")],
            &[(header::HOST, "127.0.0.1.evil.example")],
            &[
                (header::HOST, "localhost:8000"),
                (header::ORIGIN, "http://evil.example"),
            ],
            &[(header::HOST, "localhost:8000"), (header::ORIGIN, "null")],
        ];
        for case in bad {
            let response = guard.check_headers(&headers(case)).unwrap_err();
            assert_eq!(response.status(), StatusCode::FORBIDDEN, "{case:?}");
        }
    }

    #[test]
    fn configured_hosts_and_origins() {
        let config = McpServerConfig {
            allowed_hosts: vec!["memento.internal".into()],
            allowed_origins: vec!["https://app.example.com".into()],
            ..McpServerConfig::default()
        };
        let guard = Guard::new(&config);
        assert!(
            guard
                .check_headers(&headers(&[
                    (header::HOST, "memento.internal:8000"),
                    (header::ORIGIN, "https://app.example.com/"),
                ]))
                .is_ok()
        );
    }

    #[test]
    fn token_is_required_when_set() {
        let config = McpServerConfig {
            token: Some("s3cret-token".into()),
            ..McpServerConfig::default()
        };
        let guard = Guard::new(&config);
        let host = (header::HOST, "localhost");
        for presented in ["", "Bearer wrong", "s3cret-token", "Bearer s3cret-token2"] {
            let mut case = vec![host.clone()];
            if !presented.is_empty() {
                case.push((header::AUTHORIZATION, presented));
            }
            let response = guard.check_headers(&headers(&case)).unwrap_err();
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{presented:?}");
        }
        assert!(
            guard
                .check_headers(&headers(&[
                    host,
                    (header::AUTHORIZATION, "Bearer s3cret-token")
                ]))
                .is_ok()
        );
    }
}
