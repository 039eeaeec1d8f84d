//! [`EmbeddingStore`]: a [`MemoryStore`] that embeds what is stored and searched, and
//! [`reindex`], which backfills the vectors a store lacks.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use super::{Batcher, EmbedError, Embedder, EmbeddingsConfig, build, memory_text};
use crate::memory_server::storage::{
    CompletionQuery, HybridRanking, ListQuery, ListedMemory, Memory, MemoryStore, MemorySummary,
    NewMemory, SearchMode, SearchQuery, StorageError, StorageStats, StoredMemory, TagCount,
    VectorTask,
};
use crate::shared::domain::{MemoryId, UserId};

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
    ranking: HybridRanking,
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
            ranking: HybridRanking::default(),
        }
    }

    /// How hybrid searches rank (see [`EmbeddingsConfig::ranking`]).
    pub fn with_ranking(mut self, ranking: HybridRanking) -> Self {
        self.ranking = ranking;
        self
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
            ranking: HybridRanking::default(),
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
            .with_next_context(config.context_next)
            .with_ranking(config.ranking()),
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
        let ranking = self.ranking;
        Box::pin(async move {
            let wants_vector = query.mode != SearchMode::Keyword && query.vector.is_none();
            if let (true, Some(text)) = (wants_vector, query.text.clone()) {
                match batcher.embed(text).await {
                    Ok(vector) => {
                        query.vector = Some(vector);
                        query.semantic_weight = weight;
                        query.ranking = ranking;
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
        query: CompletionQuery,
    ) -> BoxFuture<'static, Result<Vec<String>, StorageError>> {
        self.inner.complete(query)
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
