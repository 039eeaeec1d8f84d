use super::*;
use crate::memory_server::storage::tests::{hit_ids, new_memory, query, user};
use crate::memory_server::storage::{
    MemoryStore, NewMemory, SearchMode, SqliteOptions, SqliteStore,
};
use crate::shared::domain::SearchTerms;

#[test]
fn bm25_follows_the_formula_with_column_weights() {
    // Term 1 in doc 1 (content, once) and doc 2 (filename, weight 3); term 2 in doc 2 only.
    let terms = vec![vec![(1, 0), (2, 2)], vec![(2, 0), (2, 0)]];
    let lengths = HashMap::from([(1, 4.0), (2, 8.0)]);
    let (k1, b) = (0.6f32, 0.3f32);
    let scores = bm25_scores(&terms, &lengths, 10, k1, b);
    let avgdl = 6.0f32;
    let idf = |n: f32| ((10.0 - n + 0.5) / (n + 0.5)).ln();
    let part = |f: f32, d: f32| f * (k1 + 1.0) / (f + k1 * (1.0 - b + b * d / avgdl));
    let want1 = idf(2.0) * part(1.0, 4.0);
    let want2 = idf(2.0) * part(3.0, 8.0) + idf(1.0) * part(2.0, 8.0);
    assert!((scores[&1] - want1).abs() < 1e-5, "{scores:?}");
    assert!((scores[&2] - want2).abs() < 1e-5, "{scores:?}");
    // A word in most memories weighs almost nothing (FTS5's floor), never negative.
    let common = bm25_scores(&[vec![(1, 0), (2, 0)]], &lengths, 2, k1, b);
    assert!(common.values().all(|s| *s > 0.0 && *s < 1e-4), "{common:?}");
}

#[test]
fn linear_fusion_rescales_both_rankings() {
    let keyword = HashMap::from([(1, 4.0), (2, 2.0)]);
    let semantic = [(0.9, 3), (0.7, 2), (0.5, 1)];
    let fused = fuse_linear(&keyword, &semantic, 0.5);
    assert!((fused[&1] - 1.0).abs() < 1e-6);
    assert!((fused[&2] - (0.5 + 0.25)).abs() < 1e-6);
    assert!((fused[&3] - 0.5).abs() < 1e-6);
    // No keyword match: the meaning ranking alone, still rescaled.
    let alone = fuse_linear(&HashMap::new(), &semantic, 1.0);
    assert_eq!(order(alone), vec![3, 2, 1]);
}

#[test]
fn context_credits_neighbours_and_the_episode_within_the_window() {
    let minute = 60_000_000i64;
    // Rows 1-4 one conversation (a minute apart); row 5 a day later.
    let run = [
        (1, 0),
        (2, minute),
        (3, 2 * minute),
        (4, 3 * minute),
        (5, 1440 * minute),
    ];
    let base = HashMap::from([(2, 1.0), (5, 0.5)]);
    let ranking = HybridRanking {
        neighbour_weight: 0.4,
        neighbours: 2,
        episode_weight: 0.3,
        window: Duration::from_secs(600),
        ..HybridRanking::default()
    };
    let scored: HashMap<i64, f32> = in_context(&run, &base, &ranking).into_iter().collect();
    let close = |a: f32, b: f32| (a - b).abs() < 1e-6;
    assert!(close(scored[&1], 0.4 + 0.3), "{scored:?}");
    assert!(close(scored[&2], 1.0 + 0.3), "{scored:?}");
    assert!(close(scored[&3], 0.4 + 0.3), "{scored:?}");
    assert!(close(scored[&4], 0.2 + 0.3), "{scored:?}");
    // Row 5 is a neighbour in order, but a day away: only its own score and episode.
    assert!(close(scored[&5], 0.5 + 0.3 * 0.5), "{scored:?}");
    // A zero window turns context off entirely.
    let off = HybridRanking {
        window: Duration::ZERO,
        ..ranking
    };
    let alone: HashMap<i64, f32> = in_context(&run, &base, &off).into_iter().collect();
    assert!(close(alone[&1], 0.0) && close(alone[&2], 1.0 + 0.3));
}

#[test]
fn docsize_blobs_are_sqlite_varints() {
    assert_eq!(docsize_tokens(&[0x0b, 0x00, 0x06, 0x00]), 17);
    assert_eq!(docsize_tokens(&[0x81, 0x00, 0x02]), 130);
    assert_eq!(docsize_tokens(&[]), 0);
}

#[test]
fn query_words_are_stemmed_by_the_index_tokenizer_after_the_scope() {
    let words: Vec<String> = ["painting", "caroline", "go"]
        .iter()
        .map(|w| w.to_string())
        .collect();
    assert_eq!(
        index_terms("u1q", &words).unwrap(),
        vec!["u1qpaint", "u1qcarolin", "u1qgo"]
    );
    assert_eq!(index_terms("u1q", &[]).unwrap(), Vec::<String>::new());
}

fn at(minutes: i64) -> Option<chrono::DateTime<chrono::Utc>> {
    Some(chrono::DateTime::from_timestamp(1_700_000_000 + minutes * 60, 0).unwrap())
}

fn turn(owner: &str, content: &str, minutes: i64, vector: Vec<f32>) -> NewMemory {
    NewMemory {
        created_at: at(minutes),
        embedding: Some(vector),
        embedding_model: Some("test-model".into()),
        ..new_memory(owner, content, "note.txt", &[])
    }
}

fn axis(i: usize) -> Vec<f32> {
    let mut v = vec![0.0f32; 4];
    v[i] = 1.0;
    v
}

/// The keyword scores read from the index equal FTS5's own `bm25()` when `k1`/`b` are
/// FTS5's and every memory matches (then `N` and the average length agree).
#[tokio::test]
async fn index_postings_reproduce_fts5_bm25() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), &SqliteOptions::default()).unwrap();
    // Every memory matches some query word (so N and the average length are FTS5's), each
    // word only a few (so the weights are far from FTS5's floor); columns weigh differently.
    let texts: [(&str, &[&str]); 6] = [
        ("alpha beta gamma", &[]),
        ("painted walls, painted doors", &[]),
        ("a much longer text about the garden fence and an echo", &[]),
        ("delta", &[]),
        ("echo", &["delta"]),
        ("foxtrot and alpha", &[]),
    ];
    for (i, (text, tags)) in texts.iter().enumerate() {
        let memory = NewMemory {
            created_at: at(i as i64),
            ..new_memory("ann", text, "note.txt", tags)
        };
        store.store(memory).await.unwrap();
    }
    drop(store);
    let conn = Connection::open(dir.path().join("memento.db")).unwrap();
    conn.execute_batch(CREATE_TERMS_TABLE).unwrap();
    let words = "alpha painting delta echo foxtrot";
    let mut q = query("ann", Some(words));
    q.ranking.bm25_k1 = 1.2;
    q.ranking.bm25_b = 0.75;
    let ours = keyword_scores(&conn, &q, None).unwrap().unwrap();
    // A known count gives the same (6 memories).
    assert_eq!(keyword_scores(&conn, &q, Some(6)).unwrap().unwrap(), ours);
    let prefix = scope_prefix(
        super::super::sql::user_number(&conn, &user("ann"), false)
            .unwrap()
            .unwrap(),
    );
    let terms = SearchTerms::parse(words).unwrap();
    let expr = super::super::fts::match_expression(&terms, &prefix);
    let mut stmt = conn
        .prepare(
            "SELECT rowid, -bm25(memories_fts, 1.0, 2.0, 3.0, 2.0) FROM memories_fts \
             WHERE memories_fts MATCH ?1",
        )
        .unwrap();
    let fts: Vec<(i64, f64)> = stmt
        .query_map([expr], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(fts.len(), 6);
    assert_eq!(ours.len(), 6);
    for (rowid, score) in fts {
        let mine = f64::from(ours[&rowid]);
        assert!(
            score > 0.1 && (mine - score).abs() < 1e-4 * score,
            "rowid {rowid}: ours {mine}, FTS5 {score}"
        );
    }
}

/// Through the store: the turn that answers (no shared word, another meaning) is found
/// beside the turn that shares the question's words; another conversation's is not lifted.
#[tokio::test]
async fn hybrid_search_lifts_the_answer_beside_the_match() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), &SqliteOptions::default()).unwrap();
    let mut ids = Vec::new();
    for (text, minutes, v) in [
        ("Ann: where did you go for the holidays?", 0, 1),
        ("Bo: we drove up to the lake cabin with the kids", 1, 2),
        ("Ann: sounds lovely", 2, 3),
        ("Bo: unrelated chatter about groceries", 5000, 3),
        ("Bo: more unrelated chatter", 5001, 3),
        ("Ann: holidays are over, back to work", 9000, 3),
    ] {
        ids.push(
            store
                .store(turn("ann", text, minutes, axis(v)))
                .await
                .unwrap()
                .id,
        );
    }
    let mut q = query("ann", Some("Where did they go for the holidays?"));
    q.mode = SearchMode::Hybrid;
    q.vector = Some(axis(0));
    q.semantic_weight = 0.3;
    q.limit = 3;
    let hits = hit_ids(&store, q.clone()).await;
    // The answer (no keyword in common, a vector far from the query's) ranks with the
    // question; the day-later mention of "holidays" does not crowd it out.
    assert!(
        hits[..2].contains(&ids[0]) && hits[..2].contains(&ids[1]),
        "{hits:?}"
    );
    // Without context (window 0) the answer has nothing to rank it.
    q.ranking.window = Duration::ZERO;
    let plain = hit_ids(&store, q.clone()).await;
    assert!(!plain[..2].contains(&ids[1]), "{plain:?}");
    // Filters still apply to every memory the context brings in.
    q.ranking.window = Duration::from_secs(600);
    q.until = at(1);
    let filtered = hit_ids(&store, q.clone()).await;
    assert_eq!(filtered, vec![ids[0]]);
    // Paging follows the same order.
    q.until = None;
    q.limit = 1;
    q.offset = 1;
    let second = hit_ids(&store, q).await;
    assert_eq!(second, vec![hits[1]]);
}
