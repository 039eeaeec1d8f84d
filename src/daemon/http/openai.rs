//! The OpenAI-compatible API: `POST /v1/chat/completions`, `GET /v1/models` and
//! `GET /v1/models/{model}`, so chat front-ends and the openai SDKs can use Memento as "a
//! model with a memory".
//!
//! - **One model, `memento`.** Any other `model` is a 404 `model_not_found`, as OpenAI
//!   answers for a model that does not exist.
//! - **The user** is the user token's own (OpenAI's `user` field is then ignored). With a
//!   service token, or in loopback mode without tokens, it is OpenAI's `user` field, which
//!   is then required and follows the `user_id` rules of the rest of the API. As everywhere,
//!   the caller is authenticated and the user validated and authorised before any actor is
//!   touched.
//! - **Stateless, as OpenAI clients expect:** the client's messages are the conversation.
//!   The turn runs in the user's conversation actor with `TurnContext::Given`: Memento's
//!   system prompt first, then the client's messages, then the same LLM rounds and memory
//!   tools (over MCP, the user bound by the daemon) as any turn. The stored history of the
//!   native API is neither read nor changed. The answer is the final assistant message with
//!   `usage` summed over the turn's LLM rounds.
//! - **Not supported, refused with a 400 naming the parameter:** client-side tools
//!   (`tools`, `functions`, a forced `tool_choice`; Memento runs its own tools server-side),
//!   `tool` messages and assistant `tool_calls`, non-text content parts, and any `n` but
//!   one. Sampling parameters (`temperature`, `max_tokens`, ...) are accepted and ignored:
//!   the daemon's `[llm]` settings apply.
//! - **`stream: true`** gives `chat.completion.chunk` events built from the turn's
//!   [`TurnEvent`]s: a role delta at once, the answer's text, a final chunk with
//!   `finish_reason: "stop"`, a usage chunk with `stream_options.include_usage`, then
//!   `data: [DONE]`. A failed turn sends `data: {"error": ...}` instead of the final chunks.
//! - **Errors** keep the status [`ApiError`] gives them (`error.rs` stays the only status
//!   mapping, `Retry-After` included) in OpenAI's body shape,
//!   `{"error": {"message", "type", "param", "code"}}`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::error::ApiError;
use super::{ApiState, stream};
use crate::daemon::conversation::{TurnError, TurnEvent, TurnOutcome};
use crate::daemon::llm::types::Usage;
use request::{Completion, admit};

/// The one model the API offers.
pub const MODEL_ID: &str = "memento";

/// Most messages one request may carry.
pub const MAX_MESSAGES: usize = 256;

/// All messages of a request together may carry this many times `server.max_message_chars`
/// characters (one message may carry `max_message_chars`, as on the native API).
pub const MAX_TOTAL_CHARS_FACTOR: usize = 4;

/// `created` of the `memento` model object (2025-01-01T00:00:00Z): a fixed date, so the
/// model list is the same on every daemon.
const MODEL_CREATED: u64 = 1_735_689_600;

/// `POST /v1/chat/completions`.
pub(super) async fn chat_completions(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (span, trace_id) = super::turns::post_span("/v1/chat/completions", &headers);
    let completion = match admit(&state, peer, &headers, body) {
        Ok(completion) => completion,
        Err(error) => {
            span.record("http.response.status_code", error.api.status.as_u16());
            return error.into_response();
        }
    };
    let deadline = Instant::now() + state.turn_deadline;
    let mut response = if completion.stream {
        span.record("http.response.status_code", 200);
        stream_completion(state, completion, deadline, trace_id.clone(), span).into_response()
    } else {
        match run_turn(state, completion, deadline, None, span.clone()).await {
            Ok(outcome) => {
                span.record("http.response.status_code", 200);
                axum::Json(completion_json(&outcome)).into_response()
            }
            Err(error) => {
                let error = OpenAiError::from_turn(error, &trace_id);
                span.record("http.response.status_code", error.api.status.as_u16());
                error.into_response()
            }
        }
    };
    if let Ok(value) = HeaderValue::from_str(&trace_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

/// `GET /v1/models`: the one model.
pub(super) async fn list_models(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    match state.auth.caller(peer, &headers) {
        Ok(_) => axum::Json(json!({ "object": "list", "data": [model_json()] })).into_response(),
        Err(error) => OpenAiError::from_api(error).into_response(),
    }
}

/// `GET /v1/models/{model}`: the model, or 404 `model_not_found`.
pub(super) async fn get_model(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(model): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(error) = state.auth.caller(peer, &headers) {
        return OpenAiError::from_api(error).into_response();
    }
    if model == MODEL_ID {
        axum::Json(model_json()).into_response()
    } else {
        model_not_found(&model).into_response()
    }
}

fn model_json() -> Value {
    json!({
        "id": MODEL_ID,
        "object": "model",
        "created": MODEL_CREATED,
        "owned_by": "memento",
    })
}

// === Responses ===

fn completion_id() -> String {
    format!("chatcmpl-{}", uuid::Uuid::new_v4().simple())
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

fn usage_json(usage: &Usage) -> Value {
    json!({
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    })
}

fn completion_json(outcome: &TurnOutcome) -> Value {
    json!({
        "id": completion_id(),
        "object": "chat.completion",
        "created": now_unix(),
        "model": MODEL_ID,
        "system_fingerprint": null,
        "choices": [{
            "index": 0,
            "message": { "role": "assistant", "content": outcome.reply, "refusal": null },
            "logprobs": null,
            "finish_reason": "stop",
        }],
        "usage": usage_json(&outcome.usage),
    })
}

/// Builds the chunks of one streamed completion: all share `id` and `created`.
#[derive(Debug, Clone)]
struct Chunks {
    id: String,
    created: u64,
    include_usage: bool,
}

impl Chunks {
    fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> Event {
        let mut chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": MODEL_ID,
            "system_fingerprint": null,
            "choices": [{
                "index": 0,
                "delta": delta,
                "logprobs": null,
                "finish_reason": finish_reason,
            }],
        });
        if self.include_usage {
            // OpenAI sends `"usage": null` on every chunk but the usage chunk.
            chunk["usage"] = Value::Null;
        }
        Event::default().data(chunk.to_string())
    }

    fn role(&self) -> Event {
        self.chunk(json!({ "role": "assistant", "content": "" }), None)
    }

    fn text(&self, text: &str) -> Event {
        self.chunk(json!({ "content": text }), None)
    }

    /// The final chunk, the usage chunk when asked for, and `[DONE]`.
    fn end(&self, usage: &Usage) -> Vec<Event> {
        let mut events = vec![self.chunk(json!({}), Some("stop"))];
        if self.include_usage {
            let chunk = json!({
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": MODEL_ID,
                "system_fingerprint": null,
                "choices": [],
                "usage": usage_json(usage),
            });
            events.push(Event::default().data(chunk.to_string()));
        }
        events.push(Event::default().data("[DONE]"));
        events
    }
}

fn stream_completion(
    state: ApiState,
    completion: Completion,
    deadline: Instant,
    trace_id: String,
    span: tracing::Span,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let chunks = Chunks {
        id: completion_id(),
        created: now_unix(),
        include_usage: completion.include_usage,
    };
    let text_chunks = chunks.clone();
    let end_chunks = chunks.clone();
    stream::sse_turn(
        move |events| run_turn(state, completion, deadline, Some(events), span),
        stream::Render {
            first: vec![chunks.role()],
            progress: move |event| match event {
                TurnEvent::Text(text) if !text.is_empty() => Some(text_chunks.text(&text)),
                _ => None,
            },
            end: move |result: Result<TurnOutcome, TurnError>| match result {
                Ok(outcome) => end_chunks.end(&outcome.usage),
                Err(error) => vec![error_event(&OpenAiError::from_turn(error, &trace_id))],
            },
            lost: || {
                vec![error_event(&OpenAiError::from_api(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "conversation_failed",
                    "the turn ended without an answer",
                )))]
            },
        },
    )
}

/// A failed streamed turn's last event: `data: {"error": ...}`.
fn error_event(error: &OpenAiError) -> Event {
    Event::default().data(error.body().to_string())
}

/// One turn on the client's messages (`TurnContext::Given`), inside `span`; `events` sees
/// its progress.
async fn run_turn(
    state: ApiState,
    completion: Completion,
    deadline: Instant,
    events: Option<mpsc::UnboundedSender<TurnEvent>>,
    span: tracing::Span,
) -> Result<TurnOutcome, TurnError> {
    let turn = state.supervisor.turn_given(
        &completion.user,
        completion.prior,
        completion.message,
        deadline,
        events,
    );
    tracing::Instrument::instrument(turn, span).await
}

// === Errors ===

/// An [`ApiError`] (its status, `Retry-After` and message) in OpenAI's body shape, with the
/// request parameter it is about.
#[derive(Debug, Clone)]
pub struct OpenAiError {
    /// Status, code, message and retry hint, as the native API would give them.
    pub api: ApiError,
    /// The request parameter at fault, when there is one.
    pub param: Option<&'static str>,
}

impl OpenAiError {
    /// Any API error, with no parameter.
    pub fn from_api(api: ApiError) -> OpenAiError {
        OpenAiError { api, param: None }
    }

    fn from_turn(error: TurnError, trace_id: &str) -> OpenAiError {
        let mut api = ApiError::from(error);
        api.message = format!("{} (trace_id {trace_id})", api.message);
        OpenAiError::from_api(api)
    }

    /// OpenAI's `type`: what its own API sends for the same status.
    pub fn kind(&self) -> &'static str {
        match self.api.status {
            StatusCode::TOO_MANY_REQUESTS => "requests",
            status if status.is_server_error() => "server_error",
            _ => "invalid_request_error",
        }
    }

    /// OpenAI's `code`: its own names where it has one, otherwise the native API's code.
    pub fn code(&self) -> &'static str {
        match self.api.status {
            StatusCode::UNAUTHORIZED => "invalid_api_key",
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_exceeded",
            _ => self.api.code,
        }
    }

    /// `{"error": {"message", "type", "param", "code"}}`.
    pub fn body(&self) -> Value {
        json!({
            "error": {
                "message": self.api.message,
                "type": self.kind(),
                "param": self.param,
                "code": self.code(),
            }
        })
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let mut response = (self.api.status, axum::Json(self.body())).into_response();
        if let Some(value) = self.api.retry_after_header() {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

fn invalid(param: &'static str, code: &'static str, message: impl Into<String>) -> OpenAiError {
    OpenAiError {
        api: ApiError::bad_request(code, message),
        param: Some(param),
    }
}

fn missing(param: &'static str, hint: &str) -> OpenAiError {
    invalid(
        param,
        "missing_required_parameter",
        format!("you must provide a {param} parameter: {hint}"),
    )
}

fn too_large(code: &'static str, message: String) -> OpenAiError {
    OpenAiError {
        api: ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, code, message),
        param: Some("messages"),
    }
}

fn model_not_found(model: &str) -> OpenAiError {
    let shown: String = model.chars().take(100).collect();
    OpenAiError {
        api: ApiError::new(
            StatusCode::NOT_FOUND,
            "model_not_found",
            format!("the model `{shown}` does not exist; the only model is `{MODEL_ID}`"),
        ),
        param: Some("model"),
    }
}

mod request;

#[cfg(test)]
mod tests;
