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

mod chat;
pub mod embeddings;
mod quota;
mod server;
mod state;
mod wire;

use quota::{Admission, Quota};
use wire::{Flavor, Limit};

#[cfg(test)]
use chat::completion_id;
use memento::shared::splitmix::splitmix64;
pub use server::MockServer;
use state::{Counters, Fault, Flight, Mock};

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

#[derive(Debug, Deserialize)]
struct VersionQuery {
    #[serde(rename = "api-version")]
    api_version: Option<String>,
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

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
