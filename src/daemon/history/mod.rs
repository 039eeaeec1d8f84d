//! Conversation histories: the daemon's own store, separate from the memory store (which
//! the daemon only reaches over MCP).
//!
//! A history is a list of **turn rows** per user: each turn appends one row (the person's
//! message and everything the turn added after it), with a sequence number. Old rows are
//! deleted in the same transaction once the token budget no longer keeps them, and the
//! budget is applied again on load, so the history a turn sees is exactly today's bounded
//! history (`conversation.history_token_budget`, oldest whole turns dropped first).
//!
//! Every user also has a **version** (the last sequence number written, bumped by a reset
//! too): an append names the version it extends, and the store refuses it if the history
//! changed since (another daemon wrote, or a reset ran). On a backend shared by several
//! daemons ([`HistoryBackend::uses_leases`]), a turn first takes the user's **lease**, a
//! row with a fencing token and an expiry ([`LEASE_TTL`]); it is renewed while the turn
//! runs and released with the turn's append. An append carrying a token that is no longer
//! the lease's current one is refused. A daemon killed with `kill -9` stops renewing, so its
//! users are free again after at most [`LEASE_TTL`].
//!
//! Backends: [`sqlite::SqliteHistory`] (`conversations.db` in the data directory, the
//! default; one daemon) and [`postgres::PgHistory`] (shared by several daemons, leases on).
//!
//! Callers hold a [`HistoryStore`] (cheap to clone) and the actor's [`CachedHistory`].

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::daemon::llm::types::{ChatMessage, SharedMessage};
use crate::shared::domain::UserId;

pub mod lease;
pub mod postgres;
pub mod sqlite;

/// How long a lease lasts without renewal: a daemon that dies frees its users within this.
pub const LEASE_TTL: Duration = Duration::from_secs(6);

/// A history failure.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// SQLite failed.
    #[error("history database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL failed (the message never holds the URL's password).
    #[error("history database error: {0}")]
    Postgres(String),
    /// The transaction holding this write could not commit; nothing of it was stored.
    #[error("history commit failed: {0}")]
    Commit(String),
    /// A row did not decode.
    #[error("corrupt history for a user: {0}")]
    Corrupt(#[from] serde_json::Error),
    /// The data directory is unusable.
    #[error("cannot use data directory: {0}")]
    Io(#[from] std::io::Error),
    /// The history changed since this daemon read it (another daemon wrote, or a reset).
    #[error("the conversation changed elsewhere since it was read; retry")]
    Stale,
    /// The write carried a lease token that is no longer the user's current one.
    #[error("this daemon no longer holds the conversation's lease; retry")]
    Fenced,
    /// Another daemon held the user's lease until the turn's deadline.
    #[error("the conversation is busy in another daemon; retry")]
    LeaseBusy,
    /// The history thread or connection pool is gone.
    #[error("history store is shut down")]
    Closed,
}

/// One stored turn row.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredTurn {
    /// Its sequence number (increasing per user).
    pub seq: i64,
    /// The person's message and everything the turn added after it.
    pub messages: Vec<ChatMessage>,
}

/// A user's stored history.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadedHistory {
    /// Rows, oldest first.
    pub turns: Vec<StoredTurn>,
    /// The version the rows are at (0: never written).
    pub version: i64,
}

/// One turn to append.
#[derive(Debug, Clone)]
pub struct Append {
    /// Whose history.
    pub user: UserId,
    /// The version the writer's copy is at; the store refuses the append if it moved on.
    pub expected_version: i64,
    /// The turn's messages (the first is the person's message), each already serialised.
    pub messages: Vec<SharedMessage>,
    /// Rows older than this sequence number are deleted (no longer within the budget).
    pub keep_from: i64,
    /// The lease token the write is made under (checked when given).
    pub fence: Option<i64>,
    /// Release the lease in the same transaction.
    pub release: bool,
}

impl Append {
    /// The row's text: the messages as one JSON array, joined from the JSON each message
    /// was serialised to for the LLM (the same bytes `serde_json` writes for the array).
    pub fn messages_json(&self) -> String {
        let mut text = String::with_capacity(
            2 + self
                .messages
                .iter()
                .map(|m| m.json().len() + 1)
                .sum::<usize>(),
        );
        text.push('[');
        for (index, message) in self.messages.iter().enumerate() {
            if index > 0 {
                text.push(',');
            }
            text.push_str(message.json());
        }
        text.push(']');
        text
    }
}

/// A held lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The fencing token: strictly larger than every earlier lease's for the user.
    pub token: i64,
    /// The user's history version when the lease was taken.
    pub version: i64,
}

/// Write-side counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistoryStats {
    /// Jobs written (appends, deletes, lease changes).
    pub writes: u64,
    /// Transactions committed (a commit holds every job that queued meanwhile).
    pub commits: u64,
    /// Background checkpoints run.
    pub checkpoints: u64,
}

/// A history backend. Every method is asynchronous and cheap for the calling task.
pub trait HistoryBackend: Send + Sync + 'static {
    /// The user's stored rows and version.
    fn load(&self, user: &UserId) -> BoxFuture<'static, Result<LoadedHistory, HistoryError>>;
    /// Appends one turn; resolves with the new version once committed.
    fn append(&self, append: Append) -> BoxFuture<'static, Result<i64, HistoryError>>;
    /// Forgets the user's history (the version still moves on); returns the new version.
    fn delete(&self, user: &UserId) -> BoxFuture<'static, Result<i64, HistoryError>>;
    /// The user's current version.
    fn version(&self, user: &UserId) -> BoxFuture<'static, Result<i64, HistoryError>>;
    /// Takes the user's lease for `ttl` if it is free, expired, or already this daemon's;
    /// `None` when another daemon holds it.
    fn try_lease(
        &self,
        user: &UserId,
        ttl: Duration,
    ) -> BoxFuture<'static, Result<Option<Lease>, HistoryError>>;
    /// Extends a held lease; `false` when it is no longer held under `token`.
    fn renew_lease(
        &self,
        user: &UserId,
        token: i64,
        ttl: Duration,
    ) -> BoxFuture<'static, Result<bool, HistoryError>>;
    /// Releases a held lease (nothing when `token` is no longer current).
    fn release_lease(
        &self,
        user: &UserId,
        token: i64,
    ) -> BoxFuture<'static, Result<(), HistoryError>>;
    /// Several daemons may share this store: turns take the user's lease.
    fn uses_leases(&self) -> bool;
    /// Counters.
    fn stats(&self) -> HistoryStats;
    /// Finishes queued writes and stops the backend's threads; later calls fail `Closed`.
    fn close(&self) -> BoxFuture<'static, ()>;
}

/// Handle to the history backend. Cheap to clone.
#[derive(Clone)]
pub struct HistoryStore {
    backend: Arc<dyn HistoryBackend>,
}

impl HistoryStore {
    /// Opens (creating) the SQLite store `conversations.db` in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<HistoryStore, HistoryError> {
        Ok(HistoryStore::new(Arc::new(sqlite::SqliteHistory::open(
            data_dir,
        )?)))
    }

    /// Opens the configured backend: SQLite in `data_dir`, or PostgreSQL at `postgres_url`
    /// (the memory store's database; the `histories` tables are migrated at open).
    pub async fn open_config(
        config: &crate::shared::config::StorageConfig,
    ) -> Result<HistoryStore, HistoryError> {
        match config.backend {
            crate::shared::config::StorageBackend::Sqlite => HistoryStore::open(&config.data_dir),
            crate::shared::config::StorageBackend::Postgres => {
                let options = crate::shared::pg::PoolOptions {
                    max_connections: config.postgres_max_connections,
                    ..crate::shared::pg::PoolOptions::default()
                };
                let store =
                    postgres::PgHistory::open(config.postgres_url.expose(), &options).await?;
                tracing::info!("conversation histories in PostgreSQL (leases on)");
                Ok(HistoryStore::new(Arc::new(store)))
            }
        }
    }

    /// Wraps a backend.
    pub fn new(backend: Arc<dyn HistoryBackend>) -> HistoryStore {
        HistoryStore { backend }
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<dyn HistoryBackend> {
        &self.backend
    }

    /// The user's history, oldest first, bounded by `budget` tokens.
    pub async fn load(&self, user: &UserId, budget: usize) -> Result<CachedHistory, HistoryError> {
        Ok(CachedHistory::from_loaded(
            self.backend.load(user).await?,
            budget,
        ))
    }

    /// Forgets the user's history.
    pub fn delete(&self, user: &UserId) -> BoxFuture<'static, Result<i64, HistoryError>> {
        self.backend.delete(user)
    }

    /// See [`HistoryBackend::close`].
    pub fn close(&self) -> BoxFuture<'static, ()> {
        self.backend.close()
    }

    /// See [`HistoryBackend::stats`].
    pub fn stats(&self) -> HistoryStats {
        self.backend.stats()
    }
}

/// A conversation actor's copy of its history: the bounded messages, which row each part
/// came from, and the version they are at.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CachedHistory {
    messages: Vec<ChatMessage>,
    /// (sequence number, messages of that row still in `messages`), oldest first.
    rows: VecDeque<(i64, usize)>,
    version: i64,
}

impl CachedHistory {
    /// The history of stored rows, trimmed to `budget`.
    pub fn from_loaded(loaded: LoadedHistory, budget: usize) -> CachedHistory {
        let mut cached = CachedHistory {
            messages: Vec::new(),
            rows: VecDeque::with_capacity(loaded.turns.len()),
            version: loaded.version,
        };
        for turn in loaded.turns {
            cached.rows.push_back((turn.seq, turn.messages.len()));
            cached.messages.extend(turn.messages);
        }
        cached.trim(budget);
        cached
    }

    /// The messages, oldest first.
    pub fn messages(&self) -> &[ChatMessage] {
        &self.messages
    }

    /// The version these messages are at.
    pub fn version(&self) -> i64 {
        self.version
    }

    /// The append that adds `turn` (a whole turn, the person's message first), and the
    /// history as it is once that append is committed. Takes the history by value (no copy
    /// per turn): a writer whose append fails drops it and reloads from the store.
    pub fn with_turn(
        self,
        turn: impl IntoIterator<Item = impl Into<SharedMessage>>,
        budget: usize,
        user: &UserId,
    ) -> (Append, CachedHistory) {
        let turn: Vec<SharedMessage> = turn.into_iter().map(Into::into).collect();
        let expected_version = self.version;
        let mut next = self;
        next.version = expected_version + 1;
        next.rows.push_back((next.version, turn.len()));
        next.messages
            .extend(turn.iter().map(|message| message.message().clone()));
        next.trim(budget);
        let keep_from = next.rows.front().map_or(next.version, |(seq, _)| *seq);
        let append = Append {
            user: user.clone(),
            expected_version,
            messages: turn,
            keep_from,
            fence: None,
            release: false,
        };
        (append, next)
    }

    /// An empty history at `version` (after a reset).
    pub fn empty_at(version: i64) -> CachedHistory {
        CachedHistory {
            version,
            ..CachedHistory::default()
        }
    }

    fn trim(&mut self, budget: usize) {
        let before = self.messages.len();
        crate::daemon::conversation::trim_history(&mut self.messages, budget);
        let mut dropped = before - self.messages.len();
        while dropped > 0 {
            let Some(front) = self.rows.front_mut() else {
                break;
            };
            if front.1 <= dropped {
                dropped -= front.1;
                self.rows.pop_front();
            } else {
                // Only part of the row is past the budget (a row from before turn rows
                // that did not start with a message of the person): the row stays stored
                // and the same part is trimmed again on load.
                front.1 -= dropped;
                dropped = 0;
            }
        }
    }
}

/// Splits a whole-history message list into turns, each starting at a message of the person
/// (the first may not, for histories written before turn rows).
pub fn split_turns(messages: Vec<ChatMessage>) -> Vec<Vec<ChatMessage>> {
    let mut turns: Vec<Vec<ChatMessage>> = Vec::new();
    for message in messages {
        let starts = matches!(message, ChatMessage::User { .. });
        match turns.last_mut() {
            Some(turn) if !starts => turn.push(message),
            _ => turns.push(vec![message]),
        }
    }
    turns
}

#[cfg(test)]
mod tests;
