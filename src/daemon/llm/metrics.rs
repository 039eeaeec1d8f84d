//! The LLM client's counters for `/metrics`.

use crate::shared::metrics::{Counter, Gauge, Histogram};

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct LlmMetrics {
    /// Requests received.
    pub requests: Counter,
    /// Requests answered.
    pub successes: Counter,
    /// Requests failed after retries.
    pub failures: Counter,
    /// Retries.
    pub retries: Counter,
    /// 429 answers seen from the provider.
    pub throttled: Counter,
    /// Prompt tokens reported by the provider.
    pub input_tokens: Counter,
    /// Completion tokens reported by the provider.
    pub output_tokens: Counter,
    /// Time spent waiting for rate-limit capacity.
    pub rate_limit_wait: Histogram,
    /// Requests refused by the per-user limit.
    pub user_limited: Counter,
    /// Latency of whole requests (waits and retries included).
    pub latency: Histogram,
    /// Requests in flight.
    pub in_flight: Gauge,
}

/// Lowers a gauge when dropped: the in-flight count stays right on every exit path.
pub(super) struct GaugeGuard<'a>(pub(super) &'a Gauge);

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}
