//! The memory server's sections (`memento mcp-server`, or embedded): `[mcp_server]`,
//! `[storage]`.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{
    DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_KEEP_ALIVE_TIMEOUT, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_REQUEST_TIMEOUT,
};

/// The memory MCP server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct McpServerConfig {
    /// Address to bind. Loopback by default; anything else needs a token or `insecure`.
    pub host: IpAddr,
    /// Port to bind (0 picks a free one).
    pub port: u16,
    /// Bearer token required on every request of both transports when set.
    pub token: Option<String>,
    /// Allow a non-loopback bind without a token.
    pub insecure: bool,
    /// Serve without any token (loopback only), for token-less clients such as the seed's.
    /// Without it and without a token, `memento mcp-server` generates one into
    /// `DATA_DIR/mcp-token`.
    pub insecure_no_token: bool,
    /// Extra `Host` names accepted besides loopback (DNS-rebinding protection); `"*"`
    /// accepts any.
    pub allowed_hosts: Vec<String>,
    /// Browser origins accepted besides loopback ones, e.g. `"https://app.example.com"`.
    pub allowed_origins: Vec<String>,
    /// Largest memory content accepted, in bytes.
    pub max_content_bytes: usize,
    /// Largest HTTP request body accepted, in bytes.
    pub max_request_bytes: usize,
    /// Streamable HTTP and SSE sessions idle longer than this are closed.
    #[serde(with = "humantime_serde")]
    pub session_idle_timeout: Duration,
    /// Interval of keep-alive comments on SSE streams.
    #[serde(with = "humantime_serde")]
    pub sse_keep_alive: Duration,
    /// Most open client connections; one more gets 503 and is closed.
    pub max_connections: usize,
    /// Time a client has to send a request's headers (and to start one on a new
    /// connection).
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Time a client has to send a request's body.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// A kept-alive connection idle this long between requests is closed.
    #[serde(with = "humantime_serde")]
    pub keep_alive_timeout: Duration,
    /// Answer stateless requests (MCP 2026-07-28) with one `application/json` body instead
    /// of an SSE stream when the handler sends nothing before its result. Sessions keep
    /// their SSE answers.
    pub json_response: bool,
    /// Answer a well-formed stateless `tools/call` (MCP 2026-07-28, JSON answers on) in
    /// Memento's own handler instead of through rmcp's per-request service; anything else,
    /// and every error rmcp would report, still goes to rmcp. The answer is the same.
    pub direct_tool_calls: bool,
}

impl McpServerConfig {
    /// The accept loop's limits.
    pub fn connection_limits(&self) -> crate::shared::edge::serve::ConnectionLimits {
        crate::shared::edge::serve::ConnectionLimits::new(
            self.max_connections,
            self.header_read_timeout,
            self.keep_alive_timeout,
        )
    }
}

impl Default for McpServerConfig {
    fn default() -> Self {
        McpServerConfig {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 8000,
            token: None,
            insecure: false,
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            max_content_bytes: 1024 * 1024,
            max_request_bytes: 4 * 1024 * 1024,
            session_idle_timeout: Duration::from_secs(300),
            sse_keep_alive: Duration::from_secs(15),
            insecure_no_token: false,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            keep_alive_timeout: DEFAULT_KEEP_ALIVE_TIMEOUT,
            json_response: true,
            direct_tool_calls: true,
        }
    }
}

/// Storage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Directory of the SQLite database (created if missing).
    pub data_dir: PathBuf,
    /// Reader threads (concurrent queries).
    pub readers: usize,
    /// Most stores committed together in one transaction (one fsync).
    pub max_batch: usize,
    /// How long a store's idempotency key is remembered (a replay within it stores nothing).
    #[serde(with = "humantime_serde")]
    pub idempotency_window: Duration,
    /// Storage jobs queued (writes, and reads) before a call is refused as busy (a tool
    /// error asking to retry) instead of waiting.
    pub queue_capacity: usize,
    /// Where memories live: `sqlite` (in `data_dir`, no other service) or `postgres` (at
    /// `postgres_url`, shared by every memory server of a deployment). The daemon's
    /// conversation histories follow it (`history::HistoryStore::open_config`).
    pub backend: StorageBackend,
    /// PostgreSQL connection URL for `backend = "postgres"`
    /// (`postgresql://user:password@host:port/db`). Its password is never logged.
    pub postgres_url: SecretUrl,
    /// Most connections in the PostgreSQL pool.
    pub postgres_max_connections: usize,
    /// What an acknowledged store survives, with SQLite: `full` (the default: every commit
    /// is fsynced, so it survives a power cut) or `normal` (the commit is in the WAL file
    /// when acknowledged: it survives the process being killed, and the last commits may be
    /// lost if the machine loses power; no fsync on the commit path).
    pub sync: StorageSync,
}

/// SQLite's `synchronous` setting for the memory store (`storage.sync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageSync {
    /// `PRAGMA synchronous=FULL`: every commit is fsynced before it is acknowledged.
    #[default]
    Full,
    /// `PRAGMA synchronous=NORMAL` (in WAL mode): commits are written, fsynced at checkpoints.
    Normal,
}

/// The memory store's engine (`storage.backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    /// SQLite in `storage.data_dir` (the default).
    #[default]
    Sqlite,
    /// PostgreSQL at `storage.postgres_url`.
    Postgres,
}

/// A connection URL that may carry a password: `Debug` shows it redacted
/// ([`crate::shared::pg::redact`]); [`SecretUrl::expose`] gives the real text to the driver.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretUrl(String);

impl SecretUrl {
    /// Wraps a URL.
    pub fn new(url: impl Into<String>) -> SecretUrl {
        SecretUrl(url.into())
    }
    /// The URL, password included: for the driver only, never for logs.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// True when no URL is set.
    pub fn is_empty(&self) -> bool {
        self.0.trim().is_empty()
    }
}

impl std::fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", crate::shared::pg::redact(&self.0))
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            data_dir: PathBuf::from("./data"),
            readers: 4,
            max_batch: 512,
            idempotency_window: Duration::from_secs(24 * 3600),
            backend: StorageBackend::Sqlite,
            postgres_url: SecretUrl::default(),
            postgres_max_connections: 16,
            queue_capacity: 4096,
            sync: StorageSync::Full,
        }
    }
}
