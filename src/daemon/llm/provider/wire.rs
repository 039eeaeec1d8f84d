//! The chat-completions wire format: the request body, written from pre-serialised parts,
//! and the structs the answer is parsed into.

use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;

use super::super::types::{ChatMessage, ChatResponse, FinishReason, Prompt, ToolCall, Usage};
use super::LlmError;

/// The request body for `prompt` (`model` for OpenAI-compatible endpoints), written once:
/// the messages' and tools' JSON is copied as it was serialised when each was made, only
/// the few scalars are serialised here. The same JSON as serialising a [`ChatRequest`]
/// (`super::super::types::ChatRequest`) with `tool_choice: "auto"` and `stream: false`.
pub(crate) fn encode_body(prompt: &Prompt, model: Option<&str>) -> Bytes {
    let tools = prompt.tools();
    let size = 160
        + prompt.messages().map(|m| m.json().len() + 1).sum::<usize>()
        + tools.map_or(0, |t| t.json().len())
        + prompt.user.as_ref().map_or(0, String::len);
    let mut out = Vec::with_capacity(size);
    out.push(b'{');
    if let Some(model) = model {
        out.extend_from_slice(b"\"model\":");
        write_json(&mut out, model);
        out.push(b',');
    }
    out.extend_from_slice(b"\"messages\":[");
    for (index, message) in prompt.messages().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        out.extend_from_slice(message.json().as_bytes());
    }
    out.push(b']');
    if let Some(tools) = tools {
        out.extend_from_slice(b",\"tools\":");
        out.extend_from_slice(tools.json().as_bytes());
        out.extend_from_slice(b",\"tool_choice\":\"auto\"");
    }
    if let Some(max_tokens) = prompt.max_tokens {
        let _ = write!(out, ",\"max_tokens\":{max_tokens}");
    }
    if let Some(temperature) = prompt.temperature {
        out.extend_from_slice(b",\"temperature\":");
        write_json(&mut out, &temperature);
    }
    if let Some(user) = &prompt.user {
        out.extend_from_slice(b",\"user\":");
        write_json(&mut out, user);
    }
    out.extend_from_slice(b",\"stream\":false}");
    Bytes::from(out)
}

/// Appends `value`'s JSON (a string or a number: cannot fail; a non-finite float is
/// written as `null`, as serde_json does).
fn write_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    if serde_json::to_writer(&mut *out, value).is_err() {
        out.extend_from_slice(b"null");
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
