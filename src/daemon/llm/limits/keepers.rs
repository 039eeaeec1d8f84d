//! The LLM provider's rate limits: requests per minute (RPM), tokens per minute (TPM) and
//! each user's requests per minute, kept in this process or shared by every daemon through
//! Redis (`[limits] backend`).
//!
//! - [`Limiter`] is one way of keeping them: [`LocalLimiter`] (governor, in this process)
//!   and [`redis::RedisLimiter`] (one atomic Lua script per decision, so N daemons spend one
//!   quota between them).
//! - [`Limits`] is what the LLM client uses: the configured limiter, and with Redis a local
//!   limiter at `fallback_share` of the quota that takes over while Redis is unreachable
//!   (reported by [`Limits::mode`] in `/readyz` and by `memento_limits_fallback` in
//!   `/metrics`), until a probe finds Redis again.
//!
//! Both limiters pace like Azure counts: the burst is one second's worth of the per-minute
//! quota (Azure checks quotas over 1- and 10-second windows, so a minute's quota spent in
//! one burst would trip its limit while the per-minute rate is respected).

use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use governor::clock::Clock;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::shared::config::SecretUrl;
use crate::shared::metrics::{Counter, Gauge};

pub mod redis;

#[cfg(test)]
mod tests;

/// Where the limits live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LimitsBackend {
    /// In this process: each daemon spends the whole quota (one daemon).
    #[default]
    Local,
    /// In Redis (`redis_url`): every daemon spends from one quota.
    Redis,
}

/// `[limits]`: where the LLM quotas (`[llm] rpm`, `tpm`, `per_user_rpm`) are kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// `local` (this process) or `redis` (shared by every daemon through `redis_url`).
    pub backend: LimitsBackend,
    /// `redis://[:password@]host:port/db`, for `backend = "redis"` (empty: unset).
    pub redis_url: SecretUrl,
    /// Share of the quota one daemon spends alone while Redis is unreachable (0 < share
    /// <= 1); 1/N for N daemons keeps their sum within the quota.
    pub fallback_share: f64,
    /// Prefix of the Redis keys; daemons with the same prefix (and deployment) share a quota.
    pub key_prefix: String,
    /// Longest wait for one Redis decision before the local fallback takes over.
    #[serde(with = "humantime_serde")]
    pub redis_timeout: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            backend: LimitsBackend::Local,
            redis_url: SecretUrl::default(),
            fallback_share: 0.5,
            key_prefix: "memento:limits".to_owned(),
            redis_timeout: Duration::from_millis(500),
        }
    }
}

impl LimitsConfig {
    /// Checks the section on its own.
    pub fn validate(&self) -> Result<(), LimitError> {
        if !(self.fallback_share > 0.0 && self.fallback_share <= 1.0) {
            return Err(LimitError::Config(format!(
                "limits.fallback_share must be in (0, 1], not {}",
                self.fallback_share
            )));
        }
        if self.redis_timeout.is_zero() {
            return Err(LimitError::Config(
                "limits.redis_timeout must be positive".into(),
            ));
        }
        if self.key_prefix.is_empty() || self.key_prefix.len() > 200 {
            return Err(LimitError::Config(
                "limits.key_prefix must be 1 to 200 characters".into(),
            ));
        }
        match self.backend {
            LimitsBackend::Redis if self.redis_url.is_empty() => Err(LimitError::Config(
                "limits.backend = \"redis\" needs limits.redis_url (e.g. redis://127.0.0.1:6379/0)"
                    .into(),
            )),
            LimitsBackend::Redis => ::redis::Client::open(self.redis_url.expose())
                .map(|_| ())
                .map_err(|e| LimitError::Config(format!("limits.redis_url: {e}"))),
            LimitsBackend::Local => Ok(()),
        }
    }
}

/// The quotas, from `[llm]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    /// Requests per minute (0: unlimited).
    pub rpm: u32,
    /// Tokens per minute (0: unlimited).
    pub tpm: u32,
    /// Each user's requests per minute (0: unlimited).
    pub per_user_rpm: u32,
    /// The largest single request in tokens: the token bucket holds at least that much.
    pub largest_request: u32,
}

impl Quotas {
    /// The same quotas scaled by `share` (at least 1 of each that is limited).
    pub fn share(&self, share: f64) -> Quotas {
        let scale = |q: u32| {
            if q == 0 {
                0
            } else {
                ((f64::from(q) * share).floor() as u32).max(1)
            }
        };
        Quotas {
            rpm: scale(self.rpm),
            tpm: scale(self.tpm),
            per_user_rpm: scale(self.per_user_rpm),
            largest_request: self.largest_request,
        }
    }
}

/// Why a limiter did not admit a request.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LimitError {
    /// No capacity before the deadline.
    #[error("no rate-limit capacity before the deadline")]
    DeadlineExceeded,
    /// The user is over their own limit.
    #[error("the user's rate limit is exhausted (retry after {retry_after:?})")]
    UserLimited {
        /// When the user's limit admits a request again.
        retry_after: Duration,
    },
    /// The shared store (Redis) did not answer.
    #[error("the rate-limit store is unavailable: {0}")]
    Unavailable(String),
    /// Bad configuration.
    #[error("invalid limits configuration: {0}")]
    Config(String),
}

/// A boxed future, so that [`Limiter`] can be a trait object.
pub type LimitFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, LimitError>> + Send + 'a>>;

/// One way of keeping the limits.
pub trait Limiter: Send + Sync {
    /// Takes one request and `tokens` tokens, waiting for capacity until `deadline`
    /// (`DeadlineExceeded` as soon as the capacity cannot come in time).
    fn acquire(&self, tokens: u32, deadline: Instant) -> LimitFuture<'_, ()>;
    /// Takes one request from `user`'s own limit, without waiting (`UserLimited` when over).
    fn check_user<'a>(&'a self, user: &'a str) -> LimitFuture<'a, ()>;
    /// Charges `tokens` more than were acquired (the provider's usage exceeded the estimate).
    fn charge(&self, tokens: u32) -> LimitFuture<'_, ()>;
}

/// `per_minute` with a burst of one second's worth, at least `min_burst`.
pub fn quota(per_minute: u32, min_burst: u32) -> Option<Quota> {
    let rate = NonZeroU32::new(per_minute)?;
    let burst = NonZeroU32::new((per_minute / 60).max(min_burst).max(1))?;
    Some(Quota::per_minute(rate).allow_burst(burst))
}

/// The burst of the token bucket: one second's worth, at least the largest request, at
/// most the whole quota.
fn token_burst(quotas: &Quotas) -> u32 {
    quotas.largest_request.min(quotas.tpm.max(1))
}

// === Local (governor) ===

/// The limits in this process (governor's GCRA).
pub struct LocalLimiter {
    rpm: Option<DefaultDirectRateLimiter>,
    tpm: Option<(DefaultDirectRateLimiter, u32)>,
    per_user: Option<DefaultKeyedRateLimiter<String>>,
}

impl LocalLimiter {
    /// Limits for `quotas`.
    pub fn new(quotas: &Quotas) -> LocalLimiter {
        LocalLimiter {
            rpm: quota(quotas.rpm, 1).map(RateLimiter::direct),
            tpm: quota(quotas.tpm, token_burst(quotas))
                .map(|q| (RateLimiter::direct(q), q.burst_size().get())),
            per_user: quota(quotas.per_user_rpm, 1).map(RateLimiter::keyed),
        }
    }
}

impl Limiter for LocalLimiter {
    fn acquire(&self, tokens: u32, deadline: Instant) -> LimitFuture<'_, ()> {
        Box::pin(async move {
            if let Some(limiter) = &self.rpm {
                tokio::time::timeout_at(deadline, limiter.until_ready())
                    .await
                    .map_err(|_| LimitError::DeadlineExceeded)?;
            }
            if let Some((limiter, burst)) = &self.tpm
                && let Some(n) = NonZeroU32::new(tokens.min(*burst).max(1))
            {
                tokio::time::timeout_at(deadline, limiter.until_n_ready(n))
                    .await
                    .map_err(|_| LimitError::DeadlineExceeded)?
                    .map_err(|_| {
                        LimitError::Config("token quota smaller than one request".into())
                    })?;
            }
            Ok(())
        })
    }

    fn check_user<'a>(&'a self, user: &'a str) -> LimitFuture<'a, ()> {
        Box::pin(async move {
            if let Some(limiter) = &self.per_user
                && let Err(not_until) = limiter.check_key(&user.to_owned())
            {
                return Err(LimitError::UserLimited {
                    retry_after: not_until.wait_time_from(limiter.clock().now()),
                });
            }
            Ok(())
        })
    }

    fn charge(&self, tokens: u32) -> LimitFuture<'_, ()> {
        Box::pin(async move {
            // Best effort: governor cannot refund an over-estimate, and an over-use larger
            // than the bucket is clamped to it.
            if let Some((limiter, burst)) = &self.tpm
                && let Some(n) = NonZeroU32::new(tokens.min(*burst))
            {
                let _ = limiter.check_n(n);
            }
            Ok(())
        })
    }
}

// === The facade ===

/// Which limiter decides now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitsMode {
    /// This process's own limiter (`backend = "local"`).
    Local,
    /// The quota shared through Redis.
    Shared,
    /// Redis is unreachable: this daemon's local limiter at `fallback_share` of the quota.
    Fallback,
}

impl LimitsMode {
    /// `local`, `shared` or `fallback`.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitsMode::Local => "local",
            LimitsMode::Shared => "shared",
            LimitsMode::Fallback => "fallback",
        }
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct LimitsMetrics {
    /// 1 while the local fallback decides (Redis unreachable).
    pub fallback: Gauge,
    /// Times the fallback took over.
    pub fallbacks: Counter,
    /// Redis decisions that failed (errors and timeouts).
    pub redis_errors: Counter,
}

struct SharedState {
    redis: redis::RedisLimiter,
    fallback: LocalLimiter,
    degraded: AtomicBool,
    metrics: Arc<LimitsMetrics>,
}

impl SharedState {
    fn fall_back(&self, error: &LimitError) {
        self.metrics.redis_errors.inc();
        if !self.degraded.swap(true, Ordering::SeqCst) {
            self.metrics.fallbacks.inc();
            self.metrics.fallback.set(1);
            tracing::warn!(
                %error,
                "rate limits: Redis is unreachable; this daemon now uses its local share of the quota"
            );
        }
    }
}

enum Inner {
    Local(Box<LocalLimiter>),
    Shared(Arc<SharedState>),
}

/// The LLM client's limits: the configured limiter, with the local fallback for Redis.
pub struct Limits {
    inner: Inner,
    metrics: Arc<LimitsMetrics>,
}

/// How often a daemon in fallback asks Redis whether it is back.
const PROBE_INTERVAL: Duration = Duration::from_millis(500);

impl Limits {
    /// The limits of `quotas` as `config` says; `scope` names the quota in Redis (the
    /// provider and deployment), so different deployments keep different quotas. With
    /// Redis, needs a Tokio runtime (it starts the probe task) and connects lazily: a
    /// daemon starts even while Redis is down, on its fallback.
    pub fn new(config: &LimitsConfig, quotas: Quotas, scope: &str) -> Result<Limits, LimitError> {
        config.validate()?;
        let metrics = Arc::new(LimitsMetrics::default());
        let inner = match config.backend {
            LimitsBackend::Redis => {
                let redis = redis::RedisLimiter::new(
                    config.redis_url.expose(),
                    &format!("{}:{scope}", config.key_prefix),
                    &quotas,
                    config.redis_timeout,
                )?;
                let state = Arc::new(SharedState {
                    redis,
                    fallback: LocalLimiter::new(&quotas.share(config.fallback_share)),
                    degraded: AtomicBool::new(false),
                    metrics: metrics.clone(),
                });
                tokio::spawn(probe(Arc::downgrade(&state)));
                Inner::Shared(state)
            }
            LimitsBackend::Local => Inner::Local(Box::new(LocalLimiter::new(&quotas))),
        };
        Ok(Limits { inner, metrics })
    }

    /// Which limiter decides now.
    pub fn mode(&self) -> LimitsMode {
        match &self.inner {
            Inner::Local(_) => LimitsMode::Local,
            Inner::Shared(state) if state.degraded.load(Ordering::SeqCst) => LimitsMode::Fallback,
            Inner::Shared(_) => LimitsMode::Shared,
        }
    }

    /// The counters.
    pub fn metrics(&self) -> &LimitsMetrics {
        &self.metrics
    }

    /// See [`Limiter::acquire`].
    pub async fn acquire(&self, tokens: u32, deadline: Instant) -> Result<(), LimitError> {
        match &self.inner {
            Inner::Local(local) => local.acquire(tokens, deadline).await,
            Inner::Shared(state) => {
                if !state.degraded.load(Ordering::SeqCst) {
                    match state.redis.acquire(tokens, deadline).await {
                        Err(error @ LimitError::Unavailable(_)) => state.fall_back(&error),
                        other => return other,
                    }
                }
                state.fallback.acquire(tokens, deadline).await
            }
        }
    }

    /// See [`Limiter::check_user`].
    pub async fn check_user(&self, user: &str) -> Result<(), LimitError> {
        match &self.inner {
            Inner::Local(local) => local.check_user(user).await,
            Inner::Shared(state) => {
                if !state.degraded.load(Ordering::SeqCst) {
                    match state.redis.check_user(user).await {
                        Err(error @ LimitError::Unavailable(_)) => state.fall_back(&error),
                        other => return other,
                    }
                }
                state.fallback.check_user(user).await
            }
        }
    }

    /// See [`Limiter::charge`].
    pub async fn charge(&self, tokens: u32) {
        let result = match &self.inner {
            Inner::Local(local) => local.charge(tokens).await,
            Inner::Shared(state) => {
                if state.degraded.load(Ordering::SeqCst) {
                    state.fallback.charge(tokens).await
                } else {
                    let result = state.redis.charge(tokens).await;
                    if let Err(error @ LimitError::Unavailable(_)) = &result {
                        state.fall_back(error);
                    }
                    result
                }
            }
        };
        if let Err(error) = result {
            tracing::debug!(%error, "token charge not recorded");
        }
    }
}

/// While the limits are in fallback, pings Redis every [`PROBE_INTERVAL`]; when it answers,
/// the shared quota decides again. Ends when the limits are dropped.
async fn probe(state: Weak<SharedState>) {
    let mut tick = tokio::time::interval(PROBE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(state) = state.upgrade() else {
            return;
        };
        if !state.degraded.load(Ordering::SeqCst) {
            continue;
        }
        if state.redis.ping().await.is_ok() {
            state.degraded.store(false, Ordering::SeqCst);
            state.metrics.fallback.set(0);
            tracing::info!("rate limits: Redis answers again; the shared quota decides");
        }
    }
}
