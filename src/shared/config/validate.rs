//! The rules no single field can check, run after flags are applied.

use super::*;

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
