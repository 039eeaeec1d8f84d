//! The `[embeddings]` section: which provider, and its keys.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::EmbedError;
use crate::memory_server::storage::{Fusion, HybridRanking};

/// Environment variable naming the Azure embeddings deployment.
pub const ENV_AZURE_EMBEDDINGS_DEPLOYMENT: &str = "AZURE_OPENAI_EMBEDDINGS_DEPLOYMENT";

/// Which embeddings provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// No embeddings: retrieval ranks by keywords only.
    #[default]
    None,
    /// An Azure OpenAI embeddings deployment (endpoint and key of `[llm]`).
    Azure,
    /// An OpenAI-compatible `/v1/embeddings` at `base_url`.
    Openai,
    /// A model run in-process from `model_dir`.
    Local,
}

/// The `[embeddings]` section.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbeddingsConfig {
    /// `none`, `azure`, `openai` or `local`.
    pub provider: Provider,
    /// Azure deployment of the embeddings model (`AZURE_OPENAI_EMBEDDINGS_DEPLOYMENT`).
    pub deployment: Option<String>,
    /// OpenAI-compatible base URL, e.g. `http://127.0.0.1:11434/v1`.
    pub base_url: Option<String>,
    /// Model name sent to an OpenAI-compatible endpoint.
    pub model: Option<String>,
    /// API key of an OpenAI-compatible endpoint [default: `llm.api_key`].
    pub api_key: Option<String>,
    /// Directory of the local model (config.json, model.safetensors, vocab.txt).
    pub model_dir: Option<PathBuf>,
    /// Vector size asked of the remote model (0: the model's own).
    pub dimensions: u32,
    /// Most texts in one provider call.
    pub max_batch: usize,
    /// Provider requests per minute (0: unlimited).
    pub rpm: u32,
    /// Longest single request.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Most tokens of a text the local model reads (longer texts are cut).
    pub max_tokens: usize,
    /// Weight of the meaning ranking against the keyword ranking (1.0) in hybrid search.
    pub semantic_weight: f32,
    /// A memory stored within this time after the user's previous one is embedded with
    /// that one's start as context (a conversation's turns read together: "what did you do
    /// on Sunday?" then "went hiking"). 0 turns it off.
    #[serde(with = "humantime_serde")]
    pub context_window: Duration,
    /// Within `context_window`, the previous memory is also embedded again with the start
    /// of the one stored after it (a question reads together with its answer).
    pub context_next: bool,
    /// How hybrid search combines the two rankings: `linear` (own bm25 + weighted cosine,
    /// then context; SQLite) or `rrf` (reciprocal rank fusion of FTS5's bm25 and cosine).
    pub fusion: Fusion,
    /// bm25 term-frequency saturation of the linear fusion.
    pub bm25_k1: f32,
    /// bm25 length normalisation of the linear fusion (0 none, 1 full).
    pub bm25_b: f32,
    /// Weight of a neighbouring memory's score (within `context_window`), divided by its
    /// distance in store order.
    pub neighbour_weight: f32,
    /// Neighbours counted on each side.
    pub neighbours: usize,
    /// Weight of the best score among the memories within `context_window` of a memory.
    pub episode_weight: f32,
}

impl Default for EmbeddingsConfig {
    fn default() -> Self {
        EmbeddingsConfig {
            provider: Provider::None,
            deployment: None,
            base_url: None,
            model: None,
            api_key: None,
            model_dir: None,
            dimensions: 0,
            max_batch: 64,
            rpm: 0,
            request_timeout: Duration::from_secs(30),
            max_tokens: 128,
            semantic_weight: 0.3,
            context_window: Duration::from_secs(600),
            context_next: false,
            fusion: HybridRanking::default().fusion,
            bm25_k1: HybridRanking::default().bm25_k1,
            bm25_b: HybridRanking::default().bm25_b,
            neighbour_weight: HybridRanking::default().neighbour_weight,
            neighbours: HybridRanking::default().neighbours,
            episode_weight: HybridRanking::default().episode_weight,
        }
    }
}

impl std::fmt::Debug for EmbeddingsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddingsConfig")
            .field("provider", &self.provider)
            .field("deployment", &self.deployment)
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "***"))
            .field("model_dir", &self.model_dir)
            .field("dimensions", &self.dimensions)
            .field("max_batch", &self.max_batch)
            .field("rpm", &self.rpm)
            .finish_non_exhaustive()
    }
}

impl EmbeddingsConfig {
    /// Checks the keys the chosen provider needs.
    pub fn validate(&self) -> Result<(), EmbedError> {
        match self.provider {
            Provider::None => {}
            Provider::Azure => {
                if self.deployment.as_deref().is_none_or(str::is_empty) {
                    return Err(EmbedError::Config(format!(
                        "embeddings.provider = \"azure\" needs embeddings.deployment (or \
                         {ENV_AZURE_EMBEDDINGS_DEPLOYMENT})"
                    )));
                }
            }
            Provider::Openai => {
                if self.base_url.as_deref().is_none_or(str::is_empty)
                    || self.model.as_deref().is_none_or(str::is_empty)
                {
                    return Err(EmbedError::Config(
                        "embeddings.provider = \"openai\" needs embeddings.base_url and \
                         embeddings.model"
                            .into(),
                    ));
                }
            }
            Provider::Local => {
                if self.model_dir.is_none() {
                    return Err(EmbedError::Config(
                        "embeddings.provider = \"local\" needs embeddings.model_dir (a \
                         sentence-transformer directory: config.json, model.safetensors, \
                         vocab.txt)"
                            .into(),
                    ));
                }
            }
        }
        if self.max_batch == 0 || self.max_tokens < 8 {
            return Err(EmbedError::Config(
                "embeddings.max_batch must be at least 1 and embeddings.max_tokens at least 8"
                    .into(),
            ));
        }
        if !(self.semantic_weight.is_finite() && self.semantic_weight >= 0.0) {
            return Err(EmbedError::Config(
                "embeddings.semantic_weight must be a number >= 0".into(),
            ));
        }
        let weights = [self.bm25_k1, self.neighbour_weight, self.episode_weight];
        if !weights.iter().all(|w| w.is_finite() && *w >= 0.0)
            || !(0.0..=1.0).contains(&self.bm25_b)
            || self.neighbours > 16
        {
            return Err(EmbedError::Config(
                "embeddings.bm25_k1, neighbour_weight and episode_weight must be numbers >= 0, \
                 bm25_b between 0 and 1, neighbours at most 16"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The hybrid ranking these keys describe (its context reaches `context_window`).
    pub fn ranking(&self) -> HybridRanking {
        HybridRanking {
            fusion: self.fusion,
            bm25_k1: self.bm25_k1,
            bm25_b: self.bm25_b,
            neighbour_weight: self.neighbour_weight,
            neighbours: self.neighbours,
            episode_weight: self.episode_weight,
            window: self.context_window,
        }
    }
}
