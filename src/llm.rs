//! The LLM client actor: one per daemon, shared by every conversation.
//!
//! - [`LlmHandle::complete`] sends a request to the `Llm` actor, which admits it and spawns
//!   a task for the rest; the actor never awaits a rate-limit wait or a network round trip
//!   in its handler, so users never queue behind each other's calls.
//! - In the task: in-flight cap (a FIFO semaphore), per-user limit, RPM and TPM limits
//!   (governor, waiting for capacity up to the turn's deadline), then the provider call with
//!   Memento's retry policy (`retry.rs`).
//! - Providers: Azure OpenAI and any OpenAI-compatible endpoint through async-openai, or the
//!   built-in [`offline`] model. async-openai's own retry layer is replaced by our HTTP
//!   service (`Client::with_http_service`), which also turns error responses into
//!   [`LlmError`]s with their status and `retry-after` hints, so requests are retried once
//!   over, by one policy.
//!
//! Memento's chat types ([`types`]) are the wire format; async-openai's "bring your own
//! types" calls send and receive them, so this file is the one edge to the SDK.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use async_openai::config::{AzureConfig, OpenAIConfig};
use async_openai::error::OpenAIError;
use async_openai::middleware::HttpRequestFactory;
use governor::clock::Clock;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::metrics::{Counter, Gauge, Histogram};
use crate::retry::{RetryPolicy, Retryable};

pub mod framing;
pub mod offline;
pub mod pseudonym;
pub mod types;

use types::{
    ChatMessage, ChatRequest, ChatResponse, FinishReason, ToolCall, ToolDefinition, Usage,
};

/// Which model backs the actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// Azure OpenAI (endpoint, deployment, api-version, api-key).
    Azure,
    /// Any OpenAI-compatible endpoint (`base_url`, `api_key`, `model`).
    Openai,
    /// The built-in offline model.
    #[default]
    Offline,
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Provider::Azure => "azure",
            Provider::Openai => "openai",
            Provider::Offline => "offline",
        })
    }
}

/// The `[llm]` section.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LlmConfig {
    /// `azure`, `openai` or `offline`.
    pub provider: Provider,
    /// Azure resource endpoint, e.g. `https://my-resource.openai.azure.com`.
    pub endpoint: Option<String>,
    /// Azure deployment name.
    pub deployment: Option<String>,
    /// Azure API version.
    pub api_version: String,
    /// API key (Azure `api-key`, or OpenAI-compatible bearer key).
    pub api_key: Option<String>,
    /// OpenAI-compatible base URL, e.g. `http://127.0.0.1:11434/v1`.
    pub base_url: Option<String>,
    /// OpenAI-compatible model name.
    pub model: Option<String>,
    /// Requests per minute (0: unlimited).
    pub rpm: u32,
    /// Tokens per minute (0: unlimited).
    pub tpm: u32,
    /// Requests per minute per user (0: off).
    pub per_user_rpm: u32,
    /// Requests in flight at once; more wait in FIFO order.
    pub max_in_flight: usize,
    /// Longest single attempt.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Longest whole turn (LLM calls, tools, retries, waits).
    #[serde(with = "humantime_serde")]
    pub turn_deadline: Duration,
    /// Most retries of one request.
    pub max_retries: u32,
    /// First retry delay.
    #[serde(with = "humantime_serde")]
    pub retry_initial: Duration,
    /// Largest retry delay.
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// Longest `retry-after` honoured (longer hints are clamped).
    #[serde(with = "humantime_serde")]
    pub max_retry_after: Duration,
    /// `max_tokens` of each request.
    pub max_tokens: u32,
    /// Sampling temperature (provider default when unset).
    pub temperature: Option<f32>,
}

impl std::fmt::Debug for LlmConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmConfig")
            .field("provider", &self.provider)
            .field("endpoint", &self.endpoint)
            .field("deployment", &self.deployment)
            .field("api_version", &self.api_version)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("rpm", &self.rpm)
            .field("tpm", &self.tpm)
            .field("per_user_rpm", &self.per_user_rpm)
            .field("max_in_flight", &self.max_in_flight)
            .field("request_timeout", &self.request_timeout)
            .field("turn_deadline", &self.turn_deadline)
            .finish_non_exhaustive()
    }
}

impl Default for LlmConfig {
    fn default() -> Self {
        LlmConfig {
            provider: Provider::Offline,
            endpoint: None,
            deployment: None,
            api_version: "2024-10-21".into(),
            api_key: None,
            base_url: None,
            model: None,
            rpm: 0,
            tpm: 0,
            per_user_rpm: 0,
            max_in_flight: 256,
            request_timeout: Duration::from_secs(30),
            turn_deadline: Duration::from_secs(60),
            max_retries: 6,
            retry_initial: Duration::from_millis(250),
            retry_max: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(30),
            max_tokens: 1024,
            temperature: None,
        }
    }
}

impl LlmConfig {
    /// Checks that the chosen provider has what it needs.
    pub fn validate(&self) -> Result<(), LlmError> {
        let missing = |what: &str| {
            Err(LlmError::Config(format!(
                "llm.provider = \"{}\" needs {what}",
                self.provider
            )))
        };
        match self.provider {
            Provider::Azure => {
                if self.endpoint.as_deref().is_none_or(str::is_empty) {
                    return missing("endpoint (AZURE_OPENAI_ENDPOINT)");
                }
                if self.api_key.as_deref().is_none_or(str::is_empty) {
                    return missing("api_key (AZURE_OPENAI_API_KEY)");
                }
                if self.deployment.as_deref().is_none_or(str::is_empty) {
                    return missing("deployment (AZURE_OPENAI_DEPLOYMENT)");
                }
            }
            Provider::Openai => {
                if self.base_url.as_deref().is_none_or(str::is_empty) {
                    return missing("base_url");
                }
                if self.model.as_deref().is_none_or(str::is_empty) {
                    return missing("model");
                }
            }
            Provider::Offline => {}
        }
        if self.max_in_flight == 0 {
            return Err(LlmError::Config(
                "llm.max_in_flight must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

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

    fn from_http(status: u16, headers: &http::HeaderMap, body: &str) -> LlmError {
        let parsed: Option<serde_json::Value> = serde_json::from_str(body).ok();
        let error = parsed.as_ref().map(|v| &v["error"]);
        let code = error
            .and_then(|e| e["code"].as_str().map(str::to_owned))
            .or_else(|| error.and_then(|e| e["type"].as_str().map(str::to_owned)));
        let message = error
            .and_then(|e| e["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| body.chars().take(300).collect());
        if status == 400 && code.as_deref() == Some("content_filter") {
            return LlmError::ContentFilter;
        }
        LlmError::Http {
            status,
            code,
            message,
            retry_after: crate::retry::parse_retry_after(headers),
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

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct LlmMetrics {
    /// Requests received.
    pub requests: Counter,
    /// Requests answered.
    pub successes: Counter,
    /// Requests failed after retries.
    pub failures: Counter,
    /// Retries.
    pub retries: Counter,
    /// 429 answers seen from the provider.
    pub throttled: Counter,
    /// Prompt tokens reported by the provider.
    pub input_tokens: Counter,
    /// Completion tokens reported by the provider.
    pub output_tokens: Counter,
    /// Time spent waiting for rate-limit capacity.
    pub rate_limit_wait: Histogram,
    /// Requests refused by the per-user limit.
    pub user_limited: Counter,
    /// Latency of whole requests (waits and retries included).
    pub latency: Histogram,
    /// Requests in flight.
    pub in_flight: Gauge,
}

/// Messages of the LLM actor.
pub enum LlmMsg {
    /// Complete `request` before `deadline`. The actor MUST reply, from a spawned task,
    /// unless the caller abandons the request first.
    Complete {
        /// The request.
        request: ChatRequest,
        /// When the caller stops waiting.
        deadline: Instant,
        /// The caller's span: the `chat` span becomes its child.
        parent: tracing::Span,
        /// Cancelled when the caller stops waiting (its turn was cancelled or timed out):
        /// the request is abandoned, its connection closed and nothing retried.
        abandon: CancellationToken,
        /// The answer.
        reply: RpcReplyPort<Result<ChatResponse, LlmError>>,
    },
}

/// The typed handle. Cheap to clone.
#[derive(Clone)]
pub struct LlmHandle {
    actor: ActorRef<LlmMsg>,
    shared: Arc<Shared>,
    /// Turns `ChatRequest::user` into the opaque id the provider sees.
    pseudonyms: Arc<pseudonym::UserPseudonyms>,
}

impl LlmHandle {
    /// Builds the provider and spawns the actor.
    pub async fn spawn(config: LlmConfig) -> Result<LlmHandle, LlmError> {
        config.validate()?;
        let shared = Arc::new(Shared::new(&config)?);
        let (actor, _join) = Actor::spawn(None, Llm, shared.clone())
            .await
            .map_err(|e| LlmError::Config(format!("cannot start the LLM actor: {e}")))?;
        Ok(LlmHandle {
            actor,
            shared,
            pseudonyms: Arc::new(pseudonym::UserPseudonyms::ephemeral()),
        })
    }

    /// Uses `pseudonyms` (the daemon's keyed ones) for the `user` sent to the provider,
    /// instead of the per-process random key [`LlmHandle::spawn`] starts with.
    pub fn with_pseudonyms(mut self, pseudonyms: Arc<pseudonym::UserPseudonyms>) -> LlmHandle {
        self.pseudonyms = pseudonyms;
        self
    }

    /// The opaque id of `user`: what the provider and traces see instead of the id.
    pub fn pseudonym(&self, user: &str) -> String {
        self.pseudonyms.of(user)
    }

    /// Completes one chat request, waiting for rate-limit capacity and retrying as
    /// configured, never past `deadline`. Dropping the future abandons the request (its
    /// task stops waiting, retrying and holding the provider's connection).
    pub async fn complete(
        &self,
        mut request: ChatRequest,
        deadline: Instant,
    ) -> Result<ChatResponse, LlmError> {
        // From here on, the user is only its keyed pseudonym (the per-user limit's key too).
        request.user = request.user.map(|user| self.pseudonyms.of(&user));
        let wait = deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(1);
        let abandon = CancellationToken::new();
        let _abandon_when_dropped = abandon.clone().drop_guard();
        match self
            .actor
            .call(
                |reply| LlmMsg::Complete {
                    request,
                    deadline,
                    parent: tracing::Span::current(),
                    abandon,
                    reply,
                },
                Some(wait),
            )
            .await
        {
            Ok(ractor::rpc::CallResult::Success(result)) => result,
            Ok(ractor::rpc::CallResult::Timeout) => Err(LlmError::DeadlineExceeded),
            _ => Err(LlmError::ActorGone),
        }
    }

    /// Metrics.
    pub fn metrics(&self) -> &LlmMetrics {
        &self.shared.metrics
    }

    /// `azure`, `openai` or `offline`.
    pub fn provider(&self) -> Provider {
        self.shared.provider
    }

    /// The model or deployment name.
    pub fn model(&self) -> &str {
        &self.shared.model
    }

    /// True while the actor runs (readiness).
    pub fn is_ready(&self) -> bool {
        self.actor.get_status() == ractor::ActorStatus::Running
    }

    /// Stops the actor (requests in flight finish in their tasks).
    pub async fn stop(&self) {
        let _ = self
            .actor
            .stop_and_wait(Some("shutdown".into()), Some(Duration::from_secs(5)))
            .await;
    }
}

/// The actor. Its only state is [`Shared`], which the spawned tasks use.
pub struct Llm;

impl Actor for Llm {
    type Msg = LlmMsg;
    type State = Arc<Shared>;
    type Arguments = Arc<Shared>;

    async fn pre_start(
        &self,
        _myself: ActorRef<LlmMsg>,
        shared: Arc<Shared>,
    ) -> Result<Arc<Shared>, ActorProcessingErr> {
        Ok(shared)
    }

    async fn handle(
        &self,
        _myself: ActorRef<LlmMsg>,
        message: LlmMsg,
        shared: &mut Arc<Shared>,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            LlmMsg::Complete {
                request,
                deadline,
                parent,
                abandon,
                reply,
            } => {
                shared.metrics.requests.inc();
                let shared = shared.clone();
                // Admission only: the wait and the call happen in the task.
                tokio::spawn(async move {
                    let span = tracing::info_span!(
                        parent: &parent,
                        "chat",
                        otel.name = %format!("chat {}", shared.model),
                        otel.kind = "client",
                        gen_ai.operation.name = "chat",
                        gen_ai.provider.name = shared.provider_semconv(),
                        gen_ai.request.model = %shared.model,
                        gen_ai.response.model = tracing::field::Empty,
                        gen_ai.usage.input_tokens = tracing::field::Empty,
                        gen_ai.usage.output_tokens = tracing::field::Empty,
                        gen_ai.response.finish_reasons = tracing::field::Empty,
                        error.type = tracing::field::Empty,
                    );
                    let started = std::time::Instant::now();
                    let call = tracing::Instrument::instrument(
                        shared.run(request, deadline),
                        span.clone(),
                    );
                    let result = tokio::select! {
                        biased;
                        result = call => result,
                        // Nobody waits for the answer: drop the call (and its connection).
                        () = abandon.cancelled() => {
                            span.record("error.type", "cancelled");
                            tracing::debug!(parent: &span, "LLM request abandoned by its caller");
                            return;
                        }
                    };
                    shared.metrics.latency.observe(started.elapsed());
                    match &result {
                        Ok(response) => {
                            shared.metrics.successes.inc();
                            span.record("gen_ai.response.model", response.model.as_str());
                            span.record(
                                "gen_ai.response.finish_reasons",
                                format!("[\"{}\"]", finish_reason_name(response.finish_reason)),
                            );
                            if let Some(usage) = response.usage {
                                span.record("gen_ai.usage.input_tokens", usage.prompt_tokens);
                                span.record("gen_ai.usage.output_tokens", usage.completion_tokens);
                            }
                        }
                        Err(error) => {
                            shared.metrics.failures.inc();
                            span.record("error.type", error_type(error));
                        }
                    }
                    let _ = reply.send(result);
                });
            }
        }
        Ok(())
    }
}

fn finish_reason_name(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::ToolCalls => "tool_calls",
        FinishReason::ContentFilter => "content_filter",
    }
}

fn error_type(error: &LlmError) -> &'static str {
    match error {
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

// === Shared: limits and the provider ===

enum Backend {
    Offline(offline::OfflineModel),
    Azure(async_openai::Client<AzureConfig>),
    Openai(async_openai::Client<OpenAIConfig>),
}

/// What every request task uses.
pub struct Shared {
    backend: Backend,
    provider: Provider,
    model: String,
    in_flight: Semaphore,
    rpm: Option<DefaultDirectRateLimiter>,
    tpm: Option<(DefaultDirectRateLimiter, u32)>,
    per_user: Option<DefaultKeyedRateLimiter<String>>,
    retry: RetryPolicy,
    request_timeout: Duration,
    max_tokens: u32,
    temperature: Option<f32>,
    metrics: LlmMetrics,
}

/// `per_minute` with a burst of one second's worth, at least `min_burst`. Azure checks
/// quotas over short windows (1 or 10 seconds), so a large burst would trip its limit even
/// while the per-minute rate is respected.
fn quota(per_minute: u32, min_burst: u32) -> Option<Quota> {
    let rate = NonZeroU32::new(per_minute)?;
    let burst = NonZeroU32::new((per_minute / 60).max(min_burst).max(1))?;
    Some(Quota::per_minute(rate).allow_burst(burst))
}

impl Shared {
    fn new(config: &LlmConfig) -> Result<Shared, LlmError> {
        let (backend, model) = match config.provider {
            Provider::Offline => (
                Backend::Offline(offline::OfflineModel::new()),
                offline::OFFLINE_MODEL_NAME.to_owned(),
            ),
            Provider::Azure => {
                let deployment = config.deployment.clone().unwrap_or_default();
                let azure = AzureConfig::new()
                    .with_api_base(
                        config
                            .endpoint
                            .clone()
                            .unwrap_or_default()
                            .trim_end_matches('/'),
                    )
                    .with_api_version(config.api_version.clone())
                    .with_deployment_id(deployment.clone())
                    .with_api_key(config.api_key.clone().unwrap_or_default());
                let client = async_openai::Client::with_config(azure)
                    .with_http_service(http_service(config)?);
                (Backend::Azure(client), deployment)
            }
            Provider::Openai => {
                let openai = OpenAIConfig::new()
                    .with_api_base(
                        config
                            .base_url
                            .clone()
                            .unwrap_or_default()
                            .trim_end_matches('/'),
                    )
                    .with_api_key(config.api_key.clone().unwrap_or_default());
                let client = async_openai::Client::with_config(openai)
                    .with_http_service(http_service(config)?);
                (
                    Backend::Openai(client),
                    config.model.clone().unwrap_or_default(),
                )
            }
        };
        // The token bucket must hold the largest request; a bigger one is clamped to it.
        let largest_request = config.max_tokens.saturating_add(32_000);
        Ok(Shared {
            backend,
            provider: config.provider,
            model,
            in_flight: Semaphore::new(config.max_in_flight.max(1)),
            rpm: quota(config.rpm, 1).map(RateLimiter::direct),
            tpm: quota(config.tpm, largest_request.min(config.tpm.max(1)))
                .map(|q| (RateLimiter::direct(q), q.burst_size().get())),
            per_user: quota(config.per_user_rpm, 1).map(RateLimiter::keyed),
            retry: RetryPolicy {
                max_retries: config.max_retries,
                initial: config.retry_initial,
                max_delay: config.retry_max,
                max_retry_after: config.max_retry_after,
            },
            request_timeout: config.request_timeout,
            max_tokens: config.max_tokens,
            temperature: config.temperature,
            metrics: LlmMetrics::default(),
        })
    }

    fn provider_semconv(&self) -> &'static str {
        match self.provider {
            Provider::Azure => "azure.ai.openai",
            Provider::Openai => "openai",
            Provider::Offline => "memento.offline",
        }
    }

    /// Admission, limits, the call and its retries.
    async fn run(
        &self,
        mut request: ChatRequest,
        deadline: Instant,
    ) -> Result<ChatResponse, LlmError> {
        if request.max_tokens.is_none() {
            request.max_tokens = Some(self.max_tokens);
        }
        if request.temperature.is_none() {
            request.temperature = self.temperature;
        }
        let _permit = tokio::time::timeout_at(deadline, self.in_flight.acquire())
            .await
            .map_err(|_| LlmError::DeadlineExceeded)?
            .map_err(|_| LlmError::ActorGone)?;
        self.metrics.in_flight.inc();
        let _in_flight = GaugeGuard(&self.metrics.in_flight);
        if let (Some(limiter), Some(user)) = (&self.per_user, &request.user)
            && let Err(not_until) = limiter.check_key(user)
        {
            // A user over their own limit is told so (and when to come back) rather than
            // queued.
            self.metrics.user_limited.inc();
            return Err(LlmError::UserRateLimited {
                retry_after: not_until.wait_time_from(limiter.clock().now()),
            });
        }
        let result = crate::retry::retry(
            &self.retry,
            deadline,
            |error: &LlmError, notice| {
                self.metrics.retries.inc();
                if matches!(error, LlmError::Http { status: 429, .. }) {
                    self.metrics.throttled.inc();
                }
                tracing::info!(
                    attempt = notice.attempt,
                    delay_ms = notice.delay.as_millis() as u64,
                    from_server = notice.from_server,
                    error = %error,
                    "llm retry"
                );
            },
            || self.attempt(&request, deadline),
        )
        .await;
        if let Err(LlmError::Http { status: 429, .. }) = &result {
            self.metrics.throttled.inc();
        }
        let response = result?;
        if let Some(usage) = response.usage {
            self.metrics
                .input_tokens
                .add(u64::from(usage.prompt_tokens));
            self.metrics
                .output_tokens
                .add(u64::from(usage.completion_tokens));
            self.correct_tokens(&request, usage);
        }
        if response.finish_reason == FinishReason::ContentFilter {
            return Err(LlmError::ContentFilter);
        }
        Ok(response)
    }

    /// Waits for the request and token budgets, bounded by the deadline. Every attempt,
    /// retries included, waits here: the provider counts each request against the quota.
    async fn wait_for_capacity(
        &self,
        request: &ChatRequest,
        deadline: Instant,
    ) -> Result<(), LlmError> {
        let started = std::time::Instant::now();
        if let Some(limiter) = &self.rpm {
            tokio::time::timeout_at(deadline, limiter.until_ready())
                .await
                .map_err(|_| LlmError::DeadlineExceeded)?;
        }
        if let Some((limiter, burst)) = &self.tpm {
            let tokens = estimate_tokens(request).min(*burst).max(1);
            if let Some(n) = NonZeroU32::new(tokens) {
                tokio::time::timeout_at(deadline, limiter.until_n_ready(n))
                    .await
                    .map_err(|_| LlmError::DeadlineExceeded)?
                    .map_err(|_| LlmError::Config("token quota smaller than one request".into()))?;
            }
        }
        let waited = started.elapsed();
        self.metrics.rate_limit_wait.observe(waited);
        if waited > Duration::from_millis(1) {
            tracing::info!(waited_ms = waited.as_millis() as u64, "rate limit wait");
        }
        Ok(())
    }

    /// Charges the difference when the provider used more tokens than estimated (best
    /// effort: governor cannot refund an over-estimate).
    fn correct_tokens(&self, request: &ChatRequest, usage: Usage) {
        if let Some((limiter, burst)) = &self.tpm {
            let estimated = estimate_tokens(request);
            let extra = usage.total_tokens.saturating_sub(estimated).min(*burst);
            if let Some(n) = NonZeroU32::new(extra) {
                let _ = limiter.check_n(n);
            }
        }
    }

    async fn attempt(
        &self,
        request: &ChatRequest,
        deadline: Instant,
    ) -> Result<ChatResponse, LlmError> {
        self.wait_for_capacity(request, deadline).await?;
        let timeout = self
            .request_timeout
            .min(deadline.saturating_duration_since(Instant::now()));
        if timeout.is_zero() {
            return Err(LlmError::DeadlineExceeded);
        }
        let started = std::time::Instant::now();
        let call = async {
            match &self.backend {
                Backend::Offline(model) => Ok(model.complete(request)),
                Backend::Azure(client) => {
                    let wire = WireRequest::new(request, None);
                    decode(client.chat().create_byot(&wire).await)
                }
                Backend::Openai(client) => {
                    let wire = WireRequest::new(request, Some(&self.model));
                    decode(client.chat().create_byot(&wire).await)
                }
            }
        };
        let mut response = tokio::time::timeout(timeout, call)
            .await
            .unwrap_or(Err(LlmError::Timeout))?;
        response.provider_time = started.elapsed();
        Ok(response)
    }
}

struct GaugeGuard<'a>(&'a Gauge);

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Tokens a request may use, estimated before sending: prompt text at four characters a
/// token (close enough for quota pacing; the provider's `usage` corrects it) plus
/// `max_tokens`, as Azure itself estimates on arrival.
pub fn estimate_tokens(request: &ChatRequest) -> u32 {
    let chars = request.prompt_text_len();
    u32::try_from(chars / 4)
        .unwrap_or(u32::MAX)
        .saturating_add(request.max_tokens.unwrap_or(0))
}

/// Memento's HTTP service for async-openai: executes the request with no retry of its own
/// and turns error statuses into [`LlmError`]s that keep the status and retry hints.
/// (Also used by the embeddings provider, `crate::embeddings::remote`.)
pub(crate) fn http_service(
    config: &LlmConfig,
) -> Result<
    impl tower::Service<
        HttpRequestFactory,
        Response = reqwest::Response,
        Error = tower::BoxError,
        Future = impl Future<Output = Result<reqwest::Response, tower::BoxError>> + Send + 'static,
    > + Clone
    + Send
    + Sync
    + 'static,
    LlmError,
> {
    let http = reqwest::Client::builder()
        // No redirects: a redirect would resend the `api-key` header to whatever host the
        // `Location` names. A 3xx is an error instead (`LlmError::Redirect`).
        .redirect(reqwest::redirect::Policy::none())
        .tcp_nodelay(true)
        .connect_timeout(config.request_timeout.min(Duration::from_secs(10)))
        .pool_max_idle_per_host(config.max_in_flight.max(1))
        .build()
        .map_err(|e| LlmError::Config(format!("HTTP client: {e}")))?;
    Ok(tower::service_fn(move |factory: HttpRequestFactory| {
        let http = http.clone();
        async move {
            let request = factory.build().await.map_err(|e| -> tower::BoxError {
                Box::new(LlmError::InvalidResponse(format!(
                    "cannot build the request: {e}"
                )))
            })?;
            let response = http
                .execute(request)
                .await
                .map_err(|e| -> tower::BoxError {
                    if e.is_timeout() {
                        Box::new(LlmError::Timeout)
                    } else {
                        Box::new(LlmError::Connect(e.to_string()))
                    }
                })?;
            let status = response.status();
            if status.is_success() {
                return Ok(response);
            }
            let headers = response.headers().clone();
            if status.is_redirection() {
                let location = headers
                    .get(http::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .chars()
                    .take(200)
                    .collect();
                return Err(Box::new(LlmError::Redirect {
                    status: status.as_u16(),
                    location,
                }) as tower::BoxError);
            }
            let body = response.text().await.unwrap_or_default();
            Err(Box::new(LlmError::from_http(status.as_u16(), &headers, &body)) as tower::BoxError)
        }
    }))
}

/// Maps async-openai's outcome back to ours.
fn decode(result: Result<WireResponse, OpenAIError>) -> Result<ChatResponse, LlmError> {
    match result {
        Ok(wire) => wire.into_response(),
        Err(error) => Err(openai_error(error)),
    }
}

/// Maps an async-openai error to ours (the embeddings provider uses it too).
pub(crate) fn openai_error(error: OpenAIError) -> LlmError {
    match error {
        OpenAIError::Boxed(error) => match error.downcast::<LlmError>() {
            Ok(error) => *error,
            Err(other) => LlmError::Connect(other.to_string()),
        },
        OpenAIError::Reqwest(error) => {
            if error.is_timeout() {
                LlmError::Timeout
            } else {
                LlmError::Connect(error.to_string())
            }
        }
        OpenAIError::JSONDeserialize(error, body) => LlmError::InvalidResponse(format!(
            "{error}: {}",
            body.chars().take(200).collect::<String>()
        )),
        other => LlmError::InvalidResponse(other.to_string()),
    }
}

/// The request as sent (OpenAI chat-completions wire format).
#[derive(Serialize)]
struct WireRequest<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<&'a str>,
    messages: &'a [ChatMessage],
    #[serde(skip_serializing_if = "<[ToolDefinition]>::is_empty")]
    tools: &'a [ToolDefinition],
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    /// The user's keyed pseudonym (`LlmHandle::complete`), never the id itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    stream: bool,
}

impl<'a> WireRequest<'a> {
    fn new(request: &'a ChatRequest, model: Option<&'a str>) -> WireRequest<'a> {
        WireRequest {
            model,
            messages: &request.messages,
            tools: &request.tools,
            tool_choice: (!request.tools.is_empty()).then_some("auto"),
            max_tokens: request.max_tokens,
            temperature: request.temperature,
            user: request.user.as_deref(),
            stream: false,
        }
    }
}

#[derive(Deserialize)]
struct WireResponse {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Vec<WireChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireChoice {
    message: WireMessage,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireMessage {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCall>>,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u32,
    #[serde(default)]
    completion_tokens: u32,
    #[serde(default)]
    total_tokens: u32,
}

impl WireResponse {
    fn into_response(self) -> Result<ChatResponse, LlmError> {
        let choice = self
            .choices
            .into_iter()
            .next()
            .ok_or_else(|| LlmError::InvalidResponse("no choices in the response".into()))?;
        let tool_calls = choice.message.tool_calls.unwrap_or_default();
        let finish_reason = match choice.finish_reason.as_deref() {
            Some("tool_calls") | Some("function_call") => FinishReason::ToolCalls,
            Some("length") => FinishReason::Length,
            Some("content_filter") => FinishReason::ContentFilter,
            _ if !tool_calls.is_empty() => FinishReason::ToolCalls,
            _ => FinishReason::Stop,
        };
        Ok(ChatResponse {
            model: self.model.unwrap_or_default(),
            message: ChatMessage::Assistant {
                content: choice.message.content,
                tool_calls,
            },
            finish_reason,
            usage: self.usage.map(|u| Usage {
                prompt_tokens: u.prompt_tokens,
                completion_tokens: u.completion_tokens,
                total_tokens: if u.total_tokens == 0 {
                    u.prompt_tokens + u.completion_tokens
                } else {
                    u.total_tokens
                },
            }),
            id: self.id,
            provider_time: Duration::ZERO,
        })
    }
}

#[cfg(test)]
mod tests;
