//! `memento-loadtest mock-azure`: an HTTP server that speaks Azure OpenAI chat completions,
//! with Memento's offline model ([`memento::daemon::llm::offline::OfflineModel`]) as its brain, so
//! the daemon, the official SDKs and the load test can run against "Azure" without a key.
//!
//! # Endpoints
//!
//! - `POST /openai/deployments/{deployment}/chat/completions?api-version=...`: the dated
//!   Azure API. The key comes in `api-key` (or `Authorization: Bearer`). As Azure does, a
//!   missing `api-version` is a 404 `Resource not found` (not a 400; see
//!   MicrosoftDocs/azure-docs#114602), a malformed one a 400 `API version not supported`,
//!   a wrong key a 401, an unknown deployment (when one is configured) a 404
//!   `DeploymentNotFound`, and a bad body a 400 `{"error":{"code","message","param","type"}}`.
//! - `POST /openai/v1/chat/completions`: Azure's v1 API (`model` = deployment, no
//!   `api-version` needed). `POST /v1/chat/completions`: an OpenAI-compatible server
//!   (`model` required, any name accepted, OpenAI-shaped errors).
//! - `POST /openai/deployments/{deployment}/embeddings`, `/openai/v1/embeddings`,
//!   `/v1/embeddings`: deterministic vectors (see `mock_azure/embeddings.rs`).
//! - `GET /stats` ([`MockStats`] as JSON), `POST /stats/reset`, `GET /healthz`. Any other
//!   path is a 404 `Resource not found`.
//!
//! # Answers
//!
//! A `chat.completion` object (`id` `chatcmpl-...`, `created`, `model` = the deployment or
//! the body's `model`, `choices[0].message` with `tool_calls`, `finish_reason`, `usage`,
//! and on the Azure paths `prompt_filter_results`/`content_filter_results`). With
//! `stream: true`, `text/event-stream` chunks as OpenAI sends them (see
//! `mock_azure/wire.rs`), ending `data: [DONE]`.
//!
//! # Knobs
//!
//! - Latency: `latency_ms` before the answer (before the first chunk when streaming) plus
//!   `latency_per_token_ms` per completion token (spread over the chunks when streaming);
//!   tokio sleeps, never a blocked thread.
//! - Quotas (see `mock_azure/quota.rs`): RPM per 10-second window, TPM per minute,
//!   answered with 429, `retry-after-ms`, `retry-after` (whole seconds, rounded up) and
//!   `x-ratelimit-remaining-requests`/`-tokens`. The remaining headers come on successes
//!   too, for each quota that is configured.
//! - Faults, from a generator seeded with `seed`: each chat request draws one number that
//!   picks a hang (`hang_rate`: never answered until the client gives up or the mock stops),
//!   a 500 (`fail_rate`) or a 503 (`fail_503_rate`) — so these three must sum to at most 1 —
//!   and a second number that cuts the tool-call arguments of an answer in half
//!   (`malformed_rate`, invalid JSON). The n-th request to reach the draw always gets the
//!   n-th numbers, so the fault counts for N requests are the same on every run.
//!
//! # Tests: a gate and a script
//!
//! [`MockServer::close_gate`] holds every chat request that arrives (counted in `requests`)
//! until [`MockServer::open_gate`], so a test knows turns are in flight inside a daemon.
//! [`MockServer::start_scripted`] puts a [`Script`] in place of the offline model: per
//! request it answers as the offline model, says a given message, or holds the request
//! (counted in `hung`; `abandoned` when the client hangs up); a scripted mock keeps every
//! request body ([`MockServer::requests`]).
//!
//! Requests are served concurrently: counters and quota windows sit behind short
//! `std::sync::Mutex` sections that are never held across an `.await`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use memento::daemon::llm::offline::OfflineModel;
use memento::daemon::llm::types::{ChatMessage, ChatRequest, ChatResponse, FinishReason, Usage};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub mod embeddings;
mod quota;
mod wire;

use quota::{Admission, Quota};
use wire::{Flavor, Limit};

/// Largest request body accepted.
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// How long [`MockServer::shutdown`] waits for open connections before dropping them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Seconds of per-second arrival counts kept in [`MockStats::arrivals_per_second`].
const ARRIVAL_HISTORY_SECONDS: usize = 3_600;

/// Mock settings.
#[derive(Debug, Clone)]
pub struct MockConfig {
    /// Address to bind (loopback by default).
    pub host: IpAddr,
    /// Port (0 picks a free one).
    pub port: u16,
    /// The key clients must send (`api-key` or `Authorization: Bearer`).
    pub api_key: String,
    /// The only deployment served; `None` accepts any.
    pub deployment: Option<String>,
    /// Fixed latency of every answer, in milliseconds.
    pub latency_ms: u64,
    /// Extra latency per completion token, in milliseconds.
    pub latency_per_token_ms: f64,
    /// Requests per minute, enforced per 10-second window (`rpm / 6` each).
    pub rpm: Option<u32>,
    /// Tokens per minute (prompt estimate + `max_tokens`, counted on arrival).
    pub tpm: Option<u32>,
    /// Share of requests answered 500.
    pub fail_rate: f64,
    /// Share answered 503.
    pub fail_503_rate: f64,
    /// Share never answered.
    pub hang_rate: f64,
    /// Share of answers whose tool-call arguments are cut (invalid JSON).
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

impl MockConfig {
    /// Checks the rates and latencies; the message names the offending setting.
    pub fn validate(&self) -> Result<(), String> {
        for (name, rate) in [
            ("fail_rate", self.fail_rate),
            ("fail_503_rate", self.fail_503_rate),
            ("hang_rate", self.hang_rate),
            ("malformed_rate", self.malformed_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name} must be between 0 and 1, got {rate}"));
            }
        }
        let faults = self.hang_rate + self.fail_rate + self.fail_503_rate;
        if faults > 1.0 + 1e-9 {
            return Err(format!(
                "hang_rate + fail_rate + fail_503_rate must be at most 1, got {faults}"
            ));
        }
        if !(self.latency_per_token_ms.is_finite() && self.latency_per_token_ms >= 0.0) {
            return Err(format!(
                "latency_per_token_ms must be a non-negative number, got {}",
                self.latency_per_token_ms
            ));
        }
        if self.rpm == Some(0) || self.tpm == Some(0) {
            return Err("rpm and tpm must be at least 1 when set".into());
        }
        Ok(())
    }
}

/// What the mock received and answered since it started (or since `POST /stats/reset`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MockStats {
    /// Chat requests received, whatever the outcome.
    pub requests: u64,
    /// Answered 200.
    pub answered_ok: u64,
    /// Answered 429 (quota).
    pub rate_limited: u64,
    /// Of those, refused by the token quota.
    pub rate_limited_tokens: u64,
    /// Answered 500 (injected).
    pub server_errors_500: u64,
    /// Answered 503 (injected).
    pub unavailable_503: u64,
    /// Held without an answer (injected).
    pub hung: u64,
    /// Answered with cut tool-call arguments (injected).
    pub malformed_tool_args: u64,
    /// Refused: missing or wrong key.
    pub auth_failures: u64,
    /// Refused: bad body, missing or unsupported `api-version`, unknown deployment.
    pub bad_requests: u64,
    /// Answered as a stream.
    pub streamed: u64,
    /// Requests whose client went away before the answer was complete.
    pub abandoned: u64,
    /// Chat requests being served now.
    pub in_flight: u64,
    /// Most chat requests served at once.
    pub max_in_flight: u64,
    /// Prompt tokens of answered requests.
    pub prompt_tokens: u64,
    /// Completion tokens of answered requests.
    pub completion_tokens: u64,
    /// Tool calls answered, by tool name.
    pub tool_calls_by_name: BTreeMap<String, u64>,
    /// Most chat requests that arrived within one second (seconds counted from the start).
    pub max_requests_in_any_second: u64,
    /// Most requests admitted (not 429) within one 10-second quota window.
    pub max_admitted_in_any_10s: u64,
    /// Chat requests that arrived in each second, keyed by seconds since the start (the
    /// last hour is kept).
    pub arrivals_per_second: BTreeMap<u64, u64>,
    /// Embeddings requests received (not counted in `requests`).
    pub embedding_requests: u64,
    /// Texts embedded.
    pub embedding_inputs: u64,
}

/// What a scripted mock does with one chat request.
pub enum Action {
    /// Answer as the offline model would.
    Offline,
    /// Answer with this assistant message.
    Say(ChatMessage),
    /// Never answer, until the client hangs up or the mock stops.
    Hold,
}

/// Decides each chat request's answer in place of the offline model.
pub type Script = Arc<dyn Fn(&ChatRequest) -> Action + Send + Sync>;

/// A running mock. Dropping it stops the server too (without waiting).
pub struct MockServer {
    addr: SocketAddr,
    mock: Arc<Mock>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl MockServer {
    /// Binds `host:port` and serves until [`MockServer::shutdown`] (or drop).
    pub async fn start(config: MockConfig) -> std::io::Result<MockServer> {
        Self::start_with(config, None).await
    }

    /// Like [`MockServer::start`], with `script` in place of the offline model.
    pub async fn start_scripted(config: MockConfig, script: Script) -> std::io::Result<MockServer> {
        Self::start_with(config, Some(script)).await
    }

    async fn start_with(config: MockConfig, script: Option<Script>) -> std::io::Result<MockServer> {
        config
            .validate()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let listener =
            tokio::net::TcpListener::bind(SocketAddr::new(config.host, config.port)).await?;
        let addr = listener.local_addr()?;
        let now = Instant::now();
        let mock = Arc::new(Mock {
            model: OfflineModel::new(),
            quota: Mutex::new(Quota::new(config.rpm, config.tpm, now)),
            counters: Mutex::new(Counters {
                stats: MockStats::default(),
                epoch: now,
            }),
            draws: AtomicU64::new(0),
            answers: AtomicU64::new(0),
            arrivals: AtomicU64::new(0),
            shutdown: CancellationToken::new(),
            gate: tokio::sync::watch::Sender::new(true),
            script,
            requests: Mutex::new(Vec::new()),
            config,
        });
        let app = Router::new()
            .route(
                "/openai/deployments/{deployment}/chat/completions",
                post(azure_dated),
            )
            .route("/openai/v1/chat/completions", post(azure_v1))
            .route("/v1/chat/completions", post(openai))
            .route(
                "/openai/deployments/{deployment}/embeddings",
                post(embeddings::azure_dated),
            )
            .route("/openai/v1/embeddings", post(embeddings::openai))
            .route("/v1/embeddings", post(embeddings::openai))
            .route("/stats", get(stats))
            .route("/stats/reset", post(reset_stats))
            .route("/healthz", get(|| async { "ok" }))
            .fallback(|| async {
                json_response(StatusCode::NOT_FOUND, &wire::resource_not_found())
            })
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
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
        Ok(MockServer {
            addr,
            mock,
            task: Some(task),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://HOST:PORT`: the Azure endpoint (or, with `/v1`, the OpenAI base URL).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The counters so far.
    pub fn stats(&self) -> MockStats {
        self.mock.counters().stats.clone()
    }

    /// Zeroes the counters (as `POST /stats/reset`).
    pub fn reset_stats(&self) {
        self.mock.reset();
    }

    /// Holds every chat request from now on (after counting it) until [`MockServer::open_gate`].
    pub fn close_gate(&self) {
        self.mock.gate.send_replace(false);
    }

    /// Lets held and later chat requests go on.
    pub fn open_gate(&self) {
        self.mock.gate.send_replace(true);
    }

    /// The body of every chat request a scripted mock received, in arrival order (empty for
    /// a mock without a script).
    pub fn requests(&self) -> Vec<Value> {
        self.mock
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The OpenAI-compatible base URL (`ENDPOINT/v1`).
    pub fn openai_base_url(&self) -> String {
        format!("{}/v1", self.endpoint())
    }

    /// The environment that points a `memento serve` child at this mock as an
    /// OpenAI-compatible provider (the key is [`MockConfig::api_key`]).
    pub fn openai_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("MEMENTO_LLM__PROVIDER", "openai".to_owned()),
            ("MEMENTO_LLM__BASE_URL", self.openai_base_url()),
            ("MEMENTO_LLM__MODEL", "mock".to_owned()),
            ("MEMENTO_LLM__API_KEY", self.mock.config.api_key.clone()),
        ]
    }

    /// Stops accepting, ends hung requests and waits (a few seconds at most) for open
    /// connections to finish.
    pub async fn shutdown(mut self) {
        self.mock.shutdown.cancel();
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.mock.shutdown.cancel();
    }
}

// === impl Mock ===

/// Shared state of one mock.
struct Mock {
    config: MockConfig,
    model: OfflineModel,
    quota: Mutex<Quota>,
    counters: Mutex<Counters>,
    /// Requests that reached the fault draw (the generator's position).
    draws: AtomicU64,
    /// Answers given (for unique completion ids).
    answers: AtomicU64,
    /// Chat requests received (for request ids; never reset).
    arrivals: AtomicU64,
    shutdown: CancellationToken,
    /// Open (true) unless a test closed it: chat requests wait here while it is closed.
    gate: tokio::sync::watch::Sender<bool>,
    /// A test's script in place of the offline model.
    script: Option<Script>,
    /// Request bodies, kept for scripted mocks only.
    requests: Mutex<Vec<Value>>,
}

struct Counters {
    stats: MockStats,
    /// Second 0 of `arrivals_per_second`.
    epoch: Instant,
}

#[derive(Debug, Deserialize)]
struct VersionQuery {
    #[serde(rename = "api-version")]
    api_version: Option<String>,
}

async fn azure_dated(
    State(mock): State<Arc<Mock>>,
    Path(deployment): Path<String>,
    Query(query): Query<VersionQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let flavor = Flavor::AzureDated {
        api_version: query.api_version.clone().unwrap_or_default(),
    };
    mock.clone()
        .chat(flavor, Some(deployment), query.api_version, headers, body)
        .await
}

async fn azure_v1(State(mock): State<Arc<Mock>>, headers: HeaderMap, body: Bytes) -> Response {
    mock.clone()
        .chat(Flavor::AzureV1, None, None, headers, body)
        .await
}

async fn openai(State(mock): State<Arc<Mock>>, headers: HeaderMap, body: Bytes) -> Response {
    mock.clone()
        .chat(Flavor::OpenAi, None, None, headers, body)
        .await
}

async fn stats(State(mock): State<Arc<Mock>>) -> axum::Json<MockStats> {
    axum::Json(mock.counters().stats.clone())
}

async fn reset_stats(State(mock): State<Arc<Mock>>) -> StatusCode {
    mock.reset();
    StatusCode::NO_CONTENT
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn set_header(headers: &mut HeaderMap, name: &'static str, value: impl std::fmt::Display) {
    if let Ok(value) = HeaderValue::from_str(&value.to_string()) {
        headers.insert(name, value);
    }
}

/// Counts a chat request as in flight until dropped; a drop before [`Flight::finish`]
/// means the client went away first.
struct Flight {
    mock: Arc<Mock>,
    finished: bool,
}

impl Flight {
    fn finish(mut self) {
        self.finished = true;
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        let finished = self.finished;
        self.mock.count(|s| {
            s.in_flight = s.in_flight.saturating_sub(1);
            if !finished {
                s.abandoned += 1;
            }
        });
    }
}

/// How a chat request ended, before the answer.
enum Fault {
    None,
    Hang,
    ServerError,
    Unavailable,
}

impl Mock {
    /// The counters, even if a panicking thread poisoned the lock (they stay usable).
    fn counters(&self) -> MutexGuard<'_, Counters> {
        self.counters.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn count(&self, f: impl FnOnce(&mut MockStats)) {
        f(&mut self.counters().stats);
    }

    fn reset(&self) {
        let mut counters = self.counters();
        let in_flight = counters.stats.in_flight;
        counters.stats = MockStats {
            in_flight,
            ..MockStats::default()
        };
        counters.epoch = Instant::now();
    }

    /// Counts an arrival and returns the guard that counts its end.
    fn arrive(self: &Arc<Self>) -> Flight {
        let mut counters = self.counters();
        let second = counters.epoch.elapsed().as_secs();
        let stats = &mut counters.stats;
        stats.requests += 1;
        stats.in_flight += 1;
        stats.max_in_flight = stats.max_in_flight.max(stats.in_flight);
        let arrivals = stats.arrivals_per_second.entry(second).or_default();
        *arrivals += 1;
        let arrivals = *arrivals;
        stats.max_requests_in_any_second = stats.max_requests_in_any_second.max(arrivals);
        while stats.arrivals_per_second.len() > ARRIVAL_HISTORY_SECONDS {
            stats.arrivals_per_second.pop_first();
        }
        Flight {
            mock: self.clone(),
            finished: false,
        }
    }

    fn key_ok(&self, headers: &HeaderMap) -> bool {
        let key = headers
            .get("api-key")
            .and_then(|v| v.to_str().ok())
            .or_else(|| {
                headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
            });
        key == Some(self.config.api_key.as_str())
    }

    /// Two uniform numbers in [0, 1) for the next request: the n-th request to draw
    /// always gets the same pair.
    fn draw(&self) -> (f64, f64) {
        let n = self.draws.fetch_add(1, Ordering::Relaxed);
        let unit = |x: u64| (splitmix64(x) >> 11) as f64 / (1u64 << 53) as f64;
        let base = self.config.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (
            unit(base ^ n.wrapping_mul(2)),
            unit(base ^ n.wrapping_mul(2).wrapping_add(1)),
        )
    }

    fn fault(&self, draw: f64) -> Fault {
        let c = &self.config;
        if draw < c.hang_rate {
            Fault::Hang
        } else if draw < c.hang_rate + c.fail_rate {
            Fault::ServerError
        } else if draw < c.hang_rate + c.fail_rate + c.fail_503_rate {
            Fault::Unavailable
        } else {
            Fault::None
        }
    }

    /// Sleeps `duration`, or less when the mock stops.
    async fn pause(&self, duration: Duration) {
        if !duration.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(duration) => {}
                () = self.shutdown.cancelled() => {}
            }
        }
    }

    fn per_token(&self, tokens: u32) -> Duration {
        let ms = self.config.latency_per_token_ms * f64::from(tokens);
        Duration::try_from_secs_f64(ms / 1000.0).unwrap_or(Duration::ZERO)
    }

    async fn chat(
        self: Arc<Self>,
        flavor: Flavor,
        path_deployment: Option<String>,
        api_version: Option<String>,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
        let flight = self.arrive();
        let mut response = self
            .clone()
            .serve(flavor, path_deployment, api_version, &headers, body, flight)
            .await;
        let n = self.arrivals.fetch_add(1, Ordering::Relaxed);
        let request_id = format!(
            "{:016x}{:016x}",
            splitmix64(self.config.seed ^ n),
            splitmix64(n)
        );
        set_header(response.headers_mut(), "apim-request-id", &request_id);
        set_header(response.headers_mut(), "x-request-id", &request_id);
        response
    }

    async fn serve(
        self: Arc<Self>,
        flavor: Flavor,
        path_deployment: Option<String>,
        api_version: Option<String>,
        headers: &HeaderMap,
        body: Bytes,
        flight: Flight,
    ) -> Response {
        if !*self.gate.borrow() {
            let mut gate = self.gate.subscribe();
            tokio::select! {
                _ = gate.wait_for(|open| *open) => {}
                () = self.shutdown.cancelled() => {}
            }
        }
        if self.script.is_some()
            && let Ok(raw) = serde_json::from_slice::<Value>(&body)
        {
            self.requests
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(raw);
        }
        if !self.key_ok(headers) {
            self.count(|s| s.auth_failures += 1);
            flight.finish();
            return json_response(StatusCode::UNAUTHORIZED, &wire::unauthorized(&flavor));
        }
        if path_deployment.is_some() {
            match api_version.as_deref() {
                None | Some("") => {
                    self.count(|s| s.bad_requests += 1);
                    flight.finish();
                    return json_response(StatusCode::NOT_FOUND, &wire::resource_not_found());
                }
                Some(version) if !wire::plausible_api_version(version) => {
                    self.count(|s| s.bad_requests += 1);
                    flight.finish();
                    return json_response(
                        StatusCode::BAD_REQUEST,
                        &wire::unsupported_api_version(),
                    );
                }
                Some(_) => {}
            }
        }
        let parsed = match wire::parse_request(&body) {
            Ok(parsed) => parsed,
            Err(error) => {
                self.count(|s| s.bad_requests += 1);
                flight.finish();
                return json_response(StatusCode::BAD_REQUEST, &wire::bad_request(&flavor, &error));
            }
        };
        let model = match (&flavor, path_deployment, parsed.model.clone()) {
            (Flavor::AzureDated { .. }, Some(deployment), _) => deployment,
            (_, _, Some(model)) => model,
            (_, _, None) => {
                self.count(|s| s.bad_requests += 1);
                flight.finish();
                let error = wire::BodyError {
                    message: "you must provide a model parameter".into(),
                    param: Some("model"),
                };
                return json_response(StatusCode::BAD_REQUEST, &wire::bad_request(&flavor, &error));
            }
        };
        // An OpenAI-compatible server serves whatever model it is asked for.
        if flavor != Flavor::OpenAi && self.config.deployment.as_ref().is_some_and(|d| *d != model)
        {
            self.count(|s| s.bad_requests += 1);
            flight.finish();
            return json_response(StatusCode::NOT_FOUND, &wire::deployment_not_found());
        }

        let estimate = wire::estimate_tokens(&parsed.request);
        let admission = self
            .quota
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .admit(Instant::now(), estimate);
        let (remaining_requests, remaining_tokens) = match admission {
            Admission::Admitted {
                remaining_requests,
                remaining_tokens,
                admitted_in_window,
            } => {
                self.count(|s| {
                    s.max_admitted_in_any_10s = s.max_admitted_in_any_10s.max(admitted_in_window)
                });
                (remaining_requests, remaining_tokens)
            }
            Admission::Throttled {
                limit,
                retry_after,
                remaining_requests,
                remaining_tokens,
            } => {
                self.count(|s| {
                    s.rate_limited += 1;
                    if limit == Limit::Tokens {
                        s.rate_limited_tokens += 1;
                    }
                });
                flight.finish();
                let millis = retry_after.as_millis().max(1);
                let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                let seconds = seconds.max(1);
                let mut response = json_response(
                    StatusCode::TOO_MANY_REQUESTS,
                    &wire::rate_limited(&flavor, limit, seconds),
                );
                let headers = response.headers_mut();
                set_header(headers, "retry-after-ms", millis);
                set_header(headers, "retry-after", seconds);
                set_remaining(headers, remaining_requests, remaining_tokens);
                return response;
            }
        };

        let (fault_draw, malformed_draw) = self.draw();
        match self.fault(fault_draw) {
            Fault::Hang => {
                self.count(|s| s.hung += 1);
                // Held until the client gives up (this future is dropped) or the mock stops.
                self.shutdown.cancelled().await;
                flight.finish();
                return json_response(StatusCode::SERVICE_UNAVAILABLE, &wire::unavailable(&flavor));
            }
            Fault::ServerError => {
                self.count(|s| s.server_errors_500 += 1);
                flight.finish();
                return json_response(StatusCode::INTERNAL_SERVER_ERROR, &wire::server_error());
            }
            Fault::Unavailable => {
                self.count(|s| s.unavailable_503 += 1);
                flight.finish();
                return json_response(StatusCode::SERVICE_UNAVAILABLE, &wire::unavailable(&flavor));
            }
            Fault::None => {}
        }

        let action = match &self.script {
            Some(script) => script(&parsed.request),
            None => Action::Offline,
        };
        let mut answer: ChatResponse = match action {
            Action::Offline => self.model.complete(&parsed.request),
            Action::Say(message) => said(message),
            Action::Hold => {
                self.count(|s| s.hung += 1);
                self.shutdown.cancelled().await;
                flight.finish();
                return json_response(StatusCode::SERVICE_UNAVAILABLE, &wire::unavailable(&flavor));
            }
        };
        answer.model = model.clone();
        let mut malformed = false;
        if malformed_draw < self.config.malformed_rate
            && let ChatMessage::Assistant { tool_calls, .. } = &mut answer.message
            && !tool_calls.is_empty()
        {
            for call in tool_calls.iter_mut() {
                wire::cut_arguments(&mut call.function.arguments);
            }
            malformed = true;
        }
        let usage = answer.usage.unwrap_or_default();
        let n = self.answers.fetch_add(1, Ordering::Relaxed);
        let meta = wire::Meta {
            id: completion_id(self.config.seed, n),
            created: unix_now(),
            model,
            flavor,
        };

        if parsed.stream {
            let chunks = wire::chunks(&meta, &answer, parsed.include_usage);
            self.pause(Duration::from_millis(self.config.latency_ms))
                .await;
            self.count(|s| {
                s.answered_ok += 1;
                s.streamed += 1;
                s.malformed_tool_args += u64::from(malformed);
                record_answer(s, &answer);
            });
            let mut response = self.clone().stream(chunks, flight);
            set_remaining(response.headers_mut(), remaining_requests, remaining_tokens);
            return response;
        }

        self.pause(
            Duration::from_millis(self.config.latency_ms) + self.per_token(usage.completion_tokens),
        )
        .await;
        self.count(|s| {
            s.answered_ok += 1;
            s.malformed_tool_args += u64::from(malformed);
            record_answer(s, &answer);
        });
        flight.finish();
        let mut response = json_response(StatusCode::OK, &wire::completion(&meta, &answer));
        set_remaining(response.headers_mut(), remaining_requests, remaining_tokens);
        response
    }

    /// The chunks as an SSE body, each after its share of the per-token latency.
    fn stream(self: Arc<Self>, chunks: Vec<wire::Chunk>, flight: Flight) -> Response {
        let events: Vec<(Duration, String)> = chunks
            .into_iter()
            .map(|chunk| (self.per_token(chunk.tokens), wire::sse(&chunk.data)))
            .chain(std::iter::once((Duration::ZERO, wire::DONE.to_owned())))
            .collect();
        let events = events.into_iter();
        let state = (events, Some(flight), self);
        let body = futures::stream::unfold(state, |(mut events, flight, mock)| async move {
            match events.next() {
                Some((delay, event)) => {
                    mock.pause(delay).await;
                    Some((
                        Ok::<Bytes, Infallible>(Bytes::from(event)),
                        (events, flight, mock),
                    ))
                }
                None => {
                    if let Some(flight) = flight {
                        flight.finish();
                    }
                    None
                }
            }
        });
        (
            [
                (header::CONTENT_TYPE, "text/event-stream; charset=utf-8"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            Body::from_stream(body),
        )
            .into_response()
    }
}

/// A scripted message as an answer (fixed small usage).
fn said(message: ChatMessage) -> ChatResponse {
    let finish_reason = match &message {
        ChatMessage::Assistant { tool_calls, .. } if !tool_calls.is_empty() => {
            FinishReason::ToolCalls
        }
        _ => FinishReason::Stop,
    };
    ChatResponse {
        model: String::new(),
        message,
        finish_reason,
        usage: Some(Usage {
            prompt_tokens: 10,
            completion_tokens: 5,
            total_tokens: 15,
        }),
        id: None,
        provider_time: Duration::ZERO,
    }
}

fn record_answer(stats: &mut MockStats, answer: &ChatResponse) {
    let usage = answer.usage.unwrap_or_default();
    stats.prompt_tokens += u64::from(usage.prompt_tokens);
    stats.completion_tokens += u64::from(usage.completion_tokens);
    if let ChatMessage::Assistant { tool_calls, .. } = &answer.message {
        for call in tool_calls {
            *stats
                .tool_calls_by_name
                .entry(call.function.name.clone())
                .or_default() += 1;
        }
    }
}

fn set_remaining(headers: &mut HeaderMap, requests: Option<u64>, tokens: Option<u64>) {
    if let Some(requests) = requests {
        set_header(headers, "x-ratelimit-remaining-requests", requests);
    }
    if let Some(tokens) = tokens {
        set_header(headers, "x-ratelimit-remaining-tokens", tokens);
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `chatcmpl-` and 29 letters and digits, unique per answer of one mock.
fn completion_id(seed: u64, n: u64) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut id = String::from("chatcmpl-");
    let mut state = splitmix64(seed ^ 0x5bd1_e995) ^ n;
    for i in 0..29u64 {
        state = splitmix64(state.wrapping_add(i));
        id.push(char::from(
            ALPHABET[(state % ALPHABET.len() as u64) as usize],
        ));
    }
    id
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests;
