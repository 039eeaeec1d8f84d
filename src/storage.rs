//! Where memories live: the [`MemoryStore`] trait and its SQLite engine.
//!
//! The tool layer (`memory_server`) only sees the trait, so another engine (PostgreSQL) can
//! be added without touching it. The SQLite engine keeps every call off the async threads:
//!
//! - one **writer thread** owns the only read-write connection. It takes jobs from a
//!   channel, runs everything that queued up meanwhile in one transaction (each job in its
//!   own savepoint, so one failure never undoes another) and commits once: concurrent stores
//!   share one fsync (group commit). A store is acknowledged only after that commit, with
//!   `synchronous=FULL` in WAL mode, so it survives `kill -9` and a power cut.
//! - a small pool of **reader threads**, each with a read-only connection, serves queries
//!   concurrently (WAL lets readers run beside the writer).
//!
//! Full-text search uses an FTS5 table over content, description, filename and tags,
//! ranked by bm25, with **tenant-scoped tokens**: every indexed word is written as
//! `u<user number>q<word>` (see [`scoped_text`]), and queries ask for the same scoped terms.
//! So a search only ever reads the caller's own postings (the SQL checks `user_id` once
//! more), and bm25's per-term statistics cost a user's few rows, not the whole table's: at a
//! million memories a common word's global posting list would make every ranked query scan
//! hundreds of thousands of entries.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;

use chrono::{DateTime, TimeZone, Utc};
use futures::future::BoxFuture;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params_from_iter, types::Value};
use serde::Serialize;
use tokio::sync::oneshot;

use crate::domain::{MemoryId, SearchTerms, UserId};

mod migrations;

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
}

/// What a store returns: the memory's metadata (not its content).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct StoredMemory {
    /// Its id.
    pub id: MemoryId,
    /// Its sanitised filename.
    pub filename: String,
    /// The seed's `YYYYmmdd_HHMMSS_filename` name.
    pub stored_as: String,
    /// Description.
    pub description: String,
    /// Tags.
    pub tags: Vec<String>,
    /// When it was stored (UTC).
    pub created_at: DateTime<Utc>,
    /// Size of the content in bytes.
    pub size_bytes: u64,
    /// True when this answers a repeated idempotency key: nothing new was stored.
    #[serde(skip)]
    pub replayed: bool,
}

/// A stored memory, whole.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Memory {
    /// Its id.
    pub id: MemoryId,
    /// Its sanitised filename.
    pub filename: String,
    /// The seed's `YYYYmmdd_HHMMSS_filename` name.
    pub stored_as: String,
    /// Description ("" when none).
    pub description: String,
    /// Tags.
    pub tags: Vec<String>,
    /// When it was stored (UTC).
    pub created_at: DateTime<Utc>,
    /// Size of `content` in bytes.
    pub size_bytes: u64,
    /// The content.
    pub content: String,
}

/// A search hit: a memory without its full content.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemorySummary {
    /// Its id.
    pub id: MemoryId,
    /// Its sanitised filename.
    pub filename: String,
    /// The seed's `YYYYmmdd_HHMMSS_filename` name.
    pub stored_as: String,
    /// Description.
    pub description: String,
    /// Tags.
    pub tags: Vec<String>,
    /// When it was stored (UTC).
    pub created_at: DateTime<Utc>,
    /// Size of the full content in bytes.
    pub size_bytes: u64,
    /// The first [`PREVIEW_CHARS`] characters of the content.
    pub preview: String,
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
    /// Up to `limit` distinct values of `field` starting with `prefix` (case-insensitive for
    /// tags, which are stored lower-case), sorted. `user` scopes tags and filenames; it is
    /// ignored for [`CompletionField::User`].
    fn complete(
        &self,
        field: CompletionField,
        user: Option<UserId>,
        prefix: String,
        limit: u32,
    ) -> BoxFuture<'static, Result<Vec<String>, StorageError>>;
    /// Counters.
    fn stats(&self) -> StorageStats;
}

/// Tuning of the SQLite engine.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Reader threads (and read connections).
    pub readers: usize,
    /// Most write jobs in one transaction.
    pub max_batch: usize,
    /// How long idempotency keys are remembered.
    pub idempotency_window: std::time::Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            readers: 4,
            max_batch: 512,
            idempotency_window: std::time::Duration::from_secs(24 * 3600),
        }
    }
}

// === impl SqliteStore ===

type ReadJob = Box<dyn FnOnce(&Connection) + Send>;

/// A unit of work for the writer thread.
trait WriteJob: Send {
    /// Runs the job's statements inside the current transaction and keeps its result;
    /// returns whether it succeeded. It may run again after a rollback, so it must not
    /// consume its inputs.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers the caller once the transaction's fate is known: the job's own result after
    /// a commit, or the commit's error.
    fn finish(self: Box<Self>, commit: Result<(), String>);
}

struct Job<T, F> {
    work: F,
    result: Option<Result<T, StorageError>>,
    reply: oneshot::Sender<Result<T, StorageError>>,
}

impl<T, F> WriteJob for Job<T, F>
where
    T: Send,
    F: FnMut(&Connection) -> Result<T, StorageError> + Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let result = (self.work)(conn);
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn finish(self: Box<Self>, commit: Result<(), String>) {
        let reply = match (commit, self.result) {
            (Ok(()), Some(result)) => result,
            (Ok(()), None) => Err(StorageError::Closed),
            (Err(message), _) => Err(StorageError::Commit(message)),
        };
        // The caller may have given up (deadline, disconnect); nothing to do then.
        let _ = self.reply.send(reply);
    }
}

/// The SQLite engine. Cheap to clone; the threads stop when the last clone is dropped.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    writer: crossbeam_channel::Sender<Box<dyn WriteJob>>,
    readers: crossbeam_channel::Sender<ReadJob>,
    counters: Arc<Counters>,
    path: PathBuf,
    idempotency_window: std::time::Duration,
}

#[derive(Default)]
struct Counters {
    writes: AtomicU64,
    commits: AtomicU64,
    reads: AtomicU64,
}

/// Jobs queued for the writer, and for the readers, before callers get [`StorageError::Busy`].
const QUEUE_CAPACITY: usize = 4096;

impl SqliteStore {
    /// Opens (creating if needed) `memento.db` in `data_dir`, runs migrations and starts the
    /// writer and reader threads.
    pub fn open(data_dir: &Path, options: &SqliteOptions) -> Result<SqliteStore, StorageError> {
        SqliteStore::open_with_queues(data_dir, options, QUEUE_CAPACITY)
    }

    /// [`SqliteStore::open`] with job queues of `capacity` (tests use tiny ones).
    pub(crate) fn open_with_queues(
        data_dir: &Path,
        options: &SqliteOptions,
        capacity: usize,
    ) -> Result<SqliteStore, StorageError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StorageError::DataDir {
            path: data_dir.to_owned(),
            source,
        })?;
        let path = data_dir.join("memento.db");
        let writer_conn = Connection::open(&path)?;
        configure(&writer_conn)?;
        migrations::run(&writer_conn)?;

        let counters = Arc::new(Counters::default());
        let (writer_tx, writer_rx) =
            crossbeam_channel::bounded::<Box<dyn WriteJob>>(capacity.max(1));
        let writer_counters = counters.clone();
        let max_batch = options.max_batch.max(1);
        let options_window = options.idempotency_window;
        thread::Builder::new()
            .name("memento-sqlite-writer".into())
            .spawn(move || {
                writer_loop(
                    writer_conn,
                    writer_rx,
                    max_batch,
                    writer_counters,
                    options_window,
                )
            })
            .map_err(|source| StorageError::DataDir {
                path: data_dir.to_owned(),
                source,
            })?;

        let (reader_tx, reader_rx) = crossbeam_channel::bounded::<ReadJob>(capacity.max(1));
        for n in 0..options.readers.max(1) {
            let conn = Connection::open_with_flags(
                &path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            configure_reader(&conn)?;
            let rx = reader_rx.clone();
            thread::Builder::new()
                .name(format!("memento-sqlite-reader-{n}"))
                .spawn(move || {
                    while let Ok(job) = rx.recv() {
                        job(&conn);
                    }
                })
                .map_err(|source| StorageError::DataDir {
                    path: data_dir.to_owned(),
                    source,
                })?;
        }
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                writer: writer_tx,
                readers: reader_tx,
                counters,
                path,
                idempotency_window: options.idempotency_window,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` on a reader thread.
    fn read<T, F>(&self, f: F) -> BoxFuture<'static, Result<T, StorageError>>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StorageError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let counters = self.inner.counters.clone();
        let job: ReadJob = Box::new(move |conn| {
            counters.reads.fetch_add(1, Ordering::Relaxed);
            // The caller may have given up (deadline, disconnect); nothing to do then.
            let _ = tx.send(f(conn));
        });
        // Never `send`: it would block an async worker thread while the queue is full.
        let sent = self.inner.readers.try_send(job).map_err(queue_error);
        Box::pin(async move {
            sent?;
            rx.await.map_err(|_| StorageError::Closed)?
        })
    }

    /// Runs `f` on the writer thread inside the next group commit; resolves after the commit.
    /// `f` may run twice (see `writer_loop`), so it borrows what it needs.
    fn write<T, F>(&self, f: F) -> BoxFuture<'static, Result<T, StorageError>>
    where
        T: Send + 'static,
        F: FnMut(&Connection) -> Result<T, StorageError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Box<dyn WriteJob> = Box::new(Job {
            work: f,
            result: None,
            reply: tx,
        });
        // Never `send`: it would block an async worker thread while the queue is full.
        let sent = self.inner.writer.try_send(job).map_err(queue_error);
        Box::pin(async move {
            sent?;
            rx.await.map_err(|_| StorageError::Closed)?
        })
    }
}

/// A full queue is [`StorageError::Busy`]; a queue with no thread behind it is `Closed`.
fn queue_error<T>(error: crossbeam_channel::TrySendError<T>) -> StorageError {
    match error {
        crossbeam_channel::TrySendError::Full(_) => StorageError::Busy,
        crossbeam_channel::TrySendError::Disconnected(_) => StorageError::Closed,
    }
}

fn configure(conn: &Connection) -> Result<(), StorageError> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StorageError::Corrupt(format!(
            "could not switch to WAL (journal_mode={mode})"
        )));
    }
    // FULL: every commit fsyncs the WAL, so an acknowledged store survives a power cut.
    conn.execute_batch(
        "PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON; PRAGMA temp_store=MEMORY;",
    )?;
    Ok(())
}

fn configure_reader(conn: &Connection) -> Result<(), StorageError> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.execute_batch("PRAGMA query_only=ON; PRAGMA cache_size=-8000;")?;
    Ok(())
}

/// The writer thread: group commit.
///
/// Everything queued is run in one transaction and committed once. Per-job savepoints would
/// make FTS5 flush its pending terms at every job (measured: a third of the writer's time),
/// so the fast path has none; if any job fails, the batch is rolled back and each job re-run
/// in its own transaction, so one bad job never fails or undoes another.
fn writer_loop(
    conn: Connection,
    rx: crossbeam_channel::Receiver<Box<dyn WriteJob>>,
    max_batch: usize,
    counters: Arc<Counters>,
    idempotency_window: std::time::Duration,
) {
    let mut batch: Vec<Box<dyn WriteJob>> = Vec::with_capacity(max_batch);
    let mut last_purge = std::time::Instant::now();
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let jobs = batch.len() as u64;
        if last_purge.elapsed() > PURGE_INTERVAL {
            last_purge = std::time::Instant::now();
            purge_idempotency(&conn, idempotency_window);
        }
        let outcome = run_batch(&conn, &mut batch);
        match outcome {
            Ok(()) => {
                counters.writes.fetch_add(jobs, Ordering::Relaxed);
                counters.commits.fetch_add(1, Ordering::Relaxed);
                for job in batch.drain(..) {
                    job.finish(Ok(()));
                }
            }
            Err(BatchFailure::Begin(message)) => {
                tracing::error!(error = %message, "cannot begin a write transaction");
                for job in batch.drain(..) {
                    job.finish(Err(message.clone()));
                }
            }
            Err(BatchFailure::Job) => {
                // Slow path: one transaction per job.
                for mut job in batch.drain(..) {
                    let result = run_batch(&conn, std::slice::from_mut(&mut job));
                    let commit = match result {
                        Ok(()) => {
                            counters.writes.fetch_add(1, Ordering::Relaxed);
                            counters.commits.fetch_add(1, Ordering::Relaxed);
                            Ok(())
                        }
                        // The job's own error is in its result; report it, not a commit error.
                        Err(BatchFailure::Job) => Ok(()),
                        Err(BatchFailure::Begin(message)) => Err(message),
                    };
                    job.finish(commit);
                }
            }
        }
    }
    // All senders are gone: a clean shutdown. Fold the WAL back into the database.
    let _ = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)");
}

/// How often expired idempotency keys are deleted.
const PURGE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

fn purge_idempotency(conn: &Connection, window: std::time::Duration) {
    let horizon =
        Utc::now().timestamp_micros() - i64::try_from(window.as_micros()).unwrap_or(i64::MAX);
    if let Err(error) = conn.execute("DELETE FROM idempotency WHERE created_at < ?1", [horizon]) {
        tracing::warn!(%error, "cannot purge expired idempotency keys");
    }
}

enum BatchFailure {
    /// `BEGIN` or `COMMIT` failed: nothing was stored.
    Begin(String),
    /// A job failed; the transaction was rolled back.
    Job,
}

fn run_batch(conn: &Connection, jobs: &mut [Box<dyn WriteJob>]) -> Result<(), BatchFailure> {
    conn.execute_batch("BEGIN IMMEDIATE")
        .map_err(|e| BatchFailure::Begin(e.to_string()))?;
    for job in jobs.iter_mut() {
        if !job.run(conn) {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(BatchFailure::Job);
        }
    }
    conn.execute_batch("COMMIT").map_err(|e| {
        let _ = conn.execute_batch("ROLLBACK");
        BatchFailure::Begin(e.to_string())
    })
}

// === impl MemoryStore for SqliteStore ===

impl MemoryStore for SqliteStore {
    fn store(&self, memory: NewMemory) -> BoxFuture<'static, Result<StoredMemory, StorageError>> {
        let window = self.inner.idempotency_window;
        traced(
            "sqlite store",
            self.write(move |conn| insert_memory(conn, &memory, window)),
        )
    }

    fn search(
        &self,
        query: SearchQuery,
    ) -> BoxFuture<'static, Result<Vec<MemorySummary>, StorageError>> {
        traced("sqlite search", self.read(move |conn| search(conn, &query)))
    }

    fn get(
        &self,
        user: UserId,
        id: MemoryId,
    ) -> BoxFuture<'static, Result<Option<Memory>, StorageError>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, filename, stored_as, description, tags, created_at, size_bytes, content \
                 FROM memories WHERE user_id = ?1 AND id = ?2",
            )?;
            // Column 7 is the whole content here, decoded into `preview` and moved out.
            let row = stmt
                .query_row((user.as_str(), id.to_string()), summary_from_row)
                .optional()?;
            row.map(|summary| summary.map(MemorySummary::into_memory))
                .transpose()
        })
    }

    fn delete(
        &self,
        user: UserId,
        id: MemoryId,
    ) -> BoxFuture<'static, Result<Option<MemorySummary>, StorageError>> {
        self.write(move |conn| {
            let found = conn
                .prepare_cached(
                    "SELECT id, filename, stored_as, description, tags, created_at, size_bytes, \
                     substr(content, 1, ?3), rowid FROM memories WHERE user_id = ?1 AND id = ?2",
                )?
                .query_row(
                    (user.as_str(), id.to_string(), PREVIEW_CHARS as i64),
                    |row| Ok((summary_from_row(row)?, row.get::<_, i64>(8)?)),
                )
                .optional()?;
            let Some((summary, rowid)) = found else {
                return Ok(None);
            };
            conn.prepare_cached("DELETE FROM memories_fts WHERE rowid = ?1")?
                .execute([rowid])?;
            conn.prepare_cached("DELETE FROM memory_tags WHERE memory_rowid = ?1")?
                .execute([rowid])?;
            conn.prepare_cached("DELETE FROM memories WHERE rowid = ?1")?
                .execute([rowid])?;
            summary.map(Some)
        })
    }

    fn list_tags(&self, user: UserId) -> BoxFuture<'static, Result<Vec<TagCount>, StorageError>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT tag, count(*) AS n FROM memory_tags WHERE user_id = ?1 \
                 GROUP BY tag ORDER BY n DESC, tag ASC",
            )?;
            let rows = stmt.query_map([user.as_str()], |row| {
                Ok(TagCount {
                    tag: row.get(0)?,
                    count: row.get::<_, i64>(1)?.max(0) as u64,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn list(
        &self,
        query: ListQuery,
    ) -> BoxFuture<'static, Result<Vec<ListedMemory>, StorageError>> {
        traced("sqlite list", self.read(move |conn| list(conn, &query)))
    }

    fn complete(
        &self,
        field: CompletionField,
        user: Option<UserId>,
        prefix: String,
        limit: u32,
    ) -> BoxFuture<'static, Result<Vec<String>, StorageError>> {
        self.read(move |conn| complete(conn, field, user.as_ref(), &prefix, limit))
    }

    fn stats(&self) -> StorageStats {
        let counters = &self.inner.counters;
        StorageStats {
            writes: counters.writes.load(Ordering::Relaxed),
            commits: counters.commits.load(Ordering::Relaxed),
            reads: counters.reads.load(Ordering::Relaxed),
        }
    }
}

/// Wraps a storage future in a client span (`db.system.name = sqlite`): it covers the wait
/// for the storage thread and the work there, including the group commit.
fn traced<T: Send + 'static>(
    name: &'static str,
    future: BoxFuture<'static, Result<T, StorageError>>,
) -> BoxFuture<'static, Result<T, StorageError>> {
    let span = tracing::info_span!(
        "sqlite",
        otel.name = name,
        otel.kind = "client",
        db.system.name = "sqlite",
        db.operation.name = name.trim_start_matches("sqlite "),
    );
    Box::pin(tracing::Instrument::instrument(future, span))
}

/// The FTS prefix of a user's words: `u<user number in hex>q`. Hex digits never include
/// `q`, so the prefix is unambiguous, and it is all letters and digits, so the tokenizer keeps
/// it glued to the word.
fn scope_prefix(user_no: i64) -> String {
    format!("u{user_no:x}q")
}

/// Rewrites `text` for the FTS index: each word becomes `<scope prefix><word>`. Words are
/// split with FTS5 unicode61's own character classes (`domain::fts_words`), so each scoped
/// word is exactly one token: no text can make the tokenizer start a new token mid-word
/// (`xⓐu2qsecret` would otherwise plant `u2qsecret` in user 2's scope). Queries use the
/// same split (`SearchTerms`).
pub(crate) fn scoped_text(user_no: i64, text: &str) -> String {
    let prefix = scope_prefix(user_no);
    let mut out = String::with_capacity(text.len() + text.len() / 3);
    for word in crate::domain::fts_words(text) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&prefix);
        out.push_str(&word);
    }
    out
}

/// The user's number, creating it when `create` (writer only).
fn user_number(
    conn: &Connection,
    user: &UserId,
    create: bool,
) -> Result<Option<i64>, StorageError> {
    if create {
        conn.prepare_cached("INSERT OR IGNORE INTO users (user_id) VALUES (?1)")?
            .execute([user.as_str()])?;
    }
    Ok(conn
        .prepare_cached("SELECT user_no FROM users WHERE user_id = ?1")?
        .query_row([user.as_str()], |row| row.get(0))
        .optional()?)
}

/// Indexes one memory row.
fn index_memory(
    conn: &Connection,
    rowid: i64,
    user_no: i64,
    content: &str,
    description: &str,
    filename: &str,
    tags: &str,
) -> Result<(), StorageError> {
    conn.prepare_cached(
        "INSERT INTO memories_fts (rowid, content, description, filename, tags) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(rusqlite::params![
        rowid,
        scoped_text(user_no, content),
        scoped_text(user_no, description),
        scoped_text(user_no, filename),
        scoped_text(user_no, tags),
    ])?;
    Ok(())
}

/// Rebuilds the whole full-text index from `memories` (used by migrations).
pub(crate) fn reindex_all(conn: &Connection) -> Result<(), StorageError> {
    conn.execute_batch(
        "INSERT OR IGNORE INTO users (user_id) SELECT DISTINCT user_id FROM memories;",
    )?;
    let mut stmt = conn.prepare(
        "SELECT m.rowid, u.user_no, m.content, m.description, m.filename, m.tags \
         FROM memories m JOIN users u ON u.user_id = m.user_id",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let tags: String = row.get(5)?;
        index_memory(
            conn,
            row.get(0)?,
            row.get(1)?,
            &row.get::<_, String>(2)?,
            &row.get::<_, String>(3)?,
            &row.get::<_, String>(4)?,
            &tags.replace(',', " "),
        )?;
    }
    Ok(())
}

/// SHA-256 (hex) of a store's canonical arguments: the validated, normalised fields, each
/// length-prefixed so no two different argument sets encode alike. Kept with an idempotency
/// key, so a replay can be told from a different store that reuses the key.
pub(crate) fn arguments_digest(memory: &NewMemory) -> String {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    let mut field = |bytes: &[u8]| {
        context.update(&(bytes.len() as u64).to_le_bytes());
        context.update(bytes);
    };
    field(b"store_memory/v1");
    field(memory.user.as_str().as_bytes());
    field(memory.content.as_bytes());
    field(memory.filename.as_bytes());
    field(memory.description.as_bytes());
    field(&(memory.tags.len() as u64).to_le_bytes());
    for tag in &memory.tags {
        field(tag.as_bytes());
    }
    let digest = context.finish();
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn insert_memory(
    conn: &Connection,
    memory: &NewMemory,
    window: std::time::Duration,
) -> Result<StoredMemory, StorageError> {
    let now_micros = Utc::now().timestamp_micros();
    let digest = memory
        .idempotency_key
        .as_ref()
        .map(|_| arguments_digest(memory));
    if let (Some(key), Some(digest)) = (&memory.idempotency_key, &digest) {
        let horizon = now_micros - i64::try_from(window.as_micros()).unwrap_or(i64::MAX);
        let previous: Option<(String, String)> = conn
            .prepare_cached(
                "SELECT result, arguments FROM idempotency \
                 WHERE user_id = ?1 AND key = ?2 AND created_at >= ?3",
            )?
            .query_row((memory.user.as_str(), key, horizon), |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .optional()?;
        if let Some((previous, previous_digest)) = previous {
            // "" is a key stored before digests were kept: a replay, as it was then.
            if !previous_digest.is_empty() && previous_digest != *digest {
                return Err(StorageError::KeyReused { key: key.clone() });
            }
            let mut stored: StoredMemory = serde_json::from_str(&previous)
                .map_err(|e| StorageError::Corrupt(format!("idempotency record: {e}")))?;
            stored.replayed = true;
            return Ok(stored);
        }
    }
    if let Some(original) = memory.created_at
        && let Some(existing) = find_imported(conn, memory, original)?
    {
        return Ok(existing);
    }
    let id = MemoryId::new();
    let created_at = memory.created_at.unwrap_or_else(Utc::now);
    let created_micros = created_at.timestamp_micros();
    // Round-trip through micros so the returned value equals what a later read returns.
    let created_at = micros_to_datetime(created_micros)?;
    let stored_as = format!("{}_{}", created_at.format("%Y%m%d_%H%M%S"), memory.filename);
    let tags_text = memory.tags.join(",");
    let size_bytes = memory.content.len() as u64;
    conn.prepare_cached(
        "INSERT INTO memories (id, user_id, filename, stored_as, description, tags, content, \
         size_bytes, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(rusqlite::params![
        id.to_string(),
        memory.user.as_str(),
        memory.filename,
        stored_as,
        memory.description,
        tags_text,
        memory.content,
        size_bytes as i64,
        created_micros,
    ])?;
    let rowid = conn.last_insert_rowid();
    {
        let mut tag_stmt = conn.prepare_cached(
            "INSERT OR IGNORE INTO memory_tags (user_id, tag, memory_rowid) VALUES (?1, ?2, ?3)",
        )?;
        for tag in &memory.tags {
            tag_stmt.execute((memory.user.as_str(), tag, rowid))?;
        }
    }
    let user_no = user_number(conn, &memory.user, true)?
        .ok_or_else(|| StorageError::Corrupt("user number missing after insert".into()))?;
    index_memory(
        conn,
        rowid,
        user_no,
        &memory.content,
        &memory.description,
        &memory.filename,
        &memory.tags.join(" "),
    )?;
    let stored = StoredMemory {
        id,
        filename: memory.filename.clone(),
        stored_as,
        description: memory.description.clone(),
        tags: memory.tags.clone(),
        created_at,
        size_bytes,
        replayed: false,
    };
    if let (Some(key), Some(digest)) = (&memory.idempotency_key, &digest) {
        let result = serde_json::to_string(&stored)
            .map_err(|e| StorageError::Corrupt(format!("idempotency record: {e}")))?;
        conn.prepare_cached(
            "INSERT OR REPLACE INTO idempotency (user_id, key, result, created_at, arguments) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute((memory.user.as_str(), key, result, now_micros, digest))?;
    }
    Ok(stored)
}

/// The memory an import would duplicate: same user, filename and content, stored within the
/// same second as `original` (seed file names carry seconds only).
fn find_imported(
    conn: &Connection,
    memory: &NewMemory,
    original: DateTime<Utc>,
) -> Result<Option<StoredMemory>, StorageError> {
    let second = original.timestamp().saturating_mul(1_000_000);
    let found = conn
        .prepare_cached(
            "SELECT id, filename, stored_as, description, tags, created_at, size_bytes, '' \
             FROM memories WHERE user_id = ?1 AND created_at >= ?2 AND created_at < ?3 \
             AND filename = ?4 AND content = ?5 LIMIT 1",
        )?
        .query_row(
            rusqlite::params![
                memory.user.as_str(),
                second,
                second.saturating_add(1_000_000),
                memory.filename,
                memory.content,
            ],
            summary_from_row,
        )
        .optional()?;
    Ok(match found {
        Some(summary) => {
            let summary = summary?;
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

fn list(conn: &Connection, query: &ListQuery) -> Result<Vec<ListedMemory>, StorageError> {
    let mut sql = format!(
        "SELECT m.id, m.filename, m.stored_as, m.description, m.tags, m.created_at, \
         m.size_bytes, {}, m.rowid, m.user_id FROM memories m WHERE 1 = 1",
        if query.with_content {
            "m.content"
        } else {
            "''"
        }
    );
    let mut args: Vec<Value> = Vec::new();
    if let Some(user) = &query.user {
        args.push(Value::Text(user.as_str().to_owned()));
        sql.push_str(&format!(" AND m.user_id = ?{}", args.len()));
    }
    if let Some(after) = query.after {
        args.push(Value::Integer(after));
        sql.push_str(&format!(" AND m.rowid < ?{}", args.len()));
    }
    if let Some(filename) = &query.filename {
        args.push(Value::Text(filename.clone()));
        sql.push_str(&format!(" AND m.filename = ?{}", args.len()));
    }
    if let Some(tag) = &query.tag {
        args.push(Value::Text(tag.clone()));
        sql.push_str(&format!(
            " AND m.rowid IN (SELECT memory_rowid FROM memory_tags WHERE tag = ?{}{})",
            args.len(),
            if query.user.is_some() {
                " AND user_id = ?1"
            } else {
                ""
            }
        ));
    }
    args.push(Value::Integer(i64::from(query.limit)));
    sql.push_str(&format!(" ORDER BY m.rowid DESC LIMIT ?{}", args.len()));
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params_from_iter(args), |row| {
        let position: i64 = row.get(8)?;
        let user: String = row.get(9)?;
        Ok((summary_from_row(row)?, position, user))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (summary, position, user) = row?;
        out.push(ListedMemory {
            position,
            user: UserId::parse(&user).map_err(|e| StorageError::Corrupt(e.to_string()))?,
            memory: summary?.into_memory(),
        });
    }
    Ok(out)
}

fn complete(
    conn: &Connection,
    field: CompletionField,
    user: Option<&UserId>,
    prefix: &str,
    limit: u32,
) -> Result<Vec<String>, StorageError> {
    // `substr(x, 1, n) = prefix` rather than LIKE: no wildcard escaping, exact bytes.
    let (sql, prefix) = match field {
        CompletionField::User => (
            "SELECT user_id FROM users WHERE substr(user_id, 1, length(?2)) = ?2 \
             ORDER BY user_id LIMIT ?3",
            prefix.to_owned(),
        ),
        CompletionField::Tag => (
            "SELECT DISTINCT tag FROM memory_tags WHERE user_id = ?1 \
             AND substr(tag, 1, length(?2)) = ?2 ORDER BY tag LIMIT ?3",
            prefix.to_lowercase(),
        ),
        CompletionField::Filename => (
            "SELECT DISTINCT filename FROM memories WHERE user_id = ?1 \
             AND substr(filename, 1, length(?2)) = ?2 ORDER BY filename LIMIT ?3",
            prefix.to_owned(),
        ),
    };
    if field != CompletionField::User && user.is_none() {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(
        rusqlite::params![user.map(UserId::as_str), prefix, i64::from(limit)],
        |row| row.get::<_, String>(0),
    )?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

fn search(conn: &Connection, query: &SearchQuery) -> Result<Vec<MemorySummary>, StorageError> {
    let mut sql = String::new();
    let mut args: Vec<Value> = Vec::new();
    let ranked = match &query.terms {
        Some(terms) if !terms.is_empty() => {
            // No number: the user never stored anything.
            let Some(user_no) = user_number(conn, &query.user, false)? else {
                return Ok(Vec::new());
            };
            // CROSS JOIN fixes the order: the (small, scoped) full-text hits drive the join.
            sql.push_str(
                "SELECT m.id, m.filename, m.stored_as, m.description, m.tags, m.created_at, \
                 m.size_bytes, substr(m.content, 1, ?1) \
                 FROM memories_fts CROSS JOIN memories m ON m.rowid = memories_fts.rowid \
                 WHERE memories_fts MATCH ?2 AND m.user_id = ?3",
            );
            args.push(Value::Integer(PREVIEW_CHARS as i64));
            args.push(Value::Text(terms.to_fts5_scoped(&scope_prefix(user_no))));
            true
        }
        // A query with no searchable word matches nothing (it must not match everything).
        Some(_) => return Ok(Vec::new()),
        None => {
            sql.push_str(
                "SELECT m.id, m.filename, m.stored_as, m.description, m.tags, m.created_at, \
                 m.size_bytes, substr(m.content, 1, ?1) FROM memories m WHERE m.user_id = ?2",
            );
            args.push(Value::Integer(PREVIEW_CHARS as i64));
            false
        }
    };
    args.push(Value::Text(query.user.as_str().to_owned()));
    if let Some(since) = query.since {
        args.push(Value::Integer(since.timestamp_micros()));
        sql.push_str(&format!(" AND m.created_at >= ?{}", args.len()));
    }
    if let Some(until) = query.until {
        args.push(Value::Integer(until.timestamp_micros()));
        sql.push_str(&format!(" AND m.created_at < ?{}", args.len()));
    }
    if !query.tags.is_empty() {
        args.push(Value::Text(query.user.as_str().to_owned()));
        let user_arg = args.len();
        let mut placeholders = Vec::new();
        for tag in &query.tags {
            args.push(Value::Text(tag.clone()));
            placeholders.push(format!("?{}", args.len()));
        }
        sql.push_str(&format!(
            " AND m.rowid IN (SELECT memory_rowid FROM memory_tags WHERE user_id = ?{user_arg} \
             AND tag IN ({}))",
            placeholders.join(", ")
        ));
    }
    if ranked {
        // Weights: content 1, description 2, filename 3, tags 2.
        sql.push_str(" ORDER BY bm25(memories_fts, 1.0, 2.0, 3.0, 2.0), m.created_at DESC");
    } else {
        sql.push_str(" ORDER BY m.created_at DESC, m.rowid DESC");
    }
    args.push(Value::Integer(i64::from(query.limit)));
    args.push(Value::Integer(i64::from(query.offset)));
    sql.push_str(&format!(
        " LIMIT ?{} OFFSET ?{}",
        args.len() - 1,
        args.len()
    ));

    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params_from_iter(args), |row| summary_from_row(row))?;
    let mut out = Vec::new();
    for row in rows {
        out.push(row??);
    }
    Ok(out)
}

/// Decodes the first eight columns (id, filename, stored_as, description, tags, created_at,
/// size_bytes, preview). The outer `Result` is SQLite's, the inner one decoding's.
fn summary_from_row(
    row: &rusqlite::Row<'_>,
) -> rusqlite::Result<Result<MemorySummary, StorageError>> {
    let id: String = row.get(0)?;
    let tags: String = row.get(4)?;
    let created: i64 = row.get(5)?;
    let size: i64 = row.get(6)?;
    let filename: String = row.get(1)?;
    let stored_as: String = row.get(2)?;
    let description: String = row.get(3)?;
    let preview: String = row.get(7)?;
    Ok((|| {
        Ok(MemorySummary {
            id: MemoryId::parse(&id).map_err(|e| StorageError::Corrupt(e.to_string()))?,
            filename,
            stored_as,
            description,
            tags: split_tags(&tags),
            created_at: micros_to_datetime(created)?,
            size_bytes: size.max(0) as u64,
            preview,
        })
    })())
}

fn split_tags(text: &str) -> Vec<String> {
    text.split(',')
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

fn micros_to_datetime(micros: i64) -> Result<DateTime<Utc>, StorageError> {
    Utc.timestamp_micros(micros)
        .single()
        .ok_or_else(|| StorageError::Corrupt(format!("timestamp {micros} out of range")))
}

impl MemorySummary {
    /// Turns a row whose `preview` holds the whole content into a [`Memory`].
    fn into_memory(self) -> Memory {
        Memory {
            id: self.id,
            filename: self.filename,
            stored_as: self.stored_as,
            description: self.description,
            tags: self.tags,
            created_at: self.created_at,
            size_bytes: self.size_bytes,
            content: self.preview,
        }
    }
}

#[cfg(test)]
mod tests;
