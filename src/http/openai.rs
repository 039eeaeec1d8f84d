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
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::auth::Caller;
use super::error::ApiError;
use super::{AbortOnDrop, ApiState};
use crate::config::ServerConfig;
use crate::conversation::{TurnError, TurnEvent, TurnOutcome};
use crate::domain::UserId;
use crate::llm::types::{ChatMessage, Usage};

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
    let span = tracing::info_span!(
        "http",
        otel.name = "POST /v1/chat/completions",
        otel.kind = "server",
        http.request.method = "POST",
        http.route = "/v1/chat/completions",
        http.response.status_code = tracing::field::Empty,
    );
    crate::telemetry::extract_from_headers(&span, &headers);
    let trace_id = crate::telemetry::trace_id(&span).unwrap_or_else(super::new_trace_id);
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
        let result = tracing::Instrument::instrument(
            state.supervisor.turn_given(
                &completion.user,
                completion.prior,
                completion.message,
                deadline,
                None,
            ),
            span.clone(),
        )
        .await;
        match result {
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

// === Requests ===

/// A checked request: whose turn, on which conversation, streamed or not.
#[derive(Debug)]
struct Completion {
    user: UserId,
    /// The client's messages before the last one.
    prior: Vec<ChatMessage>,
    /// The last message, the person's (trimmed).
    message: String,
    stream: bool,
    include_usage: bool,
}

/// The fields read from a request; every other field is accepted and ignored.
#[derive(Debug, Deserialize)]
struct CompletionBody {
    model: Option<String>,
    messages: Option<Vec<Value>>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    user: Option<String>,
    n: Option<u64>,
    tools: Option<Vec<Value>>,
    functions: Option<Vec<Value>>,
    tool_choice: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

/// Authenticates, reads and checks the request, and decides the user, in that order.
fn admit(
    state: &ApiState,
    peer: SocketAddr,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Completion, OpenAiError> {
    let caller = state
        .auth
        .caller(peer, headers)
        .map_err(OpenAiError::from_api)?;
    let body = read_body(&state.config, body)?;
    let model = body
        .model
        .as_deref()
        .ok_or_else(|| missing("model", "set \"model\": \"memento\""))?;
    if model != MODEL_ID {
        return Err(model_not_found(model));
    }
    let user = request_user(&caller, body.user.as_deref())?;
    refuse_client_tools(&body)?;
    if let Some(n) = body.n
        && n != 1
    {
        return Err(invalid(
            "n",
            "unsupported_value",
            format!("n is {n}; Memento gives one answer per request (n = 1)"),
        ));
    }
    let messages = body
        .messages
        .as_deref()
        .ok_or_else(|| missing("messages", "send the conversation as \"messages\""))?;
    let (prior, message) = conversation(&state.config, messages)?;
    Ok(Completion {
        user,
        prior,
        message,
        stream: body.stream.unwrap_or(false),
        include_usage: body
            .stream_options
            .and_then(|options| options.include_usage)
            .unwrap_or(false),
    })
}

fn read_body(
    config: &ServerConfig,
    body: Result<Bytes, BytesRejection>,
) -> Result<CompletionBody, OpenAiError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            OpenAiError::from_api(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!(
                    "request body is larger than {} bytes",
                    config.max_body_bytes
                ),
            ))
        } else {
            OpenAiError::from_api(ApiError::bad_request("invalid_body", rejection.body_text()))
        }
    })?;
    serde_json::from_slice(&body).map_err(|e| {
        OpenAiError::from_api(ApiError::bad_request(
            "invalid_json",
            format!(
                "expected a chat completion request as a JSON object, like {{\"model\": \
                 \"memento\", \"messages\": [{{\"role\": \"user\", \"content\": \"...\"}}]}}: {e}"
            ),
        ))
    })
}

/// The user a user token is for; otherwise OpenAI's `user` field, required.
fn request_user(caller: &Caller, field: Option<&str>) -> Result<UserId, OpenAiError> {
    match caller {
        Caller::User(own) => Ok(own.clone()),
        Caller::Service | Caller::Local => {
            let raw = field.ok_or_else(|| {
                missing(
                    "user",
                    "without a user token, \"user\" names whose memories to use",
                )
            })?;
            UserId::parse(raw).map_err(|e| invalid("user", "invalid_user_id", e.to_string()))
        }
    }
}

fn refuse_client_tools(body: &CompletionBody) -> Result<(), OpenAiError> {
    const WHY: &str = "Memento runs its own memory tools server-side and does not call tools \
                       of the client";
    for (param, tools) in [("tools", &body.tools), ("functions", &body.functions)] {
        if tools.as_ref().is_some_and(|tools| !tools.is_empty()) {
            return Err(invalid(
                param,
                "unsupported_parameter",
                format!("{param} is not supported: {WHY}"),
            ));
        }
    }
    match &body.tool_choice {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(choice)) if choice == "auto" || choice == "none" => Ok(()),
        Some(other) => Err(invalid(
            "tool_choice",
            "unsupported_value",
            format!("tool_choice {other} is not supported (only \"auto\" or \"none\"): {WHY}"),
        )),
    }
}

/// The client's messages as Memento's chat messages: the ones before the last, and the
/// last, which must be the person's. Sizes are checked here, at the edge.
fn conversation(
    config: &ServerConfig,
    messages: &[Value],
) -> Result<(Vec<ChatMessage>, String), OpenAiError> {
    if messages.is_empty() {
        return Err(invalid(
            "messages",
            "invalid_value",
            "messages is empty; send at least the person's message",
        ));
    }
    if messages.len() > MAX_MESSAGES {
        return Err(invalid(
            "messages",
            "too_many_messages",
            format!(
                "{} messages; the maximum is {MAX_MESSAGES} (drop the oldest)",
                messages.len()
            ),
        ));
    }
    let total_limit = config
        .max_message_chars
        .saturating_mul(MAX_TOTAL_CHARS_FACTOR);
    let mut total = 0usize;
    let mut converted = Vec::with_capacity(messages.len());
    for (index, raw) in messages.iter().enumerate() {
        let message = chat_message(index, raw)?;
        let chars = message_chars(&message);
        if chars > config.max_message_chars {
            return Err(too_large(
                "message_too_long",
                format!(
                    "messages[{index}] has {chars} characters; the maximum is {}",
                    config.max_message_chars
                ),
            ));
        }
        total += chars;
        if total > total_limit {
            return Err(too_large(
                "context_length_exceeded",
                format!(
                    "the messages have more than {total_limit} characters together; drop the \
                     oldest"
                ),
            ));
        }
        converted.push(message);
    }
    let message = match converted.pop() {
        Some(ChatMessage::User { content }) if !content.trim().is_empty() => {
            content.trim().to_owned()
        }
        Some(ChatMessage::User { .. }) => {
            return Err(invalid(
                "messages",
                "empty_message",
                "the last message (the person's) is empty",
            ));
        }
        _ => {
            return Err(invalid(
                "messages",
                "invalid_value",
                "the last message must be the person's (role \"user\")",
            ));
        }
    };
    Ok((converted, message))
}

fn chat_message(index: usize, raw: &Value) -> Result<ChatMessage, OpenAiError> {
    let bad = |what: String| {
        invalid(
            "messages",
            "invalid_value",
            format!("messages[{index}]: {what}"),
        )
    };
    let role = raw
        .get("role")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("an object with a \"role\" is expected".to_owned()))?;
    let content = raw.get("content").unwrap_or(&Value::Null);
    match role {
        "system" | "developer" => Ok(ChatMessage::System {
            content: text_content(content).map_err(bad)?.unwrap_or_default(),
        }),
        "user" => Ok(ChatMessage::User {
            content: text_content(content)
                .map_err(bad)?
                .ok_or_else(|| bad("a user message needs content".to_owned()))?,
        }),
        "assistant" => {
            if raw
                .get("tool_calls")
                .and_then(Value::as_array)
                .is_some_and(|calls| !calls.is_empty())
                || raw.get("function_call").is_some_and(|call| !call.is_null())
            {
                return Err(bad(
                    "assistant tool calls are not supported: Memento runs its own tools \
                     server-side and answers in words"
                        .to_owned(),
                ));
            }
            Ok(ChatMessage::Assistant {
                content: text_content(content).map_err(bad)?,
                tool_calls: Vec::new(),
            })
        }
        "tool" | "function" => Err(bad(format!(
            "role {role:?} is not supported: Memento runs its own tools server-side"
        ))),
        other => Err(bad(format!(
            "unknown role {other:?} (system, developer, user or assistant)"
        ))),
    }
}

/// A message's text: a string, or text parts joined by newlines; `None` for null.
fn text_content(content: &Value) -> Result<Option<String>, String> {
    match content {
        Value::Null => Ok(None),
        Value::String(text) => Ok(Some(text.clone())),
        Value::Array(parts) => {
            let mut texts = Vec::with_capacity(parts.len());
            for part in parts {
                match (
                    part.get("type").and_then(Value::as_str),
                    part.get("text").and_then(Value::as_str),
                ) {
                    (Some("text"), Some(text)) => texts.push(text),
                    (Some(kind), _) => {
                        return Err(format!(
                            "content parts of type {kind:?} are not supported, only \"text\""
                        ));
                    }
                    (None, _) => return Err("a content part needs a \"type\"".to_owned()),
                }
            }
            Ok(Some(texts.join("\n")))
        }
        _ => Err("content must be a string or an array of text parts".to_owned()),
    }
}

fn message_chars(message: &ChatMessage) -> usize {
    match message {
        ChatMessage::System { content }
        | ChatMessage::User { content }
        | ChatMessage::Tool { content, .. } => content.chars().count(),
        ChatMessage::Assistant { content, .. } => {
            content.as_deref().map_or(0, |c| c.chars().count())
        }
    }
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
    let (events_tx, events_rx) = mpsc::unbounded_channel::<TurnEvent>();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<Vec<Event>>();
    let task_chunks = chunks.clone();
    let task = tokio::spawn(async move {
        let result = tracing::Instrument::instrument(
            state.supervisor.turn_given(
                &completion.user,
                completion.prior,
                completion.message,
                deadline,
                Some(events_tx),
            ),
            span,
        )
        .await;
        let events = match result {
            Ok(outcome) => task_chunks.end(&outcome.usage),
            Err(error) => vec![
                Event::default().data(OpenAiError::from_turn(error, &trace_id).body().to_string()),
            ],
        };
        let _ = done_tx.send(events);
    });
    let guard = AbortOnDrop(task);
    let first = futures::stream::once(std::future::ready(chunks.role()));
    let text_chunks = chunks.clone();
    let progress = UnboundedReceiverStream::new(events_rx).filter_map(move |event| {
        let chunk = match event {
            TurnEvent::Text(text) if !text.is_empty() => Some(text_chunks.text(&text)),
            _ => None,
        };
        std::future::ready(chunk)
    });
    let done = futures::stream::once(async move {
        let events = done_rx.await.unwrap_or_else(|_| {
            vec![
                Event::default().data(
                    OpenAiError::from_api(ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "conversation_failed",
                        "the turn ended without an answer",
                    ))
                    .body()
                    .to_string(),
                ),
            ]
        });
        futures::stream::iter(events)
    })
    .flatten();
    let stream = first.chain(progress).chain(done).map(move |event| {
        let _keep = &guard;
        Ok(event)
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
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

#[cfg(test)]
mod tests;
