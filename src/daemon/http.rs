//! The daemon's HTTP API (axum): turns as JSON or SSE, history, health, readiness, metrics.
//!
//! Every `/v1/users/{user_id}/...` request is authenticated, then its `user_id` validated,
//! then authorised, before any actor is touched. Failures are `ApiError`s (see `error.rs`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::{Stream, StreamExt};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::daemon::conversation::{ToolCallRecord, TurnEvent, TurnOutcome};
use crate::daemon::llm::LlmHandle;
use crate::daemon::llm::types::ChatMessage;
use crate::daemon::mcp::McpHandle;
use crate::daemon::supervisor::SupervisorHandle;
use crate::shared::config::ServerConfig;
use crate::shared::domain::UserId;

pub mod auth;
pub mod error;
pub mod memories;
pub mod openai;
pub mod page;
pub mod transfer;

use auth::Auth;
use error::ApiError;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// The root supervisor: false health once a shared actor ended.
    pub root: crate::daemon::supervisor::root::RootHandle,
    /// Conversations.
    pub supervisor: SupervisorHandle,
    /// For readiness and metrics.
    pub llm: LlmHandle,
    /// For readiness and metrics.
    pub mcp: McpHandle,
    /// Tokens.
    pub auth: Arc<Auth>,
    /// Limits.
    pub config: Arc<ServerConfig>,
    /// How long a turn may take.
    pub turn_deadline: Duration,
    /// Trace export counters, when exporting.
    pub export_stats: Option<Arc<crate::shared::telemetry::ExportStats>>,
    /// Browser and proxy rules of `[server]`.
    pub policy: Arc<crate::shared::edge::guard::OriginPolicy>,
}

/// The router: the routes, behind the edge (see [`crate::shared::edge`]): browser and proxy rules,
/// then authentication of `/v1/` requests, both before the body is read, then the body under
/// its size limit and deadline.
pub fn router(state: ApiState) -> Router {
    let body_limit = state.config.max_body_bytes;
    let body_limits = crate::shared::edge::body::BodyLimits {
        max_bytes: body_limit,
        timeout: state.config.request_timeout,
        key: "server.max_body_bytes",
    };
    let edge_state = state.clone();
    Router::new()
        .route("/v1/users/{user_id}/messages", post(post_message))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/models", get(openai::list_models))
        .route("/v1/models/{model}", get(openai::get_model))
        .route(
            "/v1/users/{user_id}/history",
            get(get_history).delete(delete_history),
        )
        .route("/v1/users/{user_id}/memories", get(memories::list))
        .route(
            "/v1/users/{user_id}/memories/{id}",
            get(memories::get_one).delete(memories::delete_one),
        )
        .route("/v1/users/{user_id}/tags", get(memories::tags))
        .route("/v1/auth/mode", get(page::auth_mode))
        .route("/v1/auth/whoami", get(page::whoami))
        .route("/", get(page::index))
        .route("/assets/{name}", get(page::asset))
        .route(
            "/healthz",
            get(|| async {
                axum::Json(Health {
                    status: "ok".into(),
                })
            }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such endpoint; see /v1/users/{user_id}/messages",
            )
        })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(
            body_limits,
            crate::shared::edge::body::bounded,
        ))
        // Import and export, with the import's own (larger) body limit: merged after the
        // limit above so that one does not apply to them, before the edge so it does.
        .merge(transfer::router(state.config.request_timeout))
        .layer(axum::middleware::from_fn(move |request, next| {
            let state = edge_state.clone();
            async move { edge(state, request, next).await }
        }))
        .with_state(state)
}

/// The daemon's edge: the shared origin policy, then the caller's token for `/v1/` routes.
// A refusal is an axum `Response`, built only for refused requests: not worth boxing.
#[allow(clippy::result_large_err)]
async fn edge(
    state: ApiState,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let openai_path = is_openai_path(request.uri().path());
    let response =
        crate::shared::edge::guard::enforce_with(&state.policy, request, next, |request| {
            let path = request.uri().path();
            // The page's sign-in asks which mode the daemon is in before it has a token.
            if !path.starts_with("/v1/") || path == "/v1/auth/mode" {
                return Ok(());
            }
            let openai = is_openai_path(path);
            let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>()
            else {
                return Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "no_peer",
                    "the server could not tell who connected",
                )
                .into_response());
            };
            state
                .auth
                .caller(*peer, request.headers())
                .map(|_| ())
                .map_err(|error| {
                    if openai {
                        openai::OpenAiError::from_api(error).into_response()
                    } else {
                        error.into_response()
                    }
                })
        })
        .await;
    if openai_path && response.status().as_u16() >= 400 {
        return edge_error_as_openai(response).await;
    }
    response
}

fn is_openai_path(path: &str) -> bool {
    path == "/v1/chat/completions" || path == "/v1/models" || path.starts_with("/v1/models/")
}

/// The edge's own refusals (403, 408, 413, 415) in OpenAI's error shape, for OpenAI clients.
/// Answers already in that shape (the endpoint's own) pass unchanged.
async fn edge_error_as_openai(response: Response) -> Response {
    const EDGE_CODES: &[&str] = &[
        "body_too_large",
        "request_timeout",
        "invalid_body",
        "unsupported_media_type",
        "forbidden_host",
        "forbidden_origin",
        "proxied_without_tokens",
    ];
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 * 1024).await else {
        return Response::from_parts(parts, axum::body::Body::empty());
    };
    let parsed: Option<Value> = serde_json::from_slice(&bytes).ok();
    let native = parsed.as_ref().and_then(|v| {
        let error = v.get("error")?;
        if error.get("type").is_some() {
            return None;
        }
        let code = error.get("code")?.as_str()?;
        let code = EDGE_CODES.iter().find(|c| **c == code)?;
        Some((*code, error.get("message")?.as_str()?.to_owned()))
    });
    match native {
        Some((code, message)) => {
            let mut converted =
                openai::OpenAiError::from_api(ApiError::new(parts.status, code, message))
                    .into_response();
            for name in [header::CONNECTION, header::RETRY_AFTER] {
                if let Some(value) = parts.headers.get(&name) {
                    converted.headers_mut().insert(name, value.clone());
                }
            }
            converted
        }
        None => Response::from_parts(parts, axum::body::Body::from(bytes)),
    }
}

/// Authenticates, validates `user_id`, authorises. Nothing else happens before this.
fn admit(
    state: &ApiState,
    peer: SocketAddr,
    headers: &HeaderMap,
    raw_user: &str,
) -> Result<UserId, ApiError> {
    let caller = state.auth.caller(peer, headers)?;
    let user = UserId::parse(raw_user)
        .map_err(|e| ApiError::bad_request("invalid_user_id", e.to_string()))?;
    caller.authorize(&user)?;
    Ok(user)
}

use crate::shared::api::{
    Deleted, ErrorBody, Health, History, MessageRequest, MessageResponse, Readiness, StreamEvent,
    TextEvent, ToolCallEvent, ToolResultEvent,
};

fn parse_message(
    state: &ApiState,
    body: Result<Bytes, BytesRejection>,
) -> Result<String, ApiError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!(
                    "request body is larger than {} bytes",
                    state.config.max_body_bytes
                ),
            )
        } else {
            ApiError::bad_request("invalid_body", rejection.body_text())
        }
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

fn wants_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|accept| accept.contains("text/event-stream"))
}

/// The server span of a `POST` to `route`, continuing the caller's trace (W3C headers), and
/// the trace id the answer reports.
fn post_span(route: &'static str, headers: &HeaderMap) -> (tracing::Span, String) {
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

fn outcome_json(outcome: &TurnOutcome, trace_id: &str) -> MessageResponse {
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
fn api_tool_call(call: &ToolCallRecord) -> crate::shared::api::ToolCall {
    crate::shared::api::ToolCall {
        name: call.name.clone(),
        arguments: call.arguments.clone(),
        result: call.result.clone(),
        is_error: call.is_error,
    }
}

async fn post_message(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(raw_user): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let user = match admit(&state, peer, &headers, &raw_user) {
        Ok(user) => user,
        Err(error) => return error.into_response(),
    };
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
    let result = tracing::Instrument::instrument(
        state.supervisor.turn(&user, message, deadline, None),
        span.clone(),
    )
    .await;
    match result {
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

/// Aborts the turn's task when the SSE stream is dropped (client gone).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn stream_turn(
    state: ApiState,
    user: UserId,
    message: String,
    deadline: Instant,
    trace_id: String,
    span: tracing::Span,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let (events_tx, events_rx) = mpsc::unbounded_channel::<TurnEvent>();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<StreamEvent>();
    let task_trace = trace_id.clone();
    let task = tokio::spawn(async move {
        let result = tracing::Instrument::instrument(
            state
                .supervisor
                .turn(&user, message, deadline, Some(events_tx)),
            span,
        )
        .await;
        let event = match result {
            Ok(outcome) => StreamEvent::Done(outcome_json(&outcome, &task_trace)),
            Err(error) => StreamEvent::Error(ApiError::from(error).body()),
        };
        let _ = done_tx.send(event);
    });
    let guard = AbortOnDrop(task);
    let progress = UnboundedReceiverStream::new(events_rx).map(|event| match event {
        TurnEvent::ToolCall {
            id,
            name,
            arguments,
        } => StreamEvent::ToolCall(ToolCallEvent {
            id,
            name,
            arguments,
        }),
        TurnEvent::ToolResult(record) => StreamEvent::ToolResult(ToolResultEvent {
            id: record.id.clone(),
            call: api_tool_call(&record),
        }),
        TurnEvent::Text(text) => StreamEvent::Text(TextEvent { text }),
    });
    let done = futures::stream::once(async move {
        done_rx.await.unwrap_or_else(|_| {
            StreamEvent::Error(ErrorBody::new(
                "conversation_failed",
                "the turn ended without an answer",
            ))
        })
    });
    let stream = progress.chain(done).map(move |event| {
        let _keep = &guard;
        Ok(Event::default().event(event.name()).data(event.data()))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

fn history_json(user: &UserId, messages: Vec<ChatMessage>) -> History<ChatMessage> {
    History {
        user_id: user.to_string(),
        messages,
    }
}

async fn get_history(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(raw_user): Path<String>,
    headers: HeaderMap,
) -> Result<axum::Json<History<ChatMessage>>, ApiError> {
    let user = admit(&state, peer, &headers, &raw_user)?;
    let messages = state.supervisor.history(&user).await?;
    Ok(axum::Json(history_json(&user, messages)))
}

async fn delete_history(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(raw_user): Path<String>,
    headers: HeaderMap,
) -> Result<axum::Json<Deleted>, ApiError> {
    let user = admit(&state, peer, &headers, &raw_user)?;
    state.supervisor.reset(&user).await?;
    Ok(axum::Json(Deleted { deleted: true }))
}

async fn readyz(State(state): State<ApiState>) -> Response {
    let mcp = state.mcp.is_connected();
    let llm = state.llm.is_ready();
    // A shared actor (LLM, MCP, conversation supervisor) that ended while the daemon runs.
    let actors = state.root.is_healthy() && state.supervisor.is_running();
    let ready = mcp && llm && actors;
    let body = Readiness {
        ready,
        mcp: if mcp { "connected" } else { "disconnected" }.into(),
        llm: if llm { "ready" } else { "unavailable" }.into(),
        // `fallback`: Redis is unreachable and this daemon spends only its share of the
        // quota; still ready (turns are answered), but worth an alert.
        limits: state.llm.limits_mode().as_str().into(),
        actors: if actors { "running" } else { "failed" }.into(),
        failed_actors: state
            .root
            .failures()
            .into_iter()
            .map(|(name, _)| name)
            .collect(),
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

async fn metrics(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    match state.auth.caller(peer, &headers) {
        Ok(auth::Caller::User(_)) => {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "metrics need a service token",
            )
            .into_response();
        }
        Err(error) => return error.into_response(),
        Ok(_) => {}
    }
    let out = render_metrics(&state);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

/// Every daemon metric in Prometheus text format.
fn render_metrics(state: &ApiState) -> String {
    use crate::shared::metrics::render_value;
    let mut out = String::with_capacity(8 * 1024);
    let turns = state.supervisor.metrics();
    render_value(
        &mut out,
        "memento_live_conversations",
        "gauge",
        "Live conversation actors.",
        state.supervisor.live_actors(),
    );
    render_value(
        &mut out,
        "memento_turns_total",
        "counter",
        "Turns finished.",
        turns.turns.get(),
    );
    render_value(
        &mut out,
        "memento_turns_in_progress",
        "gauge",
        "Turns started and not ended: queued, waiting for the user's lease held by another daemon, or running.",
        turns.in_progress.get(),
    );
    render_value(
        &mut out,
        "memento_turn_errors_total",
        "counter",
        "Turns that failed.",
        turns.turn_errors.get(),
    );
    render_value(
        &mut out,
        "memento_turns_overloaded_total",
        "counter",
        "Turns refused: too many in progress.",
        turns.overloaded.get(),
    );
    render_value(
        &mut out,
        "memento_history_cache_releases_total",
        "counter",
        "Idle conversations that released their cached history (reloaded on the next turn).",
        turns.history_releases.get(),
    );
    render_value(
        &mut out,
        "memento_turns_queue_full_total",
        "counter",
        "Turns refused: their user had conversation.max_queued_turns waiting.",
        turns.queue_full.get(),
    );
    render_value(
        &mut out,
        "memento_conversation_failures_total",
        "counter",
        "Conversation actors that failed and were restarted.",
        turns.actor_failures.get(),
    );
    render_value(
        &mut out,
        "memento_conversation_stops_total",
        "counter",
        "Conversation actors stopped (idle or evicted).",
        turns.actor_stops.get(),
    );
    turns.latency.render(
        &mut out,
        "memento_turn_duration_seconds",
        "Turn latency.",
        "",
    );
    let llm = state.llm.metrics();
    render_value(
        &mut out,
        "memento_llm_requests_total",
        "counter",
        "LLM requests.",
        llm.requests.get(),
    );
    render_value(
        &mut out,
        "memento_llm_failures_total",
        "counter",
        "LLM requests failed after retries.",
        llm.failures.get(),
    );
    render_value(
        &mut out,
        "memento_llm_retries_total",
        "counter",
        "LLM retries.",
        llm.retries.get(),
    );
    render_value(
        &mut out,
        "memento_llm_throttled_total",
        "counter",
        "HTTP 429 answers from the LLM provider.",
        llm.throttled.get(),
    );
    render_value(
        &mut out,
        "memento_llm_user_limited_total",
        "counter",
        "Requests refused by the per-user limit.",
        llm.user_limited.get(),
    );
    render_value(
        &mut out,
        "memento_llm_input_tokens_total",
        "counter",
        "Prompt tokens.",
        llm.input_tokens.get(),
    );
    render_value(
        &mut out,
        "memento_llm_output_tokens_total",
        "counter",
        "Completion tokens.",
        llm.output_tokens.get(),
    );
    render_value(
        &mut out,
        "memento_llm_in_flight",
        "gauge",
        "LLM requests in flight.",
        llm.in_flight.get(),
    );
    let limits = state.llm.limits_metrics();
    render_value(
        &mut out,
        "memento_limits_fallback",
        "gauge",
        "1 while Redis is unreachable and the local fallback share of the LLM quota decides.",
        limits.fallback.get(),
    );
    render_value(
        &mut out,
        "memento_limits_fallbacks_total",
        "counter",
        "Times the local fallback took over from Redis.",
        limits.fallbacks.get(),
    );
    render_value(
        &mut out,
        "memento_limits_redis_errors_total",
        "counter",
        "Redis rate-limit decisions that failed or timed out.",
        limits.redis_errors.get(),
    );
    llm.latency.render(
        &mut out,
        "memento_llm_request_duration_seconds",
        "LLM request latency (waits and retries included).",
        "",
    );
    llm.rate_limit_wait.render(
        &mut out,
        "memento_llm_rate_limit_wait_seconds",
        "Time waiting for rate-limit capacity.",
        "",
    );
    let mcp = state.mcp.metrics();
    render_value(
        &mut out,
        "memento_mcp_connected",
        "gauge",
        "1 while the MCP session is up.",
        mcp.connected.get(),
    );
    render_value(
        &mut out,
        "memento_mcp_connects_total",
        "counter",
        "MCP (re)connections.",
        mcp.connects.get(),
    );
    render_value(
        &mut out,
        "memento_mcp_calls_total",
        "counter",
        "MCP tool calls.",
        mcp.calls.get(),
    );
    render_value(
        &mut out,
        "memento_mcp_failures_total",
        "counter",
        "MCP tool calls that failed (transport, timeout).",
        mcp.failures.get(),
    );
    render_value(
        &mut out,
        "memento_mcp_tool_errors_total",
        "counter",
        "MCP tool calls answered with isError.",
        mcp.tool_errors.get(),
    );
    mcp.latency.render(
        &mut out,
        "memento_mcp_call_duration_seconds",
        "MCP tool call latency.",
        "",
    );
    if let Some(export) = &state.export_stats {
        render_value(
            &mut out,
            "memento_trace_spans_queued_total",
            "counter",
            "Spans handed to the OTLP export queue.",
            export.queued.get(),
        );
        render_value(
            &mut out,
            "memento_trace_spans_exported_total",
            "counter",
            "Spans exported over OTLP.",
            export.exported.get(),
        );
        render_value(
            &mut out,
            "memento_trace_spans_dropped_total",
            "counter",
            "Spans dropped: the export queue was full.",
            export.dropped.get(),
        );
        render_value(
            &mut out,
            "memento_trace_export_failures_total",
            "counter",
            "OTLP export requests that failed.",
            export.failed_batches.get(),
        );
    }
    out
}
