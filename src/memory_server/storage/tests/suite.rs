//! The storage suite: every test here runs against each backend (SQLite, PostgreSQL)
//! through the [`MemoryStore`] trait alone; `super` instantiates it per backend.

use super::*;

pub(super) async fn store_then_get_and_search(backend: &Backend) {
    let store = backend.open().await;
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

pub(super) async fn users_are_isolated_whatever_the_query(backend: &Backend) {
    let store = backend.open().await;
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

pub(super) async fn hostile_queries_neither_error_nor_match_everything(backend: &Backend) {
    let store = backend.open().await;
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

pub(super) async fn newest_first_without_query_and_paging(backend: &Backend) {
    let store = backend.open().await;
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

pub(super) async fn since_until_and_tags_filter(backend: &Backend) {
    let store = backend.open().await;
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

pub(super) async fn delete_removes_from_index_and_tags(backend: &Backend) {
    let store = backend.open().await;
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

pub(super) async fn concurrent_stores_share_commits(backend: &Backend) {
    let store = backend.open().await;
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

pub(super) async fn reopen_keeps_data_and_schema_version(backend: &Backend) {
    let id = {
        let store = backend.open().await;
        store
            .store(new_memory("hal", "persist me", "p.txt", &["kept"]))
            .await
            .unwrap()
            .id
    };
    // Opening again (migrations run again: a no-op) keeps everything.
    let store = backend.open().await;
    assert!(store.get(user("hal"), id).await.unwrap().is_some());
    let hits = store.search(query("hal", Some("persist"))).await.unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(store.list_tags(user("hal")).await.unwrap().len(), 1);
}

pub(super) async fn idempotency_keys_make_stores_exactly_once(backend: &Backend) {
    let store = backend.open().await;
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
pub(super) async fn a_key_reused_with_other_arguments_is_refused(backend: &Backend) {
    let store = backend.open().await;
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

pub(super) async fn expired_idempotency_keys_store_again(backend: &Backend) {
    let store = backend.open_with_window(std::time::Duration::ZERO).await;
    let mut memory = new_memory("kim", "x", "x.txt", &[]);
    memory.idempotency_key = Some("k".into());
    let first = store.store(memory.clone()).await.unwrap();
    let second = store.store(memory).await.unwrap();
    assert_ne!(first.id, second.id);
}

pub(super) async fn ranking_prefers_the_better_match(backend: &Backend) {
    let store = backend.open().await;
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

pub(super) async fn an_import_keeps_its_time_and_is_stored_once(backend: &Backend) {
    let store = backend.open().await;
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

pub(super) async fn list_pages_by_position_and_filters_by_user_tag_and_filename(backend: &Backend) {
    let store = backend.open().await;
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
        store.complete(CompletionQuery {
            field,
            user: owner.map(self::user),
            prefix: prefix.to_owned(),
            limit: 10,
        })
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

/// Stores racing with one new key (a client retrying before the first answer came back)
/// store once: every call answers the same memory.
pub(super) async fn concurrent_first_stores_with_one_key_store_once(backend: &Backend) {
    let store = backend.open().await;
    let mut memory = new_memory("uma", "call the plumber", "plumber.txt", &["home"]);
    memory.idempotency_key = Some("turn9:call0".into());
    let results = futures::future::join_all((0..16).map(|_| store.store(memory.clone()))).await;
    let ids: std::collections::HashSet<_> =
        results.iter().map(|r| r.as_ref().unwrap().id).collect();
    assert_eq!(ids.len(), 1, "{results:?}");
    assert_eq!(
        results
            .iter()
            .filter(|r| !r.as_ref().unwrap().replayed)
            .count(),
        1
    );
    assert_eq!(store.search(query("uma", None)).await.unwrap().len(), 1);
    assert_eq!(
        store.list_tags(user("uma")).await.unwrap(),
        vec![TagCount {
            tag: "home".into(),
            count: 1
        }]
    );
}

/// Words that look like another user's index tokens, or like query syntax, find only the
/// searcher's own memories.
pub(super) async fn forged_words_never_cross_users(backend: &Backend) {
    let store = backend.open().await;
    let mut forged = new_memory(
        "alice",
        "u2qsecretb x\u{24D0}u2qsecretb 'b' & !c | d:*",
        "u2q.txt",
        &[],
    );
    forged.description = "U2Q secretb <-> (e)".into();
    let alices = store.store(forged).await.unwrap();
    let bobs = store
        .store(new_memory("bob", "secretb plans", "b.txt", &["secretb"]))
        .await
        .unwrap();
    for text in ["secretb", "u2qsecretb", "u2q", "plans", "b", "e", "d"] {
        for (owner, own) in [("alice", alices.id), ("bob", bobs.id)] {
            let hits = store.search(query(owner, Some(text))).await.unwrap();
            assert!(
                hits.iter().all(|h| h.id == own),
                "{owner} searching {text:?} got another user's memory"
            );
        }
    }
    assert_eq!(
        store
            .search(query("alice", Some("u2qsecretb")))
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        store
            .search(query("bob", Some("secretb")))
            .await
            .unwrap()
            .len(),
        1
    );
}

mod vectors;
pub(super) use vectors::{reindex_fills_missing_vectors, vectors_rank_by_meaning_per_user};
