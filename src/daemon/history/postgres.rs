//! The PostgreSQL history backend (`[storage] backend = "postgres"`): any daemon can pick up
//! any user, and several daemons share one database.
//!
//! Tables (component `histories` of [`crate::shared::pg::migrate`]): `history_turns` (one row per
//! turn), `history_heads` (each user's version), `history_leases` (each user's lease: holder,
//! fencing token, expiry by the database's clock). Every call is one statement, so one
//! round trip and one transaction on a pooled connection, committed (`synchronous_commit` as
//! the server has it: on by default, so on disk) before it resolves; an append and a lease
//! are PL/pgSQL functions of the schema (migration 2). An append locks the user's lease row
//! (`FOR SHARE`) and head row (`FOR UPDATE`) while it checks the fencing token and the
//! version, so a lease cannot change hands between the check and the commit.
//!
//! Lease changes (take, renew, release) commit with `synchronous_commit = off`: they need no
//! fsync, so a turn costs one flush (its append), not two. A database crash may forget the
//! last lease changes, and hand out a token again; the append's version check still refuses
//! the second of two writers holding the same token, so histories stay consistent.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio_postgres::error::SqlState;

use super::{Append, HistoryBackend, HistoryError, HistoryStats, Lease, LoadedHistory, StoredTurn};
use crate::shared::domain::UserId;
use crate::shared::pg::{Migration, PgError, Pool, PoolOptions};

/// The `histories` component's schema steps.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "turn rows, versions and leases",
        sql: "
        CREATE TABLE history_turns (
            user_id TEXT NOT NULL,
            seq BIGINT NOT NULL,
            messages TEXT NOT NULL,
            PRIMARY KEY (user_id, seq)
        );
        CREATE TABLE history_heads (
            user_id TEXT PRIMARY KEY,
            version BIGINT NOT NULL
        );
        CREATE TABLE history_leases (
            user_id TEXT PRIMARY KEY,
            holder TEXT NOT NULL,
            token BIGINT NOT NULL,
            expires_at TIMESTAMPTZ NOT NULL
        );
    ",
    },
    Migration {
        version: 2,
        name: "append and lease in one round trip",
        sql: APPEND_AND_LEASE_FUNCTIONS,
    },
];

/// An append and a lease each in one statement (one round trip, one transaction): checks
/// first (a refusal, -1 fenced or -2 stale, writes nothing), then the writes. Each
/// statement of a PL/pgSQL function sees what committed before it started, so the version
/// read after taking a lease includes the previous holder's last append.
const APPEND_AND_LEASE_FUNCTIONS: &str = "
    CREATE FUNCTION memento_history_append(
        p_user TEXT, p_expected BIGINT, p_fence BIGINT, p_messages TEXT,
        p_keep_from BIGINT, p_release BOOLEAN
    ) RETURNS BIGINT LANGUAGE plpgsql AS $fn$
    DECLARE
        current_token BIGINT;
        current_version BIGINT;
    BEGIN
        IF p_fence IS NOT NULL THEN
            SELECT token INTO current_token FROM history_leases
                WHERE user_id = p_user FOR SHARE;
            IF current_token IS DISTINCT FROM p_fence THEN
                RETURN -1;
            END IF;
        END IF;
        SELECT version INTO current_version FROM history_heads
            WHERE user_id = p_user FOR UPDATE;
        IF COALESCE(current_version, 0) <> p_expected THEN
            RETURN -2;
        END IF;
        INSERT INTO history_turns (user_id, seq, messages)
            VALUES (p_user, p_expected + 1, p_messages);
        INSERT INTO history_heads (user_id, version) VALUES (p_user, p_expected + 1)
            ON CONFLICT (user_id) DO UPDATE SET version = excluded.version;
        DELETE FROM history_turns WHERE user_id = p_user AND seq < p_keep_from;
        IF p_release AND p_fence IS NOT NULL THEN
            UPDATE history_leases SET expires_at = '-infinity'
                WHERE user_id = p_user AND token = p_fence;
        END IF;
        RETURN p_expected + 1;
    END
    $fn$;

    CREATE FUNCTION memento_history_lease(p_user TEXT, p_holder TEXT, p_ttl DOUBLE PRECISION)
    RETURNS TABLE (lease_token BIGINT, lease_version BIGINT) LANGUAGE plpgsql AS $fn$
    BEGIN
        INSERT INTO history_leases AS l (user_id, holder, token, expires_at)
            VALUES (p_user, p_holder, 1, clock_timestamp() + make_interval(secs => p_ttl))
            ON CONFLICT (user_id) DO UPDATE SET holder = excluded.holder,
                token = l.token + 1, expires_at = excluded.expires_at
            WHERE l.expires_at <= clock_timestamp() OR l.holder = excluded.holder
            RETURNING l.token INTO lease_token;
        IF lease_token IS NULL THEN
            RETURN;
        END IF;
        SELECT version INTO lease_version FROM history_heads WHERE user_id = p_user;
        lease_version := COALESCE(lease_version, 0);
        RETURN NEXT;
    END
    $fn$;
";

#[derive(Default)]
struct Counters {
    writes: AtomicU64,
    commits: AtomicU64,
}

struct Inner {
    pool: Pool,
    holder: String,
    counters: Counters,
    closed: AtomicBool,
}

/// The PostgreSQL history backend. Cheap to clone.
#[derive(Clone)]
pub struct PgHistory {
    inner: Arc<Inner>,
}

impl From<PgError> for HistoryError {
    fn from(error: PgError) -> Self {
        HistoryError::Postgres(error.to_string())
    }
}

impl From<tokio_postgres::Error> for HistoryError {
    fn from(error: tokio_postgres::Error) -> Self {
        HistoryError::Postgres(PgError::from(error).to_string())
    }
}

impl PgHistory {
    /// Connects a pool to `url` and brings the `histories` tables up to date.
    pub async fn open(url: &str, options: &PoolOptions) -> Result<PgHistory, HistoryError> {
        let pool = crate::shared::pg::connect(url, options).await?;
        crate::shared::pg::migrate(&pool, "histories", MIGRATIONS).await?;
        Ok(PgHistory {
            inner: Arc::new(Inner {
                pool,
                holder: uuid::Uuid::new_v4().simple().to_string(),
                counters: Counters::default(),
                closed: AtomicBool::new(false),
            }),
        })
    }

    /// This daemon's lease holder id.
    pub fn holder(&self) -> &str {
        &self.inner.holder
    }
}

impl Inner {
    async fn client(&self) -> Result<deadpool_postgres::Object, HistoryError> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(HistoryError::Closed);
        }
        Ok(self.pool.get().await.map_err(PgError::from)?)
    }

    fn wrote(&self) {
        self.counters.writes.fetch_add(1, Ordering::Relaxed);
        self.counters.commits.fetch_add(1, Ordering::Relaxed);
    }

    async fn load(&self, user: UserId) -> Result<LoadedHistory, HistoryError> {
        let client = self.client().await?;
        // One statement, one snapshot: the version and the rows agree.
        let rows = client
            .query(
                "SELECT version, NULL::BIGINT, NULL::TEXT FROM history_heads WHERE user_id = $1 \
                 UNION ALL \
                 SELECT NULL, seq, messages FROM history_turns WHERE user_id = $1",
                &[&user.as_str()],
            )
            .await?;
        let mut loaded = LoadedHistory::default();
        for row in rows {
            if let Some(version) = row.get::<_, Option<i64>>(0) {
                loaded.version = version;
            } else if let (Some(seq), Some(text)) = (
                row.get::<_, Option<i64>>(1),
                row.get::<_, Option<String>>(2),
            ) {
                loaded.turns.push(StoredTurn {
                    seq,
                    messages: serde_json::from_str(&text)?,
                });
            }
        }
        loaded.turns.sort_by_key(|turn| turn.seq);
        Ok(loaded)
    }

    async fn append(&self, append: Append, text: String) -> Result<i64, HistoryError> {
        let client = self.client().await?;
        let result = client
            .query_one(
                "SELECT memento_history_append($1, $2, $3, $4, $5, $6)",
                &[
                    &append.user.as_str(),
                    &append.expected_version,
                    &append.fence,
                    &text,
                    &append.keep_from,
                    &append.release,
                ],
            )
            .await;
        let version: i64 = match result {
            Ok(row) => row.get(0),
            // Two first appends at once (no head row to lock yet): the loser is stale.
            Err(error) if error.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                return Err(HistoryError::Stale);
            }
            Err(error) => return Err(error.into()),
        };
        match version {
            -1 => Err(HistoryError::Fenced),
            -2 => Err(HistoryError::Stale),
            version => {
                self.wrote();
                Ok(version)
            }
        }
    }

    async fn delete(&self, user: UserId) -> Result<i64, HistoryError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute(
            "DELETE FROM history_turns WHERE user_id = $1",
            &[&user.as_str()],
        )
        .await?;
        let version: i64 = tx
            .query_one(
                "INSERT INTO history_heads (user_id, version) VALUES ($1, 1) \
                 ON CONFLICT (user_id) DO UPDATE SET version = history_heads.version + 1 \
                 RETURNING version",
                &[&user.as_str()],
            )
            .await?
            .get(0);
        tx.commit().await?;
        self.wrote();
        Ok(version)
    }

    async fn version(&self, user: UserId) -> Result<i64, HistoryError> {
        let client = self.client().await?;
        Ok(client
            .query_opt(
                "SELECT version FROM history_heads WHERE user_id = $1",
                &[&user.as_str()],
            )
            .await?
            .map_or(0, |row| row.get(0)))
    }

    async fn try_lease(&self, user: UserId, ttl: Duration) -> Result<Option<Lease>, HistoryError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT l.lease_token, l.lease_version \
                 FROM set_config('synchronous_commit', 'off', true) AS s, \
                 memento_history_lease($1, $2, $3) AS l",
                &[&user.as_str(), &self.holder, &ttl.as_secs_f64()],
            )
            .await?;
        self.wrote();
        Ok(row.map(|row| Lease {
            token: row.get(0),
            version: row.get(1),
        }))
    }

    async fn renew(&self, user: UserId, token: i64, ttl: Duration) -> Result<bool, HistoryError> {
        let client = self.client().await?;
        let changed = client
            .execute(
                "UPDATE history_leases \
                 SET expires_at = clock_timestamp() + make_interval(secs => $3) \
                 WHERE user_id = $1 AND token = $2 \
                 AND set_config('synchronous_commit', 'off', true) IS NOT NULL",
                &[&user.as_str(), &token, &ttl.as_secs_f64()],
            )
            .await?;
        self.wrote();
        Ok(changed == 1)
    }

    async fn release(&self, user: UserId, token: i64) -> Result<(), HistoryError> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE history_leases SET expires_at = '-infinity' \
                 WHERE user_id = $1 AND token = $2 \
                 AND set_config('synchronous_commit', 'off', true) IS NOT NULL",
                &[&user.as_str(), &token],
            )
            .await?;
        self.wrote();
        Ok(())
    }
}

impl HistoryBackend for PgHistory {
    fn load(&self, user: &UserId) -> BoxFuture<'static, Result<LoadedHistory, HistoryError>> {
        let (inner, user) = (self.inner.clone(), user.clone());
        Box::pin(async move { inner.load(user).await })
    }

    fn append(&self, append: Append) -> BoxFuture<'static, Result<i64, HistoryError>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            let text = append.messages_json();
            inner.append(append, text).await
        })
    }

    fn delete(&self, user: &UserId) -> BoxFuture<'static, Result<i64, HistoryError>> {
        let (inner, user) = (self.inner.clone(), user.clone());
        Box::pin(async move { inner.delete(user).await })
    }

    fn version(&self, user: &UserId) -> BoxFuture<'static, Result<i64, HistoryError>> {
        let (inner, user) = (self.inner.clone(), user.clone());
        Box::pin(async move { inner.version(user).await })
    }

    fn try_lease(
        &self,
        user: &UserId,
        ttl: Duration,
    ) -> BoxFuture<'static, Result<Option<Lease>, HistoryError>> {
        let (inner, user) = (self.inner.clone(), user.clone());
        Box::pin(async move { inner.try_lease(user, ttl).await })
    }

    fn renew_lease(
        &self,
        user: &UserId,
        token: i64,
        ttl: Duration,
    ) -> BoxFuture<'static, Result<bool, HistoryError>> {
        let (inner, user) = (self.inner.clone(), user.clone());
        Box::pin(async move { inner.renew(user, token, ttl).await })
    }

    fn release_lease(
        &self,
        user: &UserId,
        token: i64,
    ) -> BoxFuture<'static, Result<(), HistoryError>> {
        let (inner, user) = (self.inner.clone(), user.clone());
        Box::pin(async move { inner.release(user, token).await })
    }

    fn uses_leases(&self) -> bool {
        true
    }

    fn stats(&self) -> HistoryStats {
        HistoryStats {
            writes: self.inner.counters.writes.load(Ordering::Relaxed),
            commits: self.inner.counters.commits.load(Ordering::Relaxed),
            checkpoints: 0,
        }
    }

    fn close(&self) -> BoxFuture<'static, ()> {
        self.inner.closed.store(true, Ordering::Relaxed);
        self.inner.pool.close();
        Box::pin(async {})
    }
}
