//! The checks every MCP request passes before it reaches a transport: the shared browser and
//! proxy rules of [`crate::shared::edge::guard`] (`Host`, `Origin`, JSON bodies, proxy headers in
//! no-token mode, exact-origin CORS), then the bearer token. One middleware for both
//! transports, so they can never disagree; it runs before any body is read.

// The refusals here are axum `Response`s, built once per refused request (never on the
// served path), so their size in `Result` costs nothing worth boxing.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use crate::shared::config::McpServerConfig;
use crate::shared::edge::bearer::{self, TokenDigest};
use crate::shared::edge::guard::OriginPolicy;
use crate::shared::edge::reject;

/// What the middleware checks, prepared once from the config.
#[derive(Debug, Clone)]
pub struct Guard {
    token: Option<TokenDigest>,
    policy: OriginPolicy,
}

impl Guard {
    /// Prepares the checks of `config`.
    pub fn new(config: &McpServerConfig) -> Guard {
        Guard {
            token: config.token.as_deref().map(TokenDigest::of),
            policy: OriginPolicy::new(
                "mcp_server",
                &config.allowed_hosts,
                &config.allowed_origins,
                config.token.is_none(),
            ),
        }
    }

    /// The browser and proxy rules.
    pub fn policy(&self) -> &OriginPolicy {
        &self.policy
    }

    /// Checks the bearer token; `Err` is the 401 to send instead.
    pub fn check_token(&self, headers: &HeaderMap) -> Result<(), Response> {
        let Some(expected) = &self.token else {
            return Ok(());
        };
        let presented = bearer::presented(headers).map(TokenDigest::of);
        if presented.is_some_and(|p| p.matches(expected)) {
            return Ok(());
        }
        let mut response = reject(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong bearer token",
        );
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        Err(response)
    }
}

/// The axum middleware: browser and proxy rules, then the token, then the route.
pub async fn check(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    crate::shared::edge::guard::enforce_with(&guard.policy, request, next, |request| {
        guard.check_token(request.headers())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Method;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(name.clone(), value.parse().unwrap());
        }
        map
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
                .policy()
                .check(
                    &Method::GET,
                    &headers(&[
                        (header::HOST, "memento.internal:8000"),
                        (header::ORIGIN, "https://app.example.com/"),
                    ])
                )
                .is_ok()
        );
    }

    #[test]
    fn token_is_required_when_set() {
        let config = McpServerConfig {
            token: Some("s3cret-token-for-tests".into()),
            ..McpServerConfig::default()
        };
        let guard = Guard::new(&config);
        for presented in [
            "",
            "Bearer wrong",
            "s3cret-token-for-tests",
            "Bearer s3cret-token-for-tests2",
            "Basic s3cret-token-for-tests",
        ] {
            let mut case = vec![];
            if !presented.is_empty() {
                case.push((header::AUTHORIZATION, presented));
            }
            let response = guard.check_token(&headers(&case)).unwrap_err();
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{presented:?}");
        }
        assert!(
            guard
                .check_token(&headers(&[(
                    header::AUTHORIZATION,
                    "Bearer s3cret-token-for-tests"
                )]))
                .is_ok()
        );
    }
}
