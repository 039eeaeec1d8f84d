//! The storage suite's vector tests: meaning search, hybrid fusion and reindexing, per
//! backend.

use super::*;

/// A unit vector of 8 dimensions pointing mostly along `axis`, a little along `next`.
fn unit(axis: usize, next: usize, lean: f32) -> Vec<f32> {
    let mut v = vec![0.0f32; 8];
    v[axis] = 1.0;
    v[next] += lean;
    crate::memory_server::embeddings::normalize(&mut v);
    v
}

fn with_vector(mut memory: NewMemory, vector: Vec<f32>) -> NewMemory {
    memory.embedding = Some(vector);
    memory.embedding_model = Some("test-model".into());
    memory
}

fn vector_query(owner: &str, text: &str, vector: Vec<f32>, mode: SearchMode) -> SearchQuery {
    SearchQuery {
        vector: Some(vector),
        mode,
        ..query(owner, Some(text))
    }
}

/// Vectors are kept per memory, searched per user by cosine (semantic), fused with the
/// keyword ranking (hybrid), filtered like keywords, and forgotten with their memory.
pub(crate) async fn vectors_rank_by_meaning_per_user(backend: &Backend) {
    let store = backend.open().await;
    let near = store
        .store(with_vector(
            new_memory("vic", "we ship the rewrite in Q4", "plan.txt", &["work"]),
            unit(0, 1, 0.1),
        ))
        .await
        .unwrap();
    let far = store
        .store(with_vector(
            new_memory("vic", "grocery list: schedule eggs", "g.txt", &["home"]),
            unit(3, 4, 0.1),
        ))
        .await
        .unwrap();
    let middle = store
        .store(with_vector(
            new_memory("vic", "Dana owns the migration", "dana.txt", &["work"]),
            unit(0, 2, 1.0),
        ))
        .await
        .unwrap();
    // Another user's memory with the very same vector is never seen.
    store
        .store(with_vector(
            new_memory("wes", "we ship the rewrite in Q4", "plan.txt", &["work"]),
            unit(0, 1, 0.1),
        ))
        .await
        .unwrap();
    let ids = |hits: Vec<MemorySummary>| hits.into_iter().map(|h| h.id).collect::<Vec<_>>();
    let semantic = store
        .search(vector_query(
            "vic",
            "when is the new version due",
            unit(0, 1, 0.0),
            SearchMode::Semantic,
        ))
        .await
        .unwrap();
    assert_eq!(ids(semantic), vec![near.id, middle.id, far.id]);
    // Hybrid: the keyword match ("schedule") joins the meaning ranking's first.
    let hybrid = ids(store
        .search(vector_query(
            "vic",
            "schedule",
            unit(0, 1, 0.0),
            SearchMode::Hybrid,
        ))
        .await
        .unwrap());
    assert_eq!(hybrid.len(), 3);
    assert!(hybrid[..2].contains(&far.id) && hybrid[..2].contains(&near.id));
    // Filters apply to the meaning ranking too; paging follows the ranking.
    let mut tagged = vector_query("vic", "plans", unit(2, 0, 0.0), SearchMode::Semantic);
    tagged.tags = vec!["work".into()];
    assert_eq!(
        ids(store.search(tagged).await.unwrap()),
        vec![middle.id, near.id]
    );
    let mut paged = vector_query("vic", "plans", unit(0, 1, 0.0), SearchMode::Semantic);
    paged.limit = 1;
    paged.offset = 1;
    assert_eq!(ids(store.search(paged).await.unwrap()), vec![middle.id]);
    // Without a query vector, semantic mode is an error and hybrid ranks by keywords.
    let mut no_vector = query("vic", Some("migration"));
    no_vector.mode = SearchMode::Semantic;
    assert!(matches!(
        store.search(no_vector).await,
        Err(StorageError::Semantic(_))
    ));
    assert_eq!(
        ids(store.search(query("vic", Some("migration"))).await.unwrap()),
        vec![middle.id]
    );
    // A deleted memory leaves the meaning ranking.
    store.delete(user("vic"), near.id).await.unwrap().unwrap();
    let semantic = store
        .search(vector_query(
            "vic",
            "due",
            unit(0, 1, 0.0),
            SearchMode::Semantic,
        ))
        .await
        .unwrap();
    assert_eq!(ids(semantic), vec![middle.id, far.id]);
}

/// `vector_tasks` lists memories without a vector of the model (none, or another model's),
/// `put_vectors` fills them (skipping deleted ones), and search sees them at once.
pub(crate) async fn reindex_fills_missing_vectors(backend: &Backend) {
    let store = backend.open().await;
    let bare = store
        .store(new_memory(
            "xia",
            "the hiking trip on Sunday",
            "h.txt",
            &["trip"],
        ))
        .await
        .unwrap();
    let old = store
        .store(with_vector(
            new_memory("xia", "a pottery class", "p.txt", &[]),
            unit(5, 6, 0.0),
        ))
        .await
        .unwrap();
    let gone = store
        .store(new_memory("yan", "deleted before its vector", "d.txt", &[]))
        .await
        .unwrap();
    // Loads the cache before the reindex: the vectors written next must still be seen.
    store
        .search(vector_query(
            "xia",
            "class",
            unit(5, 6, 0.0),
            SearchMode::Semantic,
        ))
        .await
        .unwrap();
    let (tasks, remaining) = store.vector_tasks("test-model".into(), 10).await.unwrap();
    assert_eq!(remaining, 2);
    assert_eq!(
        tasks.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![bare.id, gone.id]
    );
    assert_eq!(tasks[0].tags, vec!["trip".to_owned()]);
    assert_eq!(tasks[0].content, "the hiking trip on Sunday");
    let (tasks, remaining) = store.vector_tasks("new-model".into(), 1).await.unwrap();
    assert_eq!((tasks.len(), remaining), (1, 3));
    store.delete(user("yan"), gone.id).await.unwrap().unwrap();
    let written = store
        .put_vectors(
            "new-model".into(),
            vec![
                (bare.id, unit(7, 6, 0.0)),
                (old.id, unit(5, 6, 0.0)),
                (gone.id, unit(7, 6, 0.0)),
            ],
        )
        .await
        .unwrap();
    assert_eq!(written, 2);
    assert_eq!(
        store.vector_tasks("new-model".into(), 10).await.unwrap(),
        (Vec::new(), 0)
    );
    let hits = store
        .search(vector_query(
            "xia",
            "outdoors",
            unit(7, 6, 0.0),
            SearchMode::Semantic,
        ))
        .await
        .unwrap();
    assert_eq!(hits[0].id, bare.id);
    assert_eq!(hits.len(), 2);
}
