//! `memento serve`: wires the actors and the HTTP API together and owns the shutdown order.
//!
//! Start-up: history store -> memory MCP server (embedded unless `mcp.url` is set) -> LLM
//! actor -> MCP actor -> supervisor -> HTTP; the LLM, MCP and conversation supervisor
//! actors are linked under a root supervisor ([`supervisor::root`]) that reports a death. Shutdown (SIGTERM/SIGINT, or
//! [`Daemon::shutdown`]): stop accepting HTTP, let in-flight turns finish within
//! `server.shutdown_grace`, stop the conversations (each turn's history is committed before
//! its answer), join the history threads, then the MCP and LLM actors, then the embedded
//! server.

//!
//! The daemon side lives under this module:
//! - [`llm`]: the shared LLM client actor, its providers, limits and the offline model.
//! - [`limits`]: the quotas behind the LLM actor: governor in this process, or shared
//!   through Redis with a local fallback (`llm/limits/keepers.rs`, beside the seam).
//! - [`mcp`]: the shared MCP connection actor (and the legacy SSE client transport).
//! - [`history`]: conversation histories (SQLite or PostgreSQL) and per-user leases.
//! - [`conversation`]: one actor per user; the tool-calling turn.
//! - [`supervisor`]: spawns, restarts and evicts conversations.
//! - [`http`]: the daemon's HTTP API (its own routes, the OpenAI-compatible endpoint, the
//!   web page).

pub mod conversation;
pub mod history;
pub mod http;
/// The quotas' keepers, at their old path (they live beside the `Limits` seam in `llm`).
pub use llm::limits::keepers as limits;
pub mod llm;
pub mod mcp;
pub mod supervisor;
#[cfg(test)]
pub(crate) mod testing;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::daemon::history::{HistoryError, HistoryStore};
use crate::daemon::http::{ApiState, auth::Auth};
use crate::daemon::llm::{LlmError, LlmHandle};
use crate::daemon::mcp::{McpError, McpHandle};
use crate::daemon::supervisor::root::RootHandle;
use crate::daemon::supervisor::{SupervisorArgs, SupervisorHandle};
use crate::memory_server::{self, EmbeddedError, RunningMemoryServer};
use crate::shared::config::{Config, McpServerConfig, McpTransport};

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The history store failed.
    #[error(transparent)]
    History(#[from] HistoryError),
    /// The embedded memory server failed.
    #[error("embedded memory server: {0}")]
    Embedded(#[from] EmbeddedError),
    /// The LLM actor failed to start.
    #[error("LLM client: {0}")]
    Llm(#[from] LlmError),
    /// The MCP actor failed to start.
    #[error("MCP client: {0}")]
    Mcp(#[from] McpError),
    /// An actor could not be spawned.
    #[error("cannot spawn an actor: {0}")]
    Spawn(#[from] ractor::SpawnErr),
    /// The API address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A running daemon.
pub struct Daemon {
    api_addr: SocketAddr,
    mcp_url: String,
    http_shutdown: CancellationToken,
    http_task: JoinHandle<()>,
    root: RootHandle,
    supervisor: SupervisorHandle,
    llm: LlmHandle,
    mcp: McpHandle,
    embedded: Option<RunningMemoryServer>,
    grace: std::time::Duration,
    history: HistoryStore,
}

impl Daemon {
    /// Starts everything; returns once the API is listening.
    pub async fn start(config: Config) -> Result<Daemon, DaemonError> {
        Self::start_with_telemetry(config, None).await
    }

    /// Like [`Daemon::start`], reporting trace export counters at `/metrics`.
    pub async fn start_with_telemetry(
        config: Config,
        export_stats: Option<Arc<crate::shared::telemetry::ExportStats>>,
    ) -> Result<Daemon, DaemonError> {
        let history = HistoryStore::open_config(&config.storage).await?;
        // The root supervisor first: the shared actors are linked to it as they start.
        let root = RootHandle::spawn().await?;
        let mut mcp_config = config.mcp.clone();
        let (mcp_url, embedded) = match &config.mcp.url {
            Some(url) => (url.clone(), None),
            None => {
                // A random token keeps other local processes off the embedded server.
                let token = uuid::Uuid::new_v4().simple().to_string();
                let server_config = McpServerConfig {
                    host: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
                    port: config.mcp.embedded_port,
                    token: Some(token.clone()),
                    ..config.mcp_server.clone()
                };
                let server = memory_server::start_embedded_with(
                    &server_config,
                    &config.storage,
                    &config.embeddings,
                    &config.llm,
                    CancellationToken::new(),
                )
                .await?;
                mcp_config.transport = McpTransport::StreamableHttp;
                mcp_config.token = Some(token);
                tracing::info!(url = %server.url(), "embedded memory MCP server started");
                (format!("{}/mcp", server.url()), Some(server))
            }
        };
        // Keyed pseudonyms of user ids for the provider and traces (issue 11).
        let pseudonyms = crate::daemon::llm::pseudonym::UserPseudonyms::load(
            config.conversation.trace_user_key.as_deref(),
            &config.storage.data_dir,
        )
        .map_err(|e| LlmError::Config(e.to_string()))?;
        let llm = LlmHandle::spawn_with_limits(config.llm.clone(), &config.limits)
            .await?
            .with_pseudonyms(Arc::new(pseudonyms));
        root.link("llm", llm.actor_cell());
        let mcp = McpHandle::spawn(mcp_config.clone(), mcp_url.clone()).await?;
        root.link("mcp", mcp.actor_cell());
        if !mcp.wait_connected(mcp_config.connect_timeout).await {
            tracing::warn!(url = %mcp_url, "memory MCP server not reachable yet; turns will report the memory tools unavailable until it is");
        }
        let supervisor = SupervisorHandle::spawn(SupervisorArgs {
            llm: llm.clone(),
            mcp: mcp.clone(),
            history: history.clone(),
            config: config.conversation.clone(),
            max_concurrent_turns: config.server.max_concurrent_turns,
        })
        .await?;
        root.link("conversations", supervisor.actor_cell());

        let auth = Auth::new(&config.auth);
        if auth.is_open() {
            tracing::warn!("no API tokens configured: serving loopback clients only");
        }
        let policy = crate::shared::edge::guard::OriginPolicy::new(
            "server",
            &config.server.allowed_hosts,
            &config.server.allowed_origins,
            auth.is_open(),
        );
        let state = ApiState::new(http::ApiShared {
            root: root.clone(),
            supervisor: supervisor.clone(),
            llm: llm.clone(),
            mcp: mcp.clone(),
            auth: Arc::new(auth),
            config: Arc::new(config.server.clone()),
            turn_deadline: config.llm.turn_deadline,
            export_stats: export_stats.clone(),
            policy: Arc::new(policy),
        });
        let addr = SocketAddr::new(config.server.host, config.server.port);
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| DaemonError::Bind { addr, source })?;
        let api_addr = listener
            .local_addr()
            .map_err(|source| DaemonError::Bind { addr, source })?;
        let http_shutdown = CancellationToken::new();
        let http_task = tokio::spawn(crate::shared::edge::serve::serve(
            listener,
            http::router(state),
            config.server.connection_limits(),
            Arc::new(crate::shared::edge::serve::ConnectionStats::default()),
            http_shutdown.clone(),
        ));
        tracing::info!(%api_addr, llm = %llm.provider(), model = %llm.model(), "memento daemon listening");
        Ok(Daemon {
            api_addr,
            mcp_url,
            http_shutdown,
            http_task,
            root,
            supervisor,
            llm,
            mcp,
            embedded,
            grace: config.server.shutdown_grace,
            history,
        })
    }

    /// The API address.
    pub fn addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// The API base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.api_addr)
    }

    /// The MCP server the daemon uses.
    pub fn mcp_url(&self) -> &str {
        &self.mcp_url
    }

    /// The supervisor (tests and metrics).
    pub fn supervisor(&self) -> &SupervisorHandle {
        &self.supervisor
    }

    /// The root supervisor (tests and readiness).
    pub fn root(&self) -> &RootHandle {
        &self.root
    }

    /// The MCP actor's handle.
    pub fn mcp(&self) -> &McpHandle {
        &self.mcp
    }

    /// Graceful shutdown in the documented order, within one bound: `server.shutdown_grace`
    /// covers draining the turns and stopping everything; a step that finds it spent still
    /// gets `supervisor::STOP_FLOOR` to stop.
    pub async fn shutdown(self) {
        tracing::info!("shutting down: no new requests; finishing turns in flight");
        let started = tokio::time::Instant::now();
        let deadline = started + self.grace;
        let time_left = || crate::daemon::supervisor::time_left(deadline);
        // The shared actors' stops from here on are planned, not failures.
        self.root.begin_shutdown();
        // Stop accepting first; in-flight requests keep running.
        self.http_shutdown.cancel();
        self.supervisor.shutdown(deadline).await;
        // The turns are done (or stopped): what is left of the HTTP side is its connections.
        let _ = tokio::time::timeout(time_left(), self.http_task).await;
        // Every turn's append is committed; finish the queue, truncate the WAL, join.
        let _ = tokio::time::timeout(time_left(), self.history.close()).await;
        self.mcp.stop(time_left()).await;
        self.llm.stop(time_left()).await;
        // Nothing should be left linked; the root stops whatever is, then itself.
        self.root.stop(time_left()).await;
        if let Some(server) = self.embedded
            && tokio::time::timeout(time_left(), server.shutdown())
                .await
                .is_err()
        {
            tracing::warn!("the embedded memory server did not stop within the shutdown bound");
        }
        tracing::info!(
            took_ms = started.elapsed().as_millis() as u64,
            "shutdown complete"
        );
    }
}
