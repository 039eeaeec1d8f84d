//! Memento's test support, one of each: the one fake Azure OpenAI / OpenAI server
//! ([`mock_azure`], also served by `memento-loadtest mock-azure`), a deadline-bounded poll ([`eventually`]), JSON over HTTP and a
//! small axum server ([`http`]), the `--ready-file` reader and child-process starter ([`process`]), the in-process test daemon
//! ([`daemon`]) and a private nginx running deploy/nginx/memento.conf ([`nginx`]) and the
//! URLs of the test PostgreSQL and Redis ([`services`]).
//!
//! A dev-only crate: memento's integration tests (tests/it) and memento-loadtest's harness
//! and tests use it; the memento library and binary never link it.

pub mod daemon;
pub mod http;
pub mod mock_azure;
pub mod nginx;
pub mod process;
pub mod services;

use std::future::Future;
use std::time::Duration;

/// Polls `check` every 20 ms until it returns true; panics naming `what` once `timeout` has
/// passed. Tests wait on conditions with it, never on fixed sleeps.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
