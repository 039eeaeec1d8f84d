use super::sqlite::SqliteHistory;
use super::*;
use crate::daemon::testing::{answer, user};

fn alice() -> UserId {
    UserId::parse("alice").unwrap()
}

/// Appends one turn through the cache, the way the conversation actor does.
async fn turn(
    store: &HistoryStore,
    cached: &CachedHistory,
    text: &str,
    budget: usize,
) -> CachedHistory {
    let (append, next) = cached
        .clone()
        .with_turn(vec![user(text), answer(text)], budget, &alice());
    let version = store.backend().append(append).await.unwrap();
    assert_eq!(version, next.version());
    next
}

#[tokio::test]
async fn turns_append_load_delete_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let expected = [user("hi"), answer("hi"), user("again"), answer("again")];
    {
        let store = HistoryStore::open(dir.path()).unwrap();
        let empty = store.load(&alice(), 10_000).await.unwrap();
        assert!(empty.messages().is_empty());
        assert_eq!(empty.version(), 0);
        let one = turn(&store, &empty, "hi", 10_000).await;
        let two = turn(&store, &one, "again", 10_000).await;
        assert_eq!(two.messages(), &expected[..]);
        store.close().await;
        // Closed: later calls fail instead of hanging.
        assert!(matches!(
            store.backend().version(&alice()).await,
            Err(HistoryError::Closed)
        ));
    }
    let store = HistoryStore::open(dir.path()).unwrap();
    let loaded = store.load(&alice(), 10_000).await.unwrap();
    assert_eq!(loaded.messages(), &expected[..]);
    assert_eq!(loaded.version(), 2);
    let version = store.delete(&alice()).await.unwrap();
    assert_eq!(version, 3, "a reset moves the version on");
    let after = store.load(&alice(), 10_000).await.unwrap();
    assert!(after.messages().is_empty());
    assert_eq!(after.version(), 3);
}

#[tokio::test]
async fn trimmed_rows_are_deleted_and_load_keeps_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let store = HistoryStore::open(dir.path()).unwrap();
    // Each turn is about 2 * (100 / 4 + 4) = 58 tokens: a 150-token budget keeps two.
    let text = "x".repeat(100);
    let mut cached = store.load(&alice(), 150).await.unwrap();
    for i in 0..10 {
        cached = turn(&store, &cached, &format!("{i}{text}"), 150).await;
    }
    assert_eq!(cached.messages().len(), 4);
    let loaded = store.backend().load(&alice()).await.unwrap();
    let seqs: Vec<i64> = loaded.turns.iter().map(|t| t.seq).collect();
    assert_eq!(
        seqs,
        vec![9, 10],
        "rows past the budget are gone from the table"
    );
    assert_eq!(
        store.load(&alice(), 150).await.unwrap().messages(),
        cached.messages()
    );
    // A smaller budget on load trims again, like `trim_history` on the whole list.
    let mut whole = cached.messages().to_vec();
    crate::daemon::conversation::trim_history(&mut whole, 60);
    assert_eq!(
        store.load(&alice(), 60).await.unwrap().messages(),
        &whole[..]
    );
}

#[tokio::test]
async fn a_stale_version_is_refused_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = HistoryStore::open(dir.path()).unwrap();
    let empty = store.load(&alice(), 10_000).await.unwrap();
    let mine = turn(&store, &empty, "first", 10_000).await;
    // A second writer that read before the first append.
    let (late, _) = empty.with_turn(vec![user("late")], 10_000, &alice());
    assert!(matches!(
        store.backend().append(late).await,
        Err(HistoryError::Stale)
    ));
    assert_eq!(
        store.load(&alice(), 10_000).await.unwrap().messages(),
        mine.messages()
    );
}

#[tokio::test]
async fn concurrent_appends_share_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let store = HistoryStore::open(dir.path()).unwrap();
    let before = store.stats();
    let appends = (0..200).map(|i| {
        let store = store.clone();
        async move {
            let user = UserId::parse(&format!("user{i}")).unwrap();
            let (append, _) = CachedHistory::default().with_turn(vec![user_msg(i)], 10_000, &user);
            store.backend().append(append).await
        }
    });
    for result in futures::future::join_all(appends).await {
        assert_eq!(result.unwrap(), 1);
    }
    let stats = store.stats();
    assert_eq!(stats.writes - before.writes, 200);
    assert!(
        stats.commits - before.commits < 200,
        "200 concurrent appends in fewer commits: {stats:?}"
    );
}

fn user_msg(i: usize) -> ChatMessage {
    user(&format!("message {i}"))
}

#[tokio::test]
async fn checkpoints_run_in_the_background_and_the_writer_never_autocheckpoints() {
    let dir = tempfile::tempdir().unwrap();
    let store = HistoryStore::open(dir.path()).unwrap();
    let mut cached = CachedHistory::default();
    for i in 0..20 {
        cached = turn(&store, &cached, &format!("turn {i}"), 10_000).await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while store.stats().checkpoints == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no background checkpoint"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Closing joins the threads and truncates the WAL.
    store.close().await;
    let wal = dir.path().join("conversations.db-wal");
    assert_eq!(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0), 0);
}

#[tokio::test]
async fn leases_fence_stale_holders_and_expire() {
    let dir = tempfile::tempdir().unwrap();
    // Two daemons on one database.
    let one = SqliteHistory::open(dir.path()).unwrap().with_leases(true);
    let two = SqliteHistory::open(dir.path()).unwrap().with_leases(true);
    let ttl = Duration::from_millis(300);
    let first = one.try_lease(&alice(), ttl).await.unwrap().expect("free");
    assert!(
        two.try_lease(&alice(), ttl).await.unwrap().is_none(),
        "held"
    );
    assert!(one.renew_lease(&alice(), first.token, ttl).await.unwrap());
    // Expired (the holder stopped renewing, as after kill -9): the other takes it over.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let second = two
        .try_lease(&alice(), ttl)
        .await
        .unwrap()
        .expect("expired");
    assert!(second.token > first.token, "fencing tokens only grow");
    // The old holder's write is refused and changes nothing.
    let (mut stale, _) = CachedHistory::default().with_turn(vec![user("old")], 10_000, &alice());
    stale.fence = Some(first.token);
    assert!(matches!(one.append(stale).await, Err(HistoryError::Fenced)));
    assert!(!one.renew_lease(&alice(), first.token, ttl).await.unwrap());
    // The new holder writes and releases in one transaction.
    let (mut fresh, _) = CachedHistory::default().with_turn(vec![user("new")], 10_000, &alice());
    fresh.fence = Some(second.token);
    fresh.release = true;
    assert_eq!(two.append(fresh).await.unwrap(), 1);
    let third = one
        .try_lease(&alice(), ttl)
        .await
        .unwrap()
        .expect("released");
    assert_eq!(
        third.version, 1,
        "the lease reports the version to check the cache"
    );
    assert!(third.token > second.token);
    one.release_lease(&alice(), third.token).await.unwrap();
    assert!(two.try_lease(&alice(), ttl).await.unwrap().is_some());
}

#[tokio::test]
async fn a_waiting_turn_gets_the_lease_when_the_holder_releases() {
    let dir = tempfile::tempdir().unwrap();
    let one: Arc<dyn HistoryBackend> = Arc::new(SqliteHistory::open(dir.path()).unwrap());
    let two: Arc<dyn HistoryBackend> = Arc::new(SqliteHistory::open(dir.path()).unwrap());
    let far = tokio::time::Instant::now() + Duration::from_secs(30);
    let held = lease::LeaseGuard::acquire(&one, &alice(), far)
        .await
        .unwrap();
    // Bounded by the deadline while held.
    let soon = tokio::time::Instant::now() + Duration::from_millis(100);
    assert!(matches!(
        lease::LeaseGuard::acquire(&two, &alice(), soon).await,
        Err(HistoryError::LeaseBusy)
    ));
    let waiter = tokio::spawn({
        let two = two.clone();
        async move { lease::LeaseGuard::acquire(&two, &alice(), far).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(held); // releases in the background
    let got = waiter.await.unwrap().unwrap();
    assert!(got.token() > 1);
}

#[test]
fn an_appended_row_is_the_json_serde_writes_for_the_turn() {
    let turn = vec![user("a \"quoted\" note"), answer("é ✓ done")];
    let (append, _) = CachedHistory::default().with_turn(turn.clone(), 10_000, &alice());
    assert_eq!(
        append.messages_json(),
        serde_json::to_string(&turn).unwrap()
    );
    let (empty, _) =
        CachedHistory::default().with_turn(Vec::<ChatMessage>::new(), 10_000, &alice());
    assert_eq!(empty.messages_json(), "[]");
}

#[tokio::test]
async fn legacy_whole_rows_become_turn_rows() {
    let dir = tempfile::tempdir().unwrap();
    let messages = vec![
        answer("orphan"),
        user("a"),
        answer("b"),
        user("c"),
        answer("d"),
    ];
    {
        let conn = rusqlite::Connection::open(dir.path().join("conversations.db")).unwrap();
        conn.execute_batch(
            "CREATE TABLE histories (user_id TEXT PRIMARY KEY, messages TEXT NOT NULL, \
             updated_at INTEGER NOT NULL)",
        )
        .unwrap();
        conn.execute(
            "INSERT INTO histories VALUES ('alice', ?1, 0)",
            [serde_json::to_string(&messages).unwrap()],
        )
        .unwrap();
    }
    let store = HistoryStore::open(dir.path()).unwrap();
    let loaded = store.backend().load(&alice()).await.unwrap();
    assert_eq!(loaded.turns.len(), 3);
    assert_eq!(loaded.version, 3);
    assert_eq!(
        store.load(&alice(), 10_000).await.unwrap().messages(),
        &messages[..]
    );
}

#[tokio::test]
async fn turn_rows_of_the_without_rowid_layout_move_to_a_rowid_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("conversations.db");
    let turns = [
        vec![user("first"), answer("one")],
        vec![user("second"), answer("two")],
    ];
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE history_turns (user_id TEXT NOT NULL, seq INTEGER NOT NULL, \
             messages TEXT NOT NULL, PRIMARY KEY (user_id, seq)) WITHOUT ROWID;
             CREATE TABLE history_heads (user_id TEXT PRIMARY KEY, version INTEGER NOT NULL) \
             WITHOUT ROWID;
             INSERT INTO history_heads VALUES ('alice', 2);",
        )
        .unwrap();
        for (seq, turn) in turns.iter().enumerate() {
            conn.execute(
                "INSERT INTO history_turns VALUES ('alice', ?1, ?2)",
                (seq as i64 + 1, serde_json::to_string(turn).unwrap()),
            )
            .unwrap();
        }
    }
    let store = HistoryStore::open(dir.path()).unwrap();
    let cached = store.load(&alice(), 10_000).await.unwrap();
    assert_eq!(cached.version(), 2);
    assert_eq!(cached.messages(), &turns.concat()[..]);
    // Appends go on from where the old table was.
    let next = turn(&store, &cached, "third", 10_000).await;
    assert_eq!(next.version(), 3);
    assert_eq!(
        store.load(&alice(), 10_000).await.unwrap().messages(),
        next.messages()
    );
    store.close().await;
    let conn = rusqlite::Connection::open(&path).unwrap();
    let sql: String = conn
        .query_row(
            "SELECT sql FROM sqlite_master WHERE name = 'history_turns'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert!(!sql.to_ascii_uppercase().contains("WITHOUT ROWID"), "{sql}");
    let tables: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'history_turns_without_rowid'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(tables, 0);
}

/// The behaviour every backend shares, on two handles to one store (two daemons).
async fn backend_contract(one: Arc<dyn HistoryBackend>, two: Arc<dyn HistoryBackend>) {
    let bob = UserId::parse("bob").unwrap();
    let budget = 150;
    let text = "y".repeat(100);
    // Appends, trimmed rows deleted, budget re-applied on load.
    let mut cached = CachedHistory::from_loaded(one.load(&bob).await.unwrap(), budget);
    assert_eq!(cached.version(), 0);
    for i in 0..5 {
        let (append, next) = cached.with_turn(
            vec![user(&format!("{i}{text}")), answer("ok")],
            budget,
            &bob,
        );
        assert_eq!(one.append(append).await.unwrap(), i + 1);
        cached = next;
    }
    let loaded = two.load(&bob).await.unwrap();
    assert_eq!(loaded.version, 5);
    assert_eq!(
        loaded.turns.first().map(|t| t.seq),
        cached.rows.front().map(|r| r.0),
        "rows past the budget deleted"
    );
    assert_eq!(
        CachedHistory::from_loaded(loaded, budget).messages(),
        cached.messages()
    );
    // A second writer with an old copy is refused, and writes nothing.
    let (stale, _) = CachedHistory::default().with_turn(vec![user("stale")], budget, &bob);
    assert!(matches!(two.append(stale).await, Err(HistoryError::Stale)));
    assert_eq!(two.version(&bob).await.unwrap(), 5);
    // Leases: exclusive, fenced, expiring, released with an append.
    let ttl = Duration::from_millis(400);
    let first = one.try_lease(&bob, ttl).await.unwrap().expect("free");
    assert_eq!(first.version, 5);
    assert!(two.try_lease(&bob, ttl).await.unwrap().is_none());
    assert!(one.renew_lease(&bob, first.token, ttl).await.unwrap());
    let expired = tokio::time::Instant::now() + Duration::from_secs(5);
    let second = loop {
        if let Some(lease) = two.try_lease(&bob, ttl).await.unwrap() {
            break lease;
        }
        assert!(
            tokio::time::Instant::now() < expired,
            "the lease never expired"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(second.token > first.token);
    let (mut old, _) = cached
        .clone()
        .with_turn(vec![user("old holder")], budget, &bob);
    old.fence = Some(first.token);
    assert!(matches!(one.append(old).await, Err(HistoryError::Fenced)));
    assert!(!one.renew_lease(&bob, first.token, ttl).await.unwrap());
    let (mut new, next) = cached.with_turn(vec![user("new holder")], budget, &bob);
    new.fence = Some(second.token);
    new.release = true;
    assert_eq!(two.append(new).await.unwrap(), 6);
    let third = one.try_lease(&bob, ttl).await.unwrap().expect("released");
    assert_eq!(third.version, 6);
    one.release_lease(&bob, third.token).await.unwrap();
    assert_eq!(
        CachedHistory::from_loaded(one.load(&bob).await.unwrap(), budget).messages(),
        next.messages()
    );
    // A reset moves the version on.
    assert_eq!(two.delete(&bob).await.unwrap(), 7);
    let empty = one.load(&bob).await.unwrap();
    assert!(empty.turns.is_empty());
    assert_eq!(empty.version, 7);
}

#[tokio::test]
async fn sqlite_keeps_the_backend_contract() {
    let dir = tempfile::tempdir().unwrap();
    let one = Arc::new(SqliteHistory::open(dir.path()).unwrap());
    let two = Arc::new(SqliteHistory::open(dir.path()).unwrap());
    backend_contract(one, two).await;
}

/// Pool options with `max_connections` in a fresh schema named `prefix_<uuid>`.
fn pg_options(max_connections: usize, prefix: &str) -> crate::shared::pg::PoolOptions {
    crate::shared::pg::PoolOptions {
        max_connections,
        schema: Some(format!("{prefix}_{}", uuid::Uuid::new_v4().simple())),
        ..crate::shared::pg::PoolOptions::default()
    }
}

#[tokio::test]
async fn postgres_keeps_the_backend_contract() {
    let Some(url) = pg_test_url() else {
        return;
    };
    let options = pg_options(4, "hist");
    let one = Arc::new(postgres::PgHistory::open(&url, &options).await.unwrap());
    let two = Arc::new(postgres::PgHistory::open(&url, &options).await.unwrap());
    assert!(one.uses_leases());
    backend_contract(one.clone(), two).await;
    one.close().await;
    assert!(matches!(
        one.version(&alice()).await,
        Err(HistoryError::Closed)
    ));
}

#[tokio::test]
async fn postgres_concurrent_first_appends_keep_one() {
    let Some(url) = pg_test_url() else {
        return;
    };
    let options = pg_options(8, "hist");
    let store = postgres::PgHistory::open(&url, &options).await.unwrap();
    let attempts = (0..8).map(|i| {
        let (append, _) =
            CachedHistory::default().with_turn(vec![user(&format!("racer {i}"))], 10_000, &alice());
        store.append(append)
    });
    let results = futures::future::join_all(attempts).await;
    let won = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(won, 1, "{results:?}");
    assert!(
        results
            .iter()
            .all(|r| r.is_ok() || matches!(r, Err(HistoryError::Stale))),
        "{results:?}"
    );
    assert_eq!(store.load(&alice()).await.unwrap().turns.len(), 1);
}

/// The URL of the test PostgreSQL (tests/services/postgres.sh), or `None` to skip; under
/// `MEMENTO_REQUIRE_SERVICES=1` (tests/run.sh) a missing URL fails the test.
fn pg_test_url() -> Option<String> {
    match std::env::var("MEMENTO_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("MEMENTO_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "MEMENTO_TEST_POSTGRES_URL is not set but MEMENTO_REQUIRE_SERVICES=1"
            );
            eprintln!("skipped: MEMENTO_TEST_POSTGRES_URL is not set");
            None
        }
    }
}

mod bench;
