//! Embeddings: turn text into vectors, so memories can be found by meaning.
//!
//! - [`EmbeddingsConfig`] is the `[embeddings]` section: `provider = "none" | "azure" |
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
use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::memory_server::storage::{
    CompletionField, ListQuery, ListedMemory, Memory, MemoryStore, MemorySummary, NewMemory,
    SearchMode, SearchQuery, StorageError, StorageStats, StoredMemory, TagCount, VectorTask,
};
use crate::shared::domain::{MemoryId, UserId};

pub mod bert;
pub mod local;
pub mod remote;
pub mod static_model;
pub mod tokenizer;

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
            semantic_weight: 1.0,
            context_window: Duration::from_secs(600),
            context_next: true,
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
        Ok(())
    }
}

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

// === Batcher ===

struct Request {
    text: String,
    reply: oneshot::Sender<Result<Vec<f32>, Arc<EmbedError>>>,
}

/// Coalesces concurrent embedding calls: one worker task takes every request queued while
/// the previous call ran (up to `max_batch`) and sends them as one provider call.
#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::Sender<Request>,
    model: Arc<str>,
}

impl Batcher {
    /// Starts the worker on the current runtime.
    pub fn start(embedder: Arc<dyn Embedder>, max_batch: usize) -> Batcher {
        let (tx, mut rx) = mpsc::channel::<Request>(max_batch.max(1) * 64);
        let model: Arc<str> = Arc::from(embedder.model_id());
        let max_batch = max_batch.max(1);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(max_batch);
            while rx.recv_many(&mut batch, max_batch).await > 0 {
                let (texts, replies): (Vec<String>, Vec<_>) =
                    batch.drain(..).map(|r| (r.text, r.reply)).unzip();
                let count = texts.len();
                match embedder.embed(texts).await {
                    Ok(vectors) if vectors.len() == count => {
                        for (reply, vector) in replies.into_iter().zip(vectors) {
                            let _ = reply.send(Ok(vector));
                        }
                    }
                    Ok(vectors) => {
                        let error = Arc::new(EmbedError::InvalidResponse(format!(
                            "{} vectors for {count} texts",
                            vectors.len()
                        )));
                        for reply in replies {
                            let _ = reply.send(Err(error.clone()));
                        }
                    }
                    Err(error) => {
                        let error = Arc::new(error);
                        for reply in replies {
                            let _ = reply.send(Err(error.clone()));
                        }
                    }
                }
            }
        });
        Batcher { tx, model }
    }

    /// The vector of one text.
    pub async fn embed(&self, text: String) -> Result<Vec<f32>, Arc<EmbedError>> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request { text, reply })
            .await
            .map_err(|_| Arc::new(EmbedError::Closed))?;
        rx.await.map_err(|_| Arc::new(EmbedError::Closed))?
    }

    /// The model's name.
    pub fn model_id(&self) -> &str {
        &self.model
    }
}

// === EmbeddingStore ===

/// A [`MemoryStore`] that embeds what is stored and what is searched, then delegates.
///
/// A store whose embedding fails is still stored (without a vector, logged): keyword search
/// finds it at once and `memento reindex --embeddings` adds its vector later. A search whose
/// query cannot be embedded falls back to keywords in hybrid mode and fails in semantic mode.
pub struct EmbeddingStore {
    inner: Arc<dyn MemoryStore>,
    batcher: Batcher,
    semantic_weight: f32,
    context_window: Duration,
    context_next: bool,
}

impl EmbeddingStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn MemoryStore>, batcher: Batcher, semantic_weight: f32) -> Self {
        EmbeddingStore {
            inner,
            batcher,
            semantic_weight,
            context_window: Duration::ZERO,
            context_next: false,
        }
    }

    /// Embeds a memory stored within `window` after its user's previous one together with
    /// that one (see [`EmbeddingsConfig::context_window`]).
    pub fn with_context_window(mut self, window: Duration) -> Self {
        self.context_window = window;
        self
    }

    /// Also embeds the previous memory again with the start of the next one (see
    /// [`EmbeddingsConfig::context_next`]).
    pub fn with_next_context(mut self, on: bool) -> Self {
        self.context_next = on;
        self
    }
}

/// The user's two newest memories stored at most `window` before `at`, newest first.
async fn previous_memories(
    store: &dyn MemoryStore,
    user: &UserId,
    at: chrono::DateTime<chrono::Utc>,
    window: Duration,
) -> Vec<MemorySummary> {
    let Ok(window) = chrono::Duration::from_std(window) else {
        return Vec::new();
    };
    store
        .search(SearchQuery {
            user: user.clone(),
            terms: None,
            tags: Vec::new(),
            since: Some(at - window),
            until: Some(at + chrono::Duration::microseconds(1)),
            limit: 2,
            offset: 0,
            text: None,
            mode: SearchMode::Keyword,
            vector: None,
            semantic_weight: 0.0,
        })
        .await
        .unwrap_or_default()
}

/// The first [`CONTEXT_CHARS`] characters of `text`.
fn context_of(text: &str) -> String {
    text.chars().take(CONTEXT_CHARS).collect()
}

/// Characters of the previous memory embedded as context.
const CONTEXT_CHARS: usize = 200;

/// Wraps `store` with the configured provider, or returns it as is (keyword-only).
pub fn wrap_store(
    store: Arc<dyn MemoryStore>,
    config: &EmbeddingsConfig,
    llm: &crate::daemon::llm::LlmConfig,
) -> Result<Arc<dyn MemoryStore>, EmbedError> {
    Ok(match build(config, llm)? {
        Some(embedder) => Arc::new(
            EmbeddingStore::new(
                store,
                Batcher::start(embedder, config.max_batch),
                config.semantic_weight,
            )
            .with_context_window(config.context_window)
            .with_next_context(config.context_next),
        ),
        None => store,
    })
}

/// [`wrap_store`] for the configured backend (both SQLite and PostgreSQL keep vectors).
pub fn wrap_configured(
    store: Arc<dyn MemoryStore>,
    storage: &crate::shared::config::StorageConfig,
    config: &EmbeddingsConfig,
    llm: &crate::daemon::llm::LlmConfig,
) -> Result<Arc<dyn MemoryStore>, EmbedError> {
    let _ = storage;
    wrap_store(store, config, llm)
}

impl MemoryStore for EmbeddingStore {
    fn store(
        &self,
        mut memory: NewMemory,
    ) -> BoxFuture<'static, Result<StoredMemory, StorageError>> {
        let inner = self.inner.clone();
        let batcher = self.batcher.clone();
        let window = self.context_window;
        let next_context = self.context_next;
        Box::pin(async move {
            if memory.embedding.is_some() {
                return inner.store(memory).await;
            }
            let at = memory.created_at.unwrap_or_else(chrono::Utc::now);
            let previous = if window.is_zero() {
                Vec::new()
            } else {
                previous_memories(inner.as_ref(), &memory.user, at, window).await
            };
            let mut text = memory_text(&memory.content, &memory.description, &memory.tags);
            if let Some(before) = previous.first() {
                text = format!("{}\n{text}", context_of(&before.preview));
            }
            let start = context_of(&memory.content);
            let embedded = match batcher.embed(text).await {
                Ok(vector) => {
                    memory.embedding = Some(vector);
                    memory.embedding_model = Some(batcher.model_id().to_owned());
                    true
                }
                Err(error) => {
                    tracing::warn!(
                        %error,
                        "cannot embed a memory: stored without a vector (memento reindex \
                         --embeddings adds it later)"
                    );
                    false
                }
            };
            let stored = inner.store(memory).await?;
            // The previous memory read again with this one after it, when its preview is
            // all of it (a longer one keeps the vector of its whole text).
            if let (true, true, Some(before)) = (next_context, embedded, previous.first())
                && !stored.replayed
                && before.size_bytes <= before.preview.len() as u64
            {
                let window =
                    chrono::Duration::from_std(window).unwrap_or_else(|_| chrono::Duration::zero());
                let mut text = memory_text(&before.preview, &before.description, &before.tags);
                if let Some(earlier) = previous.get(1)
                    && before.created_at - earlier.created_at <= window
                {
                    text = format!("{}\n{text}", context_of(&earlier.preview));
                }
                text = format!("{text}\n{start}");
                match batcher.embed(text).await {
                    Ok(vector) => {
                        let model = batcher.model_id().to_owned();
                        if let Err(error) =
                            inner.put_vectors(model, vec![(before.id, vector)]).await
                        {
                            tracing::warn!(%error, "cannot re-embed the previous memory with its successor");
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot re-embed the previous memory with its successor")
                    }
                }
            }
            Ok(stored)
        })
    }

    fn search(
        &self,
        mut query: SearchQuery,
    ) -> BoxFuture<'static, Result<Vec<MemorySummary>, StorageError>> {
        let inner = self.inner.clone();
        let batcher = self.batcher.clone();
        let weight = self.semantic_weight;
        Box::pin(async move {
            let wants_vector = query.mode != SearchMode::Keyword && query.vector.is_none();
            if let (true, Some(text)) = (wants_vector, query.text.clone()) {
                match batcher.embed(text).await {
                    Ok(vector) => {
                        query.vector = Some(vector);
                        query.semantic_weight = weight;
                    }
                    Err(error) if query.mode == SearchMode::Semantic => {
                        return Err(StorageError::Semantic(format!(
                            "cannot embed the query: {error}"
                        )));
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot embed a query: ranking by keywords only")
                    }
                }
            }
            inner.search(query).await
        })
    }

    fn get(
        &self,
        user: UserId,
        id: MemoryId,
    ) -> BoxFuture<'static, Result<Option<Memory>, StorageError>> {
        self.inner.get(user, id)
    }

    fn delete(
        &self,
        user: UserId,
        id: MemoryId,
    ) -> BoxFuture<'static, Result<Option<MemorySummary>, StorageError>> {
        self.inner.delete(user, id)
    }

    fn list_tags(&self, user: UserId) -> BoxFuture<'static, Result<Vec<TagCount>, StorageError>> {
        self.inner.list_tags(user)
    }

    fn list(
        &self,
        query: ListQuery,
    ) -> BoxFuture<'static, Result<Vec<ListedMemory>, StorageError>> {
        self.inner.list(query)
    }

    fn complete(
        &self,
        field: CompletionField,
        user: Option<UserId>,
        prefix: String,
        limit: u32,
    ) -> BoxFuture<'static, Result<Vec<String>, StorageError>> {
        self.inner.complete(field, user, prefix, limit)
    }

    fn stats(&self) -> StorageStats {
        self.inner.stats()
    }

    fn close(&self) -> BoxFuture<'static, ()> {
        self.inner.close()
    }

    fn vector_tasks(
        &self,
        model: String,
        limit: u32,
    ) -> BoxFuture<'static, Result<(Vec<VectorTask>, u64), StorageError>> {
        self.inner.vector_tasks(model, limit)
    }

    fn put_vectors(
        &self,
        model: String,
        vectors: Vec<(MemoryId, Vec<f32>)>,
    ) -> BoxFuture<'static, Result<u64, StorageError>> {
        self.inner.put_vectors(model, vectors)
    }
}

/// What `reindex` reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReindexSummary {
    /// Vectors written.
    pub embedded: u64,
}

/// Backfills vectors: every memory without a vector of `embedder`'s model gets one, in
/// batches, each committed as it is done (so an interrupted run resumes where it stopped).
/// `progress(done, total)` sees each batch.
pub async fn reindex(
    store: &dyn MemoryStore,
    embedder: &dyn Embedder,
    batch: u32,
    mut progress: impl FnMut(u64, u64),
) -> Result<ReindexSummary, ReindexError> {
    let model = embedder.model_id().to_owned();
    let mut summary = ReindexSummary::default();
    let mut total = None;
    loop {
        let (tasks, remaining) = store.vector_tasks(model.clone(), batch.max(1)).await?;
        let total = *total.get_or_insert(remaining);
        if tasks.is_empty() {
            progress(summary.embedded, total);
            return Ok(summary);
        }
        let texts = tasks
            .iter()
            .map(|t| memory_text(&t.content, &t.description, &t.tags))
            .collect();
        let vectors = embedder.embed(texts).await?;
        if vectors.len() != tasks.len() {
            return Err(EmbedError::InvalidResponse(format!(
                "{} vectors for {} texts",
                vectors.len(),
                tasks.len()
            ))
            .into());
        }
        let pairs = tasks.into_iter().map(|t| t.id).zip(vectors).collect();
        summary.embedded += store.put_vectors(model.clone(), pairs).await?;
        progress(summary.embedded, total);
    }
}

/// Why a reindex stopped (what was done before stays done).
#[derive(Debug, thiserror::Error)]
pub enum ReindexError {
    /// Embedding failed.
    #[error(transparent)]
    Embed(#[from] EmbedError),
    /// The store failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

#[cfg(test)]
mod tests;
