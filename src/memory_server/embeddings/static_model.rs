//! The `local` provider's static layout (model2vec-style): a table of one vector per
//! vocabulary token, made once from a sentence-transformer by `memento embeddings distill`.
//! A text's vector is the normalised sum of its tokens' rows: a few microseconds per text,
//! where the transformer takes tens to hundreds of milliseconds.
//!
//! Distilling runs every vocabulary token alone (`[CLS] token [SEP]`) through the encoder
//! and keeps its sentence embedding; the rows are then centred (the vocabulary's mean
//! vector, which every row shares, is subtracted) and weighted by `ln(1 + id)`: BERT's
//! vocabulary lists word pieces from the most to the least frequent, so frequent, less
//! telling pieces weigh less (model2vec's Zipf weighting).
//!
//! The directory holds `static.safetensors` (one `F32` tensor `embeddings`, `[vocab,
//! dims]`) and the source's `vocab.txt`.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::EmbedError;
use super::bert::{Bert, Tensors};
use super::tokenizer::WordPiece;

/// The table's file in a static model directory.
pub const STATIC_FILE: &str = "static.safetensors";

/// Format tag written in the table's metadata.
const FORMAT: &str = "memento-static-1";

/// A loaded static model.
pub struct StaticModel {
    table: Vec<f32>,
    dims: usize,
    rows: usize,
    vocab: WordPiece,
    max_tokens: usize,
}

fn model_error(path: &Path, message: impl Into<String>) -> EmbedError {
    EmbedError::Model {
        path: path.to_owned(),
        message: message.into(),
    }
}

impl StaticModel {
    /// True when `dir` holds a static model.
    pub fn is_static(dir: &Path) -> bool {
        dir.join(STATIC_FILE).is_file()
    }

    /// Loads `static.safetensors` and `vocab.txt` from `dir`; `max_tokens` cuts long texts.
    pub fn load(dir: &Path, max_tokens: usize) -> Result<StaticModel, EmbedError> {
        let path = dir.join(STATIC_FILE);
        let vocab_path = dir.join("vocab.txt");
        if !vocab_path.is_file() {
            return Err(model_error(
                dir,
                "vocab.txt is missing beside static.safetensors",
            ));
        }
        let mut tensors = Tensors::load(&path)?;
        let shape = tensors
            .shape("embeddings")
            .ok_or_else(|| model_error(&path, "no F32 tensor `embeddings`"))?;
        let [rows, dims] = shape[..] else {
            return Err(model_error(
                &path,
                "tensor `embeddings` must have two dimensions",
            ));
        };
        if rows == 0 || dims == 0 {
            return Err(model_error(&path, "tensor `embeddings` is empty"));
        }
        let table = tensors
            .take("embeddings", &[rows, dims])
            .map_err(|message| model_error(&path, message))?;
        let vocab = WordPiece::load(&vocab_path)?;
        if vocab.len() > rows {
            return Err(model_error(
                &path,
                format!(
                    "vocab.txt has {} tokens, the table only {rows} rows",
                    vocab.len()
                ),
            ));
        }
        Ok(StaticModel {
            table,
            dims,
            rows,
            vocab,
            max_tokens,
        })
    }

    /// Vector width.
    pub fn dimensions(&self) -> usize {
        self.dims
    }

    /// The normalised sum of the text's token rows (a zero vector for a text with no token).
    pub fn embed(&self, text: &str) -> Vec<f32> {
        let mut out = vec![0.0f32; self.dims];
        for id in self.vocab.encode(text, self.max_tokens) {
            let id = id as usize;
            if id == self.vocab.cls as usize || id == self.vocab.sep as usize || id >= self.rows {
                continue;
            }
            let row = &self.table[id * self.dims..(id + 1) * self.dims];
            out.iter_mut().zip(row).for_each(|(o, r)| *o += r);
        }
        super::normalize(&mut out);
        out
    }
}

/// What `distill` made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DistillSummary {
    /// Rows of the table.
    pub tokens: usize,
    /// Their width.
    pub dimensions: usize,
}

/// Makes a static model in `out` (created; it must not hold one already) from the
/// sentence-transformer in `from` (config.json, model.safetensors, vocab.txt), on
/// `threads` threads. `progress(done, total)` is called as tokens are done.
pub fn distill(
    from: &Path,
    out: &Path,
    threads: usize,
    progress: impl Fn(usize, usize) + Sync,
) -> Result<DistillSummary, EmbedError> {
    let target = out.join(STATIC_FILE);
    if target.exists() {
        return Err(model_error(
            out,
            "already holds a static model (static.safetensors): choose a new --out",
        ));
    }
    let bert = Bert::load(from)?;
    let vocab = WordPiece::load(&from.join("vocab.txt"))?;
    let rows = bert.vocab_size();
    let dims = bert.dimensions();
    let threads = threads.max(1);
    let done = AtomicUsize::new(0);
    let chunk = rows.div_ceil(threads).max(1);
    let mut table = vec![0.0f32; rows * dims];
    std::thread::scope(|scope| {
        for (part, slice) in table.chunks_mut(chunk * dims).enumerate() {
            let (bert, vocab, done, progress) = (&bert, &vocab, &done, &progress);
            scope.spawn(move || {
                // 64 tokens at a time: each weight matrix is read once for all of them.
                for (block, rows_out) in slice.chunks_mut(64 * dims).enumerate() {
                    let first = part * chunk + block * 64;
                    let seqs: Vec<[u32; 3]> = (0..rows_out.len() / dims)
                        .map(|i| [vocab.cls, (first + i) as u32, vocab.sep])
                        .collect();
                    let refs: Vec<&[u32]> = seqs.iter().map(|s| &s[..]).collect();
                    let vectors = bert.embed_same_length(&refs);
                    for (row, vector) in rows_out.chunks_exact_mut(dims).zip(&vectors) {
                        row.copy_from_slice(vector);
                    }
                    let n = done.fetch_add(seqs.len(), Ordering::Relaxed) + seqs.len();
                    progress(n, rows);
                }
            });
        }
    });
    finish_table(&mut table, dims);
    std::fs::create_dir_all(out).map_err(|e| model_error(out, e.to_string()))?;
    std::fs::copy(from.join("vocab.txt"), out.join("vocab.txt"))
        .map_err(|e| model_error(out, e.to_string()))?;
    let source = from
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let bytes = table_bytes(&table, rows, dims, &source);
    let partial = out.join(format!("{STATIC_FILE}.partial"));
    std::fs::write(&partial, bytes).map_err(|e| model_error(&partial, e.to_string()))?;
    std::fs::rename(&partial, &target).map_err(|e| model_error(&target, e.to_string()))?;
    Ok(DistillSummary {
        tokens: rows,
        dimensions: dims,
    })
}

/// Centres the rows on their mean and weights row `id` by `ln(1 + id)` (see the module
/// notes).
pub(crate) fn finish_table(table: &mut [f32], dims: usize) {
    let rows = table.len() / dims.max(1);
    if rows == 0 {
        return;
    }
    let mut mean = vec![0.0f64; dims];
    for row in table.chunks_exact(dims) {
        mean.iter_mut()
            .zip(row)
            .for_each(|(m, r)| *m += f64::from(*r));
    }
    let mean: Vec<f32> = mean.iter().map(|m| (m / rows as f64) as f32).collect();
    for (id, row) in table.chunks_exact_mut(dims).enumerate() {
        let weight = (1.0 + id as f32).ln();
        row.iter_mut()
            .zip(&mean)
            .for_each(|(r, m)| *r = (*r - m) * weight);
    }
}

/// A safetensors image of the table.
pub(crate) fn table_bytes(table: &[f32], rows: usize, dims: usize, source: &str) -> Vec<u8> {
    let header = serde_json::json!({
        "__metadata__": { "format": FORMAT, "source": source },
        "embeddings": {
            "dtype": "F32",
            "shape": [rows, dims],
            "data_offsets": [0, table.len() * 4],
        }
    })
    .to_string();
    let mut header = header.into_bytes();
    while header.len() % 8 != 0 {
        header.push(b' ');
    }
    let mut bytes = Vec::with_capacity(8 + header.len() + table.len() * 4);
    bytes.extend_from_slice(&(header.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&header);
    for value in table {
        bytes.extend_from_slice(&value.to_le_bytes());
    }
    bytes
}
