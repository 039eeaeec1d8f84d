//! The one retry policy: exponential backoff with jitter (the `backoff` crate), server hints
//! (`retry-after-ms`, `retry-after`) honoured and clamped, bounded by attempts and by the
//! caller's deadline.
//!
//! `backoff` is flagged unmaintained by RustSec (RUSTSEC-2025-0012, and its dependency
//! `instant`, RUSTSEC-2024-0384). The design names it, so it is confined to this module:
//! nothing else imports it, and replacing it means changing this file only. Neither advisory
//! is a vulnerability; both say "unmaintained" (see `.ci/audit.toml`).

use std::future::Future;
use std::time::Duration;

use backoff::ExponentialBackoff;
use backoff::backoff::Backoff;
use tokio::time::Instant;

/// What the retry loop needs to know about an error.
pub trait Retryable {
    /// Worth another attempt (429, 408, 5xx, connection errors, timeouts).
    fn is_retryable(&self) -> bool;
    /// The server's hint for when to try again, if any.
    fn retry_after(&self) -> Option<Duration>;
}

/// Retry settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Most retries after the first attempt.
    pub max_retries: u32,
    /// First backoff delay.
    pub initial: Duration,
    /// Largest backoff delay.
    pub max_delay: Duration,
    /// Largest server hint honoured; longer hints are clamped to this.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 6,
            initial: Duration::from_millis(250),
            max_delay: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(30),
        }
    }
}

/// A retry that is about to happen, for metrics and span events.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryNotice {
    /// Attempt number that failed (1-based).
    pub attempt: u32,
    /// How long until the next attempt.
    pub delay: Duration,
    /// Whether the delay came from the server's hint.
    pub from_server: bool,
}

/// Runs `op` until it succeeds, fails permanently, runs out of retries, or the next wait
/// would end after `deadline`; then returns the last error. `notify` sees every retry.
pub async fn retry<T, E, F, Fut>(
    policy: &RetryPolicy,
    deadline: Instant,
    mut notify: impl FnMut(&E, RetryNotice),
    mut op: F,
) -> Result<T, E>
where
    E: Retryable,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut backoff = ExponentialBackoff {
        current_interval: policy.initial,
        initial_interval: policy.initial,
        randomization_factor: 0.5,
        multiplier: 2.0,
        max_interval: policy.max_delay,
        max_elapsed_time: None,
        ..ExponentialBackoff::default()
    };
    backoff.reset();
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let error = match op().await {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        if !error.is_retryable() || attempt > policy.max_retries {
            return Err(error);
        }
        let (delay, from_server) = match error.retry_after() {
            Some(hint) => (hint.min(policy.max_retry_after), true),
            None => match backoff.next_backoff() {
                Some(delay) => (delay, false),
                None => return Err(error),
            },
        };
        if Instant::now() + delay > deadline {
            return Err(error);
        }
        notify(
            &error,
            RetryNotice {
                attempt,
                delay,
                from_server,
            },
        );
        tokio::time::sleep(delay).await;
    }
}

/// An exponential delay with jitter for reconnect loops: `initial * 2^attempt`, capped at
/// `max`, then scaled by a random factor in `[0.5, 1.0]`.
pub fn exponential_delay(initial: Duration, max: Duration, attempt: u32) -> Duration {
    let ceiling = initial.saturating_mul(1u32 << attempt.min(16)).min(max);
    ceiling.mul_f64(rand::random::<f64>() * 0.5 + 0.5)
}

/// Parses the retry hints of an HTTP response: `retry-after-ms` (milliseconds), then
/// `retry-after` (seconds, or an HTTP date). Garbage is ignored.
pub fn parse_retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = text("retry-after-ms").and_then(|v| v.parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    let value = text("retry-after")?;
    if let Ok(seconds) = value.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds));
    }
    let date = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = date.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests;
