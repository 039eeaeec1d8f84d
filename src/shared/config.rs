//! The configuration tree and how it is loaded.
//!
//! Precedence: command-line flag > environment > file > built-in default.
//!
//! - The file is `config/memento.toml` (every key documented there), or `--config PATH` /
//!   `MEMENTO_CONFIG`. A missing default file is fine; a missing named file is an error.
//! - Every key can be set from the environment as `MEMENTO_<SECTION>__<KEY>`, e.g.
//!   `MEMENTO_LLM__RPM=300`. Values are read as TOML (`300`, `true`, `["a", "b"]`) and fall
//!   back to a plain string.
//! - A few well-known variables have their own names (`MEMENTO_MCP_TOKEN`, the seed's
//!   `AZURE_OPENAI_*`); they are listed as `ENV_*` constants below.
//!
//! Only this module reads the process environment for configuration. Tests pass a
//! `HashMap` through the [`Env`] trait instead of touching the real environment.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod llm;

pub use llm::{LlmConfig, Provider};

/// Picks another config file.
pub const ENV_CONFIG: &str = "MEMENTO_CONFIG";
/// Bearer token of the memory MCP server (server side, and what the daemon sends to it).
pub const ENV_MCP_TOKEN: &str = "MEMENTO_MCP_TOKEN";
/// Azure OpenAI endpoint (the seed's name).
pub const ENV_AZURE_ENDPOINT: &str = "AZURE_OPENAI_ENDPOINT";
/// Azure OpenAI key.
pub const ENV_AZURE_API_KEY: &str = "AZURE_OPENAI_API_KEY";
/// Azure OpenAI deployment.
pub const ENV_AZURE_DEPLOYMENT: &str = "AZURE_OPENAI_DEPLOYMENT";
/// Azure OpenAI API version.
pub const ENV_AZURE_API_VERSION: &str = "AZURE_OPENAI_API_VERSION";
/// Prefix of `MEMENTO_<SECTION>__<KEY>` overrides.
pub const ENV_PREFIX: &str = "MEMENTO_";
/// The default config file, relative to the working directory.
pub const DEFAULT_CONFIG_FILE: &str = "config/memento.toml";

/// Why the configuration could not be loaded. The binary exits with 64 (`EX_USAGE`).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The named config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// Parser message.
        message: String,
    },
    /// A key is unknown or has the wrong type.
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// An environment override names no known section.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable.
        var: String,
        /// Why.
        message: String,
    },
}

/// The whole configuration. Each process takes the sections it needs; actors get their own
/// sub-struct, never the whole tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The daemon's HTTP API (`memento serve`).
    pub server: ServerConfig,
    /// Who may use the daemon's API.
    pub auth: AuthConfig,
    /// Conversations: turns, tool rounds, history, actor limits.
    pub conversation: ConversationConfig,
    /// The LLM: provider, quotas, retries, deadlines.
    pub llm: LlmConfig,
    /// The daemon's connection to the memory MCP server.
    pub mcp: McpClientConfig,
    /// The memory MCP server (`memento mcp-server`, or embedded in `memento serve`).
    pub mcp_server: McpServerConfig,
    /// Where and how memories and conversations are stored.
    pub storage: StorageConfig,
    /// Where the LLM quotas are kept: this process, or Redis shared by every daemon.
    pub limits: crate::daemon::limits::LimitsConfig,
    /// Embeddings for search by meaning.
    pub embeddings: crate::memory_server::embeddings::EmbeddingsConfig,
}

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
    /// A conversation idle longer than this is stopped (its history stays on disk).
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Most live conversation actors; the least recently used idle ones are evicted.
    pub max_actors: usize,
    /// Record the user id on traces (it may be personal data).
    pub record_user_id: bool,
    /// Record message and reply text on traces, for debugging only (it is personal data).
    pub record_content: bool,
    /// A conversation idle this long releases its cached history (it stays on disk and is
    /// reloaded on the next turn), so an idle actor costs little memory.
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
            idle_timeout: Duration::from_secs(600),
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
        }
    }
}

// === Loading ===

/// Where configuration values come from besides the file: the process environment, or a map
/// in tests.
pub trait Env {
    /// The variable's value, if set and valid UTF-8.
    fn var(&self, name: &str) -> Option<String>;
    /// Every variable, for the `MEMENTO_<SECTION>__<KEY>` scan.
    fn vars(&self) -> Vec<(String, String)>;
}

/// The real process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
    fn vars(&self) -> Vec<(String, String)> {
        std::env::vars().collect()
    }
}

impl Env for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
    fn vars(&self) -> Vec<(String, String)> {
        self.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

/// Loads the configuration: defaults < file < environment. Flags are applied by the caller
/// afterwards (they are per subcommand), then [`Config::validate`] runs.
pub fn load(explicit_file: Option<&Path>, env: &dyn Env) -> Result<Config, ConfigError> {
    let named = explicit_file
        .map(Path::to_path_buf)
        .or_else(|| env.var(ENV_CONFIG).map(PathBuf::from));
    let mut table = match &named {
        Some(path) => read_file(path)?,
        None => {
            let default = Path::new(DEFAULT_CONFIG_FILE);
            if default.exists() {
                read_file(default)?
            } else {
                toml::Table::new()
            }
        }
    };
    apply_env(&mut table, env)?;
    let mut config: Config = toml::Value::Table(table.clone())
        .try_into()
        .map_err(|e: toml::de::Error| ConfigError::Invalid(redact(e.message(), &table)))?;
    // A provider named in the file or by `MEMENTO_LLM__PROVIDER` (both merged into `table`
    // by now) is a choice the `AZURE_OPENAI_*` variables never override.
    let provider_chosen = table
        .get("llm")
        .and_then(|llm| llm.get("provider"))
        .is_some();
    apply_azure_env(&mut config.llm, env, provider_chosen);
    if let Some(deployment) = env
        .var(crate::memory_server::embeddings::ENV_AZURE_EMBEDDINGS_DEPLOYMENT)
        .filter(|d| !d.trim().is_empty())
    {
        config.embeddings.deployment = Some(deployment);
    }
    if let Some(token) = env.var(ENV_MCP_TOKEN).filter(|t| !t.is_empty()) {
        config.mcp_server.token.get_or_insert(token.clone());
        config.mcp.token.get_or_insert(token);
    }
    Ok(config)
}

/// The seed's `AZURE_OPENAI_*` variables. With an endpoint and a key, and no provider chosen
/// explicitly (`provider_chosen`: in the file or `MEMENTO_LLM__PROVIDER`), the provider
/// becomes `azure`.
fn apply_azure_env(llm: &mut LlmConfig, env: &dyn Env, provider_chosen: bool) {
    let get = |name: &str| env.var(name).filter(|v| !v.trim().is_empty());
    if let Some(endpoint) = get(ENV_AZURE_ENDPOINT) {
        llm.endpoint = Some(endpoint);
    }
    if let Some(key) = get(ENV_AZURE_API_KEY) {
        llm.api_key = Some(key);
    }
    if let Some(deployment) = get(ENV_AZURE_DEPLOYMENT) {
        llm.deployment = Some(deployment);
    }
    if let Some(version) = get(ENV_AZURE_API_VERSION) {
        llm.api_version = version;
    }
    if !provider_chosen
        && llm.provider == Provider::Offline
        && get(ENV_AZURE_ENDPOINT).is_some()
        && get(ENV_AZURE_API_KEY).is_some()
    {
        llm.provider = Provider::Azure;
        if llm.deployment.is_none() {
            llm.deployment = Some("gpt-4o-mini".into());
        }
    }
}

fn read_file(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    text.parse::<toml::Table>()
        .map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            message: e.to_string(),
        })
}

/// Overlays `MEMENTO_<SECTION>__<KEY>=value` variables onto the file's table.
fn apply_env(table: &mut toml::Table, env: &dyn Env) -> Result<(), ConfigError> {
    let mut vars = env.vars();
    vars.sort();
    for (name, raw) in vars {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let Some((section, key)) = rest.split_once("__") else {
            continue;
        };
        let section = section.to_ascii_lowercase();
        let key = key.to_ascii_lowercase();
        if section.is_empty() || key.is_empty() {
            return Err(ConfigError::Env {
                var: name,
                message: "expected MEMENTO_<SECTION>__<KEY>".into(),
            });
        }
        let value = parse_env_value(&raw);
        let entry = table
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match entry {
            toml::Value::Table(section_table) => {
                section_table.insert(key, value);
            }
            _ => {
                return Err(ConfigError::Env {
                    var: name,
                    message: format!("[{section}] is not a section"),
                });
            }
        }
    }
    Ok(())
}

/// `300` -> integer, `true` -> bool, `["a"]` -> array, anything else -> string.
fn parse_env_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

impl Config {
    /// Checks rules no single field can check. Run after flags are applied, before binding.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let server = &self.mcp_server;
        if server.insecure_no_token && !server.host.is_loopback() {
            return Err(ConfigError::Invalid(format!(
                "mcp_server.insecure_no_token serves every user's memories without a token, so \
                 it is allowed on loopback only, not on {}",
                server.host
            )));
        }
        if !server.host.is_loopback() && server.token.is_none() && !server.insecure {
            return Err(ConfigError::Invalid(format!(
                "mcp_server.host {} is not loopback: set a token (--token or {ENV_MCP_TOKEN}) \
                 or pass --insecure to serve without one",
                server.host
            )));
        }
        if server.insecure_no_token && server.token.is_some() {
            return Err(ConfigError::Invalid(
                "mcp_server.insecure_no_token and a token were both given: choose one".into(),
            ));
        }
        if let Some(token) = &server.token {
            check_token("mcp_server.token (--token, MEMENTO_MCP_TOKEN)", token)?;
        }
        if let Some(token) = &self.mcp.token {
            check_token("mcp.token (MEMENTO_MCP_TOKEN)", token)?;
        }
        if server.max_content_bytes == 0 || server.max_content_bytes > server.max_request_bytes {
            return Err(ConfigError::Invalid(format!(
                "mcp_server.max_content_bytes ({}) must be between 1 and max_request_bytes ({})",
                server.max_content_bytes, server.max_request_bytes
            )));
        }
        if self.storage.readers == 0 || self.storage.readers > 64 {
            return Err(ConfigError::Invalid(
                "storage.readers must be between 1 and 64".into(),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (user, token) in &self.auth.user_tokens {
            crate::shared::domain::UserId::parse(user)
                .map_err(|e| ConfigError::Invalid(format!("auth.user_tokens: {e}")))?;
            check_token(&format!("auth.user_tokens.{user}"), token)?;
            if !seen.insert(token.trim()) {
                return Err(ConfigError::Invalid(format!(
                    "auth.user_tokens.{user}: the same token is given to another user; each \
                     user needs a token of their own"
                )));
            }
        }
        for (index, token) in self.auth.service_tokens.iter().enumerate() {
            let name = format!("auth.service_tokens[{index}]");
            check_token(&name, token)?;
            if !seen.insert(token.trim()) {
                return Err(ConfigError::Invalid(format!(
                    "{name}: the same token is also a user token or another service token; a \
                     service token acts for every user, so it must be unique"
                )));
            }
        }
        if self.conversation.max_queued_turns == 0 {
            return Err(ConfigError::Invalid(
                "conversation.max_queued_turns must be at least 1".into(),
            ));
        }
        for (key, value) in [
            ("server.max_connections", self.server.max_connections),
            ("mcp_server.max_connections", server.max_connections),
            ("storage.queue_capacity", self.storage.queue_capacity),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid(format!("{key} must be at least 1")));
            }
        }
        for (key, value) in [
            (
                "server.header_read_timeout",
                self.server.header_read_timeout,
            ),
            ("server.request_timeout", self.server.request_timeout),
            ("server.keep_alive_timeout", self.server.keep_alive_timeout),
            ("mcp_server.header_read_timeout", server.header_read_timeout),
            ("mcp_server.request_timeout", server.request_timeout),
            ("mcp_server.keep_alive_timeout", server.keep_alive_timeout),
        ] {
            if value.is_zero() {
                return Err(ConfigError::Invalid(format!("{key} must be above zero")));
            }
        }
        if self.conversation.max_actors == 0 || self.server.max_concurrent_turns == 0 {
            return Err(ConfigError::Invalid(
                "conversation.max_actors and server.max_concurrent_turns must be at least 1".into(),
            ));
        }
        if self
            .conversation
            .trace_user_key
            .as_deref()
            .is_some_and(|k| k.len() < crate::daemon::llm::pseudonym::MIN_KEY_LEN)
        {
            // The key itself is never echoed.
            return Err(ConfigError::Invalid(format!(
                "conversation.trace_user_key must be at least {} bytes",
                crate::daemon::llm::pseudonym::MIN_KEY_LEN
            )));
        }
        if let Some(url) = &self.mcp.url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(ConfigError::Invalid(format!(
                "mcp.url {url:?} must be an http:// or https:// URL"
            )));
        }
        self.llm.validate()?;
        if self.storage.backend == StorageBackend::Postgres && self.storage.postgres_url.is_empty()
        {
            return Err(ConfigError::Invalid(
                "storage.backend = \"postgres\" needs storage.postgres_url \
                 (postgresql://user:password@host:port/db)"
                    .into(),
            ));
        }
        if self.storage.postgres_max_connections == 0
            || self.storage.postgres_max_connections > 1000
        {
            return Err(ConfigError::Invalid(
                "storage.postgres_max_connections must be between 1 and 1000".into(),
            ));
        }
        self.embeddings
            .validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if self.storage.max_batch == 0 {
            return Err(ConfigError::Invalid(
                "storage.max_batch must be at least 1".into(),
            ));
        }
        self.limits
            .validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        Ok(())
    }
}

/// Refuses a weak token, naming the key, never the value.
fn check_token(key: &str, token: &str) -> Result<(), ConfigError> {
    match crate::shared::edge::bearer::weakness(token) {
        Some(why) => Err(ConfigError::Invalid(format!("{key}: the token {why}"))),
        None => Ok(()),
    }
}

/// Replaces every secret of `table` found in `message` by `***`: a parser's message may quote
/// the value it could not read.
fn redact(message: &str, table: &toml::Table) -> String {
    fn secrets(value: &toml::Value, key: &str, out: &mut Vec<String>) {
        let secret_key = ["token", "key", "secret", "password"]
            .iter()
            .any(|k| key.contains(k));
        match value {
            toml::Value::String(s) if secret_key && s.len() >= 4 => out.push(s.clone()),
            toml::Value::Array(items) => items.iter().for_each(|v| secrets(v, key, out)),
            toml::Value::Table(t) => t.iter().for_each(|(k, v)| {
                let k = k.to_ascii_lowercase();
                // Every value under a token table (`[auth.user_tokens]`) is secret.
                let inherited = if secret_key { key.to_owned() } else { k };
                secrets(v, &inherited, out)
            }),
            _ => {}
        }
    }
    let mut found = Vec::new();
    table
        .iter()
        .for_each(|(k, v)| secrets(v, &k.to_ascii_lowercase(), &mut found));
    found.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut message = message.to_owned();
    for secret in found {
        message = message.replace(&secret, "***");
    }
    message
}

#[cfg(test)]
mod tests;
