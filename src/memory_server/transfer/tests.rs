use std::collections::BTreeSet;

use super::*;
use crate::memory_server::storage::{NewMemory, SqliteOptions, SqliteStore};

const MAX: usize = 1024 * 1024;

fn open(dir: &Path) -> SqliteStore {
    SqliteStore::open(dir, &SqliteOptions::default()).unwrap()
}

fn user(name: &str) -> UserId {
    UserId::parse(name).unwrap()
}

/// Every memory of the store as comparable tuples (ids aside), with the time cut to `precision`.
async fn snapshot(
    store: &dyn MemoryStore,
    whole_seconds: bool,
) -> BTreeSet<(String, String, String, String, Vec<String>, i64)> {
    let page = store
        .list(ListQuery {
            limit: 10_000,
            with_content: true,
            ..ListQuery::default()
        })
        .await
        .unwrap();
    page.into_iter()
        .map(|l| {
            let m = l.memory;
            let time = if whole_seconds {
                m.created_at.timestamp()
            } else {
                m.created_at.timestamp_micros()
            };
            (
                l.user.as_str().to_owned(),
                m.meta.filename,
                m.content,
                m.meta.description,
                m.meta.tags,
                time,
            )
        })
        .collect()
}

async fn fill(store: &SqliteStore) {
    for (owner, content, filename, description, tags) in [
        (
            "alice",
            "Lemon cake: 200 g flour",
            "recipe.txt",
            "Grandma's cake",
            vec!["cooking"],
        ),
        (
            "alice",
            "description: looks like a header\n\nbut is text\n",
            "odd.txt",
            "",
            vec![],
        ),
        (
            "alice",
            "same second, same name",
            "recipe.txt",
            "",
            vec!["a", "b c"],
        ),
        (
            "bob",
            "Dentist on 3 September",
            "dentist.txt",
            "Dentist\nappointment",
            vec!["health"],
        ),
    ] {
        store
            .store(NewMemory {
                user: user(owner),
                content: content.into(),
                filename: filename.into(),
                description: description.into(),
                tags: tags.into_iter().map(str::to_owned).collect(),
                idempotency_key: None,
                created_at: None,
                embedding: None,
                embedding_model: None,
            })
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn jsonl_round_trip_keeps_every_field_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let source = open(&dir.path().join("a"));
    fill(&source).await;
    let out = dir.path().join("out");
    let exported = export(&source, None, Format::Jsonl, &out, &Quiet)
        .await
        .unwrap();
    assert_eq!((exported.memories, exported.users), (4, 2));

    let target = open(&dir.path().join("b"));
    let first = import(&target, MAX, &out, None, &Quiet).await.unwrap();
    assert_eq!(
        (first.imported, first.already_present),
        (4, 0),
        "{:?}",
        first.skipped
    );
    assert!(first.skipped.is_empty());
    assert_eq!(
        snapshot(&source, false).await,
        snapshot(&target, false).await
    );

    let again = import(&target, MAX, &out, None, &Quiet).await.unwrap();
    assert_eq!((again.imported, again.already_present), (0, 4));
    assert_eq!(
        snapshot(&target, false).await.len(),
        4,
        "importing twice adds nothing"
    );
}

#[tokio::test]
async fn seed_round_trip_keeps_the_memories_to_the_second() {
    let dir = tempfile::tempdir().unwrap();
    let source = open(&dir.path().join("a"));
    fill(&source).await;
    let out = dir.path().join("seed");
    let exported = export(&source, Some(&user("alice")), Format::Seed, &out, &Quiet)
        .await
        .unwrap();
    assert_eq!(exported.memories, 3);
    assert!(out.join("alice").is_dir() && !out.join("bob").exists());

    let target = open(&dir.path().join("b"));
    let summary = import(&target, MAX, &out, None, &Quiet).await.unwrap();
    assert_eq!(summary.imported, 3, "{:?}", summary.skipped);
    let mut expected = snapshot(&source, true).await;
    expected.retain(|m| m.0 == "alice");
    let got = snapshot(&target, true).await;
    // Two memories with the same second and filename: the second file is `recipe~2.txt`.
    let names: BTreeSet<_> = got.iter().map(|m| m.1.clone()).collect();
    assert!(
        names.contains("recipe.txt") && names.contains("odd.txt"),
        "{names:?}"
    );
    type Row = (String, String, String, String, Vec<String>, i64);
    let strip = |set: &BTreeSet<Row>| {
        set.iter()
            .map(|m| (m.2.clone(), m.3.clone(), m.4.clone(), m.5))
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(strip(&expected), strip(&got));

    let again = import(&target, MAX, &out, None, &Quiet).await.unwrap();
    assert_eq!((again.imported, again.already_present), (0, 3));
}

#[tokio::test]
async fn bad_items_are_skipped_with_reasons_and_nothing_stored_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let from = dir.path().join("from");
    fs::create_dir_all(from.join("carol")).unwrap();
    fs::create_dir_all(from.join("bad user!")).unwrap();
    fs::create_dir_all(from.join("carol/nested")).unwrap();
    fs::write(from.join("README.md"), "about").unwrap();
    fs::write(from.join("carol/20240101_120000_ok.txt"), "fine\n").unwrap();
    fs::write(from.join("carol/notes.txt"), "no time in the name").unwrap();
    fs::write(
        from.join("carol/20240101_120001_bin.txt"),
        [0xff, 0xfe, 0x00],
    )
    .unwrap();
    fs::write(from.join("carol/20240101_120002_big.txt"), "x".repeat(2048)).unwrap();
    fs::write(
        from.join("carol/20240101_120003_empty.txt"),
        "description: d\n\n",
    )
    .unwrap();
    std::os::unix::fs::symlink("/etc/passwd", from.join("carol/20240101_120004_link.txt")).unwrap();
    std::os::unix::fs::symlink("/etc", from.join("linked")).unwrap();
    fs::write(
        from.join("more.jsonl"),
        "{\"user_id\":\"dave\",\"filename\":\"a.txt\",\"created_at\":\"2024-01-01T00:00:00Z\",\"content\":\"kept\"}\n\
         not json\n\
         {\"user_id\":\"../etc\",\"filename\":\"a.txt\",\"created_at\":\"2024-01-01T00:00:00Z\",\"content\":\"x\"}\n\
         \n",
    )
    .unwrap();
    let store = open(&dir.path().join("db"));
    // Small limit so the 2 KiB file is "too large" (content limit + header room).
    let summary = import(&store, 100, &from, None, &Quiet).await;
    let summary = summary.unwrap();
    assert_eq!(summary.imported, 2, "{:#?}", summary.skipped);
    let reasons: Vec<String> = summary
        .skipped
        .iter()
        .map(|(at, why)| format!("{at}: {why}"))
        .collect();
    let has = |needle: &str| reasons.iter().any(|r| r.contains(needle));
    assert!(has("README.md: neither a user folder"), "{reasons:#?}");
    assert!(
        has("bad user!: folder name is not a valid user id"),
        "{reasons:#?}"
    );
    assert!(has("nested: not a regular file"), "{reasons:#?}");
    assert!(
        has("notes.txt: name is not YYYYMMDD_HHMMSS_<filename>"),
        "{reasons:#?}"
    );
    assert!(has("bin.txt: not UTF-8 text"), "{reasons:#?}");
    assert!(has("big.txt: content is 2048 bytes"), "{reasons:#?}");
    assert!(has("empty.txt: no text after the header"), "{reasons:#?}");
    assert!(has("link.txt: symbolic link"), "{reasons:#?}");
    assert!(has("linked: symbolic link"), "{reasons:#?}");
    assert!(has("more.jsonl:2: not a memory record"), "{reasons:#?}");
    assert!(has("more.jsonl:3: "), "{reasons:#?}");
    assert_eq!(reasons.len(), 11, "{reasons:#?}");

    let out = dir.path().join("not-empty");
    fs::create_dir_all(&out).unwrap();
    fs::write(out.join("keep.txt"), "mine").unwrap();
    assert!(matches!(
        export(&store, None, Format::Seed, &out, &Quiet).await,
        Err(TransferError::TargetNotEmpty(_))
    ));
    assert_eq!(fs::read_to_string(out.join("keep.txt")).unwrap(), "mine");
}
