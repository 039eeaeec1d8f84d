//! [`Batcher`]: concurrent embedding calls coalesced into one provider call.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::{EmbedError, Embedder};

struct Request {
    text: String,
    reply: oneshot::Sender<Result<Vec<f32>, Arc<EmbedError>>>,
}

/// Coalesces concurrent embedding calls: one worker task takes every request queued while
/// the previous call ran (up to `max_batch`) and sends them as one provider call.
#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::Sender<Request>,
    model: Arc<str>,
}

impl Batcher {
    /// Starts the worker on the current runtime.
    pub fn start(embedder: Arc<dyn Embedder>, max_batch: usize) -> Batcher {
        let (tx, mut rx) = mpsc::channel::<Request>(max_batch.max(1) * 64);
        let model: Arc<str> = Arc::from(embedder.model_id());
        let max_batch = max_batch.max(1);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(max_batch);
            while rx.recv_many(&mut batch, max_batch).await > 0 {
                let (texts, replies): (Vec<String>, Vec<_>) =
                    batch.drain(..).map(|r| (r.text, r.reply)).unzip();
                let count = texts.len();
                match embedder.embed(texts).await {
                    Ok(vectors) if vectors.len() == count => {
                        for (reply, vector) in replies.into_iter().zip(vectors) {
                            let _ = reply.send(Ok(vector));
                        }
                    }
                    Ok(vectors) => {
                        let error = Arc::new(EmbedError::InvalidResponse(format!(
                            "{} vectors for {count} texts",
                            vectors.len()
                        )));
                        for reply in replies {
                            let _ = reply.send(Err(error.clone()));
                        }
                    }
                    Err(error) => {
                        let error = Arc::new(error);
                        for reply in replies {
                            let _ = reply.send(Err(error.clone()));
                        }
                    }
                }
            }
        });
        Batcher { tx, model }
    }

    /// The vector of one text.
    pub async fn embed(&self, text: String) -> Result<Vec<f32>, Arc<EmbedError>> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request { text, reply })
            .await
            .map_err(|_| Arc::new(EmbedError::Closed))?;
        rx.await.map_err(|_| Arc::new(EmbedError::Closed))?
    }

    /// The model's name.
    pub fn model_id(&self) -> &str {
        &self.model
    }
}
