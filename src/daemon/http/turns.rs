//! The conversation endpoints: `POST /v1/users/{user_id}/messages` (a turn, answered whole
//! or streamed, see `stream.rs`), `GET` and `DELETE /v1/users/{user_id}/history`.

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::error::ApiError;
use super::stream::stream_turn;
use super::{Admitted, ApiState};
use crate::daemon::conversation::{ToolCallRecord, TurnError, TurnEvent, TurnOutcome};
use crate::daemon::llm::types::ChatMessage;
use crate::shared::api::{Deleted, History, MessageRequest, MessageResponse};
use crate::shared::domain::UserId;

/// `POST /v1/users/{user_id}/messages`: one turn, as JSON or (with `Accept:
/// text/event-stream`) as SSE events.
pub(super) async fn post_message(
    State(state): State<ApiState>,
    Admitted(user): Admitted,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let message = match parse_message(&state, body) {
        Ok(message) => message,
        Err(error) => return error.into_response(),
    };
    let (span, trace_id) = post_span("/v1/users/{user_id}/messages", &headers);
    let deadline = Instant::now() + state.turn_deadline;
    if wants_stream(&headers) {
        span.record("http.response.status_code", 200);
        return stream_turn(state, user, message, deadline, trace_id, span).into_response();
    }
    match run_turn(state, user, message, deadline, None, span.clone()).await {
        Ok(outcome) => {
            span.record("http.response.status_code", 200);
            axum::Json(outcome_json(&outcome, &trace_id)).into_response()
        }
        Err(error) => {
            let mut body = ApiError::from(error);
            span.record("http.response.status_code", body.status.as_u16());
            body.message = format!("{} (trace_id {trace_id})", body.message);
            body.into_response()
        }
    }
}

/// One turn of `user` in their conversation actor, inside `span`; `events` sees its
/// progress.
pub(super) async fn run_turn(
    state: ApiState,
    user: UserId,
    message: String,
    deadline: Instant,
    events: Option<mpsc::UnboundedSender<TurnEvent>>,
    span: tracing::Span,
) -> Result<TurnOutcome, TurnError> {
    let turn = state.supervisor.turn(&user, message, deadline, events);
    tracing::Instrument::instrument(turn, span).await
}

/// The request body's message: UTF-8 JSON `{"message": "..."}`, trimmed, not empty, within
/// `server.max_message_chars`.
fn parse_message(
    state: &ApiState,
    body: Result<Bytes, BytesRejection>,
) -> Result<String, ApiError> {
    let body = body.map_err(|rejection| {
        ApiError::from_body_rejection(rejection, || too_large(state.config.max_body_bytes))
    })?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::bad_request("invalid_utf8", "request body is not valid UTF-8"))?;
    let parsed: MessageRequest = serde_json::from_str(text).map_err(|e| {
        ApiError::bad_request(
            "invalid_json",
            format!("expected a JSON object like {{\"message\": \"...\"}}: {e}"),
        )
    })?;
    let message = parsed.message.trim().to_owned();
    if message.is_empty() {
        return Err(ApiError::bad_request("empty_message", "message is empty"));
    }
    let chars = message.chars().count();
    if chars > state.config.max_message_chars {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "message_too_long",
            format!(
                "message has {chars} characters; the maximum is {}",
                state.config.max_message_chars
            ),
        ));
    }
    Ok(message)
}

/// The 413's message for a body over `server.max_body_bytes`.
pub(super) fn too_large(max_body_bytes: usize) -> String {
    format!("request body is larger than {max_body_bytes} bytes")
}

/// The client asked for the turn as SSE events.
fn wants_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|accept| accept.contains("text/event-stream"))
}

/// The server span of a `POST` to `route`, continuing the caller's trace (W3C headers), and
/// the trace id the answer reports.
pub(super) fn post_span(route: &'static str, headers: &HeaderMap) -> (tracing::Span, String) {
    let span = tracing::info_span!(
        "http",
        otel.name = %format!("POST {route}"),
        otel.kind = "server",
        http.request.method = "POST",
        http.route = route,
        http.response.status_code = tracing::field::Empty,
    );
    crate::shared::telemetry::extract_from_headers(&span, headers);
    let trace_id = crate::shared::telemetry::trace_id(&span).unwrap_or_else(new_trace_id);
    (span, trace_id)
}

/// A fresh W3C-format trace id for this request, returned to the caller and logged.
fn new_trace_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// A turn's answer, as the API gives it.
pub(super) fn outcome_json(outcome: &TurnOutcome, trace_id: &str) -> MessageResponse {
    MessageResponse {
        reply: outcome.reply.clone(),
        tool_calls: outcome.tool_calls.iter().map(api_tool_call).collect(),
        trace_id: trace_id.to_owned(),
        timings: crate::shared::api::Timings {
            turn_ms: outcome.timings.turn_ms,
            llm_ms: outcome.timings.llm_ms,
            tools_ms: outcome.timings.tools_ms,
        },
    }
}

/// A finished tool call as the API shows it.
pub(super) fn api_tool_call(call: &ToolCallRecord) -> crate::shared::api::ToolCall {
    crate::shared::api::ToolCall {
        name: call.name.clone(),
        arguments: call.arguments.clone(),
        result: call.result.clone(),
        is_error: call.is_error,
    }
}

/// `GET /v1/users/{user_id}/history`: the conversation so far, oldest first.
pub(super) async fn get_history(
    State(state): State<ApiState>,
    Admitted(user): Admitted,
) -> Result<axum::Json<History<ChatMessage>>, ApiError> {
    let messages = state.supervisor.history(&user).await?;
    Ok(axum::Json(History {
        user_id: user.to_string(),
        messages,
    }))
}

/// `DELETE /v1/users/{user_id}/history`: forgets the conversation (not the memories).
pub(super) async fn delete_history(
    State(state): State<ApiState>,
    Admitted(user): Admitted,
) -> Result<axum::Json<Deleted>, ApiError> {
    state.supervisor.reset(&user).await?;
    Ok(axum::Json(Deleted { deleted: true }))
}

#[cfg(test)]
mod tests;
