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
//! - [`sse_client`]: the legacy HTTP+SSE client transport (rmcp 3 has none).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use rmcp::model::{
    CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation, JsonObject, Tool,
};
use rmcp::service::{NotificationContext, RunningServiceCancellationToken, ServiceError};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::Value;
use tokio::sync::{Semaphore, watch};

use crate::daemon::llm::types::{FunctionDefinition, ToolDefinition, ToolSet};
use crate::shared::config::{McpClientConfig, McpTransport};
use crate::shared::domain::UserId;
use crate::shared::metrics::{Counter, Gauge, Histogram};

pub mod sse_client;

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
}

/// The typed handle every conversation shares. Cheap to clone.
#[derive(Clone)]
pub struct McpHandle {
    actor: ActorRef<McpMsg>,
    session: watch::Receiver<Option<Arc<Session>>>,
    limit: Arc<Semaphore>,
    call_timeout: Duration,
    metrics: Arc<McpMetrics>,
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
        })
    }

    /// Waits until a session is up, at most `timeout`; true when connected.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let mut session = self.session.clone();
        tokio::time::timeout(timeout, session.wait_for(Option::is_some))
            .await
            .is_ok_and(|r| r.is_ok())
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
    pub async fn call_tool(
        &self,
        user: &UserId,
        name: &str,
        mut arguments: JsonObject,
        meta: JsonObject,
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
        // MCP semantic conventions: a client span per call, its context in `_meta`.
        let span = tracing::info_span!(
            "tools/call",
            otel.name = %format!("tools/call {name}"),
            otel.kind = "client",
            mcp.method.name = "tools/call",
            gen_ai.operation.name = "execute_tool",
            gen_ai.tool.name = %name,
            mcp.session.id = tracing::field::Empty,
            error.type = tracing::field::Empty,
        );
        if let Some(id) = session.session_id.as_deref() {
            span.record("mcp.session.id", id);
        }
        let mut meta = meta;
        for (key, value) in crate::shared::telemetry::inject_context(&span) {
            meta.insert(key, Value::String(value));
        }
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
        self.metrics.latency.observe(started.elapsed());
        let result = match outcome {
            Err(_) => Err(McpError::Timeout(self.call_timeout)),
            Ok(Ok(result)) => Ok(result),
            Ok(Err(ServiceError::McpError(error))) => {
                Err(McpError::Rejected(error.message.to_string()))
            }
            Ok(Err(error)) => {
                // The session may be broken: let the actor check and reconnect.
                let _ = self.actor.cast(McpMsg::CallFailed {
                    generation: session.generation,
                });
                // The text reaches the model and, through it, the person: rmcp's error names
                // Rust types, so it goes to the log and the person gets plain words.
                tracing::warn!(tool = name, %error, "memory MCP call failed at the transport");
                Err(McpError::Unavailable(
                    "the connection to it broke during the call".into(),
                ))
            }
        };
        match result {
            Ok(result) => {
                let is_error = result.is_error == Some(true);
                if is_error {
                    self.metrics.tool_errors.inc();
                    span.record("error.type", "tool_error");
                }
                let text = result
                    .content
                    .iter()
                    .filter_map(|c| c.as_text().map(|t| t.text.as_str()))
                    .collect::<Vec<_>>()
                    .join("\n");
                Ok(ToolOutput {
                    text,
                    structured: result.structured_content,
                    is_error,
                })
            }
            Err(error) => {
                self.metrics.failures.inc();
                span.record("error.type", "transport_error");
                Err(error)
            }
        }
    }

    /// Ends the session and stops the actor.
    pub async fn stop(&self, within: Duration) {
        let _ = self
            .actor
            .stop_and_wait(Some("shutdown".into()), Some(within))
            .await;
    }
}

/// Messages of the MCP actor. None carries a user's work; none needs a reply.
pub enum McpMsg {
    /// Connect (or reconnect) now. The actor sends it to itself.
    Connect,
    /// The session of this generation ended; reconnect after a backoff.
    SessionEnded {
        /// Which session.
        generation: u64,
    },
    /// A call on this generation failed at the transport level: check the session.
    CallFailed {
        /// Which session.
        generation: u64,
    },
    /// The server's tool list changed: list again.
    ToolsChanged {
        /// Which session.
        generation: u64,
    },
}

/// Spawn arguments.
pub struct McpArgs {
    config: McpClientConfig,
    url: String,
    session: watch::Sender<Option<Arc<Session>>>,
    metrics: Arc<McpMetrics>,
}

/// The actor (stateless; see [`McpState`]).
pub struct Mcp;

/// The actor's state.
pub struct McpState {
    args: McpArgs,
    http: reqwest::Client,
    generation: u64,
    /// Failed connects in a row, for the backoff.
    attempts: u32,
    cancel: Option<RunningServiceCancellationToken>,
    reconnect_pending: bool,
}

/// Receives server notifications for one session.
#[derive(Clone)]
struct Notifier {
    actor: ActorRef<McpMsg>,
    generation: u64,
}

impl ClientHandler for Notifier {
    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        let _ = self.actor.cast(McpMsg::ToolsChanged {
            generation: self.generation,
        });
    }

    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("memento", env!("CARGO_PKG_VERSION")),
        )
    }
}

impl Actor for Mcp {
    type Msg = McpMsg;
    type State = McpState;
    type Arguments = McpArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<McpMsg>,
        args: McpArgs,
    ) -> Result<McpState, ActorProcessingErr> {
        let http = reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(64)
            .build()?;
        myself.cast(McpMsg::Connect)?;
        Ok(McpState {
            args,
            http,
            generation: 0,
            attempts: 0,
            cancel: None,
            reconnect_pending: true,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<McpMsg>,
        message: McpMsg,
        state: &mut McpState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            McpMsg::Connect => {
                state.reconnect_pending = false;
                if state.cancel.is_some() {
                    return Ok(());
                }
                if let Err(error) = connect(&myself, state).await {
                    state.attempts += 1;
                    let delay = reconnect_delay(&state.args.config, state.attempts);
                    tracing::warn!(url = %state.args.url, %error, retry_in = ?delay, "cannot connect to the memory MCP server");
                    schedule_reconnect(&myself, state, delay);
                }
            }
            McpMsg::SessionEnded { generation } => {
                if generation == state.generation {
                    tracing::warn!(url = %state.args.url, "memory MCP session ended; reconnecting");
                    drop_session(state);
                    let delay = reconnect_delay(&state.args.config, state.attempts.max(1));
                    schedule_reconnect(&myself, state, delay);
                }
            }
            McpMsg::CallFailed { generation } => {
                if generation != state.generation || state.cancel.is_none() {
                    return Ok(());
                }
                let peer = state.args.session.borrow().as_ref().map(|s| s.peer.clone());
                let healthy = match peer {
                    Some(peer) => tokio::time::timeout(
                        state.args.config.connect_timeout,
                        peer.list_all_tools(),
                    )
                    .await
                    .is_ok_and(|r| r.is_ok()),
                    None => false,
                };
                if !healthy {
                    tracing::warn!(url = %state.args.url, "memory MCP session is broken; reconnecting");
                    drop_session(state);
                    state.attempts += 1;
                    let delay = reconnect_delay(&state.args.config, state.attempts);
                    schedule_reconnect(&myself, state, delay);
                }
            }
            McpMsg::ToolsChanged { generation } => {
                if generation != state.generation {
                    return Ok(());
                }
                let current = state.args.session.borrow().clone();
                if let Some(session) = current {
                    match session.peer.list_all_tools().await {
                        Ok(tools) => {
                            let (definitions, binds_user) = convert_tools(&tools);
                            tracing::info!(
                                tools = definitions.len(),
                                "memory MCP tool list changed"
                            );
                            state.args.session.send_replace(Some(Arc::new(Session {
                                peer: session.peer.clone(),
                                tools: Arc::new(ToolSet::new(definitions)),
                                binds_user,
                                generation,
                                session_id: session.session_id.clone(),
                            })));
                        }
                        Err(error) => tracing::warn!(%error, "cannot re-list MCP tools"),
                    }
                }
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<McpMsg>,
        state: &mut McpState,
    ) -> Result<(), ActorProcessingErr> {
        drop_session(state);
        Ok(())
    }
}

fn drop_session(state: &mut McpState) {
    state.args.session.send_replace(None);
    state.args.metrics.connected.set(0);
    if let Some(cancel) = state.cancel.take() {
        cancel.cancel();
    }
}

fn schedule_reconnect(myself: &ActorRef<McpMsg>, state: &mut McpState, delay: Duration) {
    if !state.reconnect_pending {
        state.reconnect_pending = true;
        myself.send_after(delay, || McpMsg::Connect);
    }
}

/// Exponential reconnect delay with jitter, from `reconnect_initial` up to `reconnect_max`.
fn reconnect_delay(config: &McpClientConfig, attempts: u32) -> Duration {
    crate::shared::retry::exponential_delay(
        config.reconnect_initial,
        config.reconnect_max,
        attempts.saturating_sub(1),
    )
}

async fn connect(myself: &ActorRef<McpMsg>, state: &mut McpState) -> Result<(), String> {
    let config = &state.args.config;
    let generation = state.generation + 1;
    let notifier = Notifier {
        actor: myself.clone(),
        generation,
    };
    let timeout = config.connect_timeout;
    let mut session_id = None;
    let running = match config.transport {
        McpTransport::StreamableHttp => {
            let mut transport_config =
                StreamableHttpClientTransportConfig::with_uri(state.args.url.clone())
                    .max_concurrent_requests(config.max_concurrent_calls.max(1));
            if let Some(token) = &config.token {
                transport_config = transport_config.auth_header(token.clone());
            }
            let transport =
                StreamableHttpClientTransport::with_client(state.http.clone(), transport_config);
            tokio::time::timeout(timeout, notifier.serve(transport))
                .await
                .map_err(|_| format!("no answer within {timeout:?}"))?
                .map_err(|e| e.to_string())?
        }
        McpTransport::Sse => {
            let transport = sse_client::connect(
                state.http.clone(),
                &state.args.url,
                config.token.as_deref(),
                timeout,
            )
            .await
            .map_err(|e| e.to_string())?;
            session_id = transport.session_id().map(str::to_owned);
            tokio::time::timeout(timeout, notifier.serve(transport))
                .await
                .map_err(|_| format!("no answer within {timeout:?}"))?
                .map_err(|e| e.to_string())?
        }
    };
    let tools = tokio::time::timeout(timeout, running.peer().list_all_tools())
        .await
        .map_err(|_| "tools/list timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let (definitions, binds_user) = convert_tools(&tools);
    state.generation = generation;
    state.attempts = 0;
    state.cancel = Some(running.cancellation_token());
    state.args.session.send_replace(Some(Arc::new(Session {
        peer: running.peer().clone(),
        tools: Arc::new(ToolSet::new(definitions)),
        binds_user,
        generation,
        session_id,
    })));
    state.args.metrics.connects.inc();
    state.args.metrics.connected.set(1);
    tracing::info!(url = %state.args.url, tools = tools.len(), generation, "connected to the memory MCP server");
    // Watch the session: when it ends, tell the actor.
    let actor = myself.clone();
    tokio::spawn(async move {
        let _ = running.waiting().await;
        let _ = actor.cast(McpMsg::SessionEnded { generation });
    });
    Ok(())
}

/// Turns MCP tools into OpenAI function definitions, generically: the tool's JSON Schema
/// becomes the function's parameters, minus the `user_id` argument the daemon fills in.
/// Returns the definitions and the names of the tools that take `user_id`.
pub fn convert_tools(tools: &[Tool]) -> (Vec<ToolDefinition>, HashSet<String>) {
    let mut binds_user = HashSet::new();
    let definitions = tools
        .iter()
        .map(|tool| {
            let mut schema = tool.input_schema.as_ref().clone();
            if hide_user_argument(&mut schema) {
                binds_user.insert(tool.name.to_string());
            }
            if !schema.contains_key("type") {
                schema.insert("type".into(), Value::String("object".into()));
            }
            if !schema.contains_key("properties") {
                schema.insert("properties".into(), Value::Object(JsonObject::new()));
            }
            schema.remove("$schema");
            ToolDefinition {
                kind: "function".into(),
                function: FunctionDefinition {
                    name: tool.name.to_string(),
                    description: tool.description.as_ref().map(|d| d.to_string()),
                    parameters: Value::Object(schema),
                },
            }
        })
        .collect();
    (definitions, binds_user)
}

/// Removes the `user_id` argument from an input schema wherever it is declared for the
/// arguments object: `properties` and `required` of the schema itself and of the subschemas
/// that apply to that same object (`allOf`, `anyOf`, `oneOf`, `then`, `else`, and local
/// `$ref` targets, as schemars writes flattened and tagged types). True when there was one:
/// the tool then takes the authenticated user. (A `user_id` inside another argument's
/// schema is a field of that argument and stays.)
fn hide_user_argument(schema: &mut JsonObject) -> bool {
    let mut root = Value::Object(std::mem::take(schema));
    // JSON pointers of the subschemas still to clean; each visited once (`$ref` cycles).
    let mut pending = vec![String::new()];
    let mut seen = HashSet::new();
    let mut found = false;
    while let Some(pointer) = pending.pop() {
        if !seen.insert(pointer.clone()) {
            continue;
        }
        let Some(Value::Object(node)) = root.pointer_mut(&pointer) else {
            continue;
        };
        if let Some(properties) = node.get_mut("properties").and_then(Value::as_object_mut) {
            found |= properties.remove(USER_ARGUMENT).is_some();
        }
        if let Some(required) = node.get_mut("required").and_then(Value::as_array_mut) {
            let before = required.len();
            required.retain(|r| r != USER_ARGUMENT);
            found |= required.len() != before;
            if required.is_empty() {
                node.remove("required");
            }
        }
        for key in ["allOf", "anyOf", "oneOf"] {
            if let Some(Value::Array(branches)) = node.get(key) {
                pending.extend((0..branches.len()).map(|i| format!("{pointer}/{key}/{i}")));
            }
        }
        for key in ["then", "else"] {
            if node.contains_key(key) {
                pending.push(format!("{pointer}/{key}"));
            }
        }
        if let Some(target) = node
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix('#'))
        {
            pending.push(target.to_owned());
        }
    }
    if let Value::Object(cleaned) = root {
        *schema = cleaned;
    }
    found
}

#[cfg(test)]
mod tests;
