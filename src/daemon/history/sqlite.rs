//! The SQLite history backend: `conversations.db` in the data directory.
//!
//! - One **writer thread** owns the read-write connection. It takes every job that queued
//!   up meanwhile (appends, loads, lease changes) and runs them in **one transaction**, so
//!   concurrent turns share one commit. A job that fails with a database error rolls the
//!   batch back and every job is re-run in its own transaction (one bad job never fails
//!   another). Refusals (a stale version, a stale lease token) are answers, not failures:
//!   they write nothing and do not roll the batch back.
//! - The writer runs with `wal_autocheckpoint=0`: a commit never copies the WAL back into
//!   the database. A **checkpoint thread** with its own connection runs
//!   `PRAGMA wal_checkpoint(PASSIVE)` every [`CHECKPOINT_INTERVAL`] (100 ms) after writes (it
//!   never takes the write lock, so saves go on meanwhile) and `TRUNCATE` only if the WAL grew past
//!   [`WAL_TRUNCATE_BYTES`] (PASSIVE could not keep up with a constant writer). The writer
//!   truncates the WAL once more when it stops.
//! - WAL with `synchronous=NORMAL`: a commit is in the WAL file (the operating system's page
//!   cache) when the caller is answered. It survives a crash of the daemon (`kill -9`); a
//!   power cut or kernel crash may lose the last commits before the next checkpoint's fsync,
//!   which shortens a conversation and never corrupts it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use futures::future::BoxFuture;
use rusqlite::{Connection, OptionalExtension};

use super::{
    Append, HistoryBackend, HistoryError, HistoryStats, Lease, LoadedHistory, StoredTurn,
    split_turns,
};
use crate::daemon::llm::types::ChatMessage;
use crate::shared::domain::UserId;
use crate::shared::group_commit::{self, CommitCounters, JobError, WriteJob};

/// How often the checkpoint thread looks for new commits to fold into the database. Short on
/// purpose: the checkpoint's fsync of the database file stalls the writer's commits on the
/// same disk for as long as it takes (measured: 100-200 ms stalls at 500 ms intervals under
/// 300 saves/s; at 100 ms each checkpoint has little to flush and saves stay under 16 ms;
/// `history::tests::bench_history_saves`).
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);
/// A WAL larger than this is truncated (`wal_checkpoint(TRUNCATE)`, which waits for the
/// writer) rather than only checkpointed.
pub const WAL_TRUNCATE_BYTES: u64 = 64 * 1024 * 1024;
/// Most jobs in one transaction.
const MAX_BATCH: usize = 512;

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS history_turns (
        user_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        messages TEXT NOT NULL,
        PRIMARY KEY (user_id, seq)
    );
    CREATE TABLE IF NOT EXISTS history_heads (
        user_id TEXT PRIMARY KEY,
        version INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS history_leases (
        user_id TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        token INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
    ) WITHOUT ROWID;
";

enum Msg {
    Job(Box<dyn WriteJob>),
    Close,
}

impl From<Msg> for group_commit::Message {
    fn from(msg: Msg) -> group_commit::Message {
        match msg {
            Msg::Job(job) => Some(job),
            Msg::Close => None,
        }
    }
}

impl JobError for HistoryError {
    fn closed() -> HistoryError {
        HistoryError::Closed
    }

    fn commit(message: String) -> HistoryError {
        HistoryError::Commit(message)
    }

    /// Refusals (stale, fenced) write nothing: only a database error rolls back.
    fn rolls_back(&self) -> bool {
        matches!(self, HistoryError::Sqlite(_))
    }
}

#[derive(Default)]
struct Counters {
    written: CommitCounters,
    checkpoints: AtomicU64,
}

/// The SQLite history backend.
pub struct SqliteHistory {
    jobs: crossbeam_channel::Sender<Msg>,
    writer: Mutex<Option<JoinHandle<()>>>,
    counters: Arc<Counters>,
    holder: String,
    leases: bool,
}

impl SqliteHistory {
    /// Opens (creating) `conversations.db` in `data_dir` and starts its threads. Histories
    /// from before turn rows (one JSON row per user) are converted on the way.
    pub fn open(data_dir: &Path) -> Result<SqliteHistory, HistoryError> {
        std::fs::create_dir_all(data_dir)?;
        let path = data_dir.join("conversations.db");
        let mut conn = Connection::open(&path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))?;
        conn.execute_batch("PRAGMA synchronous=NORMAL; PRAGMA wal_autocheckpoint=0;")?;
        conn.execute_batch(SCHEMA)?;
        migrate_to_rowid_turns(&mut conn)?;
        migrate_whole_rows(&mut conn)?;
        let counters = Arc::new(Counters::default());
        let (jobs, rx) = crossbeam_channel::unbounded::<Msg>();
        let checkpoint_conn = Connection::open(&path)?;
        checkpoint_conn.busy_timeout(Duration::from_secs(10))?;
        checkpoint_conn.execute_batch("PRAGMA synchronous=NORMAL;")?;
        let writer = {
            let counters = counters.clone();
            thread::Builder::new()
                .name("memento-history".into())
                .spawn(move || writer_loop(conn, rx, counters, checkpoint_conn, path))?
        };
        Ok(SqliteHistory {
            jobs,
            writer: Mutex::new(Some(writer)),
            counters,
            holder: uuid::Uuid::new_v4().simple().to_string(),
            leases: false,
        })
    }

    /// Turns take the user's lease (several daemons on one data directory); off by default.
    pub fn with_leases(mut self, leases: bool) -> SqliteHistory {
        self.leases = leases;
        self
    }

    /// This store's lease holder id.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    fn run<T, F>(&self, work: F) -> BoxFuture<'static, Result<T, HistoryError>>
    where
        T: Send + 'static,
        F: FnMut(&Connection) -> Result<T, HistoryError> + Send + 'static,
    {
        let (job, rx) = group_commit::job(work, None);
        let sent = self.jobs.send(Msg::Job(job));
        Box::pin(async move {
            sent.map_err(|_| HistoryError::Closed)?;
            group_commit::answer(rx).await
        })
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 4)
}

fn head_version(conn: &Connection, user: &str) -> Result<i64, HistoryError> {
    Ok(conn
        .prepare_cached("SELECT version FROM history_heads WHERE user_id = ?1")?
        .query_row([user], |row| row.get(0))
        .optional()?
        .unwrap_or(0))
}

impl HistoryBackend for SqliteHistory {
    fn load(&self, user: &UserId) -> BoxFuture<'static, Result<LoadedHistory, HistoryError>> {
        let user = user.clone();
        self.run(move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT seq, messages FROM history_turns WHERE user_id = ?1 ORDER BY seq",
            )?;
            let rows = statement.query_map([user.as_str()], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
            })?;
            let mut turns = Vec::new();
            for row in rows {
                let (seq, text) = row?;
                turns.push(StoredTurn {
                    seq,
                    messages: serde_json::from_str(&text)?,
                });
            }
            Ok(LoadedHistory {
                turns,
                version: head_version(conn, user.as_str())?,
            })
        })
    }

    fn append(&self, append: Append) -> BoxFuture<'static, Result<i64, HistoryError>> {
        let text = append.messages_json();
        self.run(move |conn| {
            let user = append.user.as_str();
            // Checks first: a refusal writes nothing.
            if let Some(fence) = append.fence {
                let token: Option<i64> = conn
                    .prepare_cached("SELECT token FROM history_leases WHERE user_id = ?1")?
                    .query_row([user], |row| row.get(0))
                    .optional()?;
                if token != Some(fence) {
                    return Err(HistoryError::Fenced);
                }
            }
            if head_version(conn, user)? != append.expected_version {
                return Err(HistoryError::Stale);
            }
            let version = append.expected_version + 1;
            conn.prepare_cached(
                "INSERT INTO history_turns (user_id, seq, messages) VALUES (?1, ?2, ?3)",
            )?
            .execute((user, version, &text))?;
            conn.prepare_cached(
                "INSERT INTO history_heads (user_id, version) VALUES (?1, ?2) \
                 ON CONFLICT (user_id) DO UPDATE SET version = excluded.version",
            )?
            .execute((user, version))?;
            conn.prepare_cached("DELETE FROM history_turns WHERE user_id = ?1 AND seq < ?2")?
                .execute((user, append.keep_from))?;
            if let (true, Some(fence)) = (append.release, append.fence) {
                conn.prepare_cached(
                    "UPDATE history_leases SET expires_at = 0 WHERE user_id = ?1 AND token = ?2",
                )?
                .execute((user, fence))?;
            }
            Ok(version)
        })
    }

    fn delete(&self, user: &UserId) -> BoxFuture<'static, Result<i64, HistoryError>> {
        let user = user.clone();
        self.run(move |conn| {
            conn.prepare_cached("DELETE FROM history_turns WHERE user_id = ?1")?
                .execute([user.as_str()])?;
            Ok(conn
                .prepare_cached(
                    "INSERT INTO history_heads (user_id, version) VALUES (?1, 1) \
                     ON CONFLICT (user_id) DO UPDATE SET version = history_heads.version + 1 \
                     RETURNING version",
                )?
                .query_row([user.as_str()], |row| row.get(0))?)
        })
    }

    fn version(&self, user: &UserId) -> BoxFuture<'static, Result<i64, HistoryError>> {
        let user = user.clone();
        self.run(move |conn| head_version(conn, user.as_str()))
    }

    fn try_lease(
        &self,
        user: &UserId,
        ttl: Duration,
    ) -> BoxFuture<'static, Result<Option<Lease>, HistoryError>> {
        let user = user.clone();
        let holder = self.holder.clone();
        self.run(move |conn| {
            let now = now_ms();
            let token: Option<i64> = conn
                .prepare_cached(
                    "INSERT INTO history_leases (user_id, holder, token, expires_at) \
                     VALUES (?1, ?2, 1, ?3) \
                     ON CONFLICT (user_id) DO UPDATE SET holder = excluded.holder, \
                     token = history_leases.token + 1, expires_at = excluded.expires_at \
                     WHERE history_leases.expires_at <= ?4 OR history_leases.holder = excluded.holder \
                     RETURNING token",
                )?
                .query_row(
                    (user.as_str(), &holder, now.saturating_add(ttl_ms(ttl)), now),
                    |row| row.get(0),
                )
                .optional()?;
            match token {
                Some(token) => Ok(Some(Lease {
                    token,
                    version: head_version(conn, user.as_str())?,
                })),
                None => Ok(None),
            }
        })
    }

    fn renew_lease(
        &self,
        user: &UserId,
        token: i64,
        ttl: Duration,
    ) -> BoxFuture<'static, Result<bool, HistoryError>> {
        let user = user.clone();
        self.run(move |conn| {
            let changed = conn
                .prepare_cached(
                    "UPDATE history_leases SET expires_at = ?3 WHERE user_id = ?1 AND token = ?2",
                )?
                .execute((user.as_str(), token, now_ms().saturating_add(ttl_ms(ttl))))?;
            Ok(changed == 1)
        })
    }

    fn release_lease(
        &self,
        user: &UserId,
        token: i64,
    ) -> BoxFuture<'static, Result<(), HistoryError>> {
        let user = user.clone();
        self.run(move |conn| {
            conn.prepare_cached(
                "UPDATE history_leases SET expires_at = 0 WHERE user_id = ?1 AND token = ?2",
            )?
            .execute((user.as_str(), token))?;
            Ok(())
        })
    }

    fn uses_leases(&self) -> bool {
        self.leases
    }

    fn stats(&self) -> HistoryStats {
        HistoryStats {
            writes: self.counters.written.writes.load(Ordering::Relaxed),
            commits: self.counters.written.commits.load(Ordering::Relaxed),
            checkpoints: self.counters.checkpoints.load(Ordering::Relaxed),
        }
    }

    fn close(&self) -> BoxFuture<'static, ()> {
        let _ = self.jobs.send(Msg::Close);
        let writer = self.writer.lock().ok().and_then(|mut guard| guard.take());
        Box::pin(async move {
            if let Some(writer) = writer {
                let _ = tokio::task::spawn_blocking(move || writer.join()).await;
            }
        })
    }
}

/// The `CREATE` statement of table `name`, when it exists.
fn table_sql(conn: &Connection, name: &str) -> Result<Option<String>, HistoryError> {
    Ok(conn
        .query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [name],
            |row| row.get(0),
        )
        .optional()?)
}

/// Moves turn rows out of the first layout's `WITHOUT ROWID` table into a rowid table.
/// A turn row is 1-3 KB; in a `WITHOUT ROWID` table a row over about 1 KB (on 4 KB pages)
/// spills into an overflow page, and each append paid for it. In a rowid table rows up to
/// about 4 KB stay in their leaf, and appends of many users share the last leaf
/// (BENCHMARKS.md, "The history write path").
fn migrate_to_rowid_turns(conn: &mut Connection) -> Result<(), HistoryError> {
    let sql = table_sql(conn, "history_turns")?;
    if !sql.is_some_and(|sql| sql.to_ascii_uppercase().contains("WITHOUT ROWID")) {
        return Ok(());
    }
    // Rolled back when dropped uncommitted.
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute_batch(
        "ALTER TABLE history_turns RENAME TO history_turns_without_rowid;
         CREATE TABLE history_turns (
             user_id TEXT NOT NULL,
             seq INTEGER NOT NULL,
             messages TEXT NOT NULL,
             PRIMARY KEY (user_id, seq)
         );
         INSERT INTO history_turns (user_id, seq, messages)
             SELECT user_id, seq, messages FROM history_turns_without_rowid
             ORDER BY user_id, seq;
         DROP TABLE history_turns_without_rowid;",
    )?;
    tx.commit()?;
    tracing::info!("history turn rows moved to a rowid table");
    Ok(())
}

/// Converts histories stored as one JSON row per user (before turn rows) into turn rows.
fn migrate_whole_rows(conn: &mut Connection) -> Result<(), HistoryError> {
    if table_sql(conn, "histories")?.is_none() {
        return Ok(());
    }
    // Rolled back when dropped uncommitted.
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let rows: Vec<(String, String)> = tx
        .prepare("SELECT user_id, messages FROM histories")?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (user, text) in &rows {
        let messages: Vec<ChatMessage> = serde_json::from_str(text)?;
        let mut version = 0i64;
        for turn in split_turns(messages) {
            version += 1;
            tx.execute(
                "INSERT OR REPLACE INTO history_turns (user_id, seq, messages) VALUES (?1, ?2, ?3)",
                (user, version, serde_json::to_string(&turn)?),
            )?;
        }
        tx.execute(
            "INSERT OR REPLACE INTO history_heads (user_id, version) VALUES (?1, ?2)",
            (user, version),
        )?;
    }
    tx.execute_batch("DROP TABLE histories")?;
    tx.commit()?;
    tracing::info!(users = rows.len(), "histories converted to turn rows");
    Ok(())
}

fn writer_loop(
    conn: Connection,
    rx: crossbeam_channel::Receiver<Msg>,
    counters: Arc<Counters>,
    checkpoint_conn: Connection,
    path: PathBuf,
) {
    let (stop_checkpoints, stop_rx) = crossbeam_channel::bounded::<()>(0);
    let checkpointer = {
        let counters = counters.clone();
        thread::Builder::new()
            .name("memento-history-checkpoint".into())
            .spawn(move || checkpoint_loop(checkpoint_conn, stop_rx, counters, path))
    };
    if let Err(error) = &checkpointer {
        tracing::error!(%error, "cannot start the history checkpoint thread; the WAL is checkpointed at shutdown only");
    }
    group_commit::run_writer(&conn, &rx, MAX_BATCH, &counters.written, "history", |_| {});
    // Anything still queued behind `Close` is answered `Closed` when the channel drops.
    drop(stop_checkpoints);
    if let Ok(checkpointer) = checkpointer {
        let _ = checkpointer.join();
    }
    if let Err(error) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
        tracing::warn!(%error, "final history checkpoint failed");
    }
}

/// The checkpoint thread: PASSIVE after new commits, TRUNCATE when the WAL grew too large.
fn checkpoint_loop(
    conn: Connection,
    stop: crossbeam_channel::Receiver<()>,
    counters: Arc<Counters>,
    path: PathBuf,
) {
    let mut wal = path.into_os_string();
    wal.push("-wal");
    let wal = PathBuf::from(wal);
    let mut seen = counters.written.commits.load(Ordering::Relaxed);
    loop {
        match stop.recv_timeout(CHECKPOINT_INTERVAL) {
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        let commits = counters.written.commits.load(Ordering::Relaxed);
        if commits == seen {
            continue;
        }
        seen = commits;
        let large = std::fs::metadata(&wal).is_ok_and(|m| m.len() > WAL_TRUNCATE_BYTES);
        let mode = if large { "TRUNCATE" } else { "PASSIVE" };
        match conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |_| Ok(())) {
            Ok(()) => {
                counters.checkpoints.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => tracing::warn!(%error, mode, "history checkpoint failed"),
        }
    }
}
