//! Rate limits of the LLM client, behind the [`Limits`] trait.
//!
//! - [`Limits::acquire`] waits for the shared budgets (requests and tokens per minute) before
//!   every attempt, retries included: the provider counts each request against the quota.
//! - [`Limits::check_user`] admits or refuses one user's request (per-user requests per
//!   minute); a user over their limit is told when to come back rather than queued.
//! - [`Limits::charge`] charges tokens the provider used beyond the estimate.
//!
//! The implementation is [`crate::daemon::limits::Limits`] (`[limits]`): governor in this process,
//! or Redis shared by every daemon with a local fallback; [`from_config`] builds it, and the
//! caller (`llm/actor.rs`) only sees the trait.
//!
//! The in-flight cap is not here: it bounds this process's own connections, whatever the
//! quotas are shared with.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::time::Instant;

use super::LlmConfig;
use super::LlmError;
use super::types::ChatRequest;
use crate::daemon::limits::{LimitError, LimitsConfig, LimitsMetrics, LimitsMode, Quotas};

/// The request budgets every LLM call passes through.
pub trait Limits: Send + Sync + 'static {
    /// Waits until one more request of about `tokens` tokens fits the shared budgets, never
    /// past `deadline` ([`LlmError::DeadlineExceeded`] then).
    fn acquire(&self, tokens: u32, deadline: Instant) -> BoxFuture<'_, Result<(), LlmError>>;

    /// Admits one request of `user` (their keyed pseudonym), or says how long until their
    /// limit admits one again.
    fn check_user<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Result<(), Duration>>;

    /// Charges `tokens` the provider used beyond the estimate (best effort: an
    /// over-estimate is not refunded).
    fn charge(&self, tokens: u32) -> BoxFuture<'_, ()>;

    /// Which limiter decides now (`/readyz`).
    fn mode(&self) -> LimitsMode;

    /// Its counters (`/metrics`).
    fn metrics(&self) -> &LimitsMetrics;
}

/// The limits `config`'s quotas and `limits` ask for. Needs a Tokio runtime.
pub fn from_config(
    config: &LlmConfig,
    limits: &LimitsConfig,
    model: &str,
) -> Result<Arc<dyn Limits>, LlmError> {
    let quotas = Quotas {
        rpm: config.rpm,
        tpm: config.tpm,
        per_user_rpm: config.per_user_rpm,
        // The token bucket must hold the largest request; a bigger one is clamped to it.
        largest_request: config.max_tokens.saturating_add(32_000),
    };
    // One quota per provider deployment: daemons of another deployment keep their own.
    let scope = format!("{}:{model}", config.provider);
    let limits = crate::daemon::limits::Limits::new(limits, quotas, &scope)
        .map_err(|e| LlmError::Config(e.to_string()))?;
    Ok(Arc::new(limits))
}

/// Tokens a request may use, estimated before sending: prompt text at four bytes a token
/// (close enough for quota pacing; the provider's `usage` corrects it) plus `max_tokens`,
/// as Azure itself estimates on arrival ([`crate::shared::tokens`]; the daemon's own
/// requests use [`super::types::Prompt::estimated_tokens`], the same count).
pub fn estimate_tokens(request: &ChatRequest) -> u32 {
    request.estimated_tokens()
}

impl Limits for crate::daemon::limits::Limits {
    fn acquire(&self, tokens: u32, deadline: Instant) -> BoxFuture<'_, Result<(), LlmError>> {
        Box::pin(async move {
            crate::daemon::limits::Limits::acquire(self, tokens, deadline)
                .await
                .map_err(|error| match error {
                    LimitError::DeadlineExceeded => LlmError::DeadlineExceeded,
                    other => LlmError::Config(other.to_string()),
                })
        })
    }

    fn check_user<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Result<(), Duration>> {
        Box::pin(async move {
            match crate::daemon::limits::Limits::check_user(self, user).await {
                Err(LimitError::UserLimited { retry_after }) => Err(retry_after),
                // Only user limits refuse here; the fallback covers an unreachable Redis.
                _ => Ok(()),
            }
        })
    }

    fn charge(&self, tokens: u32) -> BoxFuture<'_, ()> {
        Box::pin(crate::daemon::limits::Limits::charge(self, tokens))
    }

    fn mode(&self) -> LimitsMode {
        crate::daemon::limits::Limits::mode(self)
    }

    fn metrics(&self) -> &LimitsMetrics {
        crate::daemon::limits::Limits::metrics(self)
    }
}
