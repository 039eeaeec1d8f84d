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

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

mod daemon;
mod llm;
mod load;
mod memory_server;
mod validate;

pub use daemon::*;
pub use llm::{LlmConfig, Provider};
pub use load::{Env, ProcessEnv, load};
pub use memory_server::*;

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

#[cfg(test)]
mod tests;
