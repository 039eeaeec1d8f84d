//! Rate limits of the LLM client, behind the [`Limits`] trait.
//!
//! - [`Limits::acquire`] waits for the shared budgets (requests and tokens per minute) before
//!   every attempt, retries included: the provider counts each request against the quota.
//! - [`Limits::check_user`] admits or refuses one user's request (per-user requests per
//!   minute); a user over their limit is told when to come back rather than queued.
//! - [`Limits::charge`] charges tokens the provider used beyond the estimate.
//!
//! [`GovernorLimits`] keeps the budgets in this process (governor's GCRA). Another
//! implementation (one shared by several daemons) goes beside it, chosen in [`from_config`];
//! the caller (`llm/actor.rs`) only sees the trait.
//!
//! The in-flight cap is not here: it bounds this process's own connections, whatever the
//! quotas are shared with.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use governor::clock::Clock;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::time::Instant;

use super::LlmConfig;
use super::LlmError;
use super::types::ChatRequest;

/// The request budgets every LLM call passes through.
pub trait Limits: Send + Sync + 'static {
    /// Waits until one more request of about `tokens` tokens fits the shared budgets, never
    /// past `deadline` ([`LlmError::DeadlineExceeded`] then).
    fn acquire(&self, tokens: u32, deadline: Instant) -> BoxFuture<'_, Result<(), LlmError>>;

    /// Admits one request of `user` (their keyed pseudonym), or says how long until their
    /// limit admits one again.
    fn check_user(&self, user: &str) -> Result<(), Duration>;

    /// Charges `tokens` the provider used beyond the estimate (best effort: an
    /// over-estimate is not refunded).
    fn charge(&self, tokens: u32);
}

/// The limits `config` asks for.
pub fn from_config(config: &LlmConfig) -> Arc<dyn Limits> {
    Arc::new(GovernorLimits::new(config))
}

/// Tokens a request may use, estimated before sending: prompt text at four characters a
/// token (close enough for quota pacing; the provider's `usage` corrects it) plus
/// `max_tokens`, as Azure itself estimates on arrival.
pub fn estimate_tokens(request: &ChatRequest) -> u32 {
    let chars = request.prompt_text_len();
    u32::try_from(chars / 4)
        .unwrap_or(u32::MAX)
        .saturating_add(request.max_tokens.unwrap_or(0))
}

// === impl GovernorLimits ===

/// Budgets kept in this process with governor. A limit set to 0 is off.
pub struct GovernorLimits {
    rpm: Option<DefaultDirectRateLimiter>,
    /// The token limiter and its burst: no single request can take more than the burst.
    tpm: Option<(DefaultDirectRateLimiter, u32)>,
    per_user: Option<DefaultKeyedRateLimiter<String>>,
}

impl GovernorLimits {
    /// The limits of `config` (`rpm`, `tpm`, `per_user_rpm`).
    pub fn new(config: &LlmConfig) -> GovernorLimits {
        // The token bucket must hold the largest request; a bigger one is clamped to it.
        let largest_request = config.max_tokens.saturating_add(32_000);
        GovernorLimits {
            rpm: quota(config.rpm, 1).map(RateLimiter::direct),
            tpm: quota(config.tpm, largest_request.min(config.tpm.max(1)))
                .map(|q| (RateLimiter::direct(q), q.burst_size().get())),
            per_user: quota(config.per_user_rpm, 1).map(RateLimiter::keyed),
        }
    }
}

/// `per_minute` with a burst of one second's worth, at least `min_burst`. Azure checks
/// quotas over short windows (1 or 10 seconds), so a large burst would trip its limit even
/// while the per-minute rate is respected.
fn quota(per_minute: u32, min_burst: u32) -> Option<Quota> {
    let rate = NonZeroU32::new(per_minute)?;
    let burst = NonZeroU32::new((per_minute / 60).max(min_burst).max(1))?;
    Some(Quota::per_minute(rate).allow_burst(burst))
}

impl Limits for GovernorLimits {
    fn acquire(&self, tokens: u32, deadline: Instant) -> BoxFuture<'_, Result<(), LlmError>> {
        Box::pin(async move {
            if let Some(limiter) = &self.rpm {
                tokio::time::timeout_at(deadline, limiter.until_ready())
                    .await
                    .map_err(|_| LlmError::DeadlineExceeded)?;
            }
            if let Some((limiter, burst)) = &self.tpm {
                let tokens = tokens.min(*burst).max(1);
                if let Some(n) = NonZeroU32::new(tokens) {
                    tokio::time::timeout_at(deadline, limiter.until_n_ready(n))
                        .await
                        .map_err(|_| LlmError::DeadlineExceeded)?
                        .map_err(|_| {
                            LlmError::Config("token quota smaller than one request".into())
                        })?;
                }
            }
            Ok(())
        })
    }

    fn check_user(&self, user: &str) -> Result<(), Duration> {
        match &self.per_user {
            Some(limiter) => limiter
                .check_key(&user.to_owned())
                .map_err(|not_until| not_until.wait_time_from(limiter.clock().now())),
            None => Ok(()),
        }
    }

    fn charge(&self, tokens: u32) {
        if let Some((limiter, burst)) = &self.tpm
            && let Some(n) = NonZeroU32::new(tokens.min(*burst))
        {
            let _ = limiter.check_n(n);
        }
    }
}
