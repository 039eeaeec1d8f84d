//! Why an LLM call failed: [`LlmError`], its retryability (read by `retry.rs`) and its
//! OTel `error.type`.

use std::time::Duration;

use crate::shared::retry::Retryable;

/// Why a completion failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LlmError {
    /// The provider answered with an error status.
    #[error("LLM provider answered {status}{}: {message}", code.as_ref().map(|c| format!(" ({c})")).unwrap_or_default())]
    Http {
        /// HTTP status.
        status: u16,
        /// Provider error code (e.g. `DeploymentNotFound`, `content_filter`).
        code: Option<String>,
        /// Provider message.
        message: String,
        /// The server's `retry-after-ms` / `retry-after` hint.
        retry_after: Option<Duration>,
    },
    /// The provider could not be reached.
    #[error("cannot reach the LLM provider: {0}")]
    Connect(String),
    /// One attempt took longer than `request_timeout`.
    #[error("the LLM provider did not answer in time")]
    Timeout,
    /// The turn's deadline passed (while waiting for capacity or retrying).
    #[error("the turn deadline passed before the LLM answered")]
    DeadlineExceeded,
    /// This user sent more requests than `per_user_rpm` allows.
    #[error("you are sending messages too fast; slow down a little")]
    UserRateLimited {
        /// How long until the user's limit admits a request again.
        retry_after: Duration,
    },
    /// The provider's content filter refused.
    #[error("the LLM provider's content filter refused this request")]
    ContentFilter,
    /// The provider answered with a redirect. None is followed: the `api-key` (or bearer key)
    /// must never reach another host.
    #[error(
        "the LLM provider answered {status} redirecting to {location:?}; redirects are not \
         followed (the API key must never reach another host): configure the final URL"
    )]
    Redirect {
        /// HTTP status (301, 302, 303, 307, 308).
        status: u16,
        /// The `Location` it pointed to ("" when none).
        location: String,
    },
    /// The response could not be understood.
    #[error("unexpected LLM response: {0}")]
    InvalidResponse(String),
    /// The configuration is unusable.
    #[error("LLM configuration: {0}")]
    Config(String),
    /// The actor is gone (shutting down).
    #[error("the LLM client is shut down")]
    ActorGone,
}

impl LlmError {
    /// True when the failure is the user's own rate limit (HTTP 429 to the caller).
    pub fn is_user_rate_limited(&self) -> bool {
        matches!(self, LlmError::UserRateLimited { .. })
    }

    /// How long a user over their own limit should wait before trying again.
    pub fn user_retry_after(&self) -> Option<Duration> {
        match self {
            LlmError::UserRateLimited { retry_after } => Some(*retry_after),
            _ => None,
        }
    }

    /// The OTel `error.type` of the failure.
    pub(crate) fn otel_type(&self) -> &'static str {
        match self {
            LlmError::Http { .. } => "http_error",
            LlmError::Connect(_) => "connect_error",
            LlmError::Timeout => "timeout",
            LlmError::DeadlineExceeded => "deadline_exceeded",
            LlmError::UserRateLimited { .. } => "user_rate_limited",
            LlmError::ContentFilter => "content_filter",
            LlmError::InvalidResponse(_) => "invalid_response",
            LlmError::Redirect { .. } => "redirect",
            LlmError::Config(_) => "config",
            LlmError::ActorGone => "shutdown",
        }
    }
}

impl Retryable for LlmError {
    fn is_retryable(&self) -> bool {
        match self {
            LlmError::Http { status, .. } => matches!(status, 408 | 429 | 500 | 502 | 503 | 504),
            LlmError::Connect(_) | LlmError::Timeout => true,
            _ => false,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            LlmError::Http { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}
