//! The PostgreSQL engine of [`MemoryStore`] (`storage.backend = "postgres"`): every daemon
//! and memory server of a deployment can share one database.
//!
//! - **Schema** (component `memories` of [`crate::shared::pg::migrate`], see [`MIGRATIONS`]):
//!   `memories` keyed by a `position` sequence (the listing order), with a `search` tsvector
//!   and a GIN index on it; `memory_tags` for tag counts and tag listing; `users` for user
//!   completion; `idempotency` for the store keys.
//! - **Full text**: each field is split into words in Rust with the same splitter as the
//!   SQLite engine (`domain::fts_words`), then stemmed by PostgreSQL's `english`
//!   configuration and weighted (filename A, description B, tags C, content D). Queries are
//!   `websearch_to_tsquery` over the terms joined by `or` (any term may match, as with
//!   SQLite), which never raises a syntax error whatever the text, and are ranked by
//!   `ts_rank_cd` with weights content 0.3, tags and description 0.6, filename 1.0
//!   (SQLite's bm25 weights 1 : 2 : 2 : 3) normalised by document length, then newest first.
//!   Every query is scoped by `user_id`; the `(user_id, created_at)` index keeps a user's
//!   search to that user's rows, whatever the other users store.
//! - **Durability**: a store is one statement committed on its own (or, with an idempotency
//!   key or an import time, one transaction) and is acknowledged only once the server's
//!   `ReadyForQuery` has arrived, which PostgreSQL sends after the commit, with the server's
//!   `synchronous_commit` (on by default: the WAL is flushed). Concurrent stores on the pool's
//!   connections share WAL flushes through PostgreSQL's own group commit.
//! - **Idempotency**: the same semantics as SQLite. The key is claimed first with
//!   `INSERT ... ON CONFLICT DO UPDATE ... WHERE expired`: a concurrent store with the same key
//!   waits for the first to commit, then finds its record and replays it (or refuses other
//!   arguments with [`StorageError::KeyReused`]). Expired keys are purged once a minute.
//!
//! Files: this one holds the schema, the store and its [`MemoryStore`] implementation;
//! `postgres/writes.rs` the insert, `postgres/search.rs` keyword, semantic and hybrid
//! search, `postgres/vector_writes.rs` reindex's vector tasks, `postgres/listing.rs` list
//! and completion.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::list_sql::{Dialect, Param, list_statement};
use super::sql::arguments_digest;
use super::vectors::{self, SyncedIndex, SyncedUser};
use super::{
    CompletionField, CompletionQuery, ListQuery, ListedMemory, Memory, MemoryMeta, MemoryStore,
    MemorySummary, NewMemory, PREVIEW_CHARS, SearchQuery, StorageError, StorageStats, StoredMemory,
    TagCount,
};
use crate::shared::domain::{MemoryId, UserId};
use crate::shared::pg::{self, Migration, Pool, PoolOptions};

mod listing;
mod search;
mod vector_writes;
mod writes;

use listing::*;
use search::*;
use vector_writes::*;
use writes::*;

/// The `schema_migrations` component of the memory tables.
pub(crate) const COMPONENT: &str = "memories";

/// The memory tables, in version order. Never edit a released step: append one.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "memories, tags, users, idempotency keys, full-text index",
        sql: "CREATE TABLE memories (
            position BIGSERIAL PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            user_id TEXT NOT NULL,
            filename TEXT NOT NULL,
            stored_as TEXT NOT NULL,
            description TEXT NOT NULL DEFAULT '',
            tags TEXT[] NOT NULL DEFAULT '{}',
            content TEXT NOT NULL,
            size_bytes BIGINT NOT NULL,
            created_at TIMESTAMPTZ NOT NULL,
            search TSVECTOR NOT NULL
        );
        CREATE INDEX memories_by_user_time ON memories (user_id, created_at);
        CREATE INDEX memories_by_user_position ON memories (user_id, position);
        CREATE INDEX memories_search ON memories USING GIN (search);
        CREATE TABLE memory_tags (
            user_id TEXT NOT NULL,
            tag TEXT NOT NULL,
            position BIGINT NOT NULL REFERENCES memories (position) ON DELETE CASCADE,
            PRIMARY KEY (user_id, tag, position)
        );
        CREATE INDEX memory_tags_by_position ON memory_tags (position);
        CREATE TABLE users (user_id TEXT PRIMARY KEY);
        CREATE TABLE idempotency (
            user_id TEXT NOT NULL,
            key TEXT NOT NULL,
            result TEXT NOT NULL,
            arguments TEXT NOT NULL,
            created_at TIMESTAMPTZ NOT NULL,
            PRIMARY KEY (user_id, key)
        );
        CREATE INDEX idempotency_by_time ON idempotency (created_at);",
    },
    Migration {
        version: 2,
        name: "a vector per memory (search by meaning)",
        // `wtx`: the id of the transaction that wrote the row, so each process's cache of a
        // user's vectors reads only what changed since its last read (`vectors::SyncedUser`).
        sql: "CREATE TABLE memory_vectors (
            position BIGINT PRIMARY KEY REFERENCES memories (position) ON DELETE CASCADE,
            user_id TEXT NOT NULL,
            model TEXT NOT NULL,
            vector BYTEA NOT NULL,
            wtx BIGINT NOT NULL DEFAULT (pg_current_xact_id()::text::bigint)
        );
        CREATE INDEX memory_vectors_by_user_wtx ON memory_vectors (user_id, wtx);",
    },
];

/// Tuning of the PostgreSQL engine.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// Pool size and schema (see [`PoolOptions`]).
    pub pool: PoolOptions,
    /// How long idempotency keys are remembered.
    pub idempotency_window: Duration,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            pool: PoolOptions::default(),
            idempotency_window: Duration::from_secs(24 * 3600),
        }
    }
}

/// The PostgreSQL engine. Cheap to clone.
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    idempotency_window: Duration,
    writes: AtomicU64,
    reads: AtomicU64,
    /// Unix seconds of the last purge of expired idempotency keys.
    last_purge: AtomicI64,
    /// Each searched user's vectors, kept in step with the database.
    vectors: SyncedIndex,
}

/// How often expired idempotency keys are deleted.
const PURGE_INTERVAL_SECS: i64 = 60;

/// Columns of a summary, in the order [`summary_from_row`] reads them.
const SUMMARY_COLUMNS: &str =
    "id, filename, stored_as, description, tags, created_at, size_bytes, left(content, 300)";

const _: () = assert!(
    PREVIEW_CHARS == 300,
    "SUMMARY_COLUMNS hard-codes the preview length"
);

impl PostgresStore {
    /// Connects to `url`, runs the migrations of the memory tables and returns the store.
    /// Errors never contain the URL's password.
    pub async fn open(url: &str, options: &PostgresOptions) -> Result<PostgresStore, StorageError> {
        let pool = pg::connect(url, &options.pool).await?;
        pg::migrate(&pool, COMPONENT, MIGRATIONS).await?;
        tracing::info!(url = %pg::redact(url), "PostgreSQL memory store open");
        Ok(PostgresStore {
            inner: Arc::new(Inner {
                pool,
                idempotency_window: options.idempotency_window,
                writes: AtomicU64::new(0),
                reads: AtomicU64::new(0),
                last_purge: AtomicI64::new(Utc::now().timestamp()),
                vectors: SyncedIndex::default(),
            }),
        })
    }

    /// The pool (tests and tools run their own SQL through it).
    pub fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    async fn client(&self) -> Result<deadpool_postgres::Client, StorageError> {
        Ok(self.inner.pool.get().await.map_err(pg::PgError::from)?)
    }

    /// A pooled connection for a read; counts the read.
    async fn reader(&self) -> Result<deadpool_postgres::Client, StorageError> {
        let client = self.client().await?;
        self.inner.reads.fetch_add(1, Ordering::Relaxed);
        Ok(client)
    }

    /// Deletes expired idempotency keys when the last purge is older than a minute (one
    /// caller wins the race; failures are logged, never the store's).
    async fn purge_if_due(&self, client: &deadpool_postgres::Client) {
        let now = Utc::now().timestamp();
        let last = self.inner.last_purge.load(Ordering::Relaxed);
        if now - last < PURGE_INTERVAL_SECS
            || self
                .inner
                .last_purge
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let horizon = horizon(self.inner.idempotency_window);
        if let Err(error) = client
            .execute("DELETE FROM idempotency WHERE created_at < $1", &[&horizon])
            .await
        {
            tracing::warn!(%error, "cannot purge expired idempotency keys");
        }
    }

    async fn store_inner(&self, memory: NewMemory) -> Result<StoredMemory, StorageError> {
        let mut client = self.client().await?;
        self.purge_if_due(&client).await;
        if memory.idempotency_key.is_none() && memory.created_at.is_none() {
            // One statement, committed on its own: one round trip.
            let stored = new_stored(&memory)?;
            let statement = client.prepare_cached(INSERT).await?;
            client
                .query_one(&statement, &InsertArgs::new(&memory, &stored).params())
                .await?;
            self.inner.writes.fetch_add(1, Ordering::Relaxed);
            return Ok(stored);
        }
        let tx = client.transaction().await?;
        // An import already present: answer it (and record the key with it).
        let existing = match memory.created_at {
            Some(original) => find_imported(&tx, &memory, original).await?,
            None => None,
        };
        let stored = match &existing {
            Some(existing) => existing.clone(),
            None => new_stored(&memory)?,
        };
        if let Some(key) = &memory.idempotency_key {
            let digest = arguments_digest(&memory);
            let result = serde_json::to_string(&stored)
                .map_err(|e| StorageError::Corrupt(format!("idempotency record: {e}")))?;
            let claim = tx
                .prepare_cached(
                    "INSERT INTO idempotency (user_id, key, result, arguments, created_at) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id, key) DO UPDATE SET \
                     result = EXCLUDED.result, arguments = EXCLUDED.arguments, \
                     created_at = EXCLUDED.created_at WHERE idempotency.created_at < $6 \
                     RETURNING 1",
                )
                .await?;
            let claimed = tx
                .query_opt(
                    &claim,
                    &[
                        &memory.user.as_str(),
                        key,
                        &result,
                        &digest,
                        &Utc::now(),
                        &horizon(self.inner.idempotency_window),
                    ],
                )
                .await?
                .is_some();
            if !claimed {
                // Another store holds the key within the window (committed: the claim waited
                // for it). This statement sees its record.
                let previous = tx
                    .query_one(
                        "SELECT result, arguments FROM idempotency WHERE user_id = $1 AND key = $2",
                        &[&memory.user.as_str(), key],
                    )
                    .await?;
                let previous_result: String = previous.try_get(0)?;
                let previous_digest: String = previous.try_get(1)?;
                drop(tx);
                if !previous_digest.is_empty() && previous_digest != digest {
                    return Err(StorageError::KeyReused { key: key.clone() });
                }
                let mut replay: StoredMemory = serde_json::from_str(&previous_result)
                    .map_err(|e| StorageError::Corrupt(format!("idempotency record: {e}")))?;
                replay.replayed = true;
                return Ok(replay);
            }
        }
        if existing.is_none() {
            let statement = tx.prepare_cached(INSERT).await?;
            tx.query_one(&statement, &InsertArgs::new(&memory, &stored).params())
                .await?;
        }
        tx.commit()
            .await
            .map_err(|e| StorageError::Commit(e.to_string()))?;
        self.inner.writes.fetch_add(1, Ordering::Relaxed);
        Ok(stored)
    }

    async fn delete_inner(
        &self,
        user: UserId,
        id: MemoryId,
    ) -> Result<Option<MemorySummary>, StorageError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "DELETE FROM memories WHERE user_id = $1 AND id = $2 \
                 RETURNING {SUMMARY_COLUMNS}, position"
            ))
            .await?;
        let row = client
            .query_opt(&statement, &[&user.as_str(), &id.to_string()])
            .await?;
        self.inner.writes.fetch_add(1, Ordering::Relaxed);
        if let Some(row) = &row {
            let position: i64 = row.try_get(8)?;
            self.inner.vectors.forget(user.as_str(), position).await;
        }
        row.as_ref().map(summary_from_row).transpose()
    }
}

/// What a new memory will be stored as: a fresh id, now (or the import's time).
fn new_stored(memory: &NewMemory) -> Result<StoredMemory, StorageError> {
    let created_at = micros(memory.created_at.unwrap_or_else(Utc::now))?;
    Ok(StoredMemory {
        meta: MemoryMeta {
            id: MemoryId::new(),
            filename: memory.filename.clone(),
            stored_as: format!("{}_{}", created_at.format("%Y%m%d_%H%M%S"), memory.filename),
            description: memory.description.clone(),
            tags: memory.tags.clone(),
            created_at,
            size_bytes: memory.content.len() as u64,
        },
        replayed: false,
    })
}

/// The oldest `created_at` of a live idempotency key.
fn horizon(window: Duration) -> DateTime<Utc> {
    let window = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
    Utc::now()
        .checked_sub_signed(window)
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// `at` truncated to microseconds, PostgreSQL's precision, so the returned value equals what
/// a later read returns.
fn micros(at: DateTime<Utc>) -> Result<DateTime<Utc>, StorageError> {
    super::sql::micros_to_datetime(at.timestamp_micros())
}

/// Words of `text` as the index sees them (the SQLite engine's split).
fn words(text: &str) -> String {
    crate::shared::domain::fts_words(text).join(" ")
}

impl MemoryStore for PostgresStore {
    fn store(&self, memory: NewMemory) -> BoxFuture<'static, Result<StoredMemory, StorageError>> {
        let store = self.clone();
        traced(
            "postgres store",
            async move { store.store_inner(memory).await },
        )
    }

    fn search(
        &self,
        query: SearchQuery,
    ) -> BoxFuture<'static, Result<Vec<MemorySummary>, StorageError>> {
        let store = self.clone();
        traced("postgres search", async move {
            let client = &store.reader().await?;
            search(&store, client, &query).await
        })
    }

    fn get(
        &self,
        user: UserId,
        id: MemoryId,
    ) -> BoxFuture<'static, Result<Option<Memory>, StorageError>> {
        let store = self.clone();
        traced("postgres get", async move {
            let client = &store.reader().await?;
            let statement = client
                .prepare_cached(
                    "SELECT id, filename, stored_as, description, tags, created_at, size_bytes, \
                     content FROM memories WHERE user_id = $1 AND id = $2",
                )
                .await?;
            let row = client
                .query_opt(&statement, &[&user.as_str(), &id.to_string()])
                .await?;
            Ok(row
                .as_ref()
                .map(summary_from_row)
                .transpose()?
                .map(MemorySummary::into_memory))
        })
    }

    fn delete(
        &self,
        user: UserId,
        id: MemoryId,
    ) -> BoxFuture<'static, Result<Option<MemorySummary>, StorageError>> {
        let store = self.clone();
        traced("postgres delete", async move {
            store.delete_inner(user, id).await
        })
    }

    fn list_tags(&self, user: UserId) -> BoxFuture<'static, Result<Vec<TagCount>, StorageError>> {
        let store = self.clone();
        traced("postgres list_tags", async move {
            let client = &store.reader().await?;
            let statement = client
                .prepare_cached(
                    "SELECT tag, count(*) AS n FROM memory_tags WHERE user_id = $1 \
                     GROUP BY tag ORDER BY n DESC, tag COLLATE \"C\" ASC",
                )
                .await?;
            let rows = client.query(&statement, &[&user.as_str()]).await?;
            rows.iter()
                .map(|row| {
                    Ok(TagCount {
                        tag: row.try_get(0)?,
                        count: row.try_get::<_, i64>(1)?.max(0) as u64,
                    })
                })
                .collect()
        })
    }

    fn list(
        &self,
        query: ListQuery,
    ) -> BoxFuture<'static, Result<Vec<ListedMemory>, StorageError>> {
        let store = self.clone();
        traced("postgres list", async move {
            let client = &store.reader().await?;
            list(client, &query).await
        })
    }

    fn complete(
        &self,
        query: CompletionQuery,
    ) -> BoxFuture<'static, Result<Vec<String>, StorageError>> {
        let store = self.clone();
        traced("postgres complete", async move {
            let client = &store.reader().await?;
            complete(client, &query).await
        })
    }

    fn vector_tasks(
        &self,
        model: String,
        limit: u32,
    ) -> BoxFuture<'static, Result<(Vec<super::VectorTask>, u64), StorageError>> {
        let store = self.clone();
        traced("postgres vector_tasks", async move {
            let client = &store.reader().await?;
            vector_tasks(client, &model, limit).await
        })
    }

    fn put_vectors(
        &self,
        model: String,
        vectors: Vec<(MemoryId, Vec<f32>)>,
    ) -> BoxFuture<'static, Result<u64, StorageError>> {
        let store = self.clone();
        traced("postgres put_vectors", async move {
            let client = &store.client().await?;
            let written = put_vectors(client, &model, &vectors).await?;
            store.inner.writes.fetch_add(1, Ordering::Relaxed);
            Ok(written)
        })
    }

    fn stats(&self) -> StorageStats {
        let writes = self.inner.writes.load(Ordering::Relaxed);
        StorageStats {
            writes,
            // Each write is its own transaction (PostgreSQL groups their WAL flushes).
            commits: writes,
            reads: self.inner.reads.load(Ordering::Relaxed),
        }
    }
}

/// Wraps a storage future in a client span (`db.system.name = postgresql`).
fn traced<T: Send + 'static>(
    name: &'static str,
    future: impl Future<Output = Result<T, StorageError>> + Send + 'static,
) -> BoxFuture<'static, Result<T, StorageError>> {
    super::traced("postgresql", name, future)
}
