//! The MCP actor: the session's lifecycle (connect, list tools, watch for the end, reconnect
//! with backoff, re-list on `notifications/tools/list_changed`). No user's call passes
//! through its mailbox; see [`super::McpHandle::call_tool`].

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use rmcp::model::{ClientCapabilities, ClientConfig, Implementation};
use rmcp::service::{NotificationContext, RunningServiceCancellationToken};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use super::{McpMetrics, Session, convert_tools, direct, sse_client};
use crate::daemon::llm::types::ToolSet;
use crate::shared::config::{McpClientConfig, McpTransport};

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
    pub(super) config: McpClientConfig,
    pub(super) url: String,
    pub(super) session: watch::Sender<Option<Arc<Session>>>,
    pub(super) metrics: Arc<McpMetrics>,
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
    /// The tasks watching each session's end, joined in `post_stop`.
    watchers: TaskTracker,
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
            watchers: TaskTracker::new(),
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
                                direct: session.direct.clone(),
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
        // The watchers end with their sessions, cancelled just now.
        state.watchers.close();
        let bound = state.args.config.connect_timeout;
        if tokio::time::timeout(bound, state.watchers.wait())
            .await
            .is_err()
        {
            tracing::warn!("a memory MCP session did not end within {bound:?}");
        }
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
pub(super) fn reconnect_delay(config: &McpClientConfig, attempts: u32) -> Duration {
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
    let direct = match config.transport {
        McpTransport::StreamableHttp if config.json_calls => {
            probe_direct(state.http.clone(), &state.args.url, config).await
        }
        _ => None,
    };
    state.generation = generation;
    state.attempts = 0;
    state.cancel = Some(running.cancellation_token());
    state.args.session.send_replace(Some(Arc::new(Session {
        peer: running.peer().clone(),
        tools: Arc::new(ToolSet::new(definitions)),
        binds_user,
        generation,
        session_id,
        direct,
    })));
    state.args.metrics.connects.inc();
    state.args.metrics.connected.set(1);
    tracing::info!(url = %state.args.url, tools = tools.len(), generation, "connected to the memory MCP server");
    // Watch the session: when it ends, tell the actor.
    let actor = myself.clone();
    state.watchers.spawn(async move {
        let _ = running.waiting().await;
        let _ = actor.cast(McpMsg::SessionEnded { generation });
    });
    Ok(())
}

/// A direct caller when the server serves stateless JSON-RPC requests (a stateless
/// `tools/list` succeeds); `None` keeps the calls on the session.
async fn probe_direct(
    http: reqwest::Client,
    url: &str,
    config: &McpClientConfig,
) -> Option<Arc<direct::DirectCaller>> {
    let caller = match direct::DirectCaller::new(http, url, config.token.as_deref()) {
        Ok(caller) => caller,
        Err(error) => {
            tracing::info!(%error, "memory MCP calls stay on the session");
            return None;
        }
    };
    match tokio::time::timeout(config.connect_timeout, caller.probe()).await {
        Ok(Ok(())) => {
            tracing::info!(
                protocol = direct::PROTOCOL_VERSION,
                "memory MCP tool calls go as stateless JSON-RPC POSTs"
            );
            Some(Arc::new(caller))
        }
        Ok(Err(error)) => {
            tracing::info!(%error, "the memory MCP server serves no stateless requests; calls stay on the session");
            None
        }
        Err(_) => {
            tracing::info!("stateless probe timed out; memory MCP calls stay on the session");
            None
        }
    }
}
