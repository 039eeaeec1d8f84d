//! The daemon's sections (`memento serve`): `[server]`, `[auth]`, `[conversation]`, `[mcp]`.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The daemon's HTTP API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to bind. Loopback by default.
    pub host: IpAddr,
    /// Port to bind (0 picks a free one).
    pub port: u16,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Longest message accepted, in characters.
    pub max_message_chars: usize,
    /// Turns in progress at once across all users; more get 503.
    pub max_concurrent_turns: usize,
    /// On SIGTERM/SIGINT, how long in-flight turns may take to finish.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Extra `Host` names accepted besides loopback (DNS-rebinding protection); `"*"`
    /// accepts any.
    pub allowed_hosts: Vec<String>,
    /// Browser origins accepted besides loopback ones, e.g. `"https://app.example.com"`.
    /// A listed origin gets exact-origin CORS (with preflight); no other origin gets any.
    pub allowed_origins: Vec<String>,
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
}

/// Connection defaults shared by both servers.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16_384;
/// Default header-read timeout of both servers.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default request-body timeout of both servers.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default idle keep-alive timeout of both servers: above the 90 s idle timeout of common
/// client pools (reqwest, Python httpx keeps 5 s), so a client never reuses a connection the
/// server is closing.
pub const DEFAULT_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(120);

impl ServerConfig {
    /// The accept loop's limits.
    pub fn connection_limits(&self) -> crate::shared::edge::serve::ConnectionLimits {
        crate::shared::edge::serve::ConnectionLimits::new(
            self.max_connections,
            self.header_read_timeout,
            self.keep_alive_timeout,
        )
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 8080,
            max_body_bytes: 256 * 1024,
            max_message_chars: 32 * 1024,
            max_concurrent_turns: 20_000,
            shutdown_grace: Duration::from_secs(30),
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            keep_alive_timeout: DEFAULT_KEEP_ALIVE_TIMEOUT,
        }
    }
}

/// Bearer tokens of the daemon's API. With none configured, only loopback clients are served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// `user_id = "token"`: each token acts only for its own user.
    pub user_tokens: std::collections::BTreeMap<String, String>,
    /// Tokens of trusted front-ends (and the load-test harness) that may act for any user.
    pub service_tokens: Vec<String>,
}

/// Conversations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConversationConfig {
    /// Most LLM -> tools -> LLM rounds in one turn.
    pub max_tool_rounds: u32,
    /// Token budget of the history sent with each turn (oldest turns dropped first).
    pub history_token_budget: usize,
    /// A conversation idle longer than this is stopped (its history stays on disk and the
    /// next turn starts a new actor that reloads it). One minute by default, so an idle user
    /// holds no actor at all.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Most live conversation actors; the least recently used idle ones are evicted.
    pub max_actors: usize,
    /// Record the user id on traces (it may be personal data).
    pub record_user_id: bool,
    /// Record message and reply text on traces, for debugging only (it is personal data).
    pub record_content: bool,
    /// A conversation idle this long releases its cached history (it stays on disk and is
    /// reloaded on the next turn). Matters when `idle_timeout` is longer: a kept idle actor
    /// then holds no history.
    #[serde(with = "humantime_serde")]
    pub history_cache_idle: Duration,
    /// Most turns of one user waiting or running at once; more get 429 with `Retry-After`.
    pub max_queued_turns: usize,
    /// Most `delete_memory` calls run in one turn; further ones are answered as tool errors
    /// (a stored note that says "delete everything" must not empty the store).
    pub max_deletes_per_turn: usize,
    /// Key of the opaque user ids sent to the LLM provider and put on traces (HMAC-SHA256,
    /// at least 32 bytes). Unset: generated once into `DATA_DIR/trace-key` (mode 0600).
    pub trace_user_key: Option<String>,
}

impl Default for ConversationConfig {
    fn default() -> Self {
        ConversationConfig {
            max_tool_rounds: 4,
            history_token_budget: 3000,
            idle_timeout: Duration::from_secs(60),
            max_actors: 100_000,
            record_user_id: false,
            record_content: false,
            history_cache_idle: Duration::from_secs(60),
            max_queued_turns: 8,
            max_deletes_per_turn: 5,
            trace_user_key: None,
        }
    }
}

/// MCP transports the daemon can speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum McpTransport {
    /// Streamable HTTP (MCP 2025-03-26 and later), at `<url>` (e.g. `http://host:8000/mcp`).
    #[default]
    StreamableHttp,
    /// Legacy HTTP+SSE (MCP 2024-11-05), at `<url>` (e.g. `http://host:8000/sse`).
    Sse,
}

impl std::str::FromStr for McpTransport {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "streamable-http" => Ok(McpTransport::StreamableHttp),
            "sse" => Ok(McpTransport::Sse),
            other => Err(format!(
                "unknown MCP transport {other:?}: use streamable-http or sse"
            )),
        }
    }
}

/// The daemon's connection to the memory MCP server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct McpClientConfig {
    /// URL of an external MCP server (`http://host:8000/mcp`, or `.../sse` with
    /// `transport = "sse"`). Unset: the daemon starts the memory server in-process.
    pub url: Option<String>,
    /// `streamable-http` or `sse`.
    pub transport: McpTransport,
    /// Bearer token sent to the MCP server (also from MEMENTO_MCP_TOKEN).
    pub token: Option<String>,
    /// Port of the embedded memory server (0 picks a free one).
    pub embedded_port: u16,
    /// Longest wait for one tool call.
    #[serde(with = "humantime_serde")]
    pub call_timeout: Duration,
    /// Longest wait to connect and initialise.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// First reconnect delay; doubles up to `reconnect_max`.
    #[serde(with = "humantime_serde")]
    pub reconnect_initial: Duration,
    /// Longest reconnect delay.
    #[serde(with = "humantime_serde")]
    pub reconnect_max: Duration,
    /// Tool calls in flight at once over the session.
    pub max_concurrent_calls: usize,
    /// Streamable HTTP only: send each tool call as one stateless JSON-RPC POST (MCP
    /// 2026-07-28) answered with JSON, when the server serves those; false keeps every call
    /// on the session (SSE answers).
    pub json_calls: bool,
}

impl Default for McpClientConfig {
    fn default() -> Self {
        McpClientConfig {
            url: None,
            transport: McpTransport::StreamableHttp,
            token: None,
            embedded_port: 0,
            call_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            reconnect_initial: Duration::from_millis(200),
            reconnect_max: Duration::from_secs(10),
            max_concurrent_calls: 1024,
            json_calls: true,
        }
    }
}
