use super::*;

fn user(name: &str) -> UserId {
    UserId::parse(name).unwrap()
}

fn new_memory(owner: &str, content: &str, filename: &str, tags: &[&str]) -> NewMemory {
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

fn query(owner: &str, text: Option<&str>) -> SearchQuery {
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
    }
}

fn open() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), &SqliteOptions::default()).unwrap();
    (dir, store)
}

#[tokio::test]
async fn store_then_get_and_search() {
    let (_dir, store) = open();
    let stored = store
        .store(new_memory(
            "alice",
            "Q4 planning: ship the rewrite",
            "q4_plan.txt",
            &["work", "planning"],
        ))
        .await
        .unwrap();
    assert!(stored.stored_as.ends_with("_q4_plan.txt"));
    let got = store.get(user("alice"), stored.id).await.unwrap().unwrap();
    assert_eq!(got.id, stored.id);
    assert_eq!(got.stored_as, stored.stored_as);
    assert_eq!(got.created_at, stored.created_at);
    assert_eq!(got.tags, stored.tags);
    assert_eq!(got.content, "Q4 planning: ship the rewrite");
    let hits = store
        .search(query("alice", Some("the Q4 plan")))
        .await
        .unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].id, stored.id);
    // Stemming: "plans" finds "planning".
    let hits = store.search(query("alice", Some("plans"))).await.unwrap();
    assert_eq!(hits.len(), 1);
}

#[tokio::test]
async fn users_are_isolated_whatever_the_query() {
    let (_dir, store) = open();
    let bob = store
        .store(new_memory(
            "bob",
            "bob secret launch codes",
            "secret.txt",
            &["secret"],
        ))
        .await
        .unwrap();
    store
        .store(new_memory(
            "alice",
            "alice grocery list",
            "groceries.txt",
            &["home"],
        ))
        .await
        .unwrap();
    for text in [
        "secret",
        "bob",
        "launch codes",
        "owner",
        "098111098",
        "secret OR 1=1",
        "*",
    ] {
        let hits = store.search(query("alice", Some(text))).await.unwrap();
        assert!(hits.iter().all(|h| h.id != bob.id), "query {text:?} leaked");
    }
    let mut tagged = query("alice", None);
    tagged.tags = vec!["secret".into()];
    assert!(store.search(tagged).await.unwrap().is_empty());
    assert!(store.get(user("alice"), bob.id).await.unwrap().is_none());
    assert!(store.delete(user("alice"), bob.id).await.unwrap().is_none());
    assert!(store.get(user("bob"), bob.id).await.unwrap().is_some());
    let tags = store.list_tags(user("alice")).await.unwrap();
    assert_eq!(
        tags,
        vec![TagCount {
            tag: "home".into(),
            count: 1
        }]
    );
}

#[tokio::test]
async fn hostile_queries_neither_error_nor_match_everything() {
    let (_dir, store) = open();
    for i in 0..5 {
        store
            .store(new_memory(
                "carol",
                &format!("note number {i} about apples"),
                "n.txt",
                &[],
            ))
            .await
            .unwrap();
    }
    for text in [
        "\"", "*", "NEAR(", "-apples", "(((", "apples\"", "a:b", "^", "AND", "OR",
    ] {
        let terms = SearchTerms::parse(text).unwrap();
        let hits = store.search(query("carol", Some(text))).await;
        let hits = hits.unwrap_or_else(|e| panic!("query {text:?} errored: {e}"));
        if terms.is_empty() {
            assert!(hits.is_empty(), "query {text:?} matched everything");
        }
    }
    let hits = store.search(query("carol", Some("-apples"))).await.unwrap();
    assert_eq!(hits.len(), 5, "-apples is the word apples, not a negation");
}

#[tokio::test]
async fn newest_first_without_query_and_paging() {
    let (_dir, store) = open();
    let mut ids = Vec::new();
    for i in 0..5 {
        let m = store
            .store(new_memory("dave", &format!("entry {i}"), "e.txt", &[]))
            .await
            .unwrap();
        ids.push(m.id);
    }
    let mut q = query("dave", None);
    q.limit = 2;
    let page1 = store.search(q.clone()).await.unwrap();
    q.offset = 2;
    let page2 = store.search(q).await.unwrap();
    let got: Vec<_> = page1.iter().chain(&page2).map(|m| m.id).collect();
    let want: Vec<_> = ids.iter().rev().take(4).copied().collect();
    assert_eq!(got, want);
}

#[tokio::test]
async fn since_until_and_tags_filter() {
    let (_dir, store) = open();
    let a = store
        .store(new_memory("erin", "alpha", "a.txt", &["x"]))
        .await
        .unwrap();
    let b = store
        .store(new_memory("erin", "beta", "b.txt", &["y"]))
        .await
        .unwrap();
    let mut q = query("erin", None);
    q.since = Some(b.created_at);
    let hits = store.search(q).await.unwrap();
    assert!(hits.iter().any(|h| h.id == b.id));
    let mut q = query("erin", None);
    q.until = Some(b.created_at);
    assert!(store.search(q).await.unwrap().iter().all(|h| h.id != b.id));
    let mut q = query("erin", None);
    q.tags = vec!["x".into()];
    let hits = store.search(q).await.unwrap();
    assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), vec![a.id]);
}

#[tokio::test]
async fn delete_removes_from_index_and_tags() {
    let (_dir, store) = open();
    let m = store
        .store(new_memory("fay", "delete me please", "d.txt", &["tmp"]))
        .await
        .unwrap();
    let deleted = store.delete(user("fay"), m.id).await.unwrap().unwrap();
    assert_eq!(deleted.id, m.id);
    assert!(
        store
            .search(query("fay", Some("delete")))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.list_tags(user("fay")).await.unwrap().is_empty());
    assert!(store.delete(user("fay"), m.id).await.unwrap().is_none());
}

#[tokio::test]
async fn concurrent_stores_share_commits() {
    let (_dir, store) = open();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .store(new_memory("gus", &format!("memory {i}"), "m.txt", &[]))
                .await
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let stats = store.stats();
    assert_eq!(stats.writes, 200);
    assert!(stats.commits <= 200);
    let mut q = query("gus", None);
    q.limit = 100;
    assert_eq!(store.search(q).await.unwrap().len(), 100);
}

#[tokio::test]
async fn reopen_keeps_data_and_schema_version() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let store = SqliteStore::open(dir.path(), &SqliteOptions::default()).unwrap();
        store
            .store(new_memory("hal", "persist me", "p.txt", &[]))
            .await
            .unwrap()
            .id
    };
    let store = SqliteStore::open(dir.path(), &SqliteOptions::default()).unwrap();
    assert!(store.get(user("hal"), id).await.unwrap().is_some());
}

#[tokio::test]
async fn idempotency_keys_make_stores_exactly_once() {
    let (_dir, store) = open();
    let mut memory = new_memory("ivy", "pay the rent", "rent.txt", &[]);
    memory.idempotency_key = Some("turn1:call1".into());
    let first = store.store(memory.clone()).await.unwrap();
    assert!(!first.replayed);
    // Concurrent replays and a later one all get the first result.
    let replays = futures::future::join_all((0..10).map(|_| store.store(memory.clone()))).await;
    for replay in replays {
        let replay = replay.unwrap();
        assert!(replay.replayed);
        assert_eq!(replay.id, first.id);
        assert_eq!(replay.stored_as, first.stored_as);
    }
    let q = query("ivy", None);
    assert_eq!(store.search(q).await.unwrap().len(), 1);
    // The same key for another user is another store.
    let mut other = new_memory("jay", "pay the rent", "rent.txt", &[]);
    other.idempotency_key = Some("turn1:call1".into());
    assert_ne!(store.store(other).await.unwrap().id, first.id);
    // A different key stores again.
    memory.idempotency_key = Some("turn2:call1".into());
    assert_ne!(store.store(memory).await.unwrap().id, first.id);
}

/// Issue 11: a key reused with other arguments is refused (nothing stored), never
/// answered with the first store's result as if it were a replay.
#[tokio::test]
async fn a_key_reused_with_other_arguments_is_refused() {
    let (_dir, store) = open();
    let mut first = new_memory("ivy", "pay the rent", "rent.txt", &["home"]);
    first.idempotency_key = Some("turn1:0:0".into());
    let stored = store.store(first.clone()).await.unwrap();
    // Each field counts: content, filename, description, tags.
    let mut variants = Vec::new();
    for change in 0..4 {
        let mut other = first.clone();
        match change {
            0 => other.content = "pay the gas bill".into(),
            1 => other.filename = "gas.txt".into(),
            2 => other.description = "bills".into(),
            _ => other.tags = vec!["home".into(), "money".into()],
        }
        variants.push(other);
    }
    for other in variants {
        match store.store(other.clone()).await {
            Err(StorageError::KeyReused { key }) => assert_eq!(key, "turn1:0:0"),
            result => panic!("{other:?} got {result:?}"),
        }
    }
    assert_eq!(store.search(query("ivy", None)).await.unwrap().len(), 1);
    // The true replay still gets the first result.
    let replay = store.store(first).await.unwrap();
    assert!(replay.replayed);
    assert_eq!(replay.id, stored.id);
    let message = StorageError::KeyReused { key: "k".into() }.to_string();
    assert!(message.contains("different arguments"), "{message}");
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

#[tokio::test]
async fn expired_idempotency_keys_store_again() {
    let dir = tempfile::tempdir().unwrap();
    let options = SqliteOptions {
        idempotency_window: std::time::Duration::ZERO,
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open(dir.path(), &options).unwrap();
    let mut memory = new_memory("kim", "x", "x.txt", &[]);
    memory.idempotency_key = Some("k".into());
    let first = store.store(memory.clone()).await.unwrap();
    let second = store.store(memory).await.unwrap();
    assert_ne!(first.id, second.id);
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

#[tokio::test]
async fn ranking_prefers_the_better_match() {
    let (_dir, store) = open();
    store
        .store(new_memory(
            "lea",
            "groceries: apples, bread",
            "list.txt",
            &[],
        ))
        .await
        .unwrap();
    let best = store
        .store(new_memory(
            "lea",
            "apple pie recipe with apples and more apples",
            "apple_pie.txt",
            &["apple"],
        ))
        .await
        .unwrap();
    let hits = store.search(query("lea", Some("apple"))).await.unwrap();
    assert_eq!(hits.len(), 2);
    assert_eq!(hits[0].id, best.id);
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

#[tokio::test]
async fn an_import_keeps_its_time_and_is_stored_once() {
    let (_dir, store) = open();
    let at = Utc.with_ymd_and_hms(2024, 7, 15, 14, 30, 52).unwrap();
    let mut memory = new_memory("alice", "Q4 plan", "plan.txt", &["work"]);
    memory.created_at = Some(at);
    let first = store.store(memory.clone()).await.unwrap();
    assert_eq!(first.created_at, at);
    assert_eq!(first.stored_as, "20240715_143052_plan.txt");
    assert!(!first.replayed);
    // Same second (a seed name has no fraction), same filename and content: not stored again.
    memory.created_at = Some(at + chrono::Duration::milliseconds(400));
    let second = store.store(memory.clone()).await.unwrap();
    assert!(second.replayed);
    assert_eq!(second.id, first.id);
    // Another user, another content or another second is a new memory.
    let mut other = memory.clone();
    other.user = user("bob");
    assert!(!store.store(other).await.unwrap().replayed);
    let mut other = memory.clone();
    other.content = "Q4 plan, revised".into();
    assert!(!store.store(other).await.unwrap().replayed);
    let mut other = memory;
    other.created_at = Some(at + chrono::Duration::seconds(1));
    assert!(!store.store(other).await.unwrap().replayed);
}

#[tokio::test]
async fn list_pages_by_position_and_filters_by_user_tag_and_filename() {
    let (_dir, store) = open();
    for n in 0..5 {
        store
            .store(new_memory(
                "alice",
                &format!("note {n}"),
                &format!("n{n}.txt"),
                &["even"][..(n % 2 == 0) as usize],
            ))
            .await
            .unwrap();
    }
    store
        .store(new_memory("bob", "bob's", "n0.txt", &["even"]))
        .await
        .unwrap();
    let page = |user: Option<&str>, after, limit| ListQuery {
        user: user.map(self::user),
        after,
        limit,
        with_content: true,
        ..ListQuery::default()
    };
    let first = store.list(page(Some("alice"), None, 3)).await.unwrap();
    let names: Vec<_> = first.iter().map(|l| l.memory.filename.as_str()).collect();
    assert_eq!(names, ["n4.txt", "n3.txt", "n2.txt"]);
    let rest = store
        .list(page(Some("alice"), Some(first[2].position), 3))
        .await
        .unwrap();
    let names: Vec<_> = rest.iter().map(|l| l.memory.filename.as_str()).collect();
    assert_eq!(names, ["n1.txt", "n0.txt"]);
    assert_eq!(rest[1].memory.content, "note 0");
    assert_eq!(store.list(page(None, None, 100)).await.unwrap().len(), 6);
    let mut listing = page(Some("alice"), None, 1);
    listing.with_content = false;
    let listed = store.list(listing).await.unwrap();
    assert!(listed[0].memory.content.is_empty());
    assert_eq!(
        listed[0].memory.size_bytes, 6,
        "the size is the text's, loaded or not"
    );
    let mut tagged = page(Some("alice"), None, 100);
    tagged.tag = Some("even".into());
    assert_eq!(store.list(tagged).await.unwrap().len(), 3);
    let mut named = page(Some("bob"), None, 100);
    named.filename = Some("n0.txt".into());
    let bobs = store.list(named).await.unwrap();
    assert_eq!(bobs.len(), 1);
    assert_eq!(bobs[0].user.as_str(), "bob");

    let complete = |field, owner: Option<&str>, prefix: &str| {
        store.complete(field, owner.map(self::user), prefix.to_owned(), 10)
    };
    assert_eq!(
        complete(CompletionField::Filename, Some("alice"), "n")
            .await
            .unwrap()
            .len(),
        5
    );
    assert_eq!(
        complete(CompletionField::Filename, Some("bob"), "")
            .await
            .unwrap(),
        ["n0.txt"]
    );
    assert_eq!(
        complete(CompletionField::Tag, Some("alice"), "EV")
            .await
            .unwrap(),
        ["even"]
    );
    assert!(
        complete(CompletionField::Tag, None, "")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        complete(CompletionField::User, None, "b").await.unwrap(),
        ["bob"]
    );
    // A prefix is compared as bytes, never as a LIKE pattern.
    assert!(
        complete(CompletionField::Filename, Some("alice"), "%")
            .await
            .unwrap()
            .is_empty()
    );
}
