//! Azure's quota checks, as pure arithmetic over explicit instants (so tests need no
//! clock).
//!
//! - **Requests**: a deployment's RPM is enforced over 10-second windows, each allowing a
//!   sixth of the minute's requests (at least one). Azure documents checks over "1 or 10
//!   seconds"; the mock uses 10 s, so a 600-RPM deployment takes a burst of 100 and then
//!   nothing until the window turns. Windows are fixed (aligned to the mock's start), not
//!   sliding.
//! - **Tokens**: the TPM quota is a running count per minute of tokens estimated on
//!   arrival (prompt characters / 4 + `max_tokens`), reset each minute; a request that
//!   would pass the quota is refused whole.
//!
//! Only admitted requests count. A refusal says how long until the window that refused
//! it turns.

use std::time::{Duration, Instant};

use super::wire::Limit;

const REQUEST_WINDOW: Duration = Duration::from_secs(10);
const TOKEN_WINDOW: Duration = Duration::from_secs(60);

/// The quota state of one deployment.
#[derive(Debug)]
pub(crate) struct Quota {
    /// Requests allowed per 10-second window (`rpm / 6`, at least 1).
    requests_per_window: Option<u32>,
    /// Tokens allowed per minute.
    tokens_per_minute: Option<u64>,
    request_window: Window,
    token_window: Window,
}

/// A fixed window: when it started and what it admitted.
#[derive(Debug)]
struct Window {
    started: Instant,
    length: Duration,
    used: u64,
}

impl Window {
    /// Moves to the window containing `now` (whole steps, so windows never drift).
    fn roll(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.started);
        if elapsed >= self.length {
            let steps = elapsed.as_nanos() / self.length.as_nanos();
            let step = self.length.as_nanos().saturating_mul(steps);
            self.started += Duration::from_nanos(u64::try_from(step).unwrap_or(u64::MAX));
            self.used = 0;
        }
    }

    fn until_next(&self, now: Instant) -> Duration {
        (self.started + self.length).saturating_duration_since(now)
    }
}

/// The outcome of one arrival.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Served; what is left of each quota (`None`: no such quota).
    Admitted {
        remaining_requests: Option<u64>,
        remaining_tokens: Option<u64>,
        /// Requests admitted so far in this 10-second window, this one included.
        admitted_in_window: u64,
    },
    /// Refused with 429.
    Throttled {
        limit: Limit,
        retry_after: Duration,
        remaining_requests: Option<u64>,
        remaining_tokens: Option<u64>,
    },
}

impl Quota {
    /// Quotas from the deployment's RPM and TPM, with windows starting at `now`.
    pub(crate) fn new(rpm: Option<u32>, tpm: Option<u32>, now: Instant) -> Quota {
        Quota {
            requests_per_window: rpm.map(|rpm| (rpm / 6).max(1)),
            tokens_per_minute: tpm.map(u64::from),
            request_window: Window {
                started: now,
                length: REQUEST_WINDOW,
                used: 0,
            },
            token_window: Window {
                started: now,
                length: TOKEN_WINDOW,
                used: 0,
            },
        }
    }

    /// Checks and counts one arrival estimated at `tokens`.
    pub(crate) fn admit(&mut self, now: Instant, tokens: u64) -> Admission {
        self.request_window.roll(now);
        self.token_window.roll(now);
        let request_quota = self.requests_per_window.map(u64::from);
        let remaining_requests = |w: &Window| request_quota.map(|q| q.saturating_sub(w.used));
        let remaining_tokens =
            |w: &Window| self.tokens_per_minute.map(|q| q.saturating_sub(w.used));
        if let Some(quota) = request_quota
            && self.request_window.used >= quota
        {
            return Admission::Throttled {
                limit: Limit::Requests,
                retry_after: self.request_window.until_next(now),
                remaining_requests: Some(0),
                remaining_tokens: remaining_tokens(&self.token_window),
            };
        }
        if let Some(quota) = self.tokens_per_minute
            && self.token_window.used.saturating_add(tokens) > quota
        {
            return Admission::Throttled {
                limit: Limit::Tokens,
                retry_after: self.token_window.until_next(now),
                remaining_requests: remaining_requests(&self.request_window),
                remaining_tokens: remaining_tokens(&self.token_window),
            };
        }
        self.request_window.used += 1;
        self.token_window.used = self.token_window.used.saturating_add(tokens);
        Admission::Admitted {
            remaining_requests: remaining_requests(&self.request_window),
            remaining_tokens: remaining_tokens(&self.token_window),
            admitted_in_window: self.request_window.used,
        }
    }
}
