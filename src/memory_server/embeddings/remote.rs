//! The `azure` and `openai` providers: `POST .../embeddings` through async-openai, with the
//! chat path's HTTP service (no redirects, typed errors with retry hints), its retry policy
//! (`[llm] max_retries`, `retry_initial`, `retry_max`, `max_retry_after`), a request rate
//! limit of its own (`[embeddings] rpm`: an embeddings deployment has its own quota) and the
//! chat path's cap on requests in flight (`[llm] max_in_flight`).

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use async_openai::config::{AzureConfig, OpenAIConfig};
use futures::future::BoxFuture;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::{EmbedError, Embedder, EmbeddingsConfig, Provider};
use crate::daemon::llm::{LlmConfig, LlmError};
use crate::shared::retry::{RetryPolicy, retry};

enum Client {
    Azure(async_openai::Client<AzureConfig>),
    Openai(async_openai::Client<OpenAIConfig>),
}

/// A remote embeddings endpoint.
pub struct RemoteEmbedder {
    inner: Arc<Inner>,
    id: String,
}

struct Inner {
    client: Client,
    model: Option<String>,
    dimensions: Option<u32>,
    rpm: Option<DefaultDirectRateLimiter>,
    in_flight: Semaphore,
    retry: RetryPolicy,
    request_timeout: Duration,
}

#[derive(Serialize)]
struct WireRequest<'a> {
    input: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dimensions: Option<u32>,
    encoding_format: &'static str,
}

#[derive(Deserialize)]
struct WireResponse {
    data: Vec<WireEmbedding>,
}

#[derive(Deserialize)]
struct WireEmbedding {
    index: usize,
    embedding: Vec<f32>,
}

impl RemoteEmbedder {
    /// Builds the client; the Azure endpoint and key are `[llm]`'s (the same resource).
    pub fn new(config: &EmbeddingsConfig, llm: &LlmConfig) -> Result<RemoteEmbedder, EmbedError> {
        let mut http_config = llm.clone();
        http_config.request_timeout = config.request_timeout;
        let http = crate::daemon::llm::provider::http_service(&http_config)?;
        let (client, model, id) = match config.provider {
            Provider::Azure => {
                let endpoint = llm.endpoint.clone().unwrap_or_default();
                if endpoint.is_empty() {
                    return Err(EmbedError::Config(
                        "embeddings.provider = \"azure\" needs the Azure endpoint and key of \
                         [llm] (AZURE_OPENAI_ENDPOINT, AZURE_OPENAI_API_KEY)"
                            .into(),
                    ));
                }
                let deployment = config.deployment.clone().unwrap_or_default();
                let azure = AzureConfig::new()
                    .with_api_base(endpoint.trim_end_matches('/'))
                    .with_api_version(llm.api_version.clone())
                    .with_deployment_id(deployment.clone())
                    .with_api_key(llm.api_key.clone().unwrap_or_default());
                (
                    Client::Azure(async_openai::Client::with_config(azure).with_http_service(http)),
                    None,
                    format!("azure:{deployment}"),
                )
            }
            _ => {
                let model = config.model.clone().unwrap_or_default();
                let openai = OpenAIConfig::new()
                    .with_api_base(
                        config
                            .base_url
                            .clone()
                            .unwrap_or_default()
                            .trim_end_matches('/'),
                    )
                    .with_api_key(
                        config
                            .api_key
                            .clone()
                            .or_else(|| llm.api_key.clone())
                            .unwrap_or_default(),
                    );
                (
                    Client::Openai(
                        async_openai::Client::with_config(openai).with_http_service(http),
                    ),
                    Some(model.clone()),
                    format!("openai:{model}"),
                )
            }
        };
        let dimensions = (config.dimensions > 0).then_some(config.dimensions);
        let id = match dimensions {
            Some(d) => format!("{id}:{d}"),
            None => id,
        };
        Ok(RemoteEmbedder {
            id,
            inner: Arc::new(Inner {
                client,
                model,
                dimensions,
                rpm: NonZeroU32::new(config.rpm).and_then(|rate| {
                    let burst = NonZeroU32::new((config.rpm / 60).max(1))?;
                    Some(RateLimiter::direct(
                        Quota::per_minute(rate).allow_burst(burst),
                    ))
                }),
                in_flight: Semaphore::new(llm.max_in_flight.max(1)),
                retry: RetryPolicy {
                    max_retries: llm.max_retries,
                    initial: llm.retry_initial,
                    max_delay: llm.retry_max,
                    max_retry_after: llm.max_retry_after,
                },
                request_timeout: config.request_timeout,
            }),
        })
    }
}

impl Inner {
    async fn attempt(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, LlmError> {
        if let Some(limiter) = &self.rpm {
            limiter.until_ready().await;
        }
        let wire = WireRequest {
            input: texts,
            model: self.model.as_deref(),
            dimensions: self.dimensions,
            encoding_format: "float",
        };
        let call = async {
            let result: Result<WireResponse, _> = match &self.client {
                Client::Azure(client) => client.embeddings().create_byot(&wire).await,
                Client::Openai(client) => client.embeddings().create_byot(&wire).await,
            };
            result.map_err(crate::daemon::llm::provider::openai_error)
        };
        let response = tokio::time::timeout(self.request_timeout, call)
            .await
            .unwrap_or(Err(LlmError::Timeout))?;
        let mut vectors = vec![Vec::new(); texts.len()];
        for item in response.data {
            if let Some(slot) = vectors.get_mut(item.index) {
                *slot = item.embedding;
            }
        }
        if vectors.iter().any(Vec::is_empty) {
            return Err(LlmError::InvalidResponse(format!(
                "embeddings response lacks vectors for some of the {} inputs",
                texts.len()
            )));
        }
        vectors.iter_mut().for_each(|v| super::normalize(v));
        Ok(vectors)
    }
}

impl Embedder for RemoteEmbedder {
    fn embed(&self, texts: Vec<String>) -> BoxFuture<'static, Result<Vec<Vec<f32>>, EmbedError>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            if texts.is_empty() {
                return Ok(Vec::new());
            }
            let _permit = inner
                .in_flight
                .acquire()
                .await
                .map_err(|_| EmbedError::Closed)?;
            // Retries stop when the next wait would pass this deadline.
            let deadline =
                Instant::now() + inner.request_timeout * (inner.retry.max_retries + 1).min(8);
            let vectors = retry(
                &inner.retry,
                deadline,
                |error: &LlmError, notice| {
                    tracing::info!(%error, attempt = notice.attempt, delay_ms = notice.delay.as_millis() as u64, "embeddings request retried")
                },
                || inner.attempt(&texts),
            )
            .await?;
            Ok(vectors)
        })
    }

    fn model_id(&self) -> &str {
        &self.id
    }
}
