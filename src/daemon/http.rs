//! The daemon's HTTP API (axum): the router, the state its handlers share, and admission.
//!
//! Every `/v1/users/{user_id}/...` request is authenticated, then its `user_id` validated,
//! then authorised ([`Admitted`]), before any actor is touched. Failures are `ApiError`s
//! (see `error.rs`). The bodies are the shared types of [`crate::shared::api`].
//!
//! - `edge.rs`: origin policy and tokens, before the body is read.
//! - `turns.rs`: turns and history; `stream.rs`: a turn as SSE events (both APIs).
//! - `openai.rs`: the OpenAI-compatible API; `memories.rs`, `transfer.rs`: the memory
//!   endpoints, import and export; `page.rs`: the web page; `probes.rs`: health, readiness,
//!   metrics; `auth.rs`: tokens and callers; `error.rs`: the one status mapping.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, RawPathParams};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};

use crate::daemon::llm::LlmHandle;
use crate::daemon::mcp::McpHandle;
use crate::daemon::supervisor::SupervisorHandle;
use crate::shared::config::ServerConfig;
use crate::shared::domain::UserId;

pub mod auth;
mod edge;
pub mod error;
pub mod memories;
pub mod openai;
pub mod page;
mod probes;
mod stream;
pub mod transfer;
mod turns;

use auth::Auth;
use error::ApiError;

/// What the handlers share: one reference count per request (axum clones the state for
/// every request), not one per handle inside.
#[derive(Clone)]
pub struct ApiState(Arc<ApiShared>);

impl ApiState {
    /// Shares `shared` with the handlers.
    pub fn new(shared: ApiShared) -> ApiState {
        ApiState(Arc::new(shared))
    }
}

impl std::ops::Deref for ApiState {
    type Target = ApiShared;

    fn deref(&self) -> &ApiShared {
        &self.0
    }
}

/// The handles and settings behind [`ApiState`].
pub struct ApiShared {
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
        .route("/v1/users/{user_id}/messages", post(turns::post_message))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/models", get(openai::list_models))
        .route("/v1/models/{model}", get(openai::get_model))
        .route(
            "/v1/users/{user_id}/history",
            get(turns::get_history).delete(turns::delete_history),
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
        .route("/healthz", get(probes::healthz))
        .route("/readyz", get(probes::readyz))
        .route("/metrics", get(probes::metrics))
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
            async move { edge::edge(state, request, next).await }
        }))
        .with_state(state)
}

/// The user of a `/v1/users/{user_id}/...` request, admitted: the caller authenticated, the
/// path's `user_id` validated, the caller authorised for it. As a handler's first
/// extractor, nothing else (body, query, actors) is touched before it.
pub struct Admitted(pub UserId);

impl FromRequestParts<ApiState> for Admitted {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Admitted, ApiError> {
        let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<SocketAddr>>().copied()
        else {
            return Err(no_peer());
        };
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|rejection| ApiError::bad_request("invalid_path", rejection.body_text()))?;
        let raw_user = params
            .iter()
            .find(|(name, _)| *name == "user_id")
            .map(|(_, value)| value.to_owned())
            .unwrap_or_default();
        admit(state, peer, &parts.headers, &raw_user).map(Admitted)
    }
}

/// The request came without the peer address axum's `ConnectInfo` gives every connection.
pub(crate) fn no_peer() -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "no_peer",
        "the server could not tell who connected",
    )
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
