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

/// Picks another config file.
pub const ENV_CONFIG: &str = "MEMENTO_CONFIG";
/// Bearer token of the memory MCP server (server side, and what the daemon sends to it).
pub const ENV_MCP_TOKEN: &str = "MEMENTO_MCP_TOKEN";
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
    /// The memory MCP server (`memento mcp-server`, or embedded in `memento serve`).
    pub mcp_server: McpServerConfig,
    /// Where and how memories are stored.
    pub storage: StorageConfig,
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
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            data_dir: PathBuf::from("./data"),
            readers: 4,
            max_batch: 512,
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
    let mut config: Config = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| ConfigError::Invalid(e.message().to_owned()))?;
    if let Some(token) = env.var(ENV_MCP_TOKEN).filter(|t| !t.is_empty()) {
        config.mcp_server.token.get_or_insert(token);
    }
    Ok(config)
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
        if !server.host.is_loopback() && server.token.is_none() && !server.insecure {
            return Err(ConfigError::Invalid(format!(
                "mcp_server.host {} is not loopback: set a token (--token or {ENV_MCP_TOKEN}) \
                 or pass --insecure to serve without one",
                server.host
            )));
        }
        if server.token.as_deref().is_some_and(|t| t.trim().len() < 8) {
            return Err(ConfigError::Invalid(
                "mcp_server.token must be at least 8 characters".into(),
            ));
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
        if self.storage.max_batch == 0 {
            return Err(ConfigError::Invalid(
                "storage.max_batch must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
