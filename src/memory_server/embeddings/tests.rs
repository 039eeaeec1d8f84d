use super::tokenizer::{WordPiece, basic_split};
use super::*;

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
