use super::tokenizer::{WordPiece, basic_split};
use super::*;
use std::time::Duration;

use crate::memory_server::storage::{MemoryStore, NewMemory, SearchMode, SearchQuery};
use crate::shared::domain::UserId;

#[test]
fn basic_split_lowercases_strips_accents_and_splits_punctuation() {
    assert_eq!(
        basic_split("Héllo, WORLD!  it's\tQ4"),
        vec!["hello", ",", "world", "!", "it", "'", "s", "q4"]
    );
    assert_eq!(basic_split("日本"), vec!["日", "本"]);
    assert!(basic_split(" \u{0}\u{7} ").is_empty());
}

#[test]
fn wordpiece_takes_the_longest_pieces_and_marks_unknown_words() {
    let vocab = [
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "un", "##aff", "##able", "aff", ".",
    ];
    let wp = WordPiece::from_lines(vocab.iter().copied()).unwrap();
    assert_eq!(wp.encode("unaffable.", 64), vec![2, 4, 5, 6, 8, 3]);
    assert_eq!(wp.encode("xyz", 64), vec![2, 1, 3]);
    // Cut to max_tokens, [SEP] kept.
    assert_eq!(wp.encode("un un un un", 4), vec![2, 4, 4, 3]);
    assert!(WordPiece::from_lines(["a", "b"].into_iter()).is_err());
}

#[test]
fn config_needs_what_each_provider_needs() {
    let mut config = EmbeddingsConfig::default();
    config.validate().unwrap();
    config.provider = Provider::Local;
    assert!(
        config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("model_dir")
    );
    config.provider = Provider::Azure;
    assert!(
        config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("deployment")
    );
    config.provider = Provider::Openai;
    assert!(
        config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("base_url")
    );
    config.base_url = Some("http://127.0.0.1:1/v1".into());
    config.model = Some("m".into());
    config.validate().unwrap();
    config.semantic_weight = f32::NAN;
    assert!(config.validate().is_err());
}

#[test]
fn a_missing_local_model_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let error = local::LocalEmbedder::load(dir.path(), 128)
        .err()
        .expect("no model there")
        .to_string();
    assert!(error.contains("config.json is missing"), "{error}");
}

#[test]
fn memory_text_puts_description_and_tags_first() {
    assert_eq!(
        memory_text("body", "desc", &["a".into(), "b".into()]),
        "desc. a, b. body"
    );
    assert_eq!(memory_text("body", "", &[]), "body");
}

/// A fake provider: counts calls, one vector per text.
struct Counting(std::sync::atomic::AtomicUsize);

impl Embedder for Counting {
    fn embed(&self, texts: Vec<String>) -> BoxFuture<'static, Result<Vec<Vec<f32>>, EmbedError>> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Box::pin(async move { Ok(texts.iter().map(|t| vec![t.len() as f32]).collect()) })
    }
    fn model_id(&self) -> &str {
        "counting"
    }
}

#[tokio::test]
async fn the_batcher_answers_each_caller_with_its_own_vector() {
    let counting = Arc::new(Counting(Default::default()));
    let batcher = Batcher::start(counting.clone(), 8);
    let calls = (1..=20).map(|n| {
        let batcher = batcher.clone();
        async move { batcher.embed("x".repeat(n)).await.unwrap() }
    });
    let vectors = futures::future::join_all(calls).await;
    for (n, v) in vectors.iter().enumerate() {
        assert_eq!(v, &vec![(n + 1) as f32]);
    }
    let calls = counting.0.load(std::sync::atomic::Ordering::SeqCst);
    assert!((3..=20).contains(&calls), "{calls} provider calls");
}

// === Static (distilled) models ===

const TINY_VOCAB: &[&str] = &[
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "trip", "hiking", "pottery", "class", "##s",
];

/// A tiny random BERT (hidden 8, 2 heads, 1 layer) as a model directory.
fn tiny_bert(dir: &std::path::Path) {
    let (h, i, v, p) = (8usize, 16usize, TINY_VOCAB.len(), 16usize);
    let mut shapes: Vec<(String, Vec<usize>)> = vec![
        ("embeddings.word_embeddings.weight".into(), vec![v, h]),
        ("embeddings.position_embeddings.weight".into(), vec![p, h]),
        ("embeddings.token_type_embeddings.weight".into(), vec![2, h]),
        ("embeddings.LayerNorm.weight".into(), vec![h]),
        ("embeddings.LayerNorm.bias".into(), vec![h]),
    ];
    let l = "encoder.layer.0";
    for (name, outputs, inputs) in [
        ("attention.self.query", h, h),
        ("attention.self.key", h, h),
        ("attention.self.value", h, h),
        ("attention.output.dense", h, h),
        ("intermediate.dense", i, h),
        ("output.dense", h, i),
    ] {
        shapes.push((format!("{l}.{name}.weight"), vec![outputs, inputs]));
        shapes.push((format!("{l}.{name}.bias"), vec![outputs]));
    }
    for name in ["attention.output.LayerNorm", "output.LayerNorm"] {
        shapes.push((format!("{l}.{name}.weight"), vec![h]));
        shapes.push((format!("{l}.{name}.bias"), vec![h]));
    }
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, shape) in &shapes {
        let count: usize = shape.iter().product();
        let start = data.len();
        for _ in 0..count {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let value = if name.contains("LayerNorm.weight") {
                1.0
            } else {
                (seed % 2001) as f32 / 1000.0 - 1.0
            };
            data.extend_from_slice(&value.to_le_bytes());
        }
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let header = serde_json::Value::Object(header).to_string().into_bytes();
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&header);
    bytes.extend_from_slice(&data);
    std::fs::write(dir.join("model.safetensors"), bytes).unwrap();
    std::fs::write(
        dir.join("config.json"),
        serde_json::json!({
            "hidden_size": h, "num_hidden_layers": 1, "num_attention_heads": 2,
            "intermediate_size": i, "max_position_embeddings": p, "vocab_size": v,
        })
        .to_string(),
    )
    .unwrap();
    std::fs::write(dir.join("vocab.txt"), TINY_VOCAB.join("\n")).unwrap();
}

#[test]
fn distill_keeps_each_tokens_encoder_vector_centred_and_weighted() {
    let source = tempfile::tempdir().unwrap();
    tiny_bert(source.path());
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("static");
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let summary = static_model::distill(source.path(), &target, 3, |done, total| {
        assert!(done <= total);
        calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    })
    .unwrap();
    assert_eq!(summary.tokens, TINY_VOCAB.len());
    assert_eq!(summary.dimensions, 8);
    assert!(calls.into_inner() >= 1);
    // Each row: the encoder's vector of the lone token, minus the mean, times ln(1 + id).
    let bert = bert::Bert::load(source.path()).unwrap();
    let rows: Vec<Vec<f32>> = (0..TINY_VOCAB.len() as u32)
        .map(|id| bert.embed(&[2, id, 3]))
        .collect();
    let mean: Vec<f32> = (0..8)
        .map(|d| rows.iter().map(|r| r[d]).sum::<f32>() / rows.len() as f32)
        .collect();
    let model = static_model::StaticModel::load(&target, 128).unwrap();
    assert_eq!(model.dimensions(), 8);
    let row = |id: usize| -> Vec<f32> {
        rows[id]
            .iter()
            .zip(&mean)
            .map(|(r, m)| (r - m) * (1.0 + id as f32).ln())
            .collect()
    };
    let close = |got: &[f32], mut want: Vec<f32>| {
        normalize(&mut want);
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-4, "{got:?} vs {want:?}");
        }
    };
    // "hiking" (id 6) alone: its row, normalised.
    let got = model.embed("Hiking");
    close(&got, row(6));
    // Several tokens: the normalised sum of their rows, word pieces included ("classs" =
    // class + ##s); [CLS] and [SEP] are left out.
    let sum: Vec<f32> = (0..8).map(|d| row(7)[d] + row(8)[d] + row(9)[d]).collect();
    close(&model.embed("pottery classs"), sum);
    // The local provider recognises the layout and names the model so.
    let local = local::LocalEmbedder::load(&target, 128).unwrap();
    assert!(local.is_static());
    assert!(local.model_id().starts_with("static:static:8"));
    assert_eq!(local.embed_blocking(&["hiking".into()])[0], got);
    // A second distill into the same place is refused (nothing is overwritten).
    let error = static_model::distill(source.path(), &target, 1, |_, _| {})
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("already holds a static model"), "{error}");
}

#[test]
fn a_static_model_without_its_vocabulary_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(static_model::STATIC_FILE),
        static_model::table_bytes(&[0.0; 8], 2, 4, "x"),
    )
    .unwrap();
    let error = local::LocalEmbedder::load(dir.path(), 128)
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("vocab.txt is missing"), "{error}");
}

// === Context of neighbouring memories ===

/// A fake provider that records each text and answers one-hot vectors, a new axis per
/// text embedded.
struct Recording(std::sync::Mutex<Vec<String>>);

impl Embedder for Recording {
    fn embed(&self, texts: Vec<String>) -> BoxFuture<'static, Result<Vec<Vec<f32>>, EmbedError>> {
        let mut seen = self.0.lock().unwrap();
        let vectors = texts
            .into_iter()
            .map(|text| {
                let mut v = vec![0.0f32; 16];
                v[seen.len() % 16] = 1.0;
                seen.push(text);
                v
            })
            .collect();
        Box::pin(async move { Ok(vectors) })
    }
    fn model_id(&self) -> &str {
        "recording"
    }
}

#[tokio::test]
async fn a_memory_is_embedded_with_its_neighbours() {
    use crate::memory_server::storage::{SqliteOptions, SqliteStore};
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Arc::new(SqliteStore::open(dir.path(), &SqliteOptions::default()).unwrap());
    let recording = Arc::new(Recording(Default::default()));
    let store = EmbeddingStore::new(sqlite, Batcher::start(recording.clone(), 4), 1.0)
        .with_context_window(Duration::from_secs(600))
        .with_next_context(true);
    let user = UserId::parse("nia").unwrap();
    let new = |content: &str| NewMemory::new(user.clone(), content, "t.txt");
    let question = store
        .store(new("what did you do on sunday?"))
        .await
        .unwrap();
    store.store(new("went hiking with the kids")).await.unwrap();
    store.store(new("nice")).await.unwrap();
    let texts = recording.0.lock().unwrap().clone();
    assert_eq!(
        texts,
        vec![
            "what did you do on sunday?",
            // The answer, read after its question.
            "what did you do on sunday?\nwent hiking with the kids",
            // The question again, now followed by its answer.
            "what did you do on sunday?\nwent hiking with the kids",
            "went hiking with the kids\nnice",
            // The answer between its neighbours.
            "what did you do on sunday?\nwent hiking with the kids\nnice",
        ]
    );
    // The question's stored vector is the one made with its answer (axis 2).
    let mut axis = vec![0.0f32; 16];
    axis[2] = 1.0;
    let hits = store
        .search(SearchQuery {
            user: user.clone(),
            terms: None,
            tags: Vec::new(),
            since: None,
            until: None,
            limit: 1,
            offset: 0,
            text: Some("sunday".into()),
            mode: SearchMode::Semantic,
            vector: Some(axis),
            semantic_weight: 1.0,
            ranking: Default::default(),
        })
        .await
        .unwrap();
    assert_eq!(hits[0].id, question.id);
}
