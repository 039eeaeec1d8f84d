//! Browser and proxy rules, shared by the daemon's API and the memory MCP server.
//!
//! A local server is reachable from every web page its user opens: a page can post a form to
//! `http://localhost:8080`, and by DNS rebinding (a name of the attacker's that resolves to
//! 127.0.0.1) it can even read the answers. [`OriginPolicy`] refuses what a browser or a proxy
//! would bring:
//!
//! - `Host` must be loopback or listed (DNS rebinding: a rebound name is not listed);
//! - a browser `Origin` must be loopback or listed; `null` (sandboxed frames, `file:`) is
//!   refused;
//! - `POST`/`PUT`/`PATCH` bodies must be JSON (`application/json`, `application/*+json`,
//!   `application/x-ndjson`): no HTML form and no CORS-"simple" request can send them;
//! - in no-token mode, requests that carry `Forwarded`, `X-Forwarded-For` or `X-Real-IP` are
//!   refused: behind a reverse proxy on the same host every client looks like loopback, so
//!   loopback stops meaning "this machine's user";
//! - CORS headers go only to a listed origin (exact origin, never `*`), with preflight.

// The refusals here are axum `Response`s, built once per refused request (never on the
// served path), so their size in `Result` costs nothing worth boxing.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::reject;

/// Host names always accepted.
pub const LOOPBACK_HOSTS: &[&str] = &["localhost", "127.0.0.1", "::1"];

/// Headers a reverse proxy adds; refused in no-token mode.
pub const PROXY_HEADERS: &[&str] = &["forwarded", "x-forwarded-for", "x-real-ip"];

/// Methods offered to a listed origin's preflight.
const CORS_METHODS: &str = "GET, POST, DELETE, OPTIONS";
/// Request headers offered to a listed origin's preflight.
const CORS_HEADERS: &str =
    "authorization, content-type, accept, mcp-session-id, mcp-protocol-version, last-event-id";
/// Response headers a listed origin's scripts may read.
const CORS_EXPOSE: &str = "retry-after, mcp-session-id";

/// The rules of one server, prepared once from its config.
#[derive(Debug, Clone)]
pub struct OriginPolicy {
    /// Accepted host names; `None` accepts any (`"*"` in the config).
    allowed_hosts: Option<Vec<String>>,
    /// Listed origins, normalised (lowercase, no trailing slash).
    allowed_origins: Vec<String>,
    /// `"*"` in `allowed_origins`: any origin passes the check (no CORS headers are sent).
    any_origin: bool,
    /// No-token mode: refuse proxied requests.
    refuse_proxied: bool,
    /// The config section to name in messages (`server`, `mcp_server`).
    section: &'static str,
}

/// What the policy decided for an accepted request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Serve it; add exact-origin CORS headers for this listed origin, if any.
    Serve {
        /// The listed origin to echo in `Access-Control-Allow-Origin`.
        cors_origin: Option<String>,
    },
    /// A CORS preflight from a listed origin: answer it (204) without routing.
    Preflight {
        /// The listed origin.
        origin: String,
    },
}

impl OriginPolicy {
    /// The rules for a server whose config section is `section`.
    pub fn new(
        section: &'static str,
        allowed_hosts: &[String],
        allowed_origins: &[String],
        no_token_mode: bool,
    ) -> OriginPolicy {
        OriginPolicy {
            allowed_hosts: host_list(allowed_hosts),
            allowed_origins: allowed_origins
                .iter()
                .filter(|o| o.as_str() != "*")
                .map(|o| normalise_origin(o))
                .collect(),
            any_origin: allowed_origins.iter().any(|o| o == "*"),
            refuse_proxied: no_token_mode,
            section,
        }
    }

    /// The host names accepted (loopback plus the listed ones), or `None` for any.
    pub fn allowed_hosts(&self) -> Option<&[String]> {
        self.allowed_hosts.as_deref()
    }

    /// Checks one request's method and headers; `Err` is the response to send instead.
    pub fn check(&self, method: &Method, headers: &HeaderMap) -> Result<Verdict, Response> {
        if self.refuse_proxied
            && let Some(name) = PROXY_HEADERS.iter().find(|h| headers.contains_key(**h))
        {
            return Err(reject(
                StatusCode::FORBIDDEN,
                "proxied_without_tokens",
                &format!(
                    "this request came through a proxy ({name} header), but no tokens are \
                     configured: behind a proxy every client looks local. Configure tokens \
                     (see README, \"Behind a reverse proxy\") to serve proxied clients"
                ),
            ));
        }
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
                        "Host {host:?} is not allowed; add it to {}.allowed_hosts to serve it",
                        self.section
                    ),
                ));
            }
        }
        let mut cors_origin = None;
        if let Some(origin) = headers.get(header::ORIGIN) {
            let origin = origin.to_str().map(normalise_origin).unwrap_or_default();
            let listed = self.allowed_origins.contains(&origin);
            if !(listed || self.any_origin || is_loopback_origin(&origin)) {
                return Err(reject(
                    StatusCode::FORBIDDEN,
                    "forbidden_origin",
                    &format!(
                        "Origin {origin:?} is not allowed; add it to {}.allowed_origins",
                        self.section
                    ),
                ));
            }
            if listed {
                if method == Method::OPTIONS
                    && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
                {
                    return Ok(Verdict::Preflight { origin });
                }
                cors_origin = Some(origin);
            }
        }
        Ok(Verdict::Serve { cors_origin })
    }

    /// Checks that a request with a body sends JSON (run after authentication, so a caller
    /// without a token learns only that it needs one).
    pub fn check_body(&self, method: &Method, headers: &HeaderMap) -> Result<(), Response> {
        if matches!(*method, Method::POST | Method::PUT | Method::PATCH)
            && !is_json_content_type(headers)
        {
            return Err(reject(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "request bodies must be JSON: send Content-Type: application/json",
            ));
        }
        Ok(())
    }
}

/// The axum middleware of [`OriginPolicy`] alone.
pub async fn enforce(
    State(policy): State<Arc<OriginPolicy>>,
    request: Request,
    next: Next,
) -> Response {
    enforce_with(&policy, request, next, |_| Ok(())).await
}

/// The policy, then `authenticate` (which sees the request before its body is read; a
/// preflight never reaches it, since browsers send no credentials on preflights), then the
/// route, adding exact-origin CORS headers for a listed origin.
pub async fn enforce_with(
    policy: &OriginPolicy,
    request: Request,
    next: Next,
    authenticate: impl FnOnce(&Request) -> Result<(), Response>,
) -> Response {
    match policy.check(request.method(), request.headers()) {
        Err(response) => response,
        Ok(Verdict::Preflight { origin }) => {
            let mut response = StatusCode::NO_CONTENT.into_response();
            let headers = response.headers_mut();
            add_cors(headers, &origin);
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static(CORS_METHODS),
            );
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static(CORS_HEADERS),
            );
            headers.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("600"),
            );
            response
        }
        Ok(Verdict::Serve { cors_origin }) => {
            let admitted = authenticate(&request)
                .and_then(|()| policy.check_body(request.method(), request.headers()));
            let mut response = match admitted {
                Ok(()) => next.run(request).await,
                Err(response) => response,
            };
            if let Some(origin) = cors_origin {
                add_cors(response.headers_mut(), &origin);
                response.headers_mut().insert(
                    header::ACCESS_CONTROL_EXPOSE_HEADERS,
                    HeaderValue::from_static(CORS_EXPOSE),
                );
            }
            response
        }
    }
}

fn add_cors(headers: &mut HeaderMap, origin: &str) {
    if let Ok(value) = HeaderValue::from_str(origin) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
}

/// `application/json`, `application/*+json`, `application/x-ndjson`, `application/jsonl`,
/// with any parameters.
pub fn is_json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence == "application/x-ndjson"
        || essence == "application/jsonl"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Loopback plus the listed host names, or `None` when `"*"` accepts any.
fn host_list(listed: &[String]) -> Option<Vec<String>> {
    if listed.iter().any(|h| h == "*") {
        return None;
    }
    let mut hosts: Vec<String> = LOOPBACK_HOSTS.iter().map(|h| h.to_string()).collect();
    hosts.extend(listed.iter().map(|h| host_name(h)));
    Some(hosts)
}

/// `"[::1]:8000"` -> `"::1"`, `"localhost:8000"` -> `"localhost"`.
pub fn host_name(authority: &str) -> String {
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

fn normalise_origin(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
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

#[cfg(test)]
mod tests;
