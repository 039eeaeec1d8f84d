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
    CompletionField, ListQuery, ListedMemory, Memory, MemoryStore, MemorySummary, NewMemory,
    PREVIEW_CHARS, SearchQuery, StorageError, StorageStats, StoredMemory, TagCount,
};
use crate::shared::domain::{MemoryId, UserId};
use crate::shared::pg::{self, Migration, Pool, PoolOptions};

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
        id: MemoryId::new(),
        filename: memory.filename.clone(),
        stored_as: format!("{}_{}", created_at.format("%Y%m%d_%H%M%S"), memory.filename),
        description: memory.description.clone(),
        tags: memory.tags.clone(),
        created_at,
        size_bytes: memory.content.len() as u64,
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

/// Inserts a memory, its tags and its user in one statement; returns its position.
const INSERT: &str = "WITH m AS (
        INSERT INTO memories (id, user_id, filename, stored_as, description, tags,
            content, size_bytes, created_at, search)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9,
            setweight(to_tsvector('english', $10), 'A')
            || setweight(to_tsvector('english', $11), 'B')
            || setweight(to_tsvector('english', $12), 'C')
            || setweight(to_tsvector('english', $13), 'D'))
        RETURNING position
    ), t AS (
        INSERT INTO memory_tags (user_id, tag, position)
        SELECT $2, tag, m.position FROM m, unnest($6::text[]) AS tag
        ON CONFLICT DO NOTHING
    ), u AS (
        INSERT INTO users (user_id) VALUES ($2) ON CONFLICT DO NOTHING
    ), v AS (
        INSERT INTO memory_vectors (position, user_id, model, vector)
        SELECT m.position, $2, $14, $15::bytea FROM m WHERE $15::bytea IS NOT NULL
    )
    SELECT position FROM m";

/// The owned values behind [`INSERT`]'s parameters.
struct InsertArgs<'a> {
    memory: &'a NewMemory,
    stored: &'a StoredMemory,
    user: &'a str,
    id: String,
    size: i64,
    words: [String; 4],
    model: &'a str,
    vector: Option<Vec<u8>>,
}

impl<'a> InsertArgs<'a> {
    fn new(memory: &'a NewMemory, stored: &'a StoredMemory) -> Self {
        InsertArgs {
            memory,
            stored,
            user: memory.user.as_str(),
            id: stored.id.to_string(),
            size: i64::try_from(stored.size_bytes).unwrap_or(i64::MAX),
            words: [
                words(&memory.filename),
                words(&memory.description),
                words(&memory.tags.join(" ")),
                words(&memory.content),
            ],
            model: memory.embedding_model.as_deref().unwrap_or(""),
            vector: memory
                .embedding
                .as_deref()
                .filter(|v| !v.is_empty())
                .map(vectors::to_blob),
        }
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 15] {
        [
            &self.id,
            &self.user,
            &self.memory.filename,
            &self.stored.stored_as,
            &self.memory.description,
            &self.memory.tags,
            &self.memory.content,
            &self.size,
            &self.stored.created_at,
            &self.words[0],
            &self.words[1],
            &self.words[2],
            &self.words[3],
            &self.model,
            &self.vector,
        ]
    }
}

/// The memory an import would duplicate: same user, filename and content, stored within the
/// same second as `original` (seed file names carry seconds only).
async fn find_imported(
    tx: &deadpool_postgres::Transaction<'_>,
    memory: &NewMemory,
    original: DateTime<Utc>,
) -> Result<Option<StoredMemory>, StorageError> {
    let second = super::sql::micros_to_datetime(original.timestamp().saturating_mul(1_000_000))?;
    let next = second + chrono::Duration::seconds(1);
    let row = tx
        .query_opt(
            &format!(
                "SELECT {SUMMARY_COLUMNS} FROM memories WHERE user_id = $1 \
                 AND created_at >= $2 AND created_at < $3 AND filename = $4 AND content = $5 \
                 LIMIT 1"
            ),
            &[
                &memory.user.as_str(),
                &second,
                &next,
                &memory.filename,
                &memory.content,
            ],
        )
        .await?;
    Ok(match row {
        Some(row) => {
            let summary = summary_from_row(&row)?;
            Some(StoredMemory {
                id: summary.id,
                filename: summary.filename,
                stored_as: summary.stored_as,
                description: summary.description,
                tags: summary.tags,
                created_at: summary.created_at,
                size_bytes: summary.size_bytes,
                replayed: true,
            })
        }
        None => None,
    })
}

/// Decodes the eight summary columns ([`SUMMARY_COLUMNS`]).
fn summary_from_row(row: &Row) -> Result<MemorySummary, StorageError> {
    let id: String = row.try_get(0)?;
    let size: i64 = row.try_get(6)?;
    Ok(MemorySummary {
        id: MemoryId::parse(&id).map_err(|e| StorageError::Corrupt(e.to_string()))?,
        filename: row.try_get(1)?,
        stored_as: row.try_get(2)?,
        description: row.try_get(3)?,
        tags: row.try_get(4)?,
        created_at: row.try_get(5)?,
        size_bytes: size.max(0) as u64,
        preview: row.try_get(7)?,
    })
}

type Params = Vec<Box<dyn ToSql + Sync + Send>>;

fn refs(params: &Params) -> Vec<&(dyn ToSql + Sync)> {
    params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

async fn search(
    store: &PostgresStore,
    client: &deadpool_postgres::Client,
    query: &SearchQuery,
) -> Result<Vec<MemorySummary>, StorageError> {
    let has_query = query.terms.is_some() || query.text.is_some();
    match (&query.vector, query.mode) {
        (Some(vector), super::SearchMode::Hybrid | super::SearchMode::Semantic) if has_query => {
            vector_search(store, client, query, vector).await
        }
        (None, super::SearchMode::Semantic) if has_query => Err(vectors::no_provider()),
        _ => keyword_search(client, query).await,
    }
}

/// Appends the query's time and tag filters on the columns of `memories` aliased `m`.
fn push_filters(query: &SearchQuery, params: &mut Params, sql: &mut String) {
    if let Some(since) = query.since {
        params.push(Box::new(since));
        sql.push_str(&format!(" AND m.created_at >= ${}", params.len()));
    }
    if let Some(until) = query.until {
        params.push(Box::new(until));
        sql.push_str(&format!(" AND m.created_at < ${}", params.len()));
    }
    if !query.tags.is_empty() {
        params.push(Box::new(query.tags.clone()));
        sql.push_str(&format!(" AND m.tags && ${}::text[]", params.len()));
    }
}

/// The keyword search's statement selecting `columns`, with its parameters (the page's
/// limit and offset last); `None` when the query has no searchable word (it matches
/// nothing: it must not match everything).
fn keyword_statement(
    query: &SearchQuery,
    columns: &str,
    limit: i64,
    offset: i64,
) -> Option<(String, Params)> {
    let mut params: Params = vec![Box::new(query.user.as_str().to_owned())];
    let mut sql = format!("SELECT {columns} FROM memories m WHERE m.user_id = $1");
    let ranked = match &query.terms {
        Some(terms) if !terms.is_empty() => {
            params.push(Box::new(terms.terms().join(" or ")));
            sql.push_str(" AND m.search @@ websearch_to_tsquery('english', $2)");
            true
        }
        Some(_) => return None,
        None => false,
    };
    push_filters(query, &mut params, &mut sql);
    if ranked {
        // Weights {D content, C tags, B description, A filename}; normalisation 1 divides
        // by 1 + log(length), as bm25 favours short documents.
        sql.push_str(
            " ORDER BY ts_rank_cd('{0.3, 0.6, 0.6, 1.0}', m.search, \
             websearch_to_tsquery('english', $2), 1) DESC, m.created_at DESC, m.position DESC",
        );
    } else {
        sql.push_str(" ORDER BY m.created_at DESC, m.position DESC");
    }
    params.push(Box::new(limit));
    params.push(Box::new(offset));
    sql.push_str(&format!(
        " LIMIT ${} OFFSET ${}",
        params.len() - 1,
        params.len()
    ));
    Some((sql, params))
}

async fn keyword_search(
    client: &deadpool_postgres::Client,
    query: &SearchQuery,
) -> Result<Vec<MemorySummary>, StorageError> {
    let Some((sql, params)) = keyword_statement(
        query,
        SUMMARY_COLUMNS,
        i64::from(query.limit),
        i64::from(query.offset),
    ) else {
        return Ok(Vec::new());
    };
    let statement = client.prepare_cached(&sql).await?;
    let rows = client.query(&statement, &refs(&params)).await?;
    rows.iter().map(summary_from_row).collect()
}

/// Hybrid or semantic search: the user's cached vectors are scanned (approximately, `i8`),
/// the best candidates re-scored exactly from their stored `f32`s with the filters applied,
/// then fused with the keyword ranking (hybrid), as the SQLite engine does.
async fn vector_search(
    store: &PostgresStore,
    client: &deadpool_postgres::Client,
    query: &SearchQuery,
    vector: &[f32],
) -> Result<Vec<MemorySummary>, StorageError> {
    let user = query.user.as_str();
    let (candidates, depth) = vectors::search_depths(query);
    let entry = store.inner.vectors.user(user);
    let approx = {
        let mut cache = entry.lock().await;
        refresh(client, user, &mut cache).await?;
        cache.vectors.top(vector, candidates)
    };
    let mut semantic = Vec::with_capacity(approx.len());
    if !approx.is_empty() {
        let mut params: Params = vec![Box::new(user.to_owned()), Box::new(approx.clone())];
        let mut sql = String::from(
            "SELECT v.position, v.vector FROM memory_vectors v \
             JOIN memories m ON m.position = v.position \
             WHERE m.user_id = $1 AND v.position = ANY($2)",
        );
        push_filters(query, &mut params, &mut sql);
        let statement = client.prepare_cached(&sql).await?;
        let rows = client.query(&statement, &refs(&params)).await?;
        for row in &rows {
            let position: i64 = row.try_get(0)?;
            let blob: &[u8] = row.try_get(1)?;
            let stored = vectors::from_blob(blob);
            if stored.len() == vector.len() {
                semantic.push((
                    crate::memory_server::embeddings::bert::dot(&stored, vector),
                    position,
                ));
            }
        }
        if !vectors::is_filtered(query) && rows.len() < approx.len() {
            // Deleted by another process since the cache read them.
            let found: std::collections::HashSet<i64> =
                semantic.iter().map(|(_, position)| *position).collect();
            let mut cache = entry.lock().await;
            for position in approx.iter().filter(|p| !found.contains(p)) {
                cache.vectors.remove(*position);
            }
        }
    }
    semantic.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)));
    semantic.truncate(depth);
    let semantic: Vec<i64> = semantic.into_iter().map(|(_, position)| position).collect();
    let ranked = if query.mode == super::SearchMode::Semantic {
        semantic
    } else {
        let keyword = match keyword_statement(query, "m.position", depth as i64, 0) {
            Some((sql, params)) => {
                let statement = client.prepare_cached(&sql).await?;
                client
                    .query(&statement, &refs(&params))
                    .await?
                    .iter()
                    .map(|row| row.try_get::<_, i64>(0))
                    .collect::<Result<Vec<_>, _>>()?
            }
            None => Vec::new(),
        };
        vectors::fuse(&keyword, &semantic, query.semantic_weight)
    };
    let page: Vec<i64> = ranked
        .into_iter()
        .skip(query.offset as usize)
        .take(query.limit as usize)
        .collect();
    if page.is_empty() {
        return Ok(Vec::new());
    }
    let statement = client
        .prepare_cached(&format!(
            "SELECT {SUMMARY_COLUMNS}, position FROM memories \
             WHERE user_id = $1 AND position = ANY($2)"
        ))
        .await?;
    let rows = client.query(&statement, &[&user, &page]).await?;
    let mut by_position = std::collections::HashMap::with_capacity(rows.len());
    for row in &rows {
        by_position.insert(row.try_get::<_, i64>(8)?, summary_from_row(row)?);
    }
    Ok(page
        .iter()
        .filter_map(|position| by_position.remove(position))
        .collect())
}

/// Brings this process's cache of `user`'s vectors up to date (see [`SyncedUser`]): one
/// statement reads the rows written since the cache's horizon and the new horizon.
async fn refresh(
    client: &deadpool_postgres::Client,
    user: &str,
    cache: &mut SyncedUser,
) -> Result<(), StorageError> {
    let statement = client
        .prepare_cached(
            "WITH s AS (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS horizon) \
             SELECT s.horizon, v.position, v.vector FROM s LEFT JOIN memory_vectors v \
             ON v.user_id = $1 AND v.wtx >= $2 ORDER BY v.position",
        )
        .await?;
    let since = cache.horizon.unwrap_or(i64::MIN);
    let rows = client.query(&statement, &[&user, &since]).await?;
    let mut horizon = since;
    for row in &rows {
        horizon = row.try_get(0)?;
        let position: Option<i64> = row.try_get(1)?;
        let blob: Option<&[u8]> = row.try_get(2)?;
        if let (Some(position), Some(blob)) = (position, blob) {
            cache.vectors.upsert(position, &vectors::from_blob(blob));
        }
    }
    cache.horizon = Some(horizon);
    Ok(())
}

/// Memories without a vector of `model`, oldest first, and how many there are.
async fn vector_tasks(
    client: &deadpool_postgres::Client,
    model: &str,
    limit: u32,
) -> Result<(Vec<super::VectorTask>, u64), StorageError> {
    const MISSING: &str = "FROM memories m LEFT JOIN memory_vectors v ON v.position = m.position \
                           WHERE v.position IS NULL OR v.model <> $1";
    let count = client
        .prepare_cached(&format!("SELECT count(*) {MISSING}"))
        .await?;
    let remaining: i64 = client.query_one(&count, &[&model]).await?.try_get(0)?;
    let statement = client
        .prepare_cached(&format!(
            "SELECT m.id, m.user_id, m.content, m.description, m.tags {MISSING} \
             ORDER BY m.position LIMIT $2"
        ))
        .await?;
    let rows = client
        .query(&statement, &[&model, &i64::from(limit)])
        .await?;
    let mut tasks = Vec::with_capacity(rows.len());
    for row in &rows {
        let id: String = row.try_get(0)?;
        let user: String = row.try_get(1)?;
        tasks.push(super::VectorTask {
            id: MemoryId::parse(&id).map_err(|e| StorageError::Corrupt(e.to_string()))?,
            user: UserId::parse(&user).map_err(|e| StorageError::Corrupt(e.to_string()))?,
            content: row.try_get(2)?,
            description: row.try_get(3)?,
            tags: row.try_get(4)?,
        });
    }
    Ok((tasks, remaining.max(0) as u64))
}

/// Stores vectors by memory id (replacing older ones) in one statement; returns how many
/// memories got one (deleted ones are skipped).
async fn put_vectors(
    client: &deadpool_postgres::Client,
    model: &str,
    batch: &[(MemoryId, Vec<f32>)],
) -> Result<u64, StorageError> {
    let ids: Vec<String> = batch.iter().map(|(id, _)| id.to_string()).collect();
    let blobs: Vec<Vec<u8>> = batch.iter().map(|(_, v)| vectors::to_blob(v)).collect();
    let statement = client
        .prepare_cached(
            "INSERT INTO memory_vectors (position, user_id, model, vector) \
             SELECT m.position, m.user_id, $1, x.vector \
             FROM unnest($2::text[], $3::bytea[]) AS x (id, vector) \
             JOIN memories m ON m.id = x.id \
             ON CONFLICT (position) DO UPDATE SET model = EXCLUDED.model, \
             vector = EXCLUDED.vector, wtx = EXCLUDED.wtx",
        )
        .await?;
    Ok(client.execute(&statement, &[&model, &ids, &blobs]).await?)
}

async fn list(
    client: &deadpool_postgres::Client,
    query: &ListQuery,
) -> Result<Vec<ListedMemory>, StorageError> {
    let dialect = Dialect {
        placeholder: '$',
        position: "m.position",
        tag_position: "position",
        always: "true",
    };
    let (sql, list_params) = list_statement(query, &dialect);
    let params: Params = list_params
        .into_iter()
        .map(|param| -> Box<dyn ToSql + Sync + Send> {
            match param {
                Param::Text(text) => Box::new(text),
                Param::Int(int) => Box::new(int),
            }
        })
        .collect();
    let statement = client.prepare_cached(&sql).await?;
    let rows = client.query(&statement, &refs(&params)).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let user: String = row.try_get(9)?;
        out.push(ListedMemory {
            position: row.try_get(8)?,
            user: UserId::parse(&user).map_err(|e| StorageError::Corrupt(e.to_string()))?,
            memory: summary_from_row(row)?.into_memory(),
        });
    }
    Ok(out)
}

async fn complete(
    client: &deadpool_postgres::Client,
    field: CompletionField,
    user: Option<&UserId>,
    prefix: &str,
    limit: u32,
) -> Result<Vec<String>, StorageError> {
    // `left(x, length(prefix)) = prefix` rather than LIKE: no wildcard escaping, exact text;
    // COLLATE "C" sorts by code point, as SQLite does.
    let limit = i64::from(limit);
    let rows = match (field, user) {
        (CompletionField::User, _) => {
            let statement = client
                .prepare_cached(
                    "SELECT user_id FROM users WHERE left(user_id, length($1)) = $1 \
                     ORDER BY user_id COLLATE \"C\" LIMIT $2",
                )
                .await?;
            client.query(&statement, &[&prefix, &limit]).await?
        }
        (_, None) => return Ok(Vec::new()),
        (CompletionField::Tag, Some(user)) => {
            let statement = client
                .prepare_cached(
                    "SELECT DISTINCT tag COLLATE \"C\" FROM memory_tags WHERE user_id = $1 \
                     AND left(tag, length($2)) = $2 ORDER BY 1 LIMIT $3",
                )
                .await?;
            client
                .query(
                    &statement,
                    &[&user.as_str(), &prefix.to_lowercase(), &limit],
                )
                .await?
        }
        (CompletionField::Filename, Some(user)) => {
            let statement = client
                .prepare_cached(
                    "SELECT DISTINCT filename COLLATE \"C\" FROM memories WHERE user_id = $1 \
                     AND left(filename, length($2)) = $2 ORDER BY 1 LIMIT $3",
                )
                .await?;
            client
                .query(&statement, &[&user.as_str(), &prefix, &limit])
                .await?
        }
    };
    rows.iter()
        .map(|row| Ok(row.try_get::<_, String>(0)?))
        .collect()
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
        field: CompletionField,
        user: Option<UserId>,
        prefix: String,
        limit: u32,
    ) -> BoxFuture<'static, Result<Vec<String>, StorageError>> {
        let store = self.clone();
        traced("postgres complete", async move {
            let client = &store.reader().await?;
            complete(client, field, user.as_ref(), &prefix, limit).await
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
