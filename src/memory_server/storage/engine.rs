//! The SQLite engine behind [`MemoryStore`]: threads that own the connections, so no query
//! runs on an async thread. The statements themselves are in `storage/sql.rs`, the schema
//! in `storage/migrations.rs`.
//!
//! - one **writer thread** owns the only read-write connection. It takes jobs from a
//!   channel, runs everything that queued up meanwhile in one transaction and commits once:
//!   concurrent stores share one fsync (group commit, `shared::group_commit`; a failed job
//!   re-runs the others one transaction each, so one failure never undoes another). A store is acknowledged only after that commit, with
//!   `synchronous=FULL` in WAL mode, so it survives `kill -9` and a power cut.
//! - a small pool of **reader threads**, each with a read-only connection, serves queries
//!   concurrently (WAL lets readers run beside the writer).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, RwLock};
use std::thread;

use futures::future::BoxFuture;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;

use crate::shared::group_commit::{self, AfterCommit, CommitCounters, JobError, WriteJob};

use super::sql::*;
use super::*;

/// Tuning of the SQLite engine.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Reader threads (and read connections).
    pub readers: usize,
    /// Most write jobs in one transaction.
    pub max_batch: usize,
    /// How long idempotency keys are remembered.
    pub idempotency_window: std::time::Duration,
    /// Jobs queued for the writer, and for the readers, before callers get
    /// [`StorageError::Busy`].
    pub queue_capacity: usize,
    /// What a commit survives (`storage.sync`).
    pub sync: crate::shared::config::StorageSync,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions::from(&crate::shared::config::StorageConfig::default())
    }
}

impl From<&crate::shared::config::StorageConfig> for SqliteOptions {
    fn from(config: &crate::shared::config::StorageConfig) -> SqliteOptions {
        SqliteOptions {
            readers: config.readers,
            max_batch: config.max_batch,
            idempotency_window: config.idempotency_window,
            queue_capacity: config.queue_capacity,
            sync: config.sync,
        }
    }
}

// === impl SqliteStore ===

type ReadJob = Box<dyn FnOnce(&Connection) + Send>;

/// The SQLite engine. Cheap to clone; the threads stop when the last clone is dropped, or
/// at [`MemoryStore::close`], which also joins them.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// `None` once closed: the threads see their queue disconnected, finish it and exit.
    writer: RwLock<Option<crossbeam_channel::Sender<Box<dyn WriteJob>>>>,
    readers: RwLock<Option<crossbeam_channel::Sender<ReadJob>>>,
    /// The writer's and readers' threads, joined by `close`.
    threads: Mutex<Vec<thread::JoinHandle<()>>>,
    /// Storage threads still running (each lowers it as it exits).
    live_threads: Arc<AtomicUsize>,
    counters: Arc<Counters>,
    path: PathBuf,
    idempotency_window: std::time::Duration,
    vectors: Arc<super::vectors::VectorIndex>,
}

#[derive(Default)]
struct Counters {
    written: CommitCounters,
    reads: AtomicU64,
}

impl SqliteStore {
    /// Opens (creating if needed) `memento.db` in `data_dir`, runs migrations and starts the
    /// writer and reader threads.
    pub fn open(data_dir: &Path, options: &SqliteOptions) -> Result<SqliteStore, StorageError> {
        SqliteStore::open_with_queues(data_dir, options, options.queue_capacity)
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
        configure(&writer_conn, options.sync)?;
        migrations::run(&writer_conn)?;

        let counters = Arc::new(Counters::default());
        let (writer_tx, writer_rx) =
            crossbeam_channel::bounded::<Box<dyn WriteJob>>(capacity.max(1));
        let writer_counters = counters.clone();
        let max_batch = options.max_batch.max(1);
        let options_window = options.idempotency_window;
        let live_threads = Arc::new(AtomicUsize::new(0));
        let mut threads = Vec::new();
        let live = LiveThread::enter(&live_threads);
        let writer = thread::Builder::new()
            .name("memento-sqlite-writer".into())
            .spawn(move || {
                let _live = live;
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
        threads.push(writer);

        let (reader_tx, reader_rx) = crossbeam_channel::bounded::<ReadJob>(capacity.max(1));
        for n in 0..options.readers.max(1) {
            let conn = Connection::open_with_flags(
                &path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            configure_reader(&conn)?;
            let rx = reader_rx.clone();
            let live = LiveThread::enter(&live_threads);
            let reader = thread::Builder::new()
                .name(format!("memento-sqlite-reader-{n}"))
                .spawn(move || {
                    let _live = live;
                    while let Ok(job) = rx.recv() {
                        job(&conn);
                    }
                })
                .map_err(|source| StorageError::DataDir {
                    path: data_dir.to_owned(),
                    source,
                })?;
            threads.push(reader);
        }
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                writer: RwLock::new(Some(writer_tx)),
                readers: RwLock::new(Some(reader_tx)),
                threads: Mutex::new(threads),
                live_threads,
                counters,
                path,
                idempotency_window: options.idempotency_window,
                vectors: Arc::new(super::vectors::VectorIndex::default()),
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Storage threads (writer and readers) still running.
    pub fn live_threads(&self) -> usize {
        self.inner.live_threads.load(Ordering::Acquire)
    }

    /// Refuses new work, lets the queued work finish and joins the threads, off the async
    /// runtime. A second call finds nothing left to join.
    fn close_and_join(&self) -> BoxFuture<'static, ()> {
        // Dropping the only senders disconnects the queues: each thread drains its queue
        // and exits.
        if let Ok(mut writer) = self.inner.writer.write() {
            writer.take();
        }
        if let Ok(mut readers) = self.inner.readers.write() {
            readers.take();
        }
        let threads = self
            .inner
            .threads
            .lock()
            .map(|mut threads| std::mem::take(&mut *threads))
            .unwrap_or_default();
        Box::pin(async move {
            let joined = tokio::task::spawn_blocking(move || {
                threads
                    .into_iter()
                    .map(thread::JoinHandle::join)
                    .filter(Result::is_err)
                    .count()
            })
            .await;
            match joined {
                Ok(0) => {}
                Ok(panicked) => tracing::error!(panicked, "storage threads panicked"),
                Err(error) => tracing::error!(%error, "cannot join the storage threads"),
            }
        })
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
        let sent = match self.inner.readers.read().as_deref() {
            Ok(Some(readers)) => readers.try_send(job).map_err(queue_error),
            _ => Err(StorageError::Closed),
        };
        Box::pin(async move {
            sent?;
            rx.await.map_err(|_| StorageError::Closed)?
        })
    }

    /// Runs `f` on the writer thread inside the next group commit; resolves after the commit.
    /// `f` may run twice (see `writer_loop`), so it borrows what it needs.
    /// Then `after` on the writer thread once the job's result is committed (it runs even
    /// when the caller has given up waiting).
    fn write_then<T, F>(
        &self,
        f: F,
        after: Option<AfterCommit<T>>,
    ) -> BoxFuture<'static, Result<T, StorageError>>
    where
        T: Send + 'static,
        F: FnMut(&Connection) -> Result<T, StorageError> + Send + 'static,
    {
        let (job, rx) = group_commit::job(f, after);
        // Never `send`: it would block an async worker thread while the queue is full.
        let sent = match self.inner.writer.read().as_deref() {
            Ok(Some(writer)) => writer.try_send(job).map_err(queue_error),
            _ => Err(StorageError::Closed),
        };
        Box::pin(async move {
            sent?;
            group_commit::answer(rx).await
        })
    }
}

impl JobError for StorageError {
    fn closed() -> StorageError {
        StorageError::Closed
    }

    fn commit(message: String) -> StorageError {
        StorageError::Commit(message)
    }

    fn rolls_back(&self) -> bool {
        true
    }
}

/// A full queue is [`StorageError::Busy`]; a queue with no thread behind it is `Closed`.
/// Counts a storage thread as live until it exits (dropped on its thread).
struct LiveThread(Arc<AtomicUsize>);

impl LiveThread {
    fn enter(live: &Arc<AtomicUsize>) -> LiveThread {
        live.fetch_add(1, Ordering::AcqRel);
        LiveThread(live.clone())
    }
}

impl Drop for LiveThread {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn queue_error<T>(error: crossbeam_channel::TrySendError<T>) -> StorageError {
    match error {
        crossbeam_channel::TrySendError::Full(_) => StorageError::Busy,
        crossbeam_channel::TrySendError::Disconnected(_) => StorageError::Closed,
    }
}

fn configure(
    conn: &Connection,
    sync: crate::shared::config::StorageSync,
) -> Result<(), StorageError> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StorageError::Corrupt(format!(
            "could not switch to WAL (journal_mode={mode})"
        )));
    }
    // FULL (the default): every commit fsyncs the WAL, so an acknowledged store survives a
    // power cut. NORMAL: the commit is written to the WAL file (it survives the process
    // dying) and fsynced at the next checkpoint.
    let synchronous = match sync {
        crate::shared::config::StorageSync::Full => "FULL",
        crate::shared::config::StorageSync::Normal => "NORMAL",
    };
    conn.execute_batch(&format!(
        "PRAGMA synchronous={synchronous}; PRAGMA foreign_keys=ON; PRAGMA temp_store=MEMORY;"
    ))?;
    Ok(())
}

fn configure_reader(conn: &Connection) -> Result<(), StorageError> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // The hybrid ranking's view of the index's postings (TEMP: no schema change); without
    // it, hybrid search falls back to reciprocal rank fusion.
    if let Err(error) = conn.execute_batch(super::contextual::CREATE_TERMS_TABLE) {
        tracing::warn!(%error, "cannot create the fts5vocab view: hybrid search fuses by rank");
    }
    conn.execute_batch("PRAGMA query_only=ON; PRAGMA cache_size=-8000;")?;
    Ok(())
}

/// The writer thread: group commit (see [`group_commit`]), with expired idempotency keys
/// purged now and then; the WAL is folded back into the database at a clean shutdown.
fn writer_loop(
    conn: Connection,
    rx: crossbeam_channel::Receiver<Box<dyn WriteJob>>,
    max_batch: usize,
    counters: Arc<Counters>,
    idempotency_window: std::time::Duration,
) {
    let mut last_purge = std::time::Instant::now();
    let purge = |conn: &Connection| {
        if last_purge.elapsed() > PURGE_INTERVAL {
            last_purge = std::time::Instant::now();
            purge_idempotency(conn, idempotency_window);
        }
    };
    group_commit::run_writer(
        &conn,
        &rx,
        max_batch,
        &counters.written,
        "memory store",
        purge,
    );
    // All senders are gone: a clean shutdown.
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

// === impl MemoryStore for SqliteStore ===

impl MemoryStore for SqliteStore {
    fn store(&self, memory: NewMemory) -> BoxFuture<'static, Result<StoredMemory, StorageError>> {
        let window = self.inner.idempotency_window;
        let after: Option<AfterCommit<(StoredMemory, Option<i64>)>> =
            memory.embedding.clone().map(|vector| {
                let index = self.inner.vectors.clone();
                let user = memory.user.clone();
                Box::new(move |(_, rowid): &(StoredMemory, Option<i64>)| {
                    if let Some(rowid) = rowid {
                        index.insert(user.as_str(), *rowid, &vector);
                    }
                }) as AfterCommit<_>
            });
        let stored = self.write_then(move |conn| insert_memory(conn, &memory, window), after);
        traced(
            "sqlite store",
            Box::pin(async move { stored.await.map(|(stored, _)| stored) }),
        )
    }

    fn search(
        &self,
        query: SearchQuery,
    ) -> BoxFuture<'static, Result<Vec<MemorySummary>, StorageError>> {
        let index = self.inner.vectors.clone();
        traced(
            "sqlite search",
            self.read(move |conn| search(conn, &index, &query)),
        )
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
        let index = self.inner.vectors.clone();
        let owner = user.clone();
        let after: AfterCommit<Option<(MemorySummary, i64)>> = Box::new(move |deleted| {
            if let Some((_, rowid)) = deleted {
                index.remove(owner.as_str(), *rowid);
            }
        });
        let deleted = self.write_then(
            move |conn| {
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
                conn.prepare_cached("DELETE FROM memory_vectors WHERE memory_rowid = ?1")?
                    .execute([rowid])?;
                conn.prepare_cached("DELETE FROM memories WHERE rowid = ?1")?
                    .execute([rowid])?;
                Ok(Some((summary?, rowid)))
            },
            Some(after),
        );
        Box::pin(async move { Ok(deleted.await?.map(|(summary, _)| summary)) })
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
        query: CompletionQuery,
    ) -> BoxFuture<'static, Result<Vec<String>, StorageError>> {
        self.read(move |conn| complete(conn, &query))
    }

    fn vector_tasks(
        &self,
        model: String,
        limit: u32,
    ) -> BoxFuture<'static, Result<(Vec<VectorTask>, u64), StorageError>> {
        self.read(move |conn| vector_tasks(conn, &model, limit))
    }

    fn put_vectors(
        &self,
        model: String,
        vectors: Vec<(MemoryId, Vec<f32>)>,
    ) -> BoxFuture<'static, Result<u64, StorageError>> {
        let index = self.inner.vectors.clone();
        let after: AfterCommit<Vec<(String, i64, usize)>> = {
            let vectors = vectors.clone();
            Box::new(move |written: &Vec<(String, i64, usize)>| {
                for (user, rowid, i) in written {
                    if let Some((_, vector)) = vectors.get(*i) {
                        index.insert(user, *rowid, vector);
                    }
                }
            })
        };
        let written = self.write_then(move |conn| put_vectors(conn, &model, &vectors), Some(after));
        Box::pin(async move { Ok(written.await?.len() as u64) })
    }

    fn close(&self) -> BoxFuture<'static, ()> {
        self.close_and_join()
    }

    fn stats(&self) -> StorageStats {
        let counters = &self.inner.counters;
        StorageStats {
            writes: counters.written.writes.load(Ordering::Relaxed),
            commits: counters.written.commits.load(Ordering::Relaxed),
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
    super::traced("sqlite", name, future)
}
