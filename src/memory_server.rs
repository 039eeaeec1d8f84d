//! The memory MCP server: `memento mcp-server`, also embedded in `memento serve`.
//!
//! One axum router serves
//! - `/mcp`: Streamable HTTP (rmcp's `StreamableHttpService`), the current MCP transport:
//!   sessions for clients that initialise one (answers as SSE streams), and stateless
//!   requests for those that negotiate MCP 2026-07-28 per request (the daemon's tool calls),
//!   answered with one `application/json` body (`mcp_server.json_response`);
//! - `/sse` + `/messages`: the legacy HTTP+SSE transport of MCP 2024-11-05 (our own adapter
//!   in [`sse`], since rmcp 3 dropped its SSE server);
//! - `/healthz` and `/stats` (session counts, storage counters).
//!
//! Every request of both transports passes [`guard`]: bearer token (when configured), then
//! `Host` and `Origin` validation against DNS rebinding. The tools themselves live in
//! `tools`; this file only adapts them to rmcp's `ServerHandler`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CompleteRequestParams, CompleteResult, ErrorData,
    Implementation, InitializeResult, ListResourceTemplatesResult, ListResourcesResult,
    ListToolsResult, PaginatedRequestParams, ReadResourceRequestParams, ReadResourceResponse,
    ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{RoleServer, ServerHandler};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::memory_server::storage::MemoryStore;
use crate::shared::config::McpServerConfig;

mod direct_calls;
pub mod embeddings;
pub mod guard;
pub mod resources;
pub mod sse;
pub mod storage;
pub mod token_file;
pub(crate) mod tools;
pub mod transfer;

/// Server name announced in `initialize`.
pub const SERVER_NAME: &str = "memento-memory";

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum MemoryServerError {
    /// Binding the listen address failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

// === impl MemoryServer ===

/// The MCP service: the memory tools over a [`MemoryStore`]. Cheap to clone (one per
/// session).
#[derive(Clone)]
pub struct MemoryServer {
    store: Arc<dyn MemoryStore>,
    tools: Arc<Vec<Tool>>,
    limits: tools::Limits,
    /// This session's `logging/setLevel` (see [`MemoryServer::for_session`]).
    log_level: resources::LogLevel,
}

impl MemoryServer {
    /// A server over `store` with the limits of `config`.
    pub fn new(store: Arc<dyn MemoryStore>, config: &McpServerConfig) -> MemoryServer {
        MemoryServer {
            store,
            tools: Arc::new(tools::tool_list()),
            limits: tools::Limits {
                max_content_bytes: config.max_content_bytes,
            },
            log_level: resources::LogLevel::default(),
        }
    }

    /// A copy for a new session: the same store and tools, its own log level.
    pub fn for_session(&self) -> MemoryServer {
        MemoryServer {
            log_level: resources::LogLevel::default(),
            ..self.clone()
        }
    }

    /// Runs one `tools/call` under its MCP server span (continuing the caller's trace from
    /// `_meta`): the request's own `_meta` first, then `context_meta` (what a transport put
    /// in the request context). `None` for an unknown tool; an error only when `cancel`
    /// fires first. Shared by rmcp's handler and the direct path ([`direct_calls`]).
    pub(crate) async fn run_tool_call(
        &self,
        name: &str,
        arguments: rmcp::model::JsonObject,
        request_meta: Option<&rmcp::model::JsonObject>,
        context_meta: &rmcp::model::JsonObject,
        request_id: &rmcp::model::RequestId,
        cancel: &CancellationToken,
    ) -> Result<Option<rmcp::model::CallToolResult>, ErrorData> {
        let store_meta = tools::StoreMeta::from_layers(request_meta, context_meta);
        // The MCP server span continues the caller's trace from `_meta` (MCP semantic
        // conventions), or starts one.
        let span = crate::shared::telemetry::tools_call_span!(
            name,
            "server",
            jsonrpc.request.id = %request_id,
            error.type = tracing::field::Empty,
        );
        let trace_meta = if context_meta.contains_key("traceparent") {
            Some(context_meta)
        } else {
            request_meta
        };
        if let Some(meta) = trace_meta {
            crate::shared::telemetry::extract_from_meta(&span, meta);
        }
        let call = tools::call(
            self.store.as_ref(),
            self.limits,
            name,
            arguments,
            &store_meta,
        );
        // A cancelled request (client gone, `notifications/cancelled`) stops its work.
        let call = tracing::Instrument::instrument(call, span.clone());
        let result = tokio::select! {
            result = call => result,
            () = cancel.cancelled() => {
                return Err(ErrorData::internal_error("request cancelled", None));
            }
        };
        if result.as_ref().is_some_and(|r| r.is_error == Some(true)) {
            span.record("error.type", "tool_error");
        }
        Ok(result)
    }

    /// True when `name` is one of the server's tools.
    pub(crate) fn has_tool(&self, name: &str) -> bool {
        self.tools.iter().any(|tool| tool.name == name)
    }

    /// Sends a `notifications/message` to the session when it asked for this level.
    #[allow(deprecated)]
    async fn log(
        &self,
        context: &RequestContext<RoleServer>,
        level: rmcp::model::LoggingLevel,
        data: serde_json::Value,
    ) {
        if !self.log_level.wants(resources::rank(level)) {
            return;
        }
        let mut message = rmcp::model::LoggingMessageNotificationParam::new(level, data);
        message.logger = Some(SERVER_NAME.into());
        if let Err(error) = context.peer.notify_logging_message(message).await {
            tracing::debug!(%error, "cannot send a log notification");
        }
    }
}

impl ServerHandler for MemoryServer {
    // MCP logging is deprecated by SEP-2577 but still in the protocol versions clients speak.
    #[allow(deprecated)]
    fn get_info(&self) -> ServerConfig {
        InitializeResult::new(
            ServerCapabilities::builder()
                .enable_logging()
                .enable_completions()
                .enable_resources()
                .enable_tools()
                .build(),
        )
        .with_server_info(Implementation::new(SERVER_NAME, env!("CARGO_PKG_VERSION")))
        .with_instructions(
            "Memento's memory store. Every tool acts for the user named in `user_id`: \
                 store_memory keeps a note, retrieve_memories searches, get_memory and \
                 delete_memory act on one memory by id, list_tags lists tags. Each memory is \
                 also a resource, memento://users/{user_id}/memories/{id}; resources/list \
                 lists every user's unless _meta names one as io.memento/user-id.",
        )
    }

    async fn list_resources(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        resources::list(self.store.as_ref(), request, &context.meta.0.0).await
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(resources::templates())
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        Ok(resources::read(self.store.as_ref(), &request.uri)
            .await?
            .into())
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, ErrorData> {
        resources::complete(self.store.as_ref(), request).await
    }

    #[allow(deprecated)]
    async fn set_level(
        &self,
        request: rmcp::model::SetLevelRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.log_level.set(resources::rank(request.level));
        Ok(())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(self.tools.as_ref().clone()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let name = request.name.clone();
        let result = self
            .run_tool_call(
                &name,
                request.arguments.unwrap_or_default(),
                request.meta.as_ref().map(|m| &m.0.0),
                &context.meta.0.0,
                &context.id,
                &context.ct,
            )
            .await?;
        #[allow(deprecated)]
        if let Some(result) = &result
            && self
                .log_level
                .wants(resources::rank(rmcp::model::LoggingLevel::Warning))
        {
            let failed = result.is_error == Some(true);
            let level = if failed {
                rmcp::model::LoggingLevel::Warning
            } else {
                rmcp::model::LoggingLevel::Debug
            };
            let text: Vec<&str> = result
                .content
                .iter()
                .filter_map(|c| c.as_text().map(|t| t.text.as_str()))
                .collect();
            self.log(
                &context,
                level,
                json!({ "tool": name, "is_error": failed, "message": text.join("\n") }),
            )
            .await;
        }
        match result {
            Some(result) => Ok(result.into()),
            None => Err(ErrorData::invalid_params(
                format!(
                    "unknown tool {name:?}; available tools: {}",
                    self.tools
                        .iter()
                        .map(|t| t.name.as_ref())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                None,
            )),
        }
    }
}

// === Serving ===

/// A running memory MCP server.
pub struct RunningMemoryServer {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
    sse: sse::SseSessions,
    /// The legacy SSE sessions' tasks.
    sse_tasks: tokio_util::task::TaskTracker,
    streamable: Arc<LocalSessionManager>,
    /// Closed (its threads joined) once the server has stopped.
    store: Arc<dyn MemoryStore>,
}

impl RunningMemoryServer {
    /// The bound address (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL, e.g. `http://127.0.0.1:8000`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Live legacy SSE sessions.
    pub fn sse_sessions(&self) -> usize {
        self.sse.len()
    }

    /// Live Streamable HTTP sessions.
    pub async fn streamable_sessions(&self) -> usize {
        self.streamable.sessions.read().await.len()
    }

    /// Stops accepting, ends every session, waits for the server task and the legacy
    /// SSE sessions' tasks (each ends when the shutdown token is cancelled), then closes the
    /// store: its queued work finishes and its threads are joined.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
        self.sse_tasks.close();
        self.sse_tasks.wait().await;
        self.store.close().await;
    }

    /// Resolves when the server stops (after `shutdown` or when its token is cancelled).
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Binds `config.host:config.port` and serves until `shutdown` is cancelled.
pub async fn start(
    config: &McpServerConfig,
    store: Arc<dyn MemoryStore>,
    shutdown: CancellationToken,
) -> Result<RunningMemoryServer, MemoryServerError> {
    start_with_telemetry(config, store, shutdown, None).await
}

/// Like [`start`]; `/stats` also shows the OTLP export counters (`telemetry`: spans queued,
/// exported, dropped, failed export requests) when `export_stats` is given.
pub async fn start_with_telemetry(
    config: &McpServerConfig,
    store: Arc<dyn MemoryStore>,
    shutdown: CancellationToken,
    export_stats: Option<Arc<crate::shared::telemetry::ExportStats>>,
) -> Result<RunningMemoryServer, MemoryServerError> {
    let addr = SocketAddr::new(config.host, config.port);
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| MemoryServerError::Bind { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| MemoryServerError::Bind { addr, source })?;
    let server = MemoryServer::new(store.clone(), config);

    let mut session_manager = LocalSessionManager::default();
    session_manager.session_config.keep_alive = Some(config.session_idle_timeout);
    let session_manager = Arc::new(session_manager);
    let guard_state = Arc::new(guard::Guard::new(config));
    let allowed_hosts = guard_state.policy().allowed_hosts().map(<[String]>::to_vec);
    let mut http_config = StreamableHttpServerConfig::default()
        .with_cancellation_token(shutdown.child_token())
        .with_sse_keep_alive(Some(config.sse_keep_alive))
        .with_max_request_body_bytes(config.max_request_bytes)
        // Sessions stay for the clients that initialise one (legacy_session_mode, the
        // default); requests negotiating 2026-07-28 per request are served statelessly,
        // and with this their answer is one JSON body instead of an SSE stream.
        .with_json_response(config.json_response);
    // `guard` already checked Host; rmcp's own check is kept as a second line with the same
    // list (or off when any host is allowed).
    http_config = match &allowed_hosts {
        Some(hosts) => http_config.with_allowed_hosts(hosts.clone()),
        None => http_config.disable_allowed_hosts(),
    };
    let factory_server = server.clone();
    let streamable = StreamableHttpService::new(
        move || Ok(factory_server.for_session()),
        session_manager.clone(),
        http_config,
    );

    let direct = direct_calls::DirectCalls::new(server.clone(), shutdown.child_token());
    let direct_answered = direct.answered();
    let mcp = Router::new().nest_service("/mcp", streamable);
    // In front of rmcp: well-formed stateless tools/calls are answered directly.
    let mcp = if config.json_response && config.direct_tool_calls {
        mcp.layer(axum::middleware::from_fn_with_state(
            direct,
            direct_calls::answer,
        ))
    } else {
        mcp
    };

    let sse_sessions = sse::SseSessions::default();
    let sse_state = sse::SseState {
        server: server.clone(),
        sessions: sse_sessions.clone(),
        shutdown: shutdown.child_token(),
        keep_alive: config.sse_keep_alive,
        idle_timeout: config.session_idle_timeout,
        tasks: tokio_util::task::TaskTracker::new(),
    };
    let sse_tasks = sse_state.tasks.clone();
    let stats_store = store.clone();
    let stats_sse = sse_sessions.clone();
    let stats_streamable = session_manager.clone();
    let connection_stats = Arc::new(crate::shared::edge::serve::ConnectionStats::default());
    let stats_connections = connection_stats.clone();
    let body_limits = crate::shared::edge::body::BodyLimits {
        max_bytes: config.max_request_bytes,
        timeout: config.request_timeout,
        key: "mcp_server.max_request_bytes",
    };
    let app = mcp
        .merge(sse::router(sse_state, config.max_request_bytes))
        .route(
            "/stats",
            get(move || {
                let store = stats_store.clone();
                let sse = stats_sse.clone();
                let streamable = stats_streamable.clone();
                let connections = stats_connections.clone();
                let export = export_stats.clone();
                let direct = direct_answered.clone();
                async move {
                    use std::sync::atomic::Ordering::Relaxed;
                    let mut stats = json!({
                        "sse_sessions": sse.len(),
                        "streamable_sessions": streamable.sessions.read().await.len(),
                        "direct_tool_calls": direct.load(Relaxed),
                        "storage": store.stats(),
                        "connections": {
                            "open": connections.open.load(Relaxed),
                            "refused": connections.refused.load(Relaxed),
                            "timed_out": connections.timed_out.load(Relaxed),
                        },
                    });
                    if let Some(export) = export {
                        stats["telemetry"] = json!({
                            "spans_queued": export.queued.get(),
                            "spans_exported": export.exported.get(),
                            "spans_dropped": export.dropped.get(),
                            "export_failures": export.failed_batches.get(),
                        });
                    }
                    axum::Json(stats)
                }
            }),
        )
        // Bodies are read after the guard (token first) and under their own limits.
        .layer(axum::middleware::from_fn_with_state(
            body_limits,
            crate::shared::edge::body::bounded,
        ))
        .layer(axum::middleware::from_fn_with_state(
            guard_state,
            guard::check,
        ))
        .route("/healthz", get(|| async { "ok" }));

    let limits = config.connection_limits();
    let task = tokio::spawn(crate::shared::edge::serve::serve(
        listener,
        app,
        limits,
        connection_stats,
        shutdown.clone(),
    ));
    tracing::info!(%addr, "memory MCP server listening (Streamable HTTP at /mcp, legacy SSE at /sse)");
    Ok(RunningMemoryServer {
        addr,
        shutdown,
        task,
        sse: sse_sessions,
        sse_tasks,
        streamable: session_manager,
        store,
    })
}

/// Starts the memory server inside another process (`memento serve` without `mcp.url`):
/// opens the configured store (`storage.backend`) and serves on loopback at `port` (0 picks
/// one). The caller still talks to it over MCP; it never sees the store.
pub async fn start_embedded(
    config: &McpServerConfig,
    storage: &crate::shared::config::StorageConfig,
    shutdown: CancellationToken,
) -> Result<RunningMemoryServer, EmbeddedError> {
    start_embedded_with(
        config,
        storage,
        &crate::memory_server::embeddings::EmbeddingsConfig::default(),
        &crate::daemon::llm::LlmConfig::default(),
        shutdown,
    )
    .await
}

/// [`start_embedded`] with the `[embeddings]` provider (the Azure one uses `[llm]`'s
/// endpoint and key).
pub async fn start_embedded_with(
    config: &McpServerConfig,
    storage: &crate::shared::config::StorageConfig,
    embeddings: &crate::memory_server::embeddings::EmbeddingsConfig,
    llm: &crate::daemon::llm::LlmConfig,
    shutdown: CancellationToken,
) -> Result<RunningMemoryServer, EmbeddedError> {
    let store = crate::memory_server::storage::open(storage).await?;
    let store = crate::memory_server::embeddings::wrap_configured(store, storage, embeddings, llm)?;
    Ok(start(config, store, shutdown).await?)
}

/// Why the embedded server could not start.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// The store could not be opened.
    #[error(transparent)]
    Storage(#[from] crate::memory_server::storage::StorageError),
    /// The embeddings provider could not start.
    #[error(transparent)]
    Embeddings(#[from] crate::memory_server::embeddings::EmbedError),
    /// The server could not bind.
    #[error(transparent)]
    Server(#[from] MemoryServerError),
}
