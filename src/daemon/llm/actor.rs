//! The LLM actor and its handle: one per daemon, shared by every conversation.
//!
//! - [`LlmHandle::complete`] sends a request to the `Llm` actor, which admits it and spawns
//!   a task for the rest; the actor never awaits a rate-limit wait or a network round trip
//!   in its handler, so users never queue behind each other's calls.
//! - In the task: in-flight cap (a FIFO semaphore), per-user limit, request and token
//!   limits (`llm/limits.rs`, waiting for capacity up to the turn's deadline), then the
//!   provider call (`llm/provider.rs`) with Memento's retry policy (`retry.rs`).
//! - The actor owns what it starts: the provider client and limits live in its state (the
//!   handle only reads the provider's name and the counters), its request tasks are in a
//!   `TaskTracker`, and `post_stop` waits for them, so a stop drains the calls in flight.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::limits::{self, Limits};
use super::metrics::{GaugeGuard, LlmMetrics};
use super::provider::{Backend, provider_semconv};
use super::pseudonym;
use super::types::{ChatResponse, FinishReason, Prompt, Usage};
use super::{LlmConfig, LlmError, Provider};
use crate::shared::config::ConfigError;
use crate::shared::retry::RetryPolicy;

/// Messages of the LLM actor.
pub enum LlmMsg {
    /// Complete `request` before `deadline`. The actor MUST reply, from a spawned task,
    /// unless the caller abandons the request first.
    Complete {
        /// The request.
        request: Prompt,
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

/// The typed handle. Cheap to clone. It holds no part of the actor's state: the limits and
/// the provider client belong to the actor and the request tasks it owns.
#[derive(Clone)]
pub struct LlmHandle {
    actor: ActorRef<LlmMsg>,
    /// Read-only facts and counters, for `/metrics` and logs.
    info: Arc<LlmInfo>,
    /// Turns `Prompt::user` into the opaque id the provider sees.
    pseudonyms: Arc<pseudonym::UserPseudonyms>,
}

impl LlmHandle {
    /// Builds the provider and spawns the actor, with the limits in this process.
    pub async fn spawn(config: LlmConfig) -> Result<LlmHandle, LlmError> {
        Self::spawn_with_limits(config, &crate::daemon::limits::LimitsConfig::default()).await
    }

    /// Builds the provider and spawns the actor, with the limits `limits` says (`[limits]`).
    pub async fn spawn_with_limits(
        config: LlmConfig,
        limits: &crate::daemon::limits::LimitsConfig,
    ) -> Result<LlmHandle, LlmError> {
        config.validate().map_err(|e| match e {
            ConfigError::Invalid(message) => LlmError::Config(message),
            other => LlmError::Config(other.to_string()),
        })?;
        let shared = Shared::new(&config, limits)?;
        let info = Arc::new(LlmInfo {
            provider: shared.provider,
            model: shared.model.clone(),
            metrics: shared.metrics.clone(),
            limits: shared.limits.clone(),
        });
        let (actor, _join) = Actor::spawn(None, Llm, shared)
            .await
            .map_err(|e| LlmError::Config(format!("cannot start the LLM actor: {e}")))?;
        Ok(LlmHandle {
            actor,
            info,
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
    /// task stops waiting, retrying and holding the provider's connection). A
    /// [`Prompt`] shares its serialised parts; a `ChatRequest` is serialised here.
    pub async fn complete(
        &self,
        request: impl Into<Prompt>,
        deadline: Instant,
    ) -> Result<ChatResponse, LlmError> {
        let mut request = request.into();
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
        &self.info.metrics
    }

    /// `azure`, `openai` or `offline`.
    pub fn provider(&self) -> Provider {
        self.info.provider
    }

    /// The model or deployment name.
    pub fn model(&self) -> &str {
        &self.info.model
    }

    /// Which limiter decides (`local`, `shared` through Redis, or the `fallback`).
    pub fn limits_mode(&self) -> crate::daemon::limits::LimitsMode {
        self.info.limits.mode()
    }

    /// The limits' counters.
    pub fn limits_metrics(&self) -> &crate::daemon::limits::LimitsMetrics {
        self.info.limits.metrics()
    }

    /// The actor's cell, to link it under the root supervisor.
    pub(crate) fn actor_cell(&self) -> ractor::ActorCell {
        self.actor.get_cell()
    }

    /// True while the actor runs and admits requests (readiness): false once it stops, or
    /// if it failed.
    pub fn is_ready(&self) -> bool {
        self.actor.get_status() == ractor::ActorStatus::Running
    }

    /// Stops the actor, waiting at most `within`: it admits nothing more and waits in
    /// `post_stop` for the request tasks it started (each ends by its turn's deadline, or at
    /// once when its caller gave up).
    pub async fn stop(&self, within: Duration) {
        let _ = self
            .actor
            .stop_and_wait(Some("shutdown".into()), Some(within))
            .await;
    }
}

/// What the handle may read without asking the actor.
struct LlmInfo {
    provider: Provider,
    model: String,
    metrics: Arc<LlmMetrics>,
    /// The limiter, for its mode and counters only (decisions are the actor's).
    limits: Arc<dyn Limits>,
}

/// The actor. It owns the provider client and the limits ([`Shared`], lent to the request
/// tasks) and the tasks themselves, which it drains when it stops.
pub struct Llm;

/// The actor's state.
pub struct LlmState {
    /// What every request task uses.
    shared: Arc<Shared>,
    /// The request tasks in flight: closed and waited for in `post_stop`.
    tasks: TaskTracker,
}

impl Actor for Llm {
    type Msg = LlmMsg;
    type State = LlmState;
    type Arguments = Shared;

    async fn pre_start(
        &self,
        _myself: ActorRef<LlmMsg>,
        shared: Shared,
    ) -> Result<LlmState, ActorProcessingErr> {
        Ok(LlmState {
            shared: Arc::new(shared),
            tasks: TaskTracker::new(),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<LlmMsg>,
        state: &mut LlmState,
    ) -> Result<(), ActorProcessingErr> {
        state.tasks.close();
        if !state.tasks.is_empty() {
            tracing::info!(
                in_flight = state.tasks.len(),
                "LLM client stopping: waiting for the requests in flight"
            );
        }
        state.tasks.wait().await;
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<LlmMsg>,
        message: LlmMsg,
        state: &mut LlmState,
    ) -> Result<(), ActorProcessingErr> {
        let shared = &state.shared;
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
                state.tasks.spawn(async move {
                    let span = tracing::info_span!(
                        parent: &parent,
                        "chat",
                        otel.name = %format!("chat {}", shared.model),
                        otel.kind = "client",
                        gen_ai.operation.name = "chat",
                        gen_ai.provider.name = provider_semconv(shared.provider),
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
                            span.record("error.type", error.otel_type());
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

// === impl Shared ===

/// What every request task uses.
pub struct Shared {
    backend: Backend,
    provider: Provider,
    model: String,
    in_flight: Semaphore,
    limits: Arc<dyn Limits>,
    retry: RetryPolicy,
    request_timeout: Duration,
    max_tokens: u32,
    temperature: Option<f32>,
    metrics: Arc<LlmMetrics>,
}

impl Shared {
    fn new(
        config: &LlmConfig,
        limits: &crate::daemon::limits::LimitsConfig,
    ) -> Result<Shared, LlmError> {
        let (backend, model) = Backend::new(config)?;
        let limits = limits::from_config(config, limits, &model)?;
        Ok(Shared {
            backend,
            provider: config.provider,
            model,
            in_flight: Semaphore::new(config.max_in_flight.max(1)),
            limits,
            retry: RetryPolicy {
                max_retries: config.max_retries,
                initial: config.retry_initial,
                max_delay: config.retry_max,
                max_retry_after: config.max_retry_after,
            },
            request_timeout: config.request_timeout,
            max_tokens: config.max_tokens,
            temperature: config.temperature,
            metrics: Arc::default(),
        })
    }

    /// Admission, limits, the call and its retries.
    async fn run(&self, mut request: Prompt, deadline: Instant) -> Result<ChatResponse, LlmError> {
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
        if let Some(user) = &request.user
            && let Err(retry_after) = self.limits.check_user(user).await
        {
            // A user over their own limit is told so (and when to come back) rather than
            // queued.
            self.metrics.user_limited.inc();
            return Err(LlmError::UserRateLimited { retry_after });
        }
        // Written once: every attempt sends the same bytes.
        let body = self.backend.encode(&request);
        let result = crate::shared::retry::retry(
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
            || self.attempt(&request, body.as_ref(), deadline),
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
            self.correct_tokens(&request, usage).await;
        }
        if response.finish_reason == FinishReason::ContentFilter {
            return Err(LlmError::ContentFilter);
        }
        Ok(response)
    }

    /// Waits for the request and token budgets, bounded by the deadline. Every attempt,
    /// retries included, waits here: the provider counts each request against the quota.
    async fn wait_for_capacity(&self, request: &Prompt, deadline: Instant) -> Result<(), LlmError> {
        let started = std::time::Instant::now();
        self.limits
            .acquire(request.estimated_tokens(), deadline)
            .await?;
        let waited = started.elapsed();
        self.metrics.rate_limit_wait.observe(waited);
        if waited > Duration::from_millis(1) {
            tracing::info!(waited_ms = waited.as_millis() as u64, "rate limit wait");
        }
        Ok(())
    }

    /// Charges the difference when the provider used more tokens than estimated (best
    /// effort: governor cannot refund an over-estimate).
    async fn correct_tokens(&self, request: &Prompt, usage: Usage) {
        let extra = usage
            .total_tokens
            .saturating_sub(request.estimated_tokens());
        if extra > 0 {
            self.limits.charge(extra).await;
        }
    }

    async fn attempt(
        &self,
        request: &Prompt,
        body: Option<&bytes::Bytes>,
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
        let call = self.backend.complete(request, body);
        let mut response = tokio::time::timeout(timeout, call)
            .await
            .unwrap_or(Err(LlmError::Timeout))?;
        response.provider_time = started.elapsed();
        Ok(response)
    }
}
