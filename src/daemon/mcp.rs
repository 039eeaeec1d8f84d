//! The MCP connection actor: one rmcp client session shared by every user.
//!
//! - The `Mcp` actor owns the session's lifecycle only: connect, list tools, watch for the
//!   session's end, reconnect with backoff, re-list tools on `notifications/tools/list_changed`.
//!   Its mailbox never carries a user's tool call.
//! - [`McpHandle::call_tool`] runs calls concurrently over the current session (a cloned rmcp
//!   `Peer`, read from a `watch` channel), bounded by a semaphore.
//! - Only this module inserts `user_id` into tool arguments: tools whose schema has a
//!   `user_id` property get it removed from the definitions the model sees, and the turn's
//!   user written into every call, overwriting whatever the model put there.
//! - Over Streamable HTTP, each call is one JSON-RPC POST answered with `application/json`
//!   ([`direct`], MCP 2026-07-28 stateless requests) when the server serves those; otherwise
//!   (older servers, the legacy SSE transport) it goes over the rmcp session.
//! - Every call in flight is tracked (a `TaskTracker`); [`McpHandle::stop`] refuses new calls,
//!   waits for those in flight, then ends the session, all within one bound.
//! - [`sse_client`]: the legacy HTTP+SSE client transport (rmcp 3 has none).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorRef};
use rmcp::RoleClient;
use rmcp::model::{CallToolRequestParams, JsonObject};
use rmcp::service::ServiceError;
use serde_json::Value;
use tokio::sync::{Semaphore, watch};
use tokio_util::task::TaskTracker;

use crate::daemon::llm::types::ToolSet;
use crate::shared::config::McpClientConfig;
use crate::shared::domain::UserId;
use crate::shared::metrics::{Counter, Gauge, Histogram};

mod actor;
pub mod direct;
mod schema;
pub mod sse_client;

/// A tool result's text blocks, one per line (both call paths answer the model with this).
fn joined_text<'a>(blocks: impl Iterator<Item = &'a str>) -> String {
    let mut text = String::new();
    for (index, block) in blocks.enumerate() {
        if index > 0 {
            text.push('\n');
        }
        text.push_str(block);
    }
    text
}

#[cfg(test)]
use actor::reconnect_delay;
pub use actor::{Mcp, McpArgs, McpMsg, McpState};
pub use schema::convert_tools;

/// The argument every memory tool takes and the daemon alone fills in.
pub const USER_ARGUMENT: &str = "user_id";
/// The memory tool that deletes (capped per turn by `conversation.max_deletes_per_turn`).
pub const DELETE_TOOL: &str = crate::shared::domain::tool::DELETE_MEMORY;

/// Why a tool call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum McpError {
    /// No session (server down, reconnecting) or the session broke during the call.
    #[error("memory service unavailable: {0}")]
    Unavailable(String),
    /// The call took longer than `mcp.call_timeout`.
    #[error("memory service did not answer within {0:?}")]
    Timeout(Duration),
    /// The model asked for a tool the server does not have.
    #[error("unknown tool {0:?}")]
    UnknownTool(String),
    /// The server rejected the request (JSON-RPC error).
    #[error("memory service rejected the call: {0}")]
    Rejected(String),
    /// The actor is gone (shutting down).
    #[error("memory connection is shut down")]
    Closed,
}

/// What a tool call returned.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolOutput {
    /// The text content blocks, joined by newlines.
    pub text: String,
    /// Structured content, when the tool sent some.
    pub structured: Option<Value>,
    /// The tool reported an error (`isError: true`).
    pub is_error: bool,
}

/// Whether a call's caller reads the structured content of the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Structured {
    /// Parse it into [`ToolOutput::structured`].
    Keep,
    /// Skip it (the model reads only the text).
    Skip,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct McpMetrics {
    /// Tool calls started.
    pub calls: Counter,
    /// Calls that failed (transport, timeout, rejection), not counting tool errors.
    pub failures: Counter,
    /// Calls answered with `isError: true`.
    pub tool_errors: Counter,
    /// Call latency.
    pub latency: Histogram,
    /// Successful (re)connections.
    pub connects: Counter,
    /// 1 while a session is up.
    pub connected: Gauge,
    /// Calls answered with one `application/json` body (direct POST).
    pub json_answers: Counter,
    /// Direct calls the server answered with an SSE stream instead.
    pub sse_answers: Counter,
}

/// One live session: what calls need, published by the actor.
struct Session {
    peer: rmcp::Peer<RoleClient>,
    /// Serialised once, when listed; every LLM round shares it.
    tools: Arc<ToolSet>,
    /// Tools whose arguments carry the user.
    binds_user: HashSet<String>,
    generation: u64,
    /// The server's session id, when the transport has one (for traces).
    session_id: Option<String>,
    /// Stateless JSON-RPC POSTs, when the server serves them (see [`direct`]).
    direct: Option<Arc<direct::DirectCaller>>,
}

/// The typed handle every conversation shares. Cheap to clone.
#[derive(Clone)]
pub struct McpHandle {
    actor: ActorRef<McpMsg>,
    session: watch::Receiver<Option<Arc<Session>>>,
    limit: Arc<Semaphore>,
    call_timeout: Duration,
    metrics: Arc<McpMetrics>,
    /// The calls in flight, drained by [`McpHandle::stop`].
    calls: TaskTracker,
}

impl McpHandle {
    /// Spawns the actor, which connects in the background (see [`McpHandle::wait_connected`]).
    pub async fn spawn(config: McpClientConfig, url: String) -> Result<McpHandle, McpError> {
        let (session_tx, session_rx) = watch::channel(None);
        let metrics = Arc::new(McpMetrics::default());
        let args = McpArgs {
            config: config.clone(),
            url,
            session: session_tx,
            metrics: metrics.clone(),
        };
        let (actor, _join) = Actor::spawn(None, Mcp, args)
            .await
            .map_err(|e| McpError::Unavailable(format!("cannot start the MCP actor: {e}")))?;
        Ok(McpHandle {
            actor,
            session: session_rx,
            limit: Arc::new(Semaphore::new(config.max_concurrent_calls.max(1))),
            call_timeout: config.call_timeout,
            metrics,
            calls: TaskTracker::new(),
        })
    }

    /// Waits until a session is up, at most `timeout`; true when connected.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let mut session = self.session.clone();
        tokio::time::timeout(timeout, session.wait_for(Option::is_some))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// The actor's cell, to link it under the root supervisor.
    pub(crate) fn actor_cell(&self) -> ractor::ActorCell {
        self.actor.get_cell()
    }

    /// True while a session is up.
    pub fn is_connected(&self) -> bool {
        self.session.borrow().is_some()
    }

    /// The tools to offer the model (without `user_id`); empty while disconnected.
    pub fn tools(&self) -> Arc<ToolSet> {
        self.session
            .borrow()
            .as_ref()
            .map(|s| s.tools.clone())
            .unwrap_or_default()
    }

    /// Metrics.
    pub fn metrics(&self) -> &McpMetrics {
        &self.metrics
    }

    /// Calls `name` for `user`. `arguments` come from the model; their `user_id`, if any,
    /// is dropped, and `user` bound instead for the tools that take one.
    /// `meta` goes into the request's `_meta` (idempotency key, trace context).
    /// With [`Structured::Skip`] (a conversation turn: the model reads only the text) a
    /// direct JSON answer's structured content is skipped, not parsed, and
    /// [`ToolOutput::structured`] is `None`.
    pub async fn call_tool(
        &self,
        user: &UserId,
        name: &str,
        arguments: JsonObject,
        meta: JsonObject,
        structured: Structured,
    ) -> Result<ToolOutput, McpError> {
        if self.calls.is_closed() {
            return Err(McpError::Closed);
        }
        self.calls
            .track_future(self.call_tracked(user, name, arguments, meta, structured))
            .await
    }

    async fn call_tracked(
        &self,
        user: &UserId,
        name: &str,
        mut arguments: JsonObject,
        meta: JsonObject,
        structured: Structured,
    ) -> Result<ToolOutput, McpError> {
        let session = self
            .session
            .borrow()
            .clone()
            .ok_or_else(|| McpError::Unavailable("not connected; reconnecting".into()))?;
        if !session.tools.iter().any(|t| t.function.name == name) {
            return Err(McpError::UnknownTool(name.to_owned()));
        }
        // The model never names the user, not even to a tool that takes no `user_id`.
        arguments.remove(USER_ARGUMENT);
        if session.binds_user.contains(name) {
            arguments.insert(
                USER_ARGUMENT.into(),
                Value::String(user.as_str().to_owned()),
            );
        }
        let _permit = self.limit.acquire().await.map_err(|_| McpError::Closed)?;
        self.metrics.calls.inc();
        let started = Instant::now();
        let direct = session.direct.as_ref().filter(|_| direct::plain_name(name));
        // MCP semantic conventions: a client span per call, its context in `_meta`.
        let span = crate::shared::telemetry::tools_call_span!(
            name,
            "client",
            mcp.session.id = tracing::field::Empty,
            mcp.protocol.version = tracing::field::Empty,
            error.type = tracing::field::Empty,
        );
        if direct.is_some() {
            span.record("mcp.protocol.version", direct::PROTOCOL_VERSION);
        } else if let Some(id) = session.session_id.as_deref() {
            span.record("mcp.session.id", id);
        }
        let mut meta = meta;
        for (key, value) in crate::shared::telemetry::inject_context(&span) {
            meta.insert(key, Value::String(value));
        }
        let result = match direct {
            Some(direct) => {
                let outcome = tracing::Instrument::instrument(
                    tokio::time::timeout(
                        self.call_timeout,
                        direct.call_tool(name, &arguments, &meta, structured),
                    ),
                    span.clone(),
                )
                .await;
                match outcome {
                    Err(_) => Err(McpError::Timeout(self.call_timeout)),
                    Ok(Ok((output, format))) => {
                        match format {
                            direct::AnswerFormat::Json => self.metrics.json_answers.inc(),
                            direct::AnswerFormat::EventStream => self.metrics.sse_answers.inc(),
                        }
                        Ok(output)
                    }
                    Ok(Err(direct::DirectError::Rejected(message))) => {
                        Err(McpError::Rejected(message))
                    }
                    Ok(Err(direct::DirectError::Transport(error))) => {
                        Err(self.broken(&session, name, &error))
                    }
                }
            }
            None => {
                let mut params = CallToolRequestParams::new(name.to_owned());
                params.arguments = Some(arguments);
                if !meta.is_empty() {
                    params.meta = Some(rmcp::model::RequestMetaObject::from(meta));
                }
                let outcome = tracing::Instrument::instrument(
                    tokio::time::timeout(self.call_timeout, session.peer.call_tool(params)),
                    span.clone(),
                )
                .await;
                match outcome {
                    Err(_) => Err(McpError::Timeout(self.call_timeout)),
                    Ok(Ok(result)) => Ok(ToolOutput {
                        text: joined_text(
                            result
                                .content
                                .iter()
                                .filter_map(|c| c.as_text().map(|t| t.text.as_str())),
                        ),
                        is_error: result.is_error == Some(true),
                        structured: result.structured_content,
                    }),
                    Ok(Err(ServiceError::McpError(error))) => {
                        Err(McpError::Rejected(error.message.to_string()))
                    }
                    Ok(Err(error)) => Err(self.broken(&session, name, &error.to_string())),
                }
            }
        };
        self.metrics.latency.observe(started.elapsed());
        match result {
            Ok(output) => {
                if output.is_error {
                    self.metrics.tool_errors.inc();
                    span.record("error.type", "tool_error");
                }
                Ok(output)
            }
            Err(error) => {
                self.metrics.failures.inc();
                span.record("error.type", "transport_error");
                Err(error)
            }
        }
    }

    /// A call failed at the transport: the session may be broken, so the actor checks it
    /// and reconnects. The text reaches the model and, through it, the person: transport
    /// errors name Rust types and URLs, so they go to the log and the person gets plain words.
    fn broken(&self, session: &Session, tool: &str, error: &str) -> McpError {
        let _ = self.actor.cast(McpMsg::CallFailed {
            generation: session.generation,
        });
        tracing::warn!(tool, %error, "memory MCP call failed at the transport");
        McpError::Unavailable("the connection to it broke during the call".into())
    }

    /// Calls in flight.
    pub fn calls_in_flight(&self) -> usize {
        self.calls.len()
    }

    /// Refuses new calls, waits for the calls in flight, then ends the session and stops
    /// the actor; all of it within `within` (calls still running then are left to their
    /// own deadline, and the session is ended under them).
    pub async fn stop(&self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        self.calls.close();
        if tokio::time::timeout_at(deadline, self.calls.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                in_flight = self.calls.len(),
                "memory MCP calls still running at the shutdown bound"
            );
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let _ = self
            .actor
            .stop_and_wait(
                Some("shutdown".into()),
                Some(left.max(Duration::from_millis(1))),
            )
            .await;
    }
}

#[cfg(test)]
mod tests;
