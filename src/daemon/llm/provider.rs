//! The edge to the LLM providers: Azure OpenAI and OpenAI-compatible endpoints over a
//! direct HTTP POST, or the built-in offline model.
//!
//! - Chat completions: the client, the URL and the headers (`api-key` or `Authorization`,
//!   `content-type`) are built once, when the provider is; each request body is written
//!   once from the prompt's pre-serialised parts (`provider/wire.rs`) and the same bytes
//!   are sent again on a retry. The answer is parsed with serde into the wire structs of
//!   `provider/wire.rs`. Error statuses become [`LlmError`]s with their status and
//!   `retry-after` hints, so requests are retried once over, by one policy (`retry.rs`,
//!   driven from `llm/actor.rs`).
//! - [`http_service`] and [`openai_error`]: the same HTTP policy for async-openai, which the
//!   embeddings provider (`memory_server/embeddings/remote.rs`) still goes through.

use async_openai::error::OpenAIError;
use async_openai::middleware::HttpRequestFactory;
use bytes::Bytes;

use super::offline;
use super::types::{ChatResponse, Prompt};
use super::{LlmConfig, LlmError, Provider};

mod wire;

pub(crate) use wire::{WireResponse, encode_body};

/// One configured provider.
pub(crate) enum Backend {
    Offline(offline::OfflineModel),
    /// Azure OpenAI or an OpenAI-compatible endpoint.
    Http(Box<HttpChat>),
}

/// A chat-completions endpoint, with everything that does not change between requests
/// built once.
pub(crate) struct HttpChat {
    client: reqwest::Client,
    /// `…/openai/deployments/{deployment}/chat/completions?api-version=…` (Azure) or
    /// `…/chat/completions` (OpenAI-compatible).
    url: reqwest::Url,
    /// The key header and `content-type`.
    headers: http::HeaderMap,
    /// The `model` of the body (OpenAI-compatible endpoints; Azure's is in the URL).
    model: Option<String>,
}

impl Backend {
    /// The provider `config` names, and its model (or deployment) name.
    pub(crate) fn new(config: &LlmConfig) -> Result<(Backend, String), LlmError> {
        Ok(match config.provider {
            Provider::Offline => (
                Backend::Offline(offline::OfflineModel::new()),
                offline::OFFLINE_MODEL_NAME.to_owned(),
            ),
            Provider::Azure => {
                let deployment = config.deployment.clone().unwrap_or_default();
                let base = config.endpoint.as_deref().unwrap_or_default();
                let mut url = parse_url(&format!(
                    "{}/openai/deployments/{deployment}/chat/completions",
                    base.trim_end_matches('/')
                ))?;
                url.query_pairs_mut()
                    .append_pair("api-version", &config.api_version);
                let key = key_header(config.api_key.as_deref().unwrap_or_default())?;
                let chat = HttpChat::new(
                    config,
                    url,
                    http::HeaderName::from_static("api-key"),
                    key,
                    None,
                )?;
                (Backend::Http(Box::new(chat)), deployment)
            }
            Provider::Openai => {
                let base = config.base_url.as_deref().unwrap_or_default();
                let url = parse_url(&format!("{}/chat/completions", base.trim_end_matches('/')))?;
                let key = key_header(&format!(
                    "Bearer {}",
                    config.api_key.as_deref().unwrap_or_default()
                ))?;
                let model = config.model.clone().unwrap_or_default();
                let chat = HttpChat::new(
                    config,
                    url,
                    http::header::AUTHORIZATION,
                    key,
                    Some(model.clone()),
                )?;
                (Backend::Http(Box::new(chat)), model)
            }
        })
    }

    /// The body to send for `prompt`, written once and reused by every attempt (`None`
    /// for the offline model, which reads the prompt itself).
    pub(crate) fn encode(&self, prompt: &Prompt) -> Option<Bytes> {
        match self {
            Backend::Offline(_) => None,
            Backend::Http(chat) => Some(encode_body(prompt, chat.model.as_deref())),
        }
    }

    /// One attempt: the request sent once, its answer decoded. No retry, no timeout (the
    /// caller owns both). `body` is [`Backend::encode`]'s for `prompt`.
    pub(crate) async fn complete(
        &self,
        prompt: &Prompt,
        body: Option<&Bytes>,
    ) -> Result<ChatResponse, LlmError> {
        match (self, body) {
            (Backend::Offline(model), _) => Ok(model.complete(&prompt.to_chat_request())),
            (Backend::Http(chat), Some(body)) => chat.post(body.clone()).await,
            (Backend::Http(chat), None) => {
                chat.post(encode_body(prompt, chat.model.as_deref())).await
            }
        }
    }
}

impl HttpChat {
    fn new(
        config: &LlmConfig,
        url: reqwest::Url,
        key_name: http::HeaderName,
        key: http::HeaderValue,
        model: Option<String>,
    ) -> Result<HttpChat, LlmError> {
        let mut headers = http::HeaderMap::with_capacity(2);
        headers.insert(key_name, key);
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        Ok(HttpChat {
            client: http_client(config)?,
            url,
            headers,
            model,
        })
    }

    /// POSTs `body` and decodes the answer.
    async fn post(&self, body: Bytes) -> Result<ChatResponse, LlmError> {
        let mut request = reqwest::Request::new(reqwest::Method::POST, self.url.clone());
        *request.headers_mut() = self.headers.clone();
        *request.body_mut() = Some(reqwest::Body::from(body));
        let response = self
            .client
            .execute(request)
            .await
            .map_err(transport_error)?;
        let response = check_status(response).await?;
        let bytes = response.bytes().await.map_err(transport_error)?;
        let wire: WireResponse = serde_json::from_slice(&bytes).map_err(|error| {
            LlmError::InvalidResponse(format!(
                "{error}: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
            ))
        })?;
        wire.into_response()
    }
}

fn parse_url(url: &str) -> Result<reqwest::Url, LlmError> {
    reqwest::Url::parse(url).map_err(|e| LlmError::Config(format!("provider URL {url:?}: {e}")))
}

/// The API key as a header value, marked sensitive (never logged).
fn key_header(value: &str) -> Result<http::HeaderValue, LlmError> {
    let mut header = http::HeaderValue::from_str(value).map_err(|_| {
        LlmError::Config("the API key has characters an HTTP header cannot carry".into())
    })?;
    header.set_sensitive(true);
    Ok(header)
}

/// The HTTP client of a provider: no redirects, no retries of its own.
fn http_client(config: &LlmConfig) -> Result<reqwest::Client, LlmError> {
    reqwest::Client::builder()
        // No redirects: a redirect would resend the `api-key` header to whatever host the
        // `Location` names. A 3xx is an error instead (`LlmError::Redirect`).
        .redirect(reqwest::redirect::Policy::none())
        .tcp_nodelay(true)
        .connect_timeout(config.connect_timeout.min(config.request_timeout))
        .pool_max_idle_per_host(config.max_in_flight.max(1))
        .build()
        .map_err(|e| LlmError::Config(format!("HTTP client: {e}")))
}

fn transport_error(error: reqwest::Error) -> LlmError {
    if error.is_timeout() {
        LlmError::Timeout
    } else {
        LlmError::Connect(error.to_string())
    }
}

/// The response when its status is a success; otherwise the [`LlmError`] it means (a
/// redirect is never followed).
async fn check_status(response: reqwest::Response) -> Result<reqwest::Response, LlmError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let headers = response.headers().clone();
    if status.is_redirection() {
        let location = headers
            .get(http::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .chars()
            .take(200)
            .collect();
        return Err(LlmError::Redirect {
            status: status.as_u16(),
            location,
        });
    }
    let body = response.text().await.unwrap_or_default();
    Err(LlmError::from_http(status.as_u16(), &headers, &body))
}

/// `gen_ai.provider.name` of `provider` (OTel GenAI conventions).
pub(crate) fn provider_semconv(provider: Provider) -> &'static str {
    match provider {
        Provider::Azure => "azure.ai.openai",
        Provider::Openai => "openai",
        Provider::Offline => "memento.offline",
    }
}

impl LlmError {
    /// The error of a provider's error answer: its status, code, message and retry hint.
    pub(crate) fn from_http(status: u16, headers: &http::HeaderMap, body: &str) -> LlmError {
        let parsed: Option<serde_json::Value> = serde_json::from_str(body).ok();
        let error = parsed.as_ref().map(|v| &v["error"]);
        let code = error
            .and_then(|e| e["code"].as_str().map(str::to_owned))
            .or_else(|| error.and_then(|e| e["type"].as_str().map(str::to_owned)));
        let message = error
            .and_then(|e| e["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| body.chars().take(300).collect());
        if status == 400 && code.as_deref() == Some("content_filter") {
            return LlmError::ContentFilter;
        }
        LlmError::Http {
            status,
            code,
            message,
            retry_after: crate::shared::retry::parse_retry_after(headers),
        }
    }
}

/// Memento's HTTP service for async-openai: executes the request with no retry of its own
/// and turns error statuses into [`LlmError`]s that keep the status and retry hints.
/// (Also used by the embeddings provider, `crate::memory_server::embeddings::remote`.)
pub(crate) fn http_service(
    config: &LlmConfig,
) -> Result<
    impl tower::Service<
        HttpRequestFactory,
        Response = reqwest::Response,
        Error = tower::BoxError,
        Future = impl Future<Output = Result<reqwest::Response, tower::BoxError>> + Send + 'static,
    > + Clone
    + Send
    + Sync
    + 'static,
    LlmError,
> {
    let http = http_client(config)?;
    Ok(tower::service_fn(move |factory: HttpRequestFactory| {
        let http = http.clone();
        async move {
            let request = factory.build().await.map_err(|e| -> tower::BoxError {
                Box::new(LlmError::InvalidResponse(format!(
                    "cannot build the request: {e}"
                )))
            })?;
            let response = http
                .execute(request)
                .await
                .map_err(|e| -> tower::BoxError { Box::new(transport_error(e)) })?;
            check_status(response)
                .await
                .map_err(|e| -> tower::BoxError { Box::new(e) })
        }
    }))
}

/// Maps an async-openai error to ours (the embeddings provider uses it too).
pub(crate) fn openai_error(error: OpenAIError) -> LlmError {
    match error {
        OpenAIError::Boxed(error) => match error.downcast::<LlmError>() {
            Ok(error) => *error,
            Err(other) => LlmError::Connect(other.to_string()),
        },
        OpenAIError::Reqwest(error) => {
            if error.is_timeout() {
                LlmError::Timeout
            } else {
                LlmError::Connect(error.to_string())
            }
        }
        OpenAIError::JSONDeserialize(error, body) => LlmError::InvalidResponse(format!(
            "{error}: {}",
            body.chars().take(200).collect::<String>()
        )),
        other => LlmError::InvalidResponse(other.to_string()),
    }
}
