//! `ApiError`: the only place where failures become HTTP status codes (and `Retry-After`
//! hints) and the JSON error shape `{"error": {"code": "...", "message": "..."}}`. The
//! OpenAI-compatible API (`openai.rs`) renders the same errors in OpenAI's body shape.

use std::time::Duration;

use crate::daemon::conversation::TurnError;
use crate::daemon::mcp::McpError;
use crate::shared::api::ErrorBody;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// An API failure with its status, a stable machine-readable code and a message for people.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code, e.g. `invalid_user_id`.
    pub code: &'static str,
    /// What happened and what to do.
    pub message: String,
    /// When the caller may try again (sent as `Retry-After`, whole seconds rounded up).
    pub retry_after: Option<Duration>,
}

impl ApiError {
    /// A new error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The same error with a `Retry-After` hint.
    pub fn with_retry_after(mut self, retry_after: Duration) -> ApiError {
        self.retry_after = Some(retry_after);
        self
    }

    /// The `Retry-After` header value: whole seconds, rounded up, at least 1.
    pub fn retry_after_header(&self) -> Option<HeaderValue> {
        self.retry_after.map(|wait| {
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            HeaderValue::from(seconds.max(1))
        })
    }

    /// 400.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// A body axum could not read: over its limit (413 `body_too_large`, with `too_large`
    /// saying what the limit is), or else unreadable (400 `invalid_body`).
    pub fn from_body_rejection(
        rejection: BytesRejection,
        too_large: impl FnOnce() -> String,
    ) -> ApiError {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", too_large())
        } else {
            ApiError::bad_request("invalid_body", rejection.body_text())
        }
    }

    /// The JSON body, `{"error": {"code", "message"}}`.
    pub fn body(&self) -> ErrorBody {
        ErrorBody::new(self.code, self.message.clone())
    }
}

/// What an overloaded daemon tells callers to wait: turns are short, so a second is enough
/// for most of the ones in progress to finish.
const OVERLOADED_RETRY_AFTER: Duration = Duration::from_secs(1);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(value) = self.retry_after_header() {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

impl From<TurnError> for ApiError {
    fn from(error: TurnError) -> Self {
        let message = error.to_string();
        match error {
            TurnError::DeadlineExceeded => {
                ApiError::new(StatusCode::GATEWAY_TIMEOUT, "deadline_exceeded", message)
            }
            TurnError::Llm(llm) if llm.is_user_rate_limited() => {
                let error = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message);
                match llm.user_retry_after() {
                    Some(wait) => error.with_retry_after(wait),
                    None => error,
                }
            }
            TurnError::Llm(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "llm_unavailable", message)
            }
            TurnError::Overloaded => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", message)
                    .with_retry_after(OVERLOADED_RETRY_AFTER)
            }
            TurnError::QueueFull { .. } => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_queued_turns",
                message,
            )
            .with_retry_after(Duration::from_secs(2)),
            TurnError::ShuttingDown => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", message)
            }
            TurnError::Cancelled => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "cancelled", message)
            }
            TurnError::ActorFailed => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "conversation_failed",
                message,
            ),
            TurnError::Busy(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "conversation_busy",
                message,
            )
            .with_retry_after(OVERLOADED_RETRY_AFTER),
            TurnError::History(_) => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "history_unavailable",
                message,
            ),
        }
    }
}

impl ApiError {
    /// A memory tool's error result (`isError: true`), by the `error.code` of its structured
    /// content: `not_found` is a 404, `invalid_argument` a 400, anything else (a storage
    /// failure, a server that sends no code) a 502.
    pub fn from_tool_error(tool: &str, code: Option<&str>, message: &str) -> ApiError {
        match code {
            Some("not_found") => ApiError::new(StatusCode::NOT_FOUND, "not_found", message),
            Some("invalid_argument") => ApiError::bad_request("invalid_argument", message),
            _ => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "memory_tool_failed",
                format!("{tool} failed: {message}"),
            ),
        }
    }
}

/// A memory call the daemon makes itself (the memory endpoints), not one inside a turn.
impl From<McpError> for ApiError {
    fn from(error: McpError) -> Self {
        let message = error.to_string();
        match error {
            McpError::Rejected(_) => {
                ApiError::new(StatusCode::BAD_GATEWAY, "memory_rejected", message)
            }
            McpError::Timeout(_) => {
                ApiError::new(StatusCode::GATEWAY_TIMEOUT, "memory_timeout", message)
            }
            McpError::Unavailable(_) | McpError::UnknownTool(_) | McpError::Closed => {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "memory_unavailable",
                    message,
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::history::HistoryError;

    #[test]
    fn a_conversation_held_by_another_daemon_is_a_503_to_retry_not_a_500() {
        for error in [
            HistoryError::LeaseBusy,
            HistoryError::Stale,
            HistoryError::Fenced,
        ] {
            let response = ApiError::from(TurnError::from(error)).into_response();
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert!(response.headers().contains_key(header::RETRY_AFTER));
        }
        let broken = ApiError::from(TurnError::from(HistoryError::Closed)).into_response();
        assert_eq!(broken.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
