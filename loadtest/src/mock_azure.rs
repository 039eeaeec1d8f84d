//! `memento-loadtest mock-azure`: an HTTP server that speaks Azure OpenAI chat completions,
//! with Memento's offline model as its brain.
//!
//! - `POST /openai/deployments/{deployment}/chat/completions?api-version=...` with the
//!   `api-key` header (or `Authorization: Bearer`), Azure-shaped JSON for success and errors;
//!   `POST /v1/chat/completions` and `/openai/v1/chat/completions` for OpenAI-compatible
//!   clients (`model` in the body).
//! - `stream: true` answers as SSE `chat.completion.chunk`s, tool calls split into fragments
//!   with their `index`, then `data: [DONE]`.
//! - Knobs: latency (fixed plus per output token), RPM (checked per 10-second window, a sixth
//!   of the minute's quota each, as Azure does) and TPM (per minute, estimated on arrival from
//!   the prompt and `max_tokens`), answered with 429 and `retry-after-ms`, `retry-after`,
//!   `x-ratelimit-remaining-requests`, `x-ratelimit-remaining-tokens`; fault injection (500,
//!   503, hung requests, malformed tool-call arguments) from a seeded generator.
//! - `GET /stats` returns [`MockStats`]; `POST /stats/reset` zeroes them; `GET /healthz`.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use memento::llm::offline::OfflineModel;
use memento::llm::types::{ChatMessage, ChatRequest, ChatResponse, FinishReason, ToolDefinition};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// Mock settings.
#[derive(Debug, Clone)]
pub struct MockConfig {
    /// Address to bind.
    pub host: IpAddr,
    /// Port (0 picks one).
    pub port: u16,
    /// The accepted key.
    pub api_key: String,
    /// The only deployment served; `None` accepts any.
    pub deployment: Option<String>,
    /// Fixed latency per request.
    pub latency_ms: u64,
    /// Extra latency per completion token.
    pub latency_per_token_ms: f64,
    /// Requests per minute (checked per 10 s window).
    pub rpm: Option<u32>,
    /// Tokens per minute.
    pub tpm: Option<u32>,
    /// Share of requests answered 500.
    pub fail_rate: f64,
    /// Share answered 503.
    pub fail_503_rate: f64,
    /// Share that never answer.
    pub hang_rate: f64,
    /// Share whose tool-call arguments are cut (invalid JSON).
    pub malformed_rate: f64,
    /// Seed of the fault generator.
    pub seed: u64,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 8090,
            api_key: "mock-key".into(),
            deployment: None,
            latency_ms: 0,
            latency_per_token_ms: 0.0,
            rpm: None,
            tpm: None,
            fail_rate: 0.0,
            fail_503_rate: 0.0,
            hang_rate: 0.0,
            malformed_rate: 0.0,
            seed: 1,
        }
    }
}

/// What the mock received and answered.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MockStats {
    /// Chat requests received (any outcome).
    pub requests: u64,
    /// Answered 200.
    pub answered_ok: u64,
    /// Answered 429 (quota).
    pub rate_limited: u64,
    /// Answered 500 (injected).
    pub server_errors_500: u64,
    /// Answered 503 (injected).
    pub unavailable_503: u64,
    /// Never answered (injected).
    pub hung: u64,
    /// Answered with cut tool-call arguments (injected).
    pub malformed_tool_args: u64,
    /// Refused: missing or wrong key.
    pub auth_failures: u64,
    /// Refused: bad request (JSON, api-version, deployment).
    pub bad_requests: u64,
    /// Streamed answers.
    pub streamed: u64,
    /// Prompt tokens answered.
    pub prompt_tokens: u64,
    /// Completion tokens answered.
    pub completion_tokens: u64,
    /// Tool calls answered, by tool name.
    pub tool_calls_by_name: BTreeMap<String, u64>,
    /// Most requests that arrived within one wall-clock second.
    pub max_requests_in_any_second: u64,
    /// Most requests admitted (not 429) within one 10-second window.
    pub max_admitted_in_any_10s: u64,
}

struct Windows {
    /// Start of the current 10 s request window and how many were admitted in it.
    rpm_window: Instant,
    rpm_admitted: u32,
    /// Start of the current minute token window and the tokens admitted in it.
    tpm_window: Instant,
    tpm_used: u64,
    /// Arrivals in the current second.
    second: u64,
    second_count: u64,
}

struct Mock {
    config: MockConfig,
    model: OfflineModel,
    stats: Mutex<MockStats>,
    windows: Mutex<Windows>,
    rng: Mutex<u64>,
    shutdown: CancellationToken,
}

/// A running mock.
pub struct MockServer {
    addr: SocketAddr,
    mock: Arc<Mock>,
    task: tokio::task::JoinHandle<()>,
}

impl MockServer {
    /// Binds and serves.
    pub async fn start(config: MockConfig) -> std::io::Result<MockServer> {
        let listener =
            tokio::net::TcpListener::bind(SocketAddr::new(config.host, config.port)).await?;
        let addr = listener.local_addr()?;
        let now = Instant::now();
        let mock = Arc::new(Mock {
            rng: Mutex::new(config.seed.max(1)),
            config,
            model: OfflineModel::new(),
            stats: Mutex::new(MockStats::default()),
            windows: Mutex::new(Windows {
                rpm_window: now,
                rpm_admitted: 0,
                tpm_window: now,
                tpm_used: 0,
                second: 0,
                second_count: 0,
            }),
            shutdown: CancellationToken::new(),
        });
        let app = Router::new()
            .route(
                "/openai/deployments/{deployment}/chat/completions",
                post(azure_chat),
            )
            .route("/v1/chat/completions", post(openai_chat))
            .route("/openai/v1/chat/completions", post(openai_chat))
            .route("/stats", get(stats))
            .route("/stats/reset", post(reset_stats))
            .route("/healthz", get(|| async { "ok" }))
            .with_state(mock.clone());
        let stop = mock.shutdown.clone();
        let task = tokio::spawn(async move {
            use axum::serve::ListenerExt;
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
        });
        Ok(MockServer { addr, mock, task })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`: the Azure endpoint to configure.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Counters so far.
    pub fn stats(&self) -> MockStats {
        self.mock
            .stats
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// Stops (hung requests end too).
    pub async fn shutdown(self) {
        self.mock.shutdown.cancel();
        let _ = self.task.await;
    }
}

#[derive(Debug, Deserialize)]
struct VersionQuery {
    #[serde(rename = "api-version")]
    api_version: Option<String>,
}

async fn azure_chat(
    State(mock): State<Arc<Mock>>,
    Path(deployment): Path<String>,
    Query(query): Query<VersionQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(response) = mock.check_key(&headers) {
        return response;
    }
    if query.api_version.as_deref().is_none_or(str::is_empty) {
        mock.count(|s| s.bad_requests += 1);
        return azure_error(StatusCode::NOT_FOUND, "404", "Resource not found", None);
    }
    if mock
        .config
        .deployment
        .as_ref()
        .is_some_and(|d| *d != deployment)
    {
        mock.count(|s| s.bad_requests += 1);
        return azure_error(
            StatusCode::NOT_FOUND,
            "DeploymentNotFound",
            "The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, please wait a moment and try again.",
            None,
        );
    }
    mock.chat(deployment, body).await
}

async fn openai_chat(State(mock): State<Arc<Mock>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(response) = mock.check_key(&headers) {
        return response;
    }
    let model = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["model"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "mock-model".into());
    mock.chat(model, body).await
}

async fn stats(State(mock): State<Arc<Mock>>) -> axum::Json<MockStats> {
    axum::Json(mock.stats.lock().map(|s| s.clone()).unwrap_or_default())
}

async fn reset_stats(State(mock): State<Arc<Mock>>) -> StatusCode {
    if let Ok(mut stats) = mock.stats.lock() {
        *stats = MockStats::default();
    }
    StatusCode::NO_CONTENT
}

fn azure_error(status: StatusCode, code: &str, message: &str, param: Option<&str>) -> Response {
    (
        status,
        axum::Json(
            json!({"error": {"code": code, "message": message, "param": param, "type": null}}),
        ),
    )
        .into_response()
}

/// The wire request, leniently: content may be a string or a list of text parts.
#[derive(Debug, Deserialize)]
struct WireRequest {
    messages: Vec<Value>,
    #[serde(default)]
    tools: Vec<ToolDefinition>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    max_completion_tokens: Option<u32>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<Value>,
}

fn normalize_message(mut message: Value) -> Value {
    if let Some(parts) = message["content"].as_array() {
        let text: Vec<&str> = parts.iter().filter_map(|p| p["text"].as_str()).collect();
        message["content"] = Value::String(text.join("\n"));
    }
    message
}

impl Mock {
    fn count(&self, f: impl FnOnce(&mut MockStats)) {
        if let Ok(mut stats) = self.stats.lock() {
            f(&mut stats);
        }
    }

    fn check_key(&self, headers: &HeaderMap) -> Result<(), Response> {
        let key = headers
            .get("api-key")
            .and_then(|v| v.to_str().ok())
            .or_else(|| {
                headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
            });
        if key == Some(self.config.api_key.as_str()) {
            return Ok(());
        }
        self.count(|s| {
            s.requests += 1;
            s.auth_failures += 1;
        });
        Err(azure_error(
            StatusCode::UNAUTHORIZED,
            "401",
            "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource.",
            None,
        ))
    }

    /// Uniform in [0, 1) from a seeded xorshift.
    fn roll(&self) -> f64 {
        let Ok(mut state) = self.rng.lock() else {
            return 1.0;
        };
        let mut x = *state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *state = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Quota check on arrival: `Err(retry-after)` when over.
    fn admit(&self, tokens: u64) -> Result<(u32, u64), Duration> {
        let Ok(mut w) = self.windows.lock() else {
            return Ok((0, 0));
        };
        let now = Instant::now();
        let second = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if w.second != second {
            w.second = second;
            w.second_count = 0;
        }
        w.second_count += 1;
        let arrivals = w.second_count;
        self.count(|s| s.max_requests_in_any_second = s.max_requests_in_any_second.max(arrivals));
        if now.duration_since(w.rpm_window) >= Duration::from_secs(10) {
            w.rpm_window = now;
            w.rpm_admitted = 0;
        }
        if now.duration_since(w.tpm_window) >= Duration::from_secs(60) {
            w.tpm_window = now;
            w.tpm_used = 0;
        }
        let rpm_window_quota = self.config.rpm.map(|rpm| (rpm / 6).max(1));
        if let Some(quota) = rpm_window_quota
            && w.rpm_admitted >= quota
        {
            return Err(Duration::from_secs(10).saturating_sub(now.duration_since(w.rpm_window)));
        }
        if let Some(tpm) = self.config.tpm
            && w.tpm_used + tokens > u64::from(tpm)
        {
            return Err(Duration::from_secs(60).saturating_sub(now.duration_since(w.tpm_window)));
        }
        w.rpm_admitted += 1;
        w.tpm_used += tokens;
        let admitted = u64::from(w.rpm_admitted);
        self.count(|s| s.max_admitted_in_any_10s = s.max_admitted_in_any_10s.max(admitted));
        let remaining_requests = rpm_window_quota.map_or(u32::MAX, |q| q - w.rpm_admitted);
        let remaining_tokens = self
            .config
            .tpm
            .map_or(u64::MAX, |t| u64::from(t).saturating_sub(w.tpm_used));
        Ok((remaining_requests, remaining_tokens))
    }

    async fn chat(&self, model: String, body: Bytes) -> Response {
        self.count(|s| s.requests += 1);
        let wire: WireRequest = match serde_json::from_slice(&body) {
            Ok(wire) => wire,
            Err(e) => {
                self.count(|s| s.bad_requests += 1);
                return azure_error(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    &format!("Invalid request body: {e}"),
                    None,
                );
            }
        };
        let messages: Result<Vec<ChatMessage>, _> = wire
            .messages
            .into_iter()
            .map(|m| serde_json::from_value(normalize_message(m)))
            .collect();
        let messages = match messages {
            Ok(messages) if !messages.is_empty() => messages,
            Ok(_) => {
                self.count(|s| s.bad_requests += 1);
                return azure_error(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "'messages' must not be empty",
                    Some("messages"),
                );
            }
            Err(e) => {
                self.count(|s| s.bad_requests += 1);
                return azure_error(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    &format!("Invalid 'messages': {e}"),
                    Some("messages"),
                );
            }
        };
        let max_tokens = wire.max_tokens.or(wire.max_completion_tokens);
        let request = ChatRequest {
            messages,
            tools: wire.tools,
            max_tokens,
            temperature: None,
            user: None,
        };
        let prompt_chars: usize = body.len();
        let estimated = (prompt_chars / 4) as u64 + u64::from(max_tokens.unwrap_or(0));
        let (remaining_requests, remaining_tokens) = match self.admit(estimated) {
            Ok(remaining) => remaining,
            Err(retry_after) => {
                self.count(|s| s.rate_limited += 1);
                let seconds = retry_after.as_secs_f64().ceil().max(1.0) as u64;
                let mut response = azure_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "429",
                    &format!(
                        "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-10-21 have exceeded call rate limit of your current OpenAI S0 pricing tier. Please retry after {seconds} seconds."
                    ),
                    None,
                );
                let headers = response.headers_mut();
                insert(headers, "retry-after-ms", retry_after.as_millis().max(1));
                insert(headers, "retry-after", seconds);
                insert(headers, "x-ratelimit-remaining-requests", 0);
                insert(headers, "x-ratelimit-remaining-tokens", 0);
                return response;
            }
        };
        let roll = self.roll();
        let c = &self.config;
        if roll < c.hang_rate {
            self.count(|s| s.hung += 1);
            self.shutdown.cancelled().await;
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
        if roll < c.hang_rate + c.fail_rate {
            self.count(|s| s.server_errors_500 += 1);
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(json!({"error": {"message": "The server had an error while processing your request. Sorry about that!", "type": "server_error", "param": null, "code": null}})),
            )
                .into_response();
        }
        if roll < c.hang_rate + c.fail_rate + c.fail_503_rate {
            self.count(|s| s.unavailable_503 += 1);
            return azure_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "The service is temporarily unable to process your request. Please try again later.",
                None,
            );
        }
        let mut answer = self.model.complete(&request);
        answer.model = model;
        let malformed = roll < c.hang_rate + c.fail_rate + c.fail_503_rate + c.malformed_rate;
        if malformed
            && let ChatMessage::Assistant { tool_calls, .. } = &mut answer.message
            && !tool_calls.is_empty()
        {
            for call in tool_calls.iter_mut() {
                let cut = call.function.arguments.len() / 2;
                let mut end = cut;
                while !call.function.arguments.is_char_boundary(end) {
                    end -= 1;
                }
                call.function.arguments.truncate(end);
            }
            self.count(|s| s.malformed_tool_args += 1);
        }
        let usage = answer.usage.unwrap_or_default();
        let latency = Duration::from_millis(c.latency_ms)
            + Duration::from_secs_f64(
                (c.latency_per_token_ms * f64::from(usage.completion_tokens)).max(0.0) / 1000.0,
            );
        if !latency.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(latency) => {}
                () = self.shutdown.cancelled() => {}
            }
        }
        self.count(|s| {
            s.answered_ok += 1;
            s.prompt_tokens += u64::from(usage.prompt_tokens);
            s.completion_tokens += u64::from(usage.completion_tokens);
            if let ChatMessage::Assistant { tool_calls, .. } = &answer.message {
                for call in tool_calls {
                    *s.tool_calls_by_name
                        .entry(call.function.name.clone())
                        .or_default() += 1;
                }
            }
            if wire.stream {
                s.streamed += 1;
            }
        });
        let include_usage = wire
            .stream_options
            .as_ref()
            .is_some_and(|o| o["include_usage"].as_bool() == Some(true));
        let mut response = if wire.stream {
            stream_response(&answer, include_usage)
        } else {
            axum::Json(completion_json(&answer)).into_response()
        };
        let headers = response.headers_mut();
        insert(
            headers,
            "x-ratelimit-remaining-requests",
            remaining_requests,
        );
        insert(headers, "x-ratelimit-remaining-tokens", remaining_tokens);
        response
    }
}

fn insert(headers: &mut HeaderMap, name: &'static str, value: impl std::fmt::Display) {
    if let Ok(value) = HeaderValue::from_str(&value.to_string()) {
        headers.insert(name, value);
    }
}

fn finish(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::ToolCalls => "tool_calls",
        FinishReason::ContentFilter => "content_filter",
    }
}

fn created() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn completion_json(answer: &ChatResponse) -> Value {
    let usage = answer.usage.unwrap_or_default();
    json!({
        "id": format!("chatcmpl-{}", answer.id.clone().unwrap_or_default()),
        "object": "chat.completion",
        "created": created(),
        "model": answer.model,
        "prompt_filter_results": [],
        "choices": [{
            "index": 0,
            "message": answer.message,
            "finish_reason": finish(answer.finish_reason),
            "logprobs": null,
        }],
        "usage": usage,
    })
}

/// The same answer as SSE chunks: role, content pieces, tool-call fragments by `index`.
fn stream_response(answer: &ChatResponse, include_usage: bool) -> Response {
    let id = format!("chatcmpl-{}", answer.id.clone().unwrap_or_default());
    let base = |delta: Value, finish_reason: Value| {
        json!({
            "id": id, "object": "chat.completion.chunk", "created": created(), "model": answer.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        })
    };
    let mut chunks = vec![base(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    if let ChatMessage::Assistant {
        content,
        tool_calls,
    } = &answer.message
    {
        if let Some(content) = content {
            let words: Vec<&str> = content.split_inclusive(' ').collect();
            for piece in words.chunks(4) {
                chunks.push(base(json!({"content": piece.concat()}), Value::Null));
            }
        }
        for (index, call) in tool_calls.iter().enumerate() {
            chunks.push(base(
                json!({"tool_calls": [{"index": index, "id": call.id, "type": "function", "function": {"name": call.function.name, "arguments": ""}}]}),
                Value::Null,
            ));
            let args = &call.function.arguments;
            let mut start = 0;
            while start < args.len() {
                let mut end = (start + 16).min(args.len());
                while !args.is_char_boundary(end) {
                    end += 1;
                }
                chunks.push(base(
                    json!({"tool_calls": [{"index": index, "function": {"arguments": &args[start..end]}}]}),
                    Value::Null,
                ));
                start = end;
            }
        }
    }
    chunks.push(base(json!({}), json!(finish(answer.finish_reason))));
    if include_usage {
        chunks.push(json!({
            "id": id, "object": "chat.completion.chunk", "created": created(), "model": answer.model,
            "choices": [], "usage": answer.usage.unwrap_or_default(),
        }));
    }
    let mut body = String::new();
    for chunk in chunks {
        body.push_str("data: ");
        body.push_str(&chunk.to_string());
        body.push_str("\n\n");
    }
    body.push_str("data: [DONE]\n\n");
    (
        [
            ("content-type", "text/event-stream"),
            ("cache-control", "no-cache"),
        ],
        body,
    )
        .into_response()
}
