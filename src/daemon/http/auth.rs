//! Who may act for which user: bearer tokens, or loopback-only when none are configured.

use std::net::SocketAddr;

use axum::http::{HeaderMap, StatusCode};

use super::error::ApiError;
use crate::shared::config::AuthConfig;
use crate::shared::domain::UserId;
use crate::shared::edge::bearer::{self, TokenDigest};

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No tokens configured: a loopback client, trusted for any user.
    Local,
    /// A service token: may act for any user.
    Service,
    /// A user token: may act only for this user.
    User(UserId),
}

impl Caller {
    /// Checks that this caller may act for `user`.
    pub fn authorize(&self, user: &UserId) -> Result<(), ApiError> {
        match self {
            Caller::Local | Caller::Service => Ok(()),
            Caller::User(own) if own == user => Ok(()),
            Caller::User(_) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this token may only act for its own user",
            )),
        }
    }
}

/// Token tables, prepared once. Tokens are kept as digests and compared in constant time
/// (see [`crate::shared::edge::bearer`]); every configured token is compared, so the timing does not
/// tell which one was close.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    users: Vec<(TokenDigest, UserId)>,
    services: Vec<TokenDigest>,
}

impl Auth {
    /// Prepares the tables; invalid user ids and duplicate tokens were rejected by config
    /// validation.
    pub fn new(config: &AuthConfig) -> Auth {
        let users = config
            .user_tokens
            .iter()
            .filter_map(|(user, token)| {
                UserId::parse(user)
                    .ok()
                    .map(|u| (TokenDigest::of(token.trim()), u))
            })
            .collect();
        Auth {
            users,
            services: config
                .service_tokens
                .iter()
                .map(|t| TokenDigest::of(t.trim()))
                .collect(),
        }
    }

    /// True when no token is configured (loopback-only mode).
    pub fn is_open(&self) -> bool {
        self.users.is_empty() && self.services.is_empty()
    }

    /// Identifies the caller from its address and headers.
    pub fn caller(&self, peer: SocketAddr, headers: &HeaderMap) -> Result<Caller, ApiError> {
        if self.is_open() {
            return if peer.ip().is_loopback() {
                Ok(Caller::Local)
            } else {
                Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "loopback_only",
                    "no API tokens are configured, so only local clients are served",
                ))
            };
        }
        let presented = bearer::presented(headers)
            .map(TokenDigest::of)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "missing bearer token (Authorization: Bearer TOKEN)",
                )
            })?;
        let mut service = false;
        for candidate in &self.services {
            service |= candidate.matches(&presented);
        }
        let mut found = None;
        for (candidate, user) in &self.users {
            if candidate.matches(&presented) {
                found = Some(user);
            }
        }
        if service {
            return Ok(Caller::Service);
        }
        found.cloned().map(Caller::User).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "unknown bearer token",
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::header;

    fn auth() -> Auth {
        let mut config = AuthConfig::default();
        config
            .user_tokens
            .insert("alice".into(), "alice-token-0123456789".into());
        config
            .service_tokens
            .push("service-token-0123456789".into());
        Auth::new(&config)
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        headers
    }

    #[test]
    fn tokens_map_to_callers() {
        let auth = auth();
        let peer: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let alice = UserId::parse("alice").unwrap();
        let bob = UserId::parse("bob").unwrap();
        let caller = auth
            .caller(peer, &bearer("alice-token-0123456789"))
            .unwrap();
        assert!(caller.authorize(&alice).is_ok());
        assert_eq!(
            caller.authorize(&bob).unwrap_err().status,
            StatusCode::FORBIDDEN
        );
        let service = auth
            .caller(peer, &bearer("service-token-0123456789"))
            .unwrap();
        assert!(service.authorize(&bob).is_ok());
        for bad in [
            HeaderMap::new(),
            bearer("nope"),
            bearer("alice-token-01234567890"),
        ] {
            assert_eq!(
                auth.caller(peer, &bad).unwrap_err().status,
                StatusCode::UNAUTHORIZED
            );
        }
    }

    #[test]
    fn open_mode_is_loopback_only() {
        let auth = Auth::default();
        assert!(
            auth.caller("127.0.0.1:1".parse().unwrap(), &HeaderMap::new())
                .is_ok()
        );
        assert!(
            auth.caller("[::1]:1".parse().unwrap(), &HeaderMap::new())
                .is_ok()
        );
        let remote = auth.caller("192.168.1.2:1".parse().unwrap(), &HeaderMap::new());
        assert_eq!(remote.unwrap_err().status, StatusCode::FORBIDDEN);
    }
}
