//! The `azure` and `openai` embeddings providers over real HTTP against the mock's
//! `/embeddings` routes: the wire format, batching at store time, retries, and what a
//! store does when the provider refuses.

use std::sync::Arc;
use std::time::Duration;

use memento::daemon::llm::LlmConfig;
use memento::memory_server::embeddings::remote::RemoteEmbedder;
use memento::memory_server::embeddings::{
    Batcher, Embedder, EmbeddingStore, EmbeddingsConfig, Provider,
};
use memento::memory_server::storage::{
    MemoryStore, NewMemory, SearchMode, SearchQuery, SqliteOptions, SqliteStore, StorageError,
};
use memento::shared::domain::{SearchTerms, UserId};
use memento_loadtest::mock_azure::embeddings::vectorize;
use memento_loadtest::mock_azure::{MockConfig, MockServer};

async fn mock(adjust: impl FnOnce(&mut MockConfig)) -> MockServer {
    let mut config = MockConfig {
        port: 0,
        ..MockConfig::default()
    };
    adjust(&mut config);
    MockServer::start(config).await.expect("start mock")
}

fn llm(server: &MockServer, key: &str) -> LlmConfig {
    LlmConfig {
        endpoint: Some(server.endpoint()),
        api_key: Some(key.into()),
        retry_initial: Duration::from_millis(10),
        retry_max: Duration::from_millis(50),
        ..LlmConfig::default()
    }
}

fn azure_config(dimensions: u32) -> EmbeddingsConfig {
    EmbeddingsConfig {
        provider: Provider::Azure,
        deployment: Some("text-embedding-3-small".into()),
        dimensions,
        ..EmbeddingsConfig::default()
    }
}

#[tokio::test]
async fn azure_provider_gets_the_mocks_vectors_in_order() {
    let server = mock(|_| {}).await;
    let embedder = RemoteEmbedder::new(&azure_config(256), &llm(&server, "mock-key")).unwrap();
    let texts = vec![
        "we ship the rewrite in Q4".to_owned(),
        "Dana owns the migration".to_owned(),
        "we ship the rewrite in Q4".to_owned(),
    ];
    let vectors = embedder.embed(texts.clone()).await.unwrap();
    assert_eq!(vectors.len(), 3);
    for (text, vector) in texts.iter().zip(&vectors) {
        assert_eq!(vector.len(), 256);
        let (expected, _) = vectorize(text, 256);
        for (a, b) in vector.iter().zip(&expected) {
            assert!((a - b).abs() < 1e-6);
        }
    }
    assert_eq!(vectors[0], vectors[2]);
    assert_ne!(vectors[0], vectors[1]);
    let stats = server.stats();
    assert_eq!((stats.embedding_requests, stats.embedding_inputs), (1, 3));
    assert!(embedder.model_id().contains("text-embedding-3-small"));
    server.shutdown().await;
}

#[tokio::test]
async fn openai_provider_and_retries_through_injected_failures() {
    // Half the requests fail with 500 or 503: the chat path's retry policy gets through.
    let server = mock(|c| {
        c.fail_rate = 0.25;
        c.fail_503_rate = 0.25;
        c.seed = 7;
    })
    .await;
    let config = EmbeddingsConfig {
        provider: Provider::Openai,
        base_url: Some(format!("{}/v1", server.endpoint())),
        model: Some("nomic-embed-text".into()),
        ..EmbeddingsConfig::default()
    };
    let embedder = RemoteEmbedder::new(&config, &llm(&server, "mock-key")).unwrap();
    for n in 0..8 {
        let vectors = embedder
            .embed(vec![format!("note number {n}")])
            .await
            .unwrap();
        assert_eq!(vectors[0].len(), 1536);
    }
    let stats = server.stats();
    assert!(
        stats.server_errors_500 + stats.unavailable_503 > 0,
        "no failure injected: {stats:?}"
    );
    assert_eq!(
        stats.embedding_requests,
        8 + stats.server_errors_500 + stats.unavailable_503
    );
    server.shutdown().await;
}

fn memory(user: &UserId, content: &str) -> NewMemory {
    NewMemory::new(user.clone(), content, "note.txt")
}

fn query(user: &UserId, text: &str, mode: SearchMode) -> SearchQuery {
    SearchQuery {
        user: user.clone(),
        terms: Some(SearchTerms::parse(text).unwrap()),
        tags: Vec::new(),
        since: None,
        until: None,
        limit: 5,
        offset: 0,
        text: Some(text.into()),
        mode,
        vector: None,
        semantic_weight: 1.0,
        ranking: Default::default(),
    }
}

#[tokio::test]
async fn concurrent_stores_are_embedded_in_batches_and_searched_by_vector() {
    let server = mock(|c| c.latency_ms = 20).await;
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Arc::new(SqliteStore::open(dir.path(), &SqliteOptions::default()).unwrap());
    // One embedding per store (no re-embedding of the previous memory with its successor).
    let config = EmbeddingsConfig {
        context_next: false,
        ..azure_config(128)
    };
    let store =
        memento::memory_server::embeddings::wrap_store(sqlite, &config, &llm(&server, "mock-key"))
            .expect("provider");
    let user = UserId::parse("erin").unwrap();
    let stores =
        (0..40).map(|n| store.store(memory(&user, &format!("filler note {n} about nothing"))));
    for stored in futures::future::join_all(stores).await {
        stored.unwrap();
    }
    let target = store
        .store(memory(&user, "quarterly rewrite shipping schedule"))
        .await
        .unwrap();
    let stats = server.stats();
    assert_eq!(stats.embedding_inputs, 41);
    assert!(
        stats.embedding_requests < 41,
        "stores were not batched: {stats:?}"
    );
    let found = store
        .search(query(&user, "shipping schedule", SearchMode::Semantic))
        .await
        .unwrap();
    assert_eq!(found.first().map(|m| m.id), Some(target.id));
    server.shutdown().await;
}

#[tokio::test]
async fn a_refusing_provider_still_stores_and_says_why_semantic_fails() {
    let server = mock(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Arc::new(SqliteStore::open(dir.path(), &SqliteOptions::default()).unwrap());
    let embedder: Arc<dyn Embedder> =
        Arc::new(RemoteEmbedder::new(&azure_config(0), &llm(&server, "wrong-key")).unwrap());
    let store = EmbeddingStore::new(sqlite, Batcher::start(embedder, 8), 1.0);
    let user = UserId::parse("frank").unwrap();
    let stored = store
        .store(memory(&user, "the boiler needs a service in March"))
        .await
        .unwrap();
    // Hybrid falls back to keywords; semantic says what failed.
    let hybrid = store
        .search(query(&user, "boiler service", SearchMode::Hybrid))
        .await
        .unwrap();
    assert_eq!(hybrid.first().map(|m| m.id), Some(stored.id));
    let error = store
        .search(query(&user, "boiler service", SearchMode::Semantic))
        .await
        .unwrap_err();
    assert!(matches!(error, StorageError::Semantic(_)), "{error}");
    assert!(error.to_string().contains("401"), "{error}");
    assert!(server.stats().auth_failures >= 2);
    server.shutdown().await;
}
