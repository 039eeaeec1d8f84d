//! Where memories live: the [`MemoryStore`] trait, its types, and its SQLite engine.
//!
//! The tool layer (`memory_server`) only sees the trait, so another engine (PostgreSQL) can
//! be added without touching it. The SQLite engine is split by concern:
//!
//! - `storage/engine.rs`: [`SqliteStore`], its writer thread (group commit) and reader
//!   threads, so no query runs on an async thread;
//! - `storage/sql.rs`: the statements;
//! - [`fts`]: the FTS5 table and its tenant-scoped tokens;
//! - `storage/migrations.rs`: the schema and its versions.
//!
//! Full-text search uses an FTS5 table over content, description, filename and tags,
//! ranked by bm25, with **tenant-scoped tokens**: every indexed word is written as
//! `u<user number>q<word>` (see [`fts::scoped_text`]), and queries ask for the same scoped terms.
//! So a search only ever reads the caller's own postings (the SQL checks `user_id` once
//! more), and bm25's per-term statistics cost a user's few rows, not the whole table's: at a
//! million memories a common word's global posting list would make every ranked query scan
//! hundreds of thousands of entries.

use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use futures::future::BoxFuture;
use rusqlite::{Connection, OptionalExtension, params_from_iter, types::Value};
use serde::Serialize;

use crate::shared::domain::{MemoryId, SearchTerms, UserId};
pub use crate::shared::domain::{MemoryMeta, MemorySummary};

mod contextual;
mod engine;
pub mod fts;
mod list_sql;
mod migrations;
mod postgres;
mod sql;
pub(crate) mod vectors;

pub use postgres::{PostgresOptions, PostgresStore};

pub use contextual::{Fusion, HybridRanking};
pub use engine::{SqliteOptions, SqliteStore};
pub(crate) use sql::reindex_all;

/// Characters of content shown in a search result's `preview`.
pub const PREVIEW_CHARS: usize = 300;

/// A storage failure. Input problems never get here: they are rejected by `domain` first.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// SQLite reported an error.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The data directory could not be created or opened.
    #[error("cannot use data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The database was written by a newer Memento.
    #[error("database schema version {found} is newer than this build supports ({supported})")]
    SchemaTooNew {
        /// Version found on disk.
        found: i64,
        /// Newest version this build knows.
        supported: i64,
    },
    /// The storage threads are gone (shutting down, or one of them crashed).
    #[error("storage is shut down")]
    Closed,
    /// The job queue of the writer (or of the readers) is full. Callers are never blocked
    /// waiting for room: they get this, and the tool answers an error to retry.
    #[error("the memory store is busy, retry shortly")]
    Busy,
    /// The transaction holding this write could not commit; nothing of it was stored.
    #[error("commit failed: {0}")]
    Commit(String),
    /// The idempotency key was already used, within the window, for a store with other
    /// arguments: nothing was stored (a replay must repeat the first call exactly).
    #[error(
        "idempotency key {key:?} was already used with different arguments; nothing was \
         stored (send a new key for a new store)"
    )]
    KeyReused {
        /// The key, as sent.
        key: String,
    },
    /// A stored row could not be decoded.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// PostgreSQL (connection, pool, migrations or a statement) failed. Never carries the
    /// URL's password.
    #[error(transparent)]
    Postgres(#[from] crate::shared::pg::PgError),
    /// Search by meaning was asked for but cannot be done (no embeddings provider, or the
    /// query could not be embedded, or this store keeps no vectors).
    #[error("{0}")]
    Semantic(String),
}

impl From<tokio_postgres::Error> for StorageError {
    fn from(error: tokio_postgres::Error) -> Self {
        StorageError::Postgres(crate::shared::pg::PgError::Db(error))
    }
}

/// Opens the store `config.backend` names: SQLite in `data_dir` (the default, no other
/// service), or PostgreSQL at `postgres_url` (migrated at open).
pub async fn open(
    config: &crate::shared::config::StorageConfig,
) -> Result<Arc<dyn MemoryStore>, StorageError> {
    match config.backend {
        crate::shared::config::StorageBackend::Sqlite => {
            let options = SqliteOptions::from(config);
            let store = SqliteStore::open(&config.data_dir, &options)?;
            tracing::info!(path = %store.path().display(), "memory database open (SQLite)");
            Ok(Arc::new(store))
        }
        crate::shared::config::StorageBackend::Postgres => {
            let options = PostgresOptions {
                pool: crate::shared::pg::PoolOptions {
                    max_connections: config.postgres_max_connections,
                    ..crate::shared::pg::PoolOptions::default()
                },
                idempotency_window: config.idempotency_window,
            };
            let store = PostgresStore::open(config.postgres_url.expose(), &options).await?;
            Ok(Arc::new(store))
        }
    }
}

/// A memory to store, already validated and normalised by the tool layer.
#[derive(Debug, Clone)]
pub struct NewMemory {
    /// Owner.
    pub user: UserId,
    /// The text to remember.
    pub content: String,
    /// Sanitised filename.
    pub filename: String,
    /// Short description ("" when none).
    pub description: String,
    /// Normalised tags.
    pub tags: Vec<String>,
    /// When set, a second store with the same key and the same arguments (for the same
    /// user, within the idempotency window) returns the first store's result instead of
    /// storing again; the same key with other arguments is [`StorageError::KeyReused`].
    pub idempotency_key: Option<String>,
    /// An import's original store time. When set, the memory keeps it (instead of now), and
    /// the store is skipped, answering the existing memory with `replayed`, when the user
    /// already has a memory with the same filename and content stored within the same second:
    /// importing the same data twice adds nothing, with no time window.
    pub created_at: Option<DateTime<Utc>>,
    /// The memory's embedding (L2-normalised), when an embeddings provider is configured.
    pub embedding: Option<Vec<f32>>,
    /// The model that made `embedding` (kept beside it, so a reindex can find vectors of
    /// another model).
    pub embedding_model: Option<String>,
}

impl NewMemory {
    /// A plain memory: `content` under `filename` for `user`, with no description, tags,
    /// idempotency key, import time or vector (the tool layer fills those when given).
    pub fn new(user: UserId, content: impl Into<String>, filename: impl Into<String>) -> NewMemory {
        NewMemory {
            user,
            content: content.into(),
            filename: filename.into(),
            description: String::new(),
            tags: Vec::new(),
            idempotency_key: None,
            created_at: None,
            embedding: None,
            embedding_model: None,
        }
    }
}

/// What a store returns: the memory's metadata (not its content).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct StoredMemory {
    /// Id and metadata.
    #[serde(flatten)]
    pub meta: MemoryMeta,
    /// True when this answers a repeated idempotency key: nothing new was stored.
    #[serde(skip)]
    pub replayed: bool,
}

/// A stored memory, whole.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Memory {
    /// Id and metadata.
    #[serde(flatten)]
    pub meta: MemoryMeta,
    /// The content.
    pub content: String,
}

macro_rules! reads_meta {
    ($($view:ty),*) => {$(
        impl std::ops::Deref for $view {
            type Target = MemoryMeta;
            fn deref(&self) -> &MemoryMeta {
                &self.meta
            }
        }
    )*};
}
reads_meta!(StoredMemory, Memory, MemorySummary);

/// How `retrieve_memories` ranks a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SearchMode {
    /// Keywords (bm25) and meaning (cosine) fused; keywords alone without embeddings.
    #[default]
    Hybrid,
    /// Keywords only (bm25).
    Keyword,
    /// Meaning only (cosine); an error without embeddings.
    Semantic,
}

impl SearchMode {
    /// Parses `hybrid`, `keyword` or `semantic`.
    pub fn parse(raw: &str) -> Option<SearchMode> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "hybrid" => Some(SearchMode::Hybrid),
            "keyword" => Some(SearchMode::Keyword),
            "semantic" => Some(SearchMode::Semantic),
            _ => None,
        }
    }
}

/// A memory that needs a vector (of the current model), for `memento reindex --embeddings`.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorTask {
    /// The memory.
    pub id: MemoryId,
    /// Its owner.
    pub user: UserId,
    /// Its content.
    pub content: String,
    /// Its description.
    pub description: String,
    /// Its tags.
    pub tags: Vec<String>,
}

/// What to search for. Always scoped to one user.
#[derive(Debug, Clone)]
pub struct SearchQuery {
    /// Whose memories.
    pub user: UserId,
    /// Full-text terms; `None` lists newest first.
    pub terms: Option<SearchTerms>,
    /// Keep memories having any of these (normalised) tags; empty = no tag filter.
    pub tags: Vec<String>,
    /// Stored at or after.
    pub since: Option<DateTime<Utc>>,
    /// Stored strictly before.
    pub until: Option<DateTime<Utc>>,
    /// Page size.
    pub limit: u32,
    /// Rows to skip.
    pub offset: u32,
    /// The query as the user wrote it (what is embedded); `None` without a query.
    pub text: Option<String>,
    /// How to rank.
    pub mode: SearchMode,
    /// The query's embedding (set by `embeddings::EmbeddingStore`); without it, hybrid is
    /// keyword-only and semantic is an error.
    pub vector: Option<Vec<f32>>,
    /// Weight of the meaning ranking against the keyword ranking (1.0) when fusing.
    pub semantic_weight: f32,
    /// How hybrid search fuses and uses context (set by `embeddings::EmbeddingStore`).
    pub ranking: HybridRanking,
}

/// A tag and how many of the user's memories carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TagCount {
    /// The tag.
    pub tag: String,
    /// Memories with it.
    pub count: u64,
}

/// A page of memories in storage order, for listing (MCP resources) and export.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Whose memories; `None` lists every user's (the caller holds the server's token, which
    /// acts for all users).
    pub user: Option<UserId>,
    /// Only memories with this (normalised) tag.
    pub tag: Option<String>,
    /// Only memories with this filename.
    pub filename: Option<String>,
    /// Continue after this position (the `position` of the previous page's last item).
    pub after: Option<i64>,
    /// Page size.
    pub limit: u32,
    /// Load each memory's text; without it `memory.content` is left empty (listings need
    /// only the metadata, and a page of large memories would be read for nothing).
    pub with_content: bool,
}

/// One listed memory, whole, with its owner and its position in the listing order (newest
/// stored first).
#[derive(Debug, Clone, PartialEq)]
pub struct ListedMemory {
    /// Opaque, stable position for keyset paging (`ListQuery::after`).
    pub position: i64,
    /// Owner.
    pub user: UserId,
    /// The memory.
    pub memory: Memory,
}

/// Which values to complete (MCP `completion/complete`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompletionField {
    /// User ids that have memories.
    User,
    /// One user's tags.
    Tag,
    /// One user's filenames.
    Filename,
}

/// What to complete: up to `limit` distinct values of `field` starting with `prefix`
/// (case-insensitive for tags, which are stored lower-case), sorted. `user` scopes tags and
/// filenames (without one there is nothing to complete); it is ignored for
/// [`CompletionField::User`].
#[derive(Debug, Clone)]
pub struct CompletionQuery {
    /// Which values.
    pub field: CompletionField,
    /// Whose tags or filenames.
    pub user: Option<UserId>,
    /// What the values start with.
    pub prefix: String,
    /// Most values.
    pub limit: u32,
}

/// Counters for metrics and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StorageStats {
    /// Write jobs committed.
    pub writes: u64,
    /// Transactions (fsyncs) that committed them; `writes / commits` is the group-commit
    /// factor.
    pub commits: u64,
    /// Read queries served.
    pub reads: u64,
}

/// The storage engine behind the memory tools.
pub trait MemoryStore: Send + Sync + 'static {
    /// Stores a memory durably and returns it as stored.
    fn store(&self, memory: NewMemory) -> BoxFuture<'static, Result<StoredMemory, StorageError>>;
    /// Searches one user's memories.
    fn search(
        &self,
        query: SearchQuery,
    ) -> BoxFuture<'static, Result<Vec<MemorySummary>, StorageError>>;
    /// One memory of `user`, or `None` (also when the id belongs to someone else).
    fn get(
        &self,
        user: UserId,
        id: MemoryId,
    ) -> BoxFuture<'static, Result<Option<Memory>, StorageError>>;
    /// Deletes one memory of `user`; returns what was deleted, or `None`.
    fn delete(
        &self,
        user: UserId,
        id: MemoryId,
    ) -> BoxFuture<'static, Result<Option<MemorySummary>, StorageError>>;
    /// The user's tags with counts, most used first.
    fn list_tags(&self, user: UserId) -> BoxFuture<'static, Result<Vec<TagCount>, StorageError>>;
    /// A page of memories, newest stored first, whole (see [`ListQuery`]).
    fn list(&self, query: ListQuery)
    -> BoxFuture<'static, Result<Vec<ListedMemory>, StorageError>>;
    /// The values a [`CompletionQuery`] asks for.
    fn complete(
        &self,
        query: CompletionQuery,
    ) -> BoxFuture<'static, Result<Vec<String>, StorageError>>;
    /// Counters.
    fn stats(&self) -> StorageStats;
    /// Up to `limit` memories without a vector of `model`, oldest first, and how many such
    /// memories there are in all.
    fn vector_tasks(
        &self,
        model: String,
        limit: u32,
    ) -> BoxFuture<'static, Result<(Vec<VectorTask>, u64), StorageError>> {
        let _ = (model, limit);
        Box::pin(async { Err(no_vectors()) })
    }
    /// Stores vectors made by `model` (replacing older ones); returns how many memories got
    /// one (deleted memories are skipped).
    fn put_vectors(
        &self,
        model: String,
        vectors: Vec<(MemoryId, Vec<f32>)>,
    ) -> BoxFuture<'static, Result<u64, StorageError>> {
        let _ = (model, vectors);
        Box::pin(async { Err(no_vectors()) })
    }
    /// Closes the store at shutdown: refuses new work, lets queued work finish and joins the
    /// engine's threads (off the async runtime). Calls after it fail with `Closed`. Engines
    /// without threads of their own need nothing.
    fn close(&self) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

/// The error of a store that keeps no vectors.
pub fn no_vectors() -> StorageError {
    StorageError::Semantic(
        "this storage backend keeps no vectors: search by meaning (mode \"semantic\" or \
         \"hybrid\") and reindexing are not available; use mode \"keyword\""
            .into(),
    )
}

/// Wraps a storage future in a client span named `name` (`"sqlite store"`, `"postgres
/// search"`: the engine, then the operation), with the OTel database attributes.
fn traced<T: Send + 'static>(
    system: &'static str,
    name: &'static str,
    future: impl Future<Output = Result<T, StorageError>> + Send + 'static,
) -> BoxFuture<'static, Result<T, StorageError>> {
    let operation = name
        .split_once(' ')
        .map_or(name, |(_, operation)| operation);
    let span = tracing::info_span!(
        "storage",
        otel.name = name,
        otel.kind = "client",
        db.system.name = system,
        db.operation.name = operation,
    );
    Box::pin(tracing::Instrument::instrument(future, span))
}

#[cfg(test)]
mod tests;
