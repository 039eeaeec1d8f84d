use super::engine::*;
use super::fts::*;
use super::sql::*;
use super::*;

pub(super) fn user(name: &str) -> UserId {
    UserId::parse(name).unwrap()
}

pub(super) fn new_memory(owner: &str, content: &str, filename: &str, tags: &[&str]) -> NewMemory {
    NewMemory {
        user: user(owner),
        content: content.to_owned(),
        filename: filename.to_owned(),
        description: String::new(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        idempotency_key: None,
        created_at: None,
        embedding: None,
        embedding_model: None,
    }
}

/// The ids `store` answers `q` with, best first.
pub(super) async fn hit_ids(store: &dyn MemoryStore, q: SearchQuery) -> Vec<MemoryId> {
    store
        .search(q)
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.id)
        .collect()
}

pub(super) fn query(owner: &str, text: Option<&str>) -> SearchQuery {
    SearchQuery {
        user: user(owner),
        terms: text.map(|t| SearchTerms::parse(t).unwrap()),
        tags: Vec::new(),
        since: None,
        until: None,
        limit: 10,
        offset: 0,
        text: text.map(str::to_owned),
        mode: SearchMode::Hybrid,
        vector: None,
        semantic_weight: 1.0,
        ranking: Default::default(),
    }
}

/// One test's backend: it opens stores on the same database (a temporary directory for
/// SQLite, a schema of its own for PostgreSQL, dropped by [`Backend::cleanup`]).
pub(super) struct Backend {
    kind: Kind,
}

enum Kind {
    Sqlite(tempfile::TempDir),
    Postgres { url: String, schema: String },
}

impl Backend {
    fn sqlite() -> Option<Backend> {
        Some(Backend {
            kind: Kind::Sqlite(tempfile::tempdir().unwrap()),
        })
    }

    /// `None` (skip) when no test PostgreSQL is configured, outside tests/run.sh.
    fn postgres() -> Option<Backend> {
        Some(Backend {
            kind: Kind::Postgres {
                url: crate::shared::pg::tests::test_url()?,
                schema: crate::shared::pg::tests::test_schema("store"),
            },
        })
    }

    pub(super) async fn open(&self) -> Arc<dyn MemoryStore> {
        self.open_with_window(SqliteOptions::default().idempotency_window)
            .await
    }

    pub(super) async fn open_with_window(
        &self,
        idempotency_window: std::time::Duration,
    ) -> Arc<dyn MemoryStore> {
        match &self.kind {
            Kind::Sqlite(dir) => {
                let options = SqliteOptions {
                    idempotency_window,
                    ..SqliteOptions::default()
                };
                Arc::new(SqliteStore::open(dir.path(), &options).unwrap())
            }
            Kind::Postgres { url, schema } => {
                let options = PostgresOptions {
                    pool: crate::shared::pg::PoolOptions {
                        max_connections: 4,
                        schema: Some(schema.clone()),
                        ..crate::shared::pg::PoolOptions::default()
                    },
                    idempotency_window,
                };
                Arc::new(PostgresStore::open(url, &options).await.unwrap())
            }
        }
    }

    async fn cleanup(self) {
        if let Kind::Postgres { url, schema } = self.kind {
            let pool = crate::shared::pg::connect(&url, &crate::shared::pg::PoolOptions::default())
                .await
                .unwrap();
            let client = pool.get().await.unwrap();
            client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                .await
                .unwrap();
        }
    }
}

mod suite;

/// Instantiates every suite test for one backend.
macro_rules! suite {
    ($backend:ident, [$($test:ident),* $(,)?]) => {
        mod $backend {
            $(
                #[tokio::test]
                async fn $test() {
                    let Some(backend) = super::Backend::$backend() else { return };
                    super::suite::$test(&backend).await;
                    backend.cleanup().await;
                }
            )*
        }
    };
}

macro_rules! suite_for_every_backend {
    ($($test:ident),* $(,)?) => {
        suite!(sqlite, [$($test),*]);
        suite!(postgres, [$($test),*]);
    };
}

suite_for_every_backend!(
    store_then_get_and_search,
    users_are_isolated_whatever_the_query,
    hostile_queries_neither_error_nor_match_everything,
    newest_first_without_query_and_paging,
    since_until_and_tags_filter,
    delete_removes_from_index_and_tags,
    concurrent_stores_share_commits,
    reopen_keeps_data_and_schema_version,
    idempotency_keys_make_stores_exactly_once,
    a_key_reused_with_other_arguments_is_refused,
    expired_idempotency_keys_store_again,
    ranking_prefers_the_better_match,
    an_import_keeps_its_time_and_is_stored_once,
    list_pages_by_position_and_filters_by_user_tag_and_filename,
    concurrent_first_stores_with_one_key_store_once,
    forged_words_never_cross_users,
    vectors_rank_by_meaning_per_user,
    reindex_fills_missing_vectors,
);

// === SQLite only: its files, queues and FTS5 tokens ===

fn open() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), &SqliteOptions::default()).unwrap();
    (dir, store)
}

#[test]
fn argument_digests_are_length_prefixed() {
    // "ab" + "c" and "a" + "bc" must not hash alike.
    let a = NewMemory {
        description: "c".into(),
        ..new_memory("u", "x", "ab", &[])
    };
    let b = NewMemory {
        description: "bc".into(),
        ..new_memory("u", "x", "a", &[])
    };
    assert_ne!(arguments_digest(&a), arguments_digest(&b));
    assert_eq!(arguments_digest(&a), arguments_digest(&a.clone()));
    assert_eq!(arguments_digest(&a).len(), 64);
    let tags_one = new_memory("u", "x", "f", &["a,b"]);
    let tags_two = new_memory("u", "x", "f", &["a", "b"]);
    assert_ne!(arguments_digest(&tags_one), arguments_digest(&tags_two));
}

/// A database whose idempotency rows predate migration 4 (no digest) still replays them.
#[tokio::test]
async fn keys_stored_before_digests_still_replay() {
    let (dir, store) = open();
    let mut memory = new_memory("old", "kept", "k.txt", &[]);
    memory.idempotency_key = Some("legacy".into());
    let first = store.store(memory.clone()).await.unwrap();
    drop(store);
    let conn = Connection::open(dir.path().join("memento.db")).unwrap();
    conn.execute("UPDATE idempotency SET arguments = ''", [])
        .unwrap();
    drop(conn);
    let store = SqliteStore::open(dir.path(), &SqliteOptions::default()).unwrap();
    let replay = store.store(memory).await.unwrap();
    assert!(replay.replayed);
    assert_eq!(replay.id, first.id);
}

#[test]
fn scoped_text_prefixes_every_word() {
    assert_eq!(
        scoped_text(42, "Q4 plan: café-au-lait!"),
        "u2aqq4 u2aqplan u2aqcafé u2aqau u2aqlait"
    );
    assert_eq!(scoped_text(1, "  "), "");
    // The prefix cannot be forged from another user's number: `q` ends it.
    assert!(!scoped_text(0x2a, "x").starts_with(&scope_prefix(0x2)));
}

#[test]
fn match_expression_quotes_each_scoped_term() {
    let terms = SearchTerms::parse("q4 plan").unwrap();
    assert_eq!(match_expression(&terms, ""), "\"q4\" OR \"plan\"");
    assert_eq!(
        match_expression(&terms, "u2aq"),
        "\"u2aqq4\" OR \"u2aqplan\""
    );
}

/// Issue 11: a full writer queue never blocks the caller: the store fails at once with
/// `Busy`, and the jobs that were queued still commit once the writer can go on.
#[tokio::test]
async fn a_full_writer_queue_answers_busy_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let options = SqliteOptions {
        max_batch: 4,
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open_with_queues(dir.path(), &options, 2).unwrap();
    // Another connection holds the write lock: the writer thread blocks in BEGIN IMMEDIATE
    // (busy_timeout) with at most one batch taken, and the queue behind it fills up.
    let blocker = Connection::open(dir.path().join("memento.db")).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let started = std::time::Instant::now();
    let pending: Vec<_> = (0..64)
        .map(|i| store.store(new_memory("ann", &format!("note {i}"), "n.txt", &[])))
        .collect();
    // Every call returned at once (the sends are not awaited, they are try_send).
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    blocker.execute_batch("COMMIT").unwrap();
    let mut busy = 0;
    let mut stored = 0;
    for result in futures::future::join_all(pending).await {
        match result {
            Ok(_) => stored += 1,
            Err(StorageError::Busy) => busy += 1,
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    // At most one batch (4) in the writer and 2 queued were accepted.
    assert!((1..=6).contains(&stored), "stored {stored}");
    assert_eq!(busy, 64 - stored);
    assert!(
        StorageError::Busy
            .to_string()
            .contains("busy, retry shortly"),
        "{}",
        StorageError::Busy
    );
    // Once the writer is free again, stores go through.
    store
        .store(new_memory("ann", "after", "a.txt", &[]))
        .await
        .unwrap();
    let all = store.search(query("ann", None)).await.unwrap();
    assert_eq!(all.len(), stored + 1);
}

/// Issue 11: text crafted to look like another user's scoped tokens plants nothing in that
/// user's scope, in either direction, and searches never cross users.
#[tokio::test]
async fn hostile_text_plants_no_token_in_another_users_scope() {
    let (dir, store) = open();
    // alice is user 1 (`u1q`), bob user 2 (`u2q`).
    store
        .store(new_memory("alice", "first", "a.txt", &[]))
        .await
        .unwrap();
    store
        .store(new_memory("bob", "first", "b.txt", &[]))
        .await
        .unwrap();
    // Each separator candidate between a harmless word and a forged scoped token: symbols
    // Rust calls alphanumeric (ⓐ, Ⓐ), combining marks, joiners, odd spaces, a letter whose
    // lower case is two characters (İ), full-width letters, and plain punctuation.
    let glue = [
        "ⓐ",
        "Ⓐ",
        "\u{0345}",
        "\u{0301}",
        "\u{200D}",
        "\u{00A0}",
        "\u{2028}",
        "İ",
        "-",
        "_",
        "\u{FF55}",
        "\u{E000}",
        "\u{30000}",
        "",
    ];
    let forge = |target: &str, word: &str| -> String {
        glue.iter()
            .map(|g| format!("x{g}{target}{word} {g}{target}{word}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut from_alice = new_memory("alice", &forge("u2q", "secretb"), "u2qsecretb.txt", &[]);
    from_alice.description = forge("U2Q", "secretb");
    from_alice.tags = vec![forge("u2q", "secretb")];
    store.store(from_alice).await.unwrap();
    let mut from_bob = new_memory("bob", &forge("u1q", "secreta"), "u1qsecreta.txt", &[]);
    from_bob.description = forge("u1q", "secreta");
    store.store(from_bob).await.unwrap();

    // No token of bob's scope came from alice's text, and none of alice's from bob's.
    let conn = Connection::open(dir.path().join("memento.db")).unwrap();
    let planted = |expression: &str| -> i64 {
        conn.query_row(
            "SELECT count(*) FROM memories_fts WHERE memories_fts MATCH ?1",
            [expression],
            |row| row.get(0),
        )
        .unwrap()
    };
    assert_eq!(
        planted("\"u2qsecretb\""),
        0,
        "alice planted a token in bob's scope"
    );
    assert_eq!(
        planted("\"u1qsecreta\""),
        0,
        "bob planted a token in alice's scope"
    );
    // And the searches see only their own rows, whatever the query.
    for (owner, word) in [("bob", "secretb"), ("alice", "secreta")] {
        for text in [word, "u2qsecretb", "u1qsecreta", "first"] {
            let hits = store.search(query(owner, Some(text))).await.unwrap();
            for hit in &hits {
                let memory = store.get(user(owner), hit.id).await.unwrap();
                assert!(
                    memory.is_some(),
                    "{owner} got another user's memory for {text:?}"
                );
            }
        }
    }
    // Each user still finds their own text, forged words included, in their own scope.
    assert_eq!(planted("\"u1qu2qsecretb\""), 1);
    let own = |owner: &'static str, text: &'static str| {
        let store = store.clone();
        async move { store.search(query(owner, Some(text))).await.unwrap().len() }
    };
    assert_eq!(own("alice", "u2qsecretb").await, 1);
    assert_eq!(own("bob", "u1qsecreta").await, 1);
}

// === PostgreSQL only: several processes on one database ===

/// Two stores on one database (two daemons): the vectors one writes, after the other has
/// loaded its cache, are found by the other's next search, and its deletes leave it.
#[tokio::test]
async fn postgres_vector_caches_follow_other_writers() {
    let Some(backend) = Backend::postgres() else {
        return;
    };
    let (a, b) = (backend.open().await, backend.open().await);
    let vector = |axis: usize| {
        let mut v = vec![0.0f32; 4];
        v[axis] = 1.0;
        v
    };
    let with = |content: &str, axis: usize| NewMemory {
        embedding: Some(vector(axis)),
        embedding_model: Some("m".into()),
        ..new_memory("zed", content, "z.txt", &[])
    };
    let search = |store: Arc<dyn MemoryStore>, axis: usize| async move {
        let q = SearchQuery {
            vector: Some(vector(axis)),
            mode: SearchMode::Semantic,
            ..query("zed", Some("anything"))
        };
        hit_ids(&*store, q).await
    };
    let first = a.store(with("first", 0)).await.unwrap();
    assert_eq!(search(a.clone(), 0).await[0], first.id);
    let second = b.store(with("second", 1)).await.unwrap();
    assert_eq!(search(a.clone(), 1).await[0], second.id);
    // A vector replaced by the other store (a reindex there) is re-read.
    b.put_vectors("m2".into(), vec![(first.id, vector(2))])
        .await
        .unwrap();
    assert_eq!(search(a.clone(), 2).await[0], first.id);
    b.delete(user("zed"), second.id).await.unwrap().unwrap();
    assert_eq!(search(a.clone(), 1).await, vec![first.id]);
    backend.cleanup().await;
}

/// Issue 13, item 4: closing the store finishes the queued work, then joins the writer and
/// reader threads; later calls fail with `Closed` instead of waiting forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_finishes_queued_work_and_joins_the_storage_threads() {
    let (_dir, store) = open();
    let readers = SqliteOptions::default().readers.max(1);
    assert_eq!(
        store.live_threads(),
        1 + readers,
        "a writer and the readers"
    );
    let stored = store.store(new_memory("u", "kept before close", "a.md", &[]));
    store.close().await;
    assert!(
        stored.await.is_ok(),
        "work queued before close is committed"
    );
    assert_eq!(store.live_threads(), 0, "every storage thread has exited");
    assert!(matches!(
        store.store(new_memory("u", "too late", "b.md", &[])).await,
        Err(StorageError::Closed)
    ));
    // A second close has nothing left to join.
    store.close().await;
}

/// `RunningMemoryServer::shutdown` closes the store it served: its threads are joined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_servers_shutdown_joins_the_storage_threads() {
    let (_dir, store) = open();
    let config = crate::shared::config::McpServerConfig {
        port: 0,
        token: Some("t".into()),
        ..Default::default()
    };
    let server = crate::memory_server::start(
        &config,
        Arc::new(store.clone()),
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .expect("start");
    assert!(store.live_threads() > 0);
    server.shutdown().await;
    assert_eq!(store.live_threads(), 0);
}
