//! What operators and orchestrators poll: `GET /healthz`, `GET /readyz` and `GET /metrics`
//! (Prometheus text, service tokens only).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::{ApiState, auth};
use crate::shared::api::{Health, Readiness};

/// `GET /healthz`: `{"status": "ok"}` while the process serves.
pub(super) async fn healthz() -> axum::Json<Health> {
    axum::Json(Health {
        status: "ok".into(),
    })
}

/// `GET /readyz`: 200 when the memory server, the LLM actor and the shared actors are up,
/// 503 otherwise; the body says which part is not.
pub(super) async fn readyz(State(state): State<ApiState>) -> Response {
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

/// `GET /metrics`: every daemon metric, for a service token.
pub(super) async fn metrics(
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
