//! A small BERT encoder (the architecture of sentence-transformers' MiniLM models), written
//! out in plain Rust: no inference crate (candle would add minutes to every clean build) and
//! no `unsafe`. It reads the weights from a `model.safetensors` of `F32` tensors named as
//! Hugging Face's `BertModel` names them, runs one text at a time (no padding, so no
//! attention mask), mean-pools the last layer and L2-normalises.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

use super::EmbedError;

/// `config.json` (the keys used).
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    /// Width of every layer.
    pub hidden_size: usize,
    /// Layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    pub num_attention_heads: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// Longest input.
    pub max_position_embeddings: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// LayerNorm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f32,
}

fn default_eps() -> f32 {
    1e-12
}

struct Linear {
    /// `[out, in]`, row-major (PyTorch's layout).
    weight: Vec<f32>,
    bias: Vec<f32>,
    inputs: usize,
    outputs: usize,
}

struct LayerNorm {
    weight: Vec<f32>,
    bias: Vec<f32>,
}

struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attention_out: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
}

/// The loaded model.
pub struct Bert {
    config: BertConfig,
    word: Vec<f32>,
    position: Vec<f32>,
    token_type: Vec<f32>,
    embeddings_norm: LayerNorm,
    layers: Vec<Layer>,
}

/// The tensors of a safetensors file, as `f32`.
pub struct Tensors {
    tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
}

#[derive(Deserialize)]
struct TensorInfo {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: (usize, usize),
}

impl Tensors {
    /// Reads every `F32` tensor of `path` (other dtypes are skipped).
    pub fn load(path: &Path) -> Result<Tensors, EmbedError> {
        let bytes = std::fs::read(path).map_err(|e| model_error(path, e.to_string()))?;
        Tensors::parse(&bytes).map_err(|message| model_error(path, message))
    }

    /// Parses a safetensors image.
    pub fn parse(bytes: &[u8]) -> Result<Tensors, String> {
        let header_len = bytes
            .get(..8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_le_bytes)
            .ok_or("not a safetensors file (too short)")?;
        let header_end = usize::try_from(header_len)
            .ok()
            .and_then(|n| n.checked_add(8))
            .filter(|&end| end <= bytes.len())
            .ok_or("not a safetensors file (bad header length)")?;
        let header: HashMap<String, serde_json::Value> =
            serde_json::from_slice(&bytes[8..header_end])
                .map_err(|e| format!("bad safetensors header: {e}"))?;
        let data = &bytes[header_end..];
        let mut tensors = HashMap::new();
        for (name, value) in header {
            if name == "__metadata__" {
                continue;
            }
            let info: TensorInfo = serde_json::from_value(value)
                .map_err(|e| format!("bad safetensors entry {name}: {e}"))?;
            if info.dtype != "F32" {
                continue;
            }
            let (start, end) = info.data_offsets;
            let raw = data
                .get(start..end)
                .ok_or_else(|| format!("tensor {name} lies outside the file"))?;
            let count: usize = info.shape.iter().product();
            if raw.len() != count * 4 {
                return Err(format!("tensor {name}: size does not match its shape"));
            }
            let values = raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            tensors.insert(name, (info.shape, values));
        }
        Ok(Tensors { tensors })
    }

    /// The shape of an `F32` tensor, if present.
    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.tensors.get(name).map(|(shape, _)| shape.clone())
    }

    /// Removes and returns a tensor, checking its shape.
    pub fn take(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>, String> {
        // sentence-transformers saves `BertModel` without a prefix; `BertForX` uses `bert.`.
        let (found, values) = self
            .tensors
            .remove(name)
            .or_else(|| self.tensors.remove(&format!("bert.{name}")))
            .ok_or_else(|| format!("tensor {name} is missing"))?;
        if found != shape {
            return Err(format!(
                "tensor {name} has shape {found:?}, expected {shape:?}"
            ));
        }
        Ok(values)
    }
}

fn model_error(path: &Path, message: String) -> EmbedError {
    EmbedError::Model {
        path: path.to_owned(),
        message,
    }
}

impl Bert {
    /// Loads `config.json` and `model.safetensors` from `dir`.
    pub fn load(dir: &Path) -> Result<Bert, EmbedError> {
        let config_path = dir.join("config.json");
        let text = std::fs::read_to_string(&config_path)
            .map_err(|e| model_error(&config_path, e.to_string()))?;
        let config: BertConfig =
            serde_json::from_str(&text).map_err(|e| model_error(&config_path, e.to_string()))?;
        let weights = dir.join("model.safetensors");
        let mut tensors = Tensors::load(&weights)?;
        Bert::from_tensors(config, &mut tensors).map_err(|message| model_error(&weights, message))
    }

    /// Builds the model from its tensors.
    pub fn from_tensors(config: BertConfig, t: &mut Tensors) -> Result<Bert, String> {
        let h = config.hidden_size;
        if h == 0 || config.num_attention_heads == 0 || h % config.num_attention_heads != 0 {
            return Err("hidden_size must be a multiple of num_attention_heads".into());
        }
        let norm = |t: &mut Tensors, name: &str| -> Result<LayerNorm, String> {
            Ok(LayerNorm {
                weight: t.take(&format!("{name}.weight"), &[h])?,
                bias: t.take(&format!("{name}.bias"), &[h])?,
            })
        };
        let linear = |t: &mut Tensors, name: &str, inputs, outputs| -> Result<Linear, String> {
            Ok(Linear {
                weight: t.take(&format!("{name}.weight"), &[outputs, inputs])?,
                bias: t.take(&format!("{name}.bias"), &[outputs])?,
                inputs,
                outputs,
            })
        };
        let i = config.intermediate_size;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for n in 0..config.num_hidden_layers {
            let p = format!("encoder.layer.{n}");
            layers.push(Layer {
                query: linear(t, &format!("{p}.attention.self.query"), h, h)?,
                key: linear(t, &format!("{p}.attention.self.key"), h, h)?,
                value: linear(t, &format!("{p}.attention.self.value"), h, h)?,
                attention_out: linear(t, &format!("{p}.attention.output.dense"), h, h)?,
                attention_norm: norm(t, &format!("{p}.attention.output.LayerNorm"))?,
                intermediate: linear(t, &format!("{p}.intermediate.dense"), h, i)?,
                output: linear(t, &format!("{p}.output.dense"), i, h)?,
                output_norm: norm(t, &format!("{p}.output.LayerNorm"))?,
            });
        }
        Ok(Bert {
            word: t.take("embeddings.word_embeddings.weight", &[config.vocab_size, h])?,
            position: t.take(
                "embeddings.position_embeddings.weight",
                &[config.max_position_embeddings, h],
            )?,
            token_type: {
                let all = t
                    .tensors
                    .get("embeddings.token_type_embeddings.weight")
                    .map(|(shape, _)| shape.clone())
                    .unwrap_or_default();
                let rows = all.first().copied().unwrap_or(1);
                t.take("embeddings.token_type_embeddings.weight", &[rows, h])?
            },
            embeddings_norm: norm(t, "embeddings.LayerNorm")?,
            layers,
            config,
        })
    }

    /// Output width.
    pub fn dimensions(&self) -> usize {
        self.config.hidden_size
    }

    /// Tokens of the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }

    /// Longest input the position table allows.
    pub fn max_positions(&self) -> usize {
        self.config.max_position_embeddings
    }

    /// The mean-pooled, L2-normalised embedding of one token sequence.
    pub fn embed(&self, ids: &[u32]) -> Vec<f32> {
        self.embed_same_length(&[ids]).pop().unwrap_or_default()
    }

    /// The embeddings of several token sequences of one length, run together: each weight
    /// matrix is read once for all their tokens (what makes distilling a vocabulary fast).
    /// All must have the first one's length: any other gets an empty vector.
    // The indices address several matrices at once.
    #[allow(clippy::needless_range_loop)]
    pub fn embed_same_length(&self, seqs: &[&[u32]]) -> Vec<Vec<f32>> {
        let h = self.config.hidden_size;
        let Some(first) = seqs.first() else {
            return Vec::new();
        };
        let n = first.len().min(self.config.max_position_embeddings);
        let batch: Vec<&[u32]> = seqs
            .iter()
            .filter(|ids| ids.len().min(self.config.max_position_embeddings) == n)
            .copied()
            .collect();
        let b = batch.len();
        let rows = b * n;
        let mut x = vec![0.0f32; rows * h];
        for (s, ids) in batch.iter().enumerate() {
            for (t, &id) in ids.iter().take(n).enumerate() {
                let id = (id as usize).min(self.config.vocab_size.saturating_sub(1));
                let row = &mut x[(s * n + t) * h..(s * n + t + 1) * h];
                let word = &self.word[id * h..(id + 1) * h];
                let position = &self.position[t * h..(t + 1) * h];
                for j in 0..h {
                    row[j] = word[j] + position[j] + self.token_type[j];
                }
            }
        }
        layer_norm(&mut x, &self.embeddings_norm, self.config.layer_norm_eps);
        let heads = self.config.num_attention_heads;
        let head = h / heads;
        let scale = 1.0 / (head as f32).sqrt();
        let mut scores = vec![0.0f32; n];
        for layer in &self.layers {
            let q = layer.query.apply(&x, rows);
            let k = layer.key.apply(&x, rows);
            let v = layer.value.apply(&x, rows);
            let mut context = vec![0.0f32; rows * h];
            for s in 0..b {
                let base = s * n;
                for hd in 0..heads {
                    let off = hd * head;
                    for i in 0..n {
                        let at = (base + i) * h + off;
                        let qi = &q[at..at + head];
                        let mut max = f32::NEG_INFINITY;
                        for j in 0..n {
                            let kj = (base + j) * h + off;
                            let score = dot(qi, &k[kj..kj + head]) * scale;
                            scores[j] = score;
                            max = max.max(score);
                        }
                        let mut sum = 0.0;
                        for score in scores.iter_mut().take(n) {
                            *score = (*score - max).exp();
                            sum += *score;
                        }
                        let out = &mut context[at..at + head];
                        for j in 0..n {
                            let w = scores[j] / sum;
                            let vj = (base + j) * h + off;
                            let vj = &v[vj..vj + head];
                            for d in 0..head {
                                out[d] += w * vj[d];
                            }
                        }
                    }
                }
            }
            let attended = layer.attention_out.apply(&context, rows);
            add_in_place(&mut x, &attended);
            layer_norm(&mut x, &layer.attention_norm, self.config.layer_norm_eps);
            let mut inner = layer.intermediate.apply(&x, rows);
            inner.iter_mut().for_each(|value| *value = gelu(*value));
            let out = layer.output.apply(&inner, rows);
            add_in_place(&mut x, &out);
            layer_norm(&mut x, &layer.output_norm, self.config.layer_norm_eps);
        }
        let mut pooled_all = Vec::with_capacity(seqs.len());
        let mut done = 0;
        for ids in seqs {
            if ids.len().min(self.config.max_position_embeddings) != n {
                pooled_all.push(Vec::new());
                continue;
            }
            let mut pooled = vec![0.0f32; h];
            for t in 0..n {
                add_in_place(&mut pooled, &x[(done * n + t) * h..(done * n + t + 1) * h]);
            }
            if n > 0 {
                pooled.iter_mut().for_each(|p| *p /= n as f32);
            }
            super::normalize(&mut pooled);
            pooled_all.push(pooled);
            done += 1;
        }
        pooled_all
    }
}

impl Linear {
    /// `x [n, inputs]` -> `[n, outputs]`. Each weight row is read once for all tokens.
    fn apply(&self, x: &[f32], n: usize) -> Vec<f32> {
        let mut y = vec![0.0f32; n * self.outputs];
        for o in 0..self.outputs {
            let w = &self.weight[o * self.inputs..(o + 1) * self.inputs];
            let b = self.bias[o];
            for t in 0..n {
                y[t * self.outputs + o] = dot(&x[t * self.inputs..(t + 1) * self.inputs], w) + b;
            }
        }
        y
    }
}

/// Dot product in eight independent lanes, which the compiler turns into SIMD.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let chunks = a.len() / 8;
    for c in 0..chunks {
        let (x, y) = (&a[c * 8..c * 8 + 8], &b[c * 8..c * 8 + 8]);
        for l in 0..8 {
            lanes[l] += x[l] * y[l];
        }
    }
    let mut sum: f32 = lanes.iter().sum();
    for i in chunks * 8..a.len().min(b.len()) {
        sum += a[i] * b[i];
    }
    sum
}

fn add_in_place(x: &mut [f32], y: &[f32]) {
    x.iter_mut().zip(y).for_each(|(a, b)| *a += b);
}

fn layer_norm(x: &mut [f32], norm: &LayerNorm, eps: f32) {
    let h = norm.weight.len();
    for row in x.chunks_exact_mut(h) {
        let mean = row.iter().sum::<f32>() / h as f32;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / h as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for ((value, weight), bias) in row.iter_mut().zip(&norm.weight).zip(&norm.bias) {
            *value = (*value - mean) * inv * weight + bias;
        }
    }
}

/// BERT's exact GELU: `x * Φ(x)`.
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x / std::f32::consts::SQRT_2))
}

/// erf, Abramowitz and Stegun 7.1.26 (absolute error below 1.5e-7).
fn erf(x: f32) -> f32 {
    let sign = if x < 0.0 { -1.0 } else { 1.0 };
    let x = x.abs() as f64;
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let y = 1.0
        - (((((1.061_405_429 * t - 1.453_152_027) * t) + 1.421_413_741) * t - 0.284_496_736) * t
            + 0.254_829_592)
            * t
            * (-x * x).exp();
    sign * y as f32
}
