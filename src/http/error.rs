//! `ApiError`: the only place where failures become HTTP status codes and the JSON error
//! shape `{"error": {"code": "...", "message": "..."}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::conversation::TurnError;
use crate::mcp::McpError;

/// An API failure with its status, a stable machine-readable code and a message for people.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code, e.g. `invalid_user_id`.
    pub code: &'static str,
    /// What happened and what to do.
    pub message: String,
    /// Seconds for a `Retry-After` header (429 and 503 answers).
    pub retry_after: Option<u32>,
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

    /// 400.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        json!({ "error": { "code": self.code, "message": self.message } })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(seconds),
            );
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
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
            }
            TurnError::Llm(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "llm_unavailable", message)
            }
            TurnError::Overloaded => ApiError {
                retry_after: Some(1),
                ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", message)
            },
            TurnError::QueueFull { .. } => ApiError {
                retry_after: Some(2),
                ..ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_queued_turns",
                    message,
                )
            },
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
