//! Embeddings: turn text into vectors, so memories can be found by meaning.
//!
//! - [`EmbeddingsConfig`] (`embeddings/config.rs`) is the `[embeddings]` section: `provider = "none" | "azure" |
//!   "openai" | "local"`.
//! - [`Embedder`] is one provider: [`remote`] (Azure OpenAI or an OpenAI-compatible
//!   `/v1/embeddings`, through async-openai, the chat path's retry policy and a request rate
//!   limit) or [`local`] (a sentence-transformer run in-process from `model_dir`; nothing is
//!   ever downloaded).
//! - [`Batcher`] coalesces concurrent calls into one provider call (batched at store time).
//! - [`EmbeddingStore`] wraps any [`MemoryStore`]: it embeds each memory as it is stored and
//!   each query as it is searched, and hands the vectors to the store, which keeps them and
//!   fuses cosine and bm25 rankings (`storage::SearchMode`).

use std::path::PathBuf;
use std::sync::Arc;

use futures::future::BoxFuture;

mod batcher;
pub mod bert;
mod config;
pub mod local;
pub mod remote;
pub mod static_model;
mod store;
pub mod tokenizer;

pub use batcher::Batcher;
pub use config::{ENV_AZURE_EMBEDDINGS_DEPLOYMENT, EmbeddingsConfig, Provider};
pub use store::{
    EmbeddingStore, ReindexError, ReindexSummary, reindex, wrap_configured, wrap_store,
};

/// Why texts could not be embedded.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// The configuration is incomplete or contradictory.
    #[error("embeddings configuration: {0}")]
    Config(String),
    /// The local model could not be loaded.
    #[error("cannot load the embeddings model from {path}: {message}")]
    Model {
        /// The model directory (or file).
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The provider failed (after retries).
    #[error("embeddings provider: {0}")]
    Provider(#[from] crate::daemon::llm::LlmError),
    /// The provider answered something unusable.
    #[error("embeddings provider answered {0}")]
    InvalidResponse(String),
    /// The batcher is shut down.
    #[error("the embeddings worker is shut down")]
    Closed,
}

/// One embeddings provider.
pub trait Embedder: Send + Sync + 'static {
    /// A vector per text, in order, each L2-normalised.
    fn embed(&self, texts: Vec<String>) -> BoxFuture<'static, Result<Vec<Vec<f32>>, EmbedError>>;
    /// A name for the model, kept with each vector (a vector of another model is re-made by
    /// `memento reindex --embeddings`).
    fn model_id(&self) -> &str;
}

/// Builds the configured provider; `None` for `provider = "none"`. Logs which one, and says
/// loudly when retrieval is keyword-only.
pub fn build(
    config: &EmbeddingsConfig,
    llm: &crate::daemon::llm::LlmConfig,
) -> Result<Option<Arc<dyn Embedder>>, EmbedError> {
    config.validate()?;
    let embedder: Arc<dyn Embedder> = match config.provider {
        Provider::None => {
            tracing::warn!(
                "no embeddings provider configured ([embeddings] provider = \"none\"): retrieval \
                 is keyword-only (bm25)"
            );
            return Ok(None);
        }
        Provider::Azure | Provider::Openai => Arc::new(remote::RemoteEmbedder::new(config, llm)?),
        Provider::Local => {
            let dir = config.model_dir.clone().unwrap_or_default();
            Arc::new(local::LocalEmbedder::load(&dir, config.max_tokens)?)
        }
    };
    tracing::info!(
        provider = ?config.provider,
        model = embedder.model_id(),
        "embeddings on: retrieval fuses meaning (cosine) and keywords (bm25)"
    );
    Ok(Some(embedder))
}

/// L2-normalises `v` in place (a zero vector stays zero).
pub fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// The text of a memory that is embedded: its description, tags and content.
pub fn memory_text(content: &str, description: &str, tags: &[String]) -> String {
    let mut text = String::with_capacity(content.len() + description.len() + 32);
    if !description.is_empty() {
        text.push_str(description);
        text.push_str(". ");
    }
    if !tags.is_empty() {
        text.push_str(&tags.join(", "));
        text.push_str(". ");
    }
    text.push_str(content);
    text
}

#[cfg(test)]
mod tests;
