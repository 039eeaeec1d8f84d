//! Loading: defaults < file < environment, and the well-known environment variables.

use std::collections::HashMap;
use std::path::Path;

use super::*;

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

/// Replaces every secret of `table` found in `message` by `***`: a parser's message may quote
/// the value it could not read.
pub(super) fn redact(message: &str, table: &toml::Table) -> String {
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
