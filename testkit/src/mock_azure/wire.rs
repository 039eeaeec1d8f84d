//! The mock's wire formats: reading a chat-completions request leniently, and writing
//! completions, stream chunks and error bodies as Azure OpenAI (or OpenAI) does.

use memento::daemon::llm::types::{
    ChatMessage, ChatRequest, ChatResponse, FinishReason, ToolDefinition,
};
use serde::Deserialize;
use serde_json::{Value, json};

/// Which API a request came in on: it decides error shapes and Azure-only fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Flavor {
    /// `/openai/deployments/{deployment}/chat/completions?api-version=...`.
    AzureDated {
        /// The request's `api-version`.
        api_version: String,
    },
    /// `/openai/v1/chat/completions` (Azure's v1 API, `model` = deployment).
    AzureV1,
    /// `/v1/chat/completions` (an OpenAI-compatible server).
    OpenAi,
}

impl Flavor {
    fn is_azure(&self) -> bool {
        !matches!(self, Flavor::OpenAi)
    }

    fn api_version(&self) -> &str {
        match self {
            Flavor::AzureDated { api_version } => api_version,
            Flavor::AzureV1 | Flavor::OpenAi => "v1",
        }
    }
}

/// A parsed request, with what the mock needs beyond Memento's [`ChatRequest`].
#[derive(Debug)]
pub(crate) struct Parsed {
    /// The request in Memento's types (the offline model's input).
    pub request: ChatRequest,
    /// `model` from the body, if any.
    pub model: Option<String>,
    /// `stream: true`.
    pub stream: bool,
    /// `stream_options.include_usage: true`.
    pub include_usage: bool,
}

/// Why a request body was refused: the message and the offending parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BodyError {
    pub message: String,
    pub param: Option<&'static str>,
}

impl BodyError {
    fn new(message: impl Into<String>, param: Option<&'static str>) -> BodyError {
        BodyError {
            message: message.into(),
            param,
        }
    }
}

/// The body, leniently: unknown fields (`tool_choice`, `parallel_tool_calls`, `user`, `n`,
/// `seed`, ...) are ignored, as a real deployment accepts them.
#[derive(Debug, Deserialize)]
struct WireRequest {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    messages: Option<Value>,
    #[serde(default)]
    tools: Option<Value>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    max_completion_tokens: Option<u32>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<Value>,
}

/// Parses a chat-completions body into Memento's types.
pub(crate) fn parse_request(body: &[u8]) -> Result<Parsed, BodyError> {
    let wire: WireRequest = serde_json::from_slice(body).map_err(|e| {
        BodyError::new(
            format!("We could not parse the JSON body of your request. ({e})"),
            None,
        )
    })?;
    let messages = match wire.messages {
        None | Some(Value::Null) => {
            return Err(BodyError::new(
                "'messages' is a required property",
                Some("messages"),
            ));
        }
        Some(Value::Array(items)) if items.is_empty() => {
            return Err(BodyError::new(
                "[] is too short - 'messages'",
                Some("messages"),
            ));
        }
        Some(Value::Array(items)) => items,
        Some(_) => {
            return Err(BodyError::new(
                "'messages' must be an array of message objects",
                Some("messages"),
            ));
        }
    };
    let messages = messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            serde_json::from_value::<ChatMessage>(normalize_message(m)).map_err(|e| {
                BodyError::new(
                    format!("Invalid value for 'messages[{i}]': {e}"),
                    Some("messages"),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let tools = match wire.tools {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                serde_json::from_value::<ToolDefinition>(t).map_err(|e| {
                    BodyError::new(
                        format!("Invalid value for 'tools[{i}]': {e}"),
                        Some("tools"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => {
            return Err(BodyError::new("'tools' must be an array", Some("tools")));
        }
    };
    let include_usage = wire
        .stream_options
        .as_ref()
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        == Some(true);
    Ok(Parsed {
        request: ChatRequest {
            messages,
            tools,
            max_tokens: wire.max_completion_tokens.or(wire.max_tokens),
            temperature: wire.temperature,
            user: None,
        },
        model: wire.model.filter(|m| !m.is_empty()),
        stream: wire.stream == Some(true),
        include_usage,
    })
}

/// Brings the wire's variants to Memento's shapes: text-part arrays become one string,
/// `developer` is a system message, explicit nulls are dropped.
fn normalize_message(mut message: Value) -> Value {
    let Some(object) = message.as_object_mut() else {
        return message;
    };
    if object.get("role").and_then(Value::as_str) == Some("developer") {
        object.insert("role".into(), Value::String("system".into()));
    }
    if let Some(Value::Array(parts)) = object.get("content") {
        let text: Vec<&str> = parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect();
        let joined = Value::String(text.join("\n"));
        object.insert("content".into(), joined);
    }
    if object.get("tool_calls").is_some_and(Value::is_null) {
        object.remove("tool_calls");
    }
    let role = object.get("role").and_then(Value::as_str).unwrap_or("");
    if role != "assistant" && object.get("content").is_some_and(Value::is_null) {
        object.insert("content".into(), Value::String(String::new()));
    }
    message
}

/// Tokens Azure estimates on arrival: the prompt's text at four characters a token plus
/// `max_tokens` (what the TPM quota counts).
/// `max_tokens`, as the daemon's limits count ([`ChatRequest::estimated_tokens`]).
pub(crate) fn estimate_tokens(request: &ChatRequest) -> u64 {
    u64::from(request.estimated_tokens())
}

fn finish_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::ToolCalls => "tool_calls",
        FinishReason::ContentFilter => "content_filter",
    }
}

/// Azure's content-filter verdict when nothing was filtered.
fn filter_results() -> Value {
    let safe = json!({"filtered": false, "severity": "safe"});
    json!({
        "hate": safe,
        "self_harm": safe,
        "sexual": safe,
        "violence": safe,
    })
}

fn prompt_filter_results() -> Value {
    json!([{
        "prompt_index": 0,
        "content_filter_results": {
            "hate": {"filtered": false, "severity": "safe"},
            "jailbreak": {"filtered": false, "detected": false},
            "self_harm": {"filtered": false, "severity": "safe"},
            "sexual": {"filtered": false, "severity": "safe"},
            "violence": {"filtered": false, "severity": "safe"},
        },
    }])
}

/// The assistant message as the wire has it (`refusal: null` included).
fn message_json(message: &ChatMessage) -> Value {
    let mut value = serde_json::to_value(message).unwrap_or_else(|_| json!({}));
    if let Some(object) = value.as_object_mut() {
        object.insert("role".into(), Value::String("assistant".into()));
        object.entry("content").or_insert(Value::Null);
        object.insert("refusal".into(), Value::Null);
    }
    value
}

/// Identity of one answer, shared by its JSON body or its chunks.
#[derive(Debug, Clone)]
pub(crate) struct Meta {
    pub id: String,
    pub created: u64,
    pub model: String,
    pub flavor: Flavor,
}

/// A whole `chat.completion` object.
pub(crate) fn completion(meta: &Meta, answer: &ChatResponse) -> Value {
    let mut choice = json!({
        "index": 0,
        "message": message_json(&answer.message),
        "finish_reason": finish_reason(answer.finish_reason),
        "logprobs": null,
    });
    let mut body = json!({
        "id": meta.id,
        "object": "chat.completion",
        "created": meta.created,
        "model": meta.model,
        "system_fingerprint": "fp_memento_mock",
        "usage": answer.usage.unwrap_or_default(),
    });
    if meta.flavor.is_azure() {
        choice["content_filter_results"] = filter_results();
        body["prompt_filter_results"] = prompt_filter_results();
    }
    body["choices"] = json!([choice]);
    body
}

/// How many bytes of tool-call arguments go in one stream chunk.
const ARGUMENT_FRAGMENT: usize = 16;
/// How many words of text go in one stream chunk.
const WORDS_PER_CHUNK: usize = 3;

/// One stream chunk and how many completion tokens it carries (for per-token latency).
#[derive(Debug, Clone)]
pub(crate) struct Chunk {
    pub data: String,
    pub tokens: u32,
}

/// The answer as `chat.completion.chunk`s, exactly as OpenAI streams: the role first,
/// content pieces, tool-call fragments by `index` (id, type and name on the first
/// fragment of each call, arguments split over several), a last chunk with the
/// finish reason, a usage chunk when asked, then `[DONE]`. Azure also opens with an
/// empty-`choices` chunk carrying `prompt_filter_results`.
pub(crate) fn chunks(meta: &Meta, answer: &ChatResponse, include_usage: bool) -> Vec<Chunk> {
    let azure = meta.flavor.is_azure();
    let base = |delta: Value, finish: Option<&str>| {
        let mut choice = json!({
            "index": 0,
            "delta": delta,
            "logprobs": null,
            "finish_reason": finish,
        });
        if azure && finish.is_none() {
            choice["content_filter_results"] = json!({});
        }
        let mut chunk = json!({
            "id": meta.id,
            "object": "chat.completion.chunk",
            "created": meta.created,
            "model": meta.model,
            "system_fingerprint": "fp_memento_mock",
            "choices": [choice],
        });
        if include_usage {
            chunk["usage"] = Value::Null;
        }
        chunk
    };
    let mut out: Vec<Chunk> = Vec::new();
    let mut push = |value: Value, tokens: u32| {
        out.push(Chunk {
            data: value.to_string(),
            tokens,
        })
    };
    if azure {
        push(
            json!({
                "choices": [],
                "created": 0,
                "id": "",
                "model": "",
                "object": "",
                "prompt_filter_results": prompt_filter_results(),
            }),
            0,
        );
    }
    let (content, tool_calls) = match &answer.message {
        ChatMessage::Assistant {
            content,
            tool_calls,
        } => (content.as_deref(), tool_calls.as_slice()),
        _ => (None, &[][..]),
    };
    if tool_calls.is_empty() {
        push(
            base(
                json!({"role": "assistant", "content": "", "refusal": null}),
                None,
            ),
            0,
        );
    } else {
        push(
            base(
                json!({"role": "assistant", "content": null, "refusal": null}),
                None,
            ),
            0,
        );
    }
    if let Some(content) = content.filter(|c| !c.is_empty()) {
        let pieces: Vec<&str> = content.split_inclusive(' ').collect();
        for piece in pieces.chunks(WORDS_PER_CHUNK) {
            let text = piece.concat();
            let tokens = u32::try_from(text.len().div_ceil(4)).unwrap_or(u32::MAX);
            push(base(json!({"content": text}), None), tokens);
        }
    }
    for (index, call) in tool_calls.iter().enumerate() {
        push(
            base(
                json!({"tool_calls": [{
                    "index": index,
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.function.name, "arguments": ""},
                }]}),
                None,
            ),
            1,
        );
        let args = call.function.arguments.as_str();
        let mut start = 0;
        while start < args.len() {
            let mut end = (start + ARGUMENT_FRAGMENT).min(args.len());
            while !args.is_char_boundary(end) {
                end += 1;
            }
            let fragment = &args[start..end];
            push(
                base(
                    json!({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}),
                    None,
                ),
                u32::try_from(fragment.len().div_ceil(4)).unwrap_or(u32::MAX),
            );
            start = end;
        }
    }
    push(
        base(json!({}), Some(finish_reason(answer.finish_reason))),
        0,
    );
    if include_usage {
        push(
            json!({
                "id": meta.id,
                "object": "chat.completion.chunk",
                "created": meta.created,
                "model": meta.model,
                "system_fingerprint": "fp_memento_mock",
                "choices": [],
                "usage": answer.usage.unwrap_or_default(),
            }),
            0,
        );
    }
    out
}

/// An SSE event for one chunk's data.
pub(crate) fn sse(data: &str) -> String {
    format!("data: {data}\n\n")
}

/// The end of every stream.
pub(crate) const DONE: &str = "data: [DONE]\n\n";

// === Error bodies ===

/// 401: Azure's text for a missing or wrong key; OpenAI's `invalid_api_key`.
pub(crate) fn unauthorized(flavor: &Flavor) -> Value {
    if flavor.is_azure() {
        json!({"error": {
            "code": "401",
            "message": "Access denied due to invalid subscription key or wrong API endpoint. \
                Make sure to provide a valid key for an active subscription and use a correct \
                regional API endpoint for your resource.",
        }})
    } else {
        json!({"error": {
            "message": "Incorrect API key provided. You can find your API key in your \
                provider's console.",
            "type": "invalid_request_error",
            "param": null,
            "code": "invalid_api_key",
        }})
    }
}

/// 404 for a path that is not an API (and, as Azure does, for a missing `api-version`).
pub(crate) fn resource_not_found() -> Value {
    json!({"error": {"code": "404", "message": "Resource not found"}})
}

/// 404 for a deployment that does not exist.
pub(crate) fn deployment_not_found() -> Value {
    json!({"error": {
        "code": "DeploymentNotFound",
        "message": "The API deployment for this resource does not exist. If you created the \
            deployment within the last 5 minutes, please wait a moment and try again.",
    }})
}

/// 400 for an unsupported `api-version`.
pub(crate) fn unsupported_api_version() -> Value {
    json!({"error": {"code": "BadRequest", "message": "API version not supported"}})
}

/// 400 for a body that cannot be served.
pub(crate) fn bad_request(flavor: &Flavor, error: &BodyError) -> Value {
    json!({"error": {
        "code": if flavor.is_azure() { json!("BadRequest") } else { Value::Null },
        "message": error.message,
        "param": error.param,
        "type": "invalid_request_error",
    }})
}

/// Which quota a 429 is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    Requests,
    Tokens,
}

/// 429 with "Please retry after N seconds".
pub(crate) fn rate_limited(flavor: &Flavor, limit: Limit, seconds: u64) -> Value {
    if flavor.is_azure() {
        let what = match limit {
            Limit::Requests => "call rate limit",
            Limit::Tokens => "token rate limit",
        };
        json!({"error": {
            "code": "429",
            "message": format!(
                "Requests to the ChatCompletions_Create Operation under Azure OpenAI API \
                 version {} have exceeded {what} of your current OpenAI S0 pricing tier. \
                 Please retry after {seconds} seconds. Please go here: \
                 https://aka.ms/oai/quotaincrease if you would like to further increase the \
                 default rate limit.",
                flavor.api_version()
            ),
        }})
    } else {
        let what = match limit {
            Limit::Requests => "requests",
            Limit::Tokens => "tokens",
        };
        json!({"error": {
            "message": format!(
                "Rate limit reached for {what} per minute. Please try again in {seconds}s."
            ),
            "type": what,
            "param": null,
            "code": "rate_limit_exceeded",
        }})
    }
}

/// 500, the body OpenAI and Azure send.
pub(crate) fn server_error() -> Value {
    json!({"error": {
        "message": "The server had an error while processing your request. Sorry about that!",
        "type": "server_error",
        "param": null,
        "code": null,
    }})
}

/// 503.
pub(crate) fn unavailable(flavor: &Flavor) -> Value {
    if flavor.is_azure() {
        json!({"error": {
            "code": "ServiceUnavailable",
            "message": "The service is temporarily unable to process your request. Please try \
                again later.",
        }})
    } else {
        json!({"error": {
            "message": "The engine is currently overloaded, please try again later.",
            "type": "server_error",
            "param": null,
            "code": null,
        }})
    }
}

/// True for `api-version` values of the dated API's form: `YYYY-MM-DD`, optionally with
/// `-preview`.
pub(crate) fn plausible_api_version(version: &str) -> bool {
    let date = version.strip_suffix("-preview").unwrap_or(version);
    let bytes = date.as_bytes();
    bytes.len() == 10
        && bytes.iter().enumerate().all(|(i, b)| match i {
            4 | 7 => *b == b'-',
            _ => b.is_ascii_digit(),
        })
}

/// Strips `arguments` to its first half (on a char boundary): no longer valid JSON.
pub(crate) fn cut_arguments(arguments: &mut String) {
    let mut end = arguments.len() / 2;
    while !arguments.is_char_boundary(end) {
        end -= 1;
    }
    arguments.truncate(end);
}
