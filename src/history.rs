//! Conversation histories, kept by the daemon in `conversations.db` in the data directory.
//!
//! This is the daemon's own small store, separate from the memory store (which the daemon
//! only reaches over MCP). Each user's bounded history is one JSON row, rewritten after every
//! turn. One thread owns the connection; callers await a oneshot. WAL with
//! `synchronous=NORMAL`: a saved history survives a crash of the daemon (`kill -9`); the last
//! turns before a power cut may be lost, which only shortens a conversation.

use std::path::Path;
use std::thread;

use futures::future::BoxFuture;
use rusqlite::{Connection, OptionalExtension};
use tokio::sync::oneshot;

use crate::domain::UserId;
use crate::llm::types::ChatMessage;

/// A history failure.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// SQLite failed.
    #[error("history database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A row did not decode.
    #[error("corrupt history for a user: {0}")]
    Corrupt(#[from] serde_json::Error),
    /// The data directory is unusable.
    #[error("cannot use data directory: {0}")]
    Io(#[from] std::io::Error),
    /// The history thread is gone.
    #[error("history store is shut down")]
    Closed,
}

type Job = Box<dyn FnOnce(&Connection) + Send>;

/// Handle to the history thread. Cheap to clone.
#[derive(Clone)]
pub struct HistoryStore {
    jobs: crossbeam_channel::Sender<Job>,
}

impl HistoryStore {
    /// Opens (creating) `conversations.db` in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<HistoryStore, HistoryError> {
        std::fs::create_dir_all(data_dir)?;
        let conn = Connection::open(data_dir.join("conversations.db"))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))?;
        conn.execute_batch(
            "PRAGMA synchronous=NORMAL;
             CREATE TABLE IF NOT EXISTS histories (
                 user_id TEXT PRIMARY KEY,
                 messages TEXT NOT NULL,
                 updated_at INTEGER NOT NULL
             );",
        )?;
        let (jobs, rx) = crossbeam_channel::unbounded::<Job>();
        thread::Builder::new()
            .name("memento-history".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    job(&conn);
                }
            })?;
        Ok(HistoryStore { jobs })
    }

    fn run<T, F>(&self, f: F) -> BoxFuture<'static, Result<T, HistoryError>>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, HistoryError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let sent = self.jobs.send(Box::new(move |conn| {
            let _ = tx.send(f(conn));
        }));
        Box::pin(async move {
            sent.map_err(|_| HistoryError::Closed)?;
            rx.await.map_err(|_| HistoryError::Closed)?
        })
    }

    /// The user's saved history, oldest first (empty when none).
    pub fn load(
        &self,
        user: &UserId,
    ) -> BoxFuture<'static, Result<Vec<ChatMessage>, HistoryError>> {
        let user = user.clone();
        self.run(move |conn| {
            let text: Option<String> = conn
                .prepare_cached("SELECT messages FROM histories WHERE user_id = ?1")?
                .query_row([user.as_str()], |row| row.get(0))
                .optional()?;
            match text {
                Some(text) => Ok(serde_json::from_str(&text)?),
                None => Ok(Vec::new()),
            }
        })
    }

    /// Replaces the user's saved history.
    pub fn save(
        &self,
        user: &UserId,
        messages: &[ChatMessage],
    ) -> BoxFuture<'static, Result<(), HistoryError>> {
        let user = user.clone();
        let text = serde_json::to_string(messages);
        self.run(move |conn| {
            let text = text?;
            conn.prepare_cached(
                "INSERT INTO histories (user_id, messages, updated_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (user_id) DO UPDATE SET messages = excluded.messages, \
                 updated_at = excluded.updated_at",
            )?
            .execute((user.as_str(), text, chrono::Utc::now().timestamp()))?;
            Ok(())
        })
    }

    /// Forgets the user's history.
    pub fn delete(&self, user: &UserId) -> BoxFuture<'static, Result<(), HistoryError>> {
        let user = user.clone();
        self.run(move |conn| {
            conn.prepare_cached("DELETE FROM histories WHERE user_id = ?1")?
                .execute([user.as_str()])?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn save_load_delete_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let alice = UserId::parse("alice").unwrap();
        let messages = vec![
            ChatMessage::User {
                content: "hi".into(),
            },
            ChatMessage::Assistant {
                content: Some("hello".into()),
                tool_calls: Vec::new(),
            },
        ];
        {
            let store = HistoryStore::open(dir.path()).unwrap();
            assert!(store.load(&alice).await.unwrap().is_empty());
            store.save(&alice, &messages).await.unwrap();
        }
        let store = HistoryStore::open(dir.path()).unwrap();
        assert_eq!(store.load(&alice).await.unwrap(), messages);
        store.delete(&alice).await.unwrap();
        assert!(store.load(&alice).await.unwrap().is_empty());
    }
}
