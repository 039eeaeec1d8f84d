//! Checking a chat completion request at the edge, in this order: the caller, the body,
//! the model, the user, what Memento cannot honour, then the messages and their sizes. The
//! result is a [`Completion`]: whose turn, on which conversation. Nothing here touches an
//! actor.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use serde::Deserialize;
use serde_json::Value;

use super::{
    MAX_MESSAGES, MAX_TOTAL_CHARS_FACTOR, MODEL_ID, OpenAiError, invalid, missing, model_not_found,
    too_large,
};
use crate::daemon::http::ApiState;
use crate::daemon::http::auth::Caller;
use crate::daemon::http::error::ApiError;
use crate::daemon::llm::types::ChatMessage;
use crate::shared::config::ServerConfig;
use crate::shared::domain::UserId;

/// A checked request: whose turn, on which conversation, streamed or not.
#[derive(Debug)]
pub(super) struct Completion {
    /// Whose turn it is.
    pub(super) user: UserId,
    /// The client's messages before the last one.
    pub(super) prior: Vec<ChatMessage>,
    /// The last message, the person's (trimmed).
    pub(super) message: String,
    /// `stream: true`.
    pub(super) stream: bool,
    /// `stream_options.include_usage`.
    pub(super) include_usage: bool,
}

/// The fields read from a request; every other field is accepted and ignored.
#[derive(Debug, Deserialize)]
pub(super) struct CompletionBody {
    model: Option<String>,
    messages: Option<Vec<Value>>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    user: Option<String>,
    n: Option<u64>,
    tools: Option<Vec<Value>>,
    functions: Option<Vec<Value>>,
    tool_choice: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

/// Authenticates, reads and checks the request, and decides the user, in that order.
pub(super) fn admit(
    state: &ApiState,
    peer: SocketAddr,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Completion, OpenAiError> {
    let caller = state
        .auth
        .caller(peer, headers)
        .map_err(OpenAiError::from_api)?;
    let body = read_body(&state.config, body)?;
    let model = body
        .model
        .as_deref()
        .ok_or_else(|| missing("model", "set \"model\": \"memento\""))?;
    if model != MODEL_ID {
        return Err(model_not_found(model));
    }
    let user = request_user(&caller, body.user.as_deref())?;
    refuse_client_tools(&body)?;
    if let Some(n) = body.n
        && n != 1
    {
        return Err(invalid(
            "n",
            "unsupported_value",
            format!("n is {n}; Memento gives one answer per request (n = 1)"),
        ));
    }
    let messages = body
        .messages
        .as_deref()
        .ok_or_else(|| missing("messages", "send the conversation as \"messages\""))?;
    let (prior, message) = conversation(&state.config, messages)?;
    Ok(Completion {
        user,
        prior,
        message,
        stream: body.stream.unwrap_or(false),
        include_usage: body
            .stream_options
            .and_then(|options| options.include_usage)
            .unwrap_or(false),
    })
}

fn read_body(
    config: &ServerConfig,
    body: Result<Bytes, BytesRejection>,
) -> Result<CompletionBody, OpenAiError> {
    let body = body.map_err(|rejection| {
        OpenAiError::from_api(ApiError::from_body_rejection(rejection, || {
            crate::daemon::http::turns::too_large(config.max_body_bytes)
        }))
    })?;
    serde_json::from_slice(&body).map_err(|e| {
        OpenAiError::from_api(ApiError::bad_request(
            "invalid_json",
            format!(
                "expected a chat completion request as a JSON object, like {{\"model\": \
                 \"memento\", \"messages\": [{{\"role\": \"user\", \"content\": \"...\"}}]}}: {e}"
            ),
        ))
    })
}

/// The user a user token is for; otherwise OpenAI's `user` field, required.
pub(super) fn request_user(caller: &Caller, field: Option<&str>) -> Result<UserId, OpenAiError> {
    match caller {
        Caller::User(own) => Ok(own.clone()),
        Caller::Service | Caller::Local => {
            let raw = field.ok_or_else(|| {
                missing(
                    "user",
                    "without a user token, \"user\" names whose memories to use",
                )
            })?;
            UserId::parse(raw).map_err(|e| invalid("user", "invalid_user_id", e.to_string()))
        }
    }
}

pub(super) fn refuse_client_tools(body: &CompletionBody) -> Result<(), OpenAiError> {
    const WHY: &str = "Memento runs its own memory tools server-side and does not call tools \
                       of the client";
    for (param, tools) in [("tools", &body.tools), ("functions", &body.functions)] {
        if tools.as_ref().is_some_and(|tools| !tools.is_empty()) {
            return Err(invalid(
                param,
                "unsupported_parameter",
                format!("{param} is not supported: {WHY}"),
            ));
        }
    }
    match &body.tool_choice {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(choice)) if choice == "auto" || choice == "none" => Ok(()),
        Some(other) => Err(invalid(
            "tool_choice",
            "unsupported_value",
            format!("tool_choice {other} is not supported (only \"auto\" or \"none\"): {WHY}"),
        )),
    }
}

/// The client's messages as Memento's chat messages: the ones before the last, and the
/// last, which must be the person's. Sizes are checked here, at the edge.
pub(super) fn conversation(
    config: &ServerConfig,
    messages: &[Value],
) -> Result<(Vec<ChatMessage>, String), OpenAiError> {
    if messages.is_empty() {
        return Err(invalid(
            "messages",
            "invalid_value",
            "messages is empty; send at least the person's message",
        ));
    }
    if messages.len() > MAX_MESSAGES {
        return Err(invalid(
            "messages",
            "too_many_messages",
            format!(
                "{} messages; the maximum is {MAX_MESSAGES} (drop the oldest)",
                messages.len()
            ),
        ));
    }
    let total_limit = config
        .max_message_chars
        .saturating_mul(MAX_TOTAL_CHARS_FACTOR);
    let mut total = 0usize;
    let mut converted = Vec::with_capacity(messages.len());
    for (index, raw) in messages.iter().enumerate() {
        let message = chat_message(index, raw)?;
        let chars = message_chars(&message);
        if chars > config.max_message_chars {
            return Err(too_large(
                "message_too_long",
                format!(
                    "messages[{index}] has {chars} characters; the maximum is {}",
                    config.max_message_chars
                ),
            ));
        }
        total += chars;
        if total > total_limit {
            return Err(too_large(
                "context_length_exceeded",
                format!(
                    "the messages have more than {total_limit} characters together; drop the \
                     oldest"
                ),
            ));
        }
        converted.push(message);
    }
    let message = match converted.pop() {
        Some(ChatMessage::User { content }) if !content.trim().is_empty() => {
            content.trim().to_owned()
        }
        Some(ChatMessage::User { .. }) => {
            return Err(invalid(
                "messages",
                "empty_message",
                "the last message (the person's) is empty",
            ));
        }
        _ => {
            return Err(invalid(
                "messages",
                "invalid_value",
                "the last message must be the person's (role \"user\")",
            ));
        }
    };
    Ok((converted, message))
}

fn chat_message(index: usize, raw: &Value) -> Result<ChatMessage, OpenAiError> {
    let bad = |what: String| {
        invalid(
            "messages",
            "invalid_value",
            format!("messages[{index}]: {what}"),
        )
    };
    let role = raw
        .get("role")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("an object with a \"role\" is expected".to_owned()))?;
    let content = raw.get("content").unwrap_or(&Value::Null);
    match role {
        "system" | "developer" => Ok(ChatMessage::System {
            content: text_content(content).map_err(bad)?.unwrap_or_default(),
        }),
        "user" => Ok(ChatMessage::User {
            content: text_content(content)
                .map_err(bad)?
                .ok_or_else(|| bad("a user message needs content".to_owned()))?,
        }),
        "assistant" => {
            if raw
                .get("tool_calls")
                .and_then(Value::as_array)
                .is_some_and(|calls| !calls.is_empty())
                || raw.get("function_call").is_some_and(|call| !call.is_null())
            {
                return Err(bad(
                    "assistant tool calls are not supported: Memento runs its own tools \
                     server-side and answers in words"
                        .to_owned(),
                ));
            }
            Ok(ChatMessage::Assistant {
                content: text_content(content).map_err(bad)?,
                tool_calls: Vec::new(),
            })
        }
        "tool" | "function" => Err(bad(format!(
            "role {role:?} is not supported: Memento runs its own tools server-side"
        ))),
        other => Err(bad(format!(
            "unknown role {other:?} (system, developer, user or assistant)"
        ))),
    }
}

/// A message's text: a string, or text parts joined by newlines; `None` for null.
fn text_content(content: &Value) -> Result<Option<String>, String> {
    match content {
        Value::Null => Ok(None),
        Value::String(text) => Ok(Some(text.clone())),
        Value::Array(parts) => {
            let mut texts = Vec::with_capacity(parts.len());
            for part in parts {
                match (
                    part.get("type").and_then(Value::as_str),
                    part.get("text").and_then(Value::as_str),
                ) {
                    (Some("text"), Some(text)) => texts.push(text),
                    (Some(kind), _) => {
                        return Err(format!(
                            "content parts of type {kind:?} are not supported, only \"text\""
                        ));
                    }
                    (None, _) => return Err("a content part needs a \"type\"".to_owned()),
                }
            }
            Ok(Some(texts.join("\n")))
        }
        _ => Err("content must be a string or an array of text parts".to_owned()),
    }
}

fn message_chars(message: &ChatMessage) -> usize {
    match message {
        ChatMessage::System { content }
        | ChatMessage::User { content }
        | ChatMessage::Tool { content, .. } => content.chars().count(),
        ChatMessage::Assistant { content, .. } => {
            content.as_deref().map_or(0, |c| c.chars().count())
        }
    }
}
