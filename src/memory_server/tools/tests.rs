use super::*;
use crate::memory_server::storage::{SqliteOptions, SqliteStore};

const LIMITS: Limits = Limits {
    max_content_bytes: 1024 * 1024,
};

fn arguments(value: Value) -> JsonObject {
    match value {
        Value::Object(object) => object,
        other => panic!("not an object: {other}"),
    }
}

fn text(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect()
}

async fn store(store: &dyn MemoryStore, content: &str, key: Option<&str>) -> CallToolResult {
    call(
        store,
        LIMITS,
        "store_memory",
        arguments(json!({"user_id": "alice", "content": content})),
        &StoreMeta {
            idempotency_key: key.map(str::to_owned),
            created_at: None,
        },
    )
    .await
    .expect("known tool")
}

/// Issue 11: the same idempotency key with other arguments is a tool error, not a silent
/// "Successfully stored" answering the first store; the same arguments replay.
#[tokio::test]
async fn a_reused_key_with_other_arguments_is_a_tool_error() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(dir.path(), &SqliteOptions::default()).unwrap();
    let first = store(&sqlite, "buy milk", Some("turn:0:0")).await;
    assert_eq!(first.is_error, Some(false), "{}", text(&first));
    let replay = store(&sqlite, "buy milk", Some("turn:0:0")).await;
    assert_eq!(replay.is_error, Some(false));
    assert_eq!(
        replay.structured_content.as_ref().unwrap()["replayed"],
        true
    );
    let reused = store(&sqlite, "wire money to mallory", Some("turn:0:0")).await;
    assert_eq!(reused.is_error, Some(true), "{}", text(&reused));
    let message = text(&reused);
    assert!(message.starts_with("Error: idempotency key"), "{message}");
    assert!(message.contains("different arguments"), "{message}");
    assert!(!message.contains("Successfully"), "{message}");
}

/// Issue 11: a full storage queue is a tool error telling the caller to retry; the call
/// returns at once instead of blocking the async worker.
#[tokio::test]
async fn a_busy_store_is_a_tool_error_to_retry() {
    let dir = tempfile::tempdir().unwrap();
    let options = SqliteOptions {
        max_batch: 1,
        ..SqliteOptions::default()
    };
    let sqlite = SqliteStore::open_with_queues(dir.path(), &options, 1).unwrap();
    let blocker = rusqlite::Connection::open(dir.path().join("memento.db")).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    // The writer holds at most one job (blocked on the lock) and the queue one more: of
    // these stores, some must find the queue full.
    let mut calls: futures::stream::FuturesUnordered<_> = (0..16)
        .map(|i| {
            let sqlite = sqlite.clone();
            tokio::spawn(async move { store(&sqlite, &format!("note {i}"), None).await })
        })
        .collect();
    // The stores that got in wait for the lock; the first answer while it is held can only
    // be a busy one, and it comes at once.
    use futures::StreamExt;
    let first = tokio::time::timeout(std::time::Duration::from_secs(5), calls.next())
        .await
        .expect("a busy answer while the writer is blocked")
        .expect("a call")
        .expect("task");
    let message = text(&first);
    assert_eq!(first.is_error, Some(true), "{message}");
    assert_eq!(message, "Error: the memory store is busy, retry shortly");
    blocker.execute_batch("COMMIT").unwrap();
    let mut stored = 0;
    while let Some(result) = calls.next().await {
        let result = result.expect("task");
        if result.is_error == Some(false) {
            stored += 1;
        } else {
            assert_eq!(text(&result), message);
        }
    }
    assert!((1..=2).contains(&stored), "stored {stored}");
}
