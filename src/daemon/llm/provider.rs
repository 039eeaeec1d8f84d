//! The edge to the LLM providers: Azure OpenAI and OpenAI-compatible endpoints through
//! async-openai, or the built-in offline model.
//!
//! async-openai's own retry layer is replaced by our HTTP service
//! (`Client::with_http_service`), which also turns error responses into [`LlmError`]s with
//! their status and `retry-after` hints, so requests are retried once over, by one policy
//! (`retry.rs`, driven from `llm/actor.rs`). Memento's chat types (`llm/types.rs`) are the
//! wire format; async-openai's "bring your own types" calls send them and the wire structs
//! here receive the answer, so this file is the one edge to the SDK.

use std::time::Duration;

use async_openai::config::{AzureConfig, OpenAIConfig};
use async_openai::error::OpenAIError;
use async_openai::middleware::HttpRequestFactory;
use serde::{Deserialize, Serialize};

use super::offline;
use super::types::{
    ChatMessage, ChatRequest, ChatResponse, FinishReason, ToolCall, ToolDefinition, Usage,
};
use super::{LlmConfig, LlmError, Provider};

/// One configured provider.
pub(crate) enum Backend {
    Offline(offline::OfflineModel),
    Azure(async_openai::Client<AzureConfig>),
    Openai {
        client: async_openai::Client<OpenAIConfig>,
        model: String,
    },
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
                let azure = AzureConfig::new()
                    .with_api_base(
                        config
                            .endpoint
                            .clone()
                            .unwrap_or_default()
                            .trim_end_matches('/'),
                    )
                    .with_api_version(config.api_version.clone())
                    .with_deployment_id(deployment.clone())
                    .with_api_key(config.api_key.clone().unwrap_or_default());
                let client = async_openai::Client::with_config(azure)
                    .with_http_service(http_service(config)?);
                (Backend::Azure(client), deployment)
            }
            Provider::Openai => {
                let openai = OpenAIConfig::new()
                    .with_api_base(
                        config
                            .base_url
                            .clone()
                            .unwrap_or_default()
                            .trim_end_matches('/'),
                    )
                    .with_api_key(config.api_key.clone().unwrap_or_default());
                let client = async_openai::Client::with_config(openai)
                    .with_http_service(http_service(config)?);
                let model = config.model.clone().unwrap_or_default();
                (
                    Backend::Openai {
                        client,
                        model: model.clone(),
                    },
                    model,
                )
            }
        })
    }

    /// One attempt: the request sent once, its answer decoded. No retry, no timeout (the
    /// caller owns both).
    pub(crate) async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        match self {
            Backend::Offline(model) => Ok(model.complete(request)),
            Backend::Azure(client) => {
                let wire = WireRequest::new(request, None);
                decode(client.chat().create_byot(&wire).await)
            }
            Backend::Openai { client, model } => {
                let wire = WireRequest::new(request, Some(model));
                decode(client.chat().create_byot(&wire).await)
            }
        }
    }
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
    let http = reqwest::Client::builder()
        // No redirects: a redirect would resend the `api-key` header to whatever host the
        // `Location` names. A 3xx is an error instead (`LlmError::Redirect`).
        .redirect(reqwest::redirect::Policy::none())
        .tcp_nodelay(true)
        .connect_timeout(config.connect_timeout.min(config.request_timeout))
        .pool_max_idle_per_host(config.max_in_flight.max(1))
        .build()
        .map_err(|e| LlmError::Config(format!("HTTP client: {e}")))?;
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
                .map_err(|e| -> tower::BoxError {
                    if e.is_timeout() {
                        Box::new(LlmError::Timeout)
                    } else {
                        Box::new(LlmError::Connect(e.to_string()))
                    }
                })?;
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
                return Err(Box::new(LlmError::Redirect {
                    status: status.as_u16(),
                    location,
                }) as tower::BoxError);
            }
            let body = response.text().await.unwrap_or_default();
            Err(Box::new(LlmError::from_http(status.as_u16(), &headers, &body)) as tower::BoxError)
        }
    }))
}

/// Maps async-openai's outcome back to ours.
fn decode(result: Result<WireResponse, OpenAIError>) -> Result<ChatResponse, LlmError> {
    match result {
        Ok(wire) => wire.into_response(),
        Err(error) => Err(openai_error(error)),
    }
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

/// The request as sent (OpenAI chat-completions wire format).
#[derive(Serialize)]
struct WireRequest<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<&'a str>,
    messages: &'a [ChatMessage],
    #[serde(skip_serializing_if = "<[ToolDefinition]>::is_empty")]
    tools: &'a [ToolDefinition],
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    /// The user's keyed pseudonym (`LlmHandle::complete`), never the id itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    stream: bool,
}

impl<'a> WireRequest<'a> {
    fn new(request: &'a ChatRequest, model: Option<&'a str>) -> WireRequest<'a> {
        WireRequest {
            model,
            messages: &request.messages,
            tools: &request.tools,
            tool_choice: (!request.tools.is_empty()).then_some("auto"),
            max_tokens: request.max_tokens,
            temperature: request.temperature,
            user: request.user.as_deref(),
            stream: false,
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct WireResponse {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Vec<WireChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireChoice {
    message: WireMessage,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireMessage {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCall>>,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u32,
    #[serde(default)]
    completion_tokens: u32,
    #[serde(default)]
    total_tokens: u32,
}

impl WireResponse {
    pub(crate) fn into_response(self) -> Result<ChatResponse, LlmError> {
        let choice = self
            .choices
            .into_iter()
            .next()
            .ok_or_else(|| LlmError::InvalidResponse("no choices in the response".into()))?;
        let tool_calls = choice.message.tool_calls.unwrap_or_default();
        let finish_reason = match choice.finish_reason.as_deref() {
            Some("tool_calls") | Some("function_call") => FinishReason::ToolCalls,
            Some("length") => FinishReason::Length,
            Some("content_filter") => FinishReason::ContentFilter,
            _ if !tool_calls.is_empty() => FinishReason::ToolCalls,
            _ => FinishReason::Stop,
        };
        Ok(ChatResponse {
            model: self.model.unwrap_or_default(),
            message: ChatMessage::Assistant {
                content: choice.message.content,
                tool_calls,
            },
            finish_reason,
            usage: self.usage.map(|u| Usage {
                prompt_tokens: u.prompt_tokens,
                completion_tokens: u.completion_tokens,
                total_tokens: if u.total_tokens == 0 {
                    u.prompt_tokens + u.completion_tokens
                } else {
                    u.total_tokens
                },
            }),
            id: self.id,
            provider_time: Duration::ZERO,
        })
    }
}
