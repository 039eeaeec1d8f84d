//! The `[llm]` section: which provider backs the LLM client, its quotas, retries and
//! deadlines. The client itself (`crate::daemon::llm`) takes this section as its arguments.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// Which model backs the actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// Azure OpenAI (endpoint, deployment, api-version, api-key).
    Azure,
    /// Any OpenAI-compatible endpoint (`base_url`, `api_key`, `model`).
    Openai,
    /// The built-in offline model.
    #[default]
    Offline,
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Provider::Azure => "azure",
            Provider::Openai => "openai",
            Provider::Offline => "offline",
        })
    }
}

/// The `[llm]` section.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LlmConfig {
    /// `azure`, `openai` or `offline`.
    pub provider: Provider,
    /// Azure resource endpoint, e.g. `https://my-resource.openai.azure.com`.
    pub endpoint: Option<String>,
    /// Azure deployment name.
    pub deployment: Option<String>,
    /// Azure API version.
    pub api_version: String,
    /// API key (Azure `api-key`, or OpenAI-compatible bearer key).
    pub api_key: Option<String>,
    /// OpenAI-compatible base URL, e.g. `http://127.0.0.1:11434/v1`.
    pub base_url: Option<String>,
    /// OpenAI-compatible model name.
    pub model: Option<String>,
    /// Requests per minute (0: unlimited).
    pub rpm: u32,
    /// Tokens per minute (0: unlimited).
    pub tpm: u32,
    /// Requests per minute per user (0: off).
    pub per_user_rpm: u32,
    /// Requests in flight at once; more wait in FIFO order.
    pub max_in_flight: usize,
    /// Longest single attempt.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Longest wait for a new connection to the provider (at most `request_timeout`): an
    /// unreachable endpoint fails fast and is retried.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Longest whole turn (LLM calls, tools, retries, waits).
    #[serde(with = "humantime_serde")]
    pub turn_deadline: Duration,
    /// Most retries of one request.
    pub max_retries: u32,
    /// First retry delay.
    #[serde(with = "humantime_serde")]
    pub retry_initial: Duration,
    /// Largest retry delay.
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// Longest `retry-after` honoured (longer hints are clamped).
    #[serde(with = "humantime_serde")]
    pub max_retry_after: Duration,
    /// `max_tokens` of each request.
    pub max_tokens: u32,
    /// Sampling temperature (provider default when unset).
    pub temperature: Option<f32>,
}

impl std::fmt::Debug for LlmConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmConfig")
            .field("provider", &self.provider)
            .field("endpoint", &self.endpoint)
            .field("deployment", &self.deployment)
            .field("api_version", &self.api_version)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("rpm", &self.rpm)
            .field("tpm", &self.tpm)
            .field("per_user_rpm", &self.per_user_rpm)
            .field("max_in_flight", &self.max_in_flight)
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("turn_deadline", &self.turn_deadline)
            .finish_non_exhaustive()
    }
}

impl Default for LlmConfig {
    fn default() -> Self {
        LlmConfig {
            provider: Provider::Offline,
            endpoint: None,
            deployment: None,
            api_version: "2024-10-21".into(),
            api_key: None,
            base_url: None,
            model: None,
            rpm: 0,
            tpm: 0,
            per_user_rpm: 0,
            max_in_flight: 256,
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            turn_deadline: Duration::from_secs(60),
            max_retries: 6,
            retry_initial: Duration::from_millis(250),
            retry_max: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(30),
            max_tokens: 1024,
            temperature: None,
        }
    }
}

impl LlmConfig {
    /// Checks that the chosen provider has what it needs.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let missing = |what: &str| {
            Err(ConfigError::Invalid(format!(
                "llm.provider = \"{}\" needs {what}",
                self.provider
            )))
        };
        match self.provider {
            Provider::Azure => {
                if self.endpoint.as_deref().is_none_or(str::is_empty) {
                    return missing("endpoint (AZURE_OPENAI_ENDPOINT)");
                }
                if self.api_key.as_deref().is_none_or(str::is_empty) {
                    return missing("api_key (AZURE_OPENAI_API_KEY)");
                }
                if self.deployment.as_deref().is_none_or(str::is_empty) {
                    return missing("deployment (AZURE_OPENAI_DEPLOYMENT)");
                }
            }
            Provider::Openai => {
                if self.base_url.as_deref().is_none_or(str::is_empty) {
                    return missing("base_url");
                }
                if self.model.as_deref().is_none_or(str::is_empty) {
                    return missing("model");
                }
            }
            Provider::Offline => {}
        }
        if self.connect_timeout.is_zero() {
            return Err(ConfigError::Invalid(
                "llm.connect_timeout must be above zero".into(),
            ));
        }
        if self.max_in_flight == 0 {
            return Err(ConfigError::Invalid(
                "llm.max_in_flight must be at least 1".into(),
            ));
        }
        Ok(())
    }
}
