//! The daemon's HTTP API bodies, shared by the server (`daemon/http`) and its clients
//! (`memento chat`, the load-test harness), so both sides agree by type, not by string keys.
//! The wire format is the one `interfaces.md` documents; each type names its endpoint.
//!
//! - Turns: [`MessageRequest`], [`MessageResponse`] (with [`ToolCall`], [`Timings`]), and
//!   the streamed turn's events, [`StreamEvent`].
//! - Every error: [`ErrorBody`].
//! - History: [`History`] (with [`HistoryMessage`], a client's view of a message).
//! - Health and sign-in: [`Health`], [`Readiness`], [`AuthMode`], [`WhoAmI`], [`Deleted`].
//! - The memory endpoints (and import): [`memories`].
//!
//! The OpenAI-compatible endpoints follow OpenAI's wire format (`daemon/http/openai.rs`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub mod memories;

// === Turns ===

/// `POST /v1/users/{user_id}/messages` request body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageRequest {
    /// What the user says.
    pub message: String,
}

/// One tool call of a turn, as answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// Tool name.
    pub name: String,
    /// Arguments as the model gave them (without `user_id`).
    #[serde(default)]
    pub arguments: Value,
    /// The tool's result text (or the error the model saw).
    #[serde(default)]
    pub result: String,
    /// The call failed.
    #[serde(default)]
    pub is_error: bool,
}

/// Where a turn's time went, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    /// The whole turn inside the conversation actor.
    pub turn_ms: f64,
    /// In the LLM provider's calls.
    pub llm_ms: f64,
    /// In tool rounds (wall time).
    pub tools_ms: f64,
}

/// `POST /v1/users/{user_id}/messages` answer (and the streamed `done` event's data).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageResponse {
    /// The assistant's answer.
    pub reply: String,
    /// Every tool call, in order.
    #[serde(default)]
    pub tool_calls: Vec<ToolCall>,
    /// The turn's trace id.
    #[serde(default)]
    pub trace_id: String,
    /// Where the turn's time went.
    #[serde(default)]
    pub timings: Timings,
}

impl MessageResponse {
    /// True when a call of `tool` in this turn succeeded.
    pub fn succeeded(&self, tool: &str) -> bool {
        self.tool_calls
            .iter()
            .any(|call| call.name == tool && !call.is_error)
    }
}

// === The streamed turn (`Accept: text/event-stream`) ===

/// `tool_call` event: the model asked for a tool call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCallEvent {
    /// The model's id of the call (the matching `tool_result` has the same).
    pub id: String,
    /// Tool name.
    pub name: String,
    /// Arguments as the model gave them (without `user_id`).
    #[serde(default)]
    pub arguments: Value,
}

/// `tool_result` event: a tool call finished.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolResultEvent {
    /// The model's id of the call.
    pub id: String,
    /// The call, as the final answer lists it.
    #[serde(flatten)]
    pub call: ToolCall,
}

/// `text` event: answer text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextEvent {
    /// The text.
    pub text: String,
}

/// One event of a streamed turn: zero or more `tool_call`, `tool_result` and `text`
/// events, then exactly one `done` (the whole answer) or `error`.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// `tool_call`.
    ToolCall(ToolCallEvent),
    /// `tool_result`.
    ToolResult(ToolResultEvent),
    /// `text`.
    Text(TextEvent),
    /// `done`: the turn's answer, as the JSON API gives it.
    Done(MessageResponse),
    /// `error`: the turn failed; the body every error has.
    Error(ErrorBody),
}

impl StreamEvent {
    /// The SSE `event:` name.
    pub fn name(&self) -> &'static str {
        match self {
            StreamEvent::ToolCall(_) => "tool_call",
            StreamEvent::ToolResult(_) => "tool_result",
            StreamEvent::Text(_) => "text",
            StreamEvent::Done(_) => "done",
            StreamEvent::Error(_) => "error",
        }
    }

    /// The SSE `data:` (one line of JSON).
    pub fn data(&self) -> String {
        let data = match self {
            StreamEvent::ToolCall(event) => serde_json::to_string(event),
            StreamEvent::ToolResult(event) => serde_json::to_string(event),
            StreamEvent::Text(event) => serde_json::to_string(event),
            StreamEvent::Done(answer) => serde_json::to_string(answer),
            StreamEvent::Error(error) => serde_json::to_string(error),
        };
        // Plain structs of strings, numbers and JSON values: serialising cannot fail.
        data.unwrap_or_default()
    }

    /// Reads one received event: `Ok(None)` for an event name this version does not know
    /// (a newer daemon may add some), `Err` for a known event with data of the wrong shape.
    pub fn parse(name: &str, data: &str) -> Result<Option<StreamEvent>, serde_json::Error> {
        Ok(Some(match name {
            "tool_call" => StreamEvent::ToolCall(serde_json::from_str(data)?),
            "tool_result" => StreamEvent::ToolResult(serde_json::from_str(data)?),
            "text" => StreamEvent::Text(serde_json::from_str(data)?),
            "done" => StreamEvent::Done(serde_json::from_str(data)?),
            "error" => StreamEvent::Error(serde_json::from_str(data)?),
            _ => return Ok(None),
        }))
    }
}

// === Errors ===

/// The body of every error the API answers (and of a streamed turn's `error` event):
/// `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `invalid_user_id`.
    pub code: String,
    /// What happened and what to do, for people.
    pub message: String,
}

impl ErrorBody {
    /// An error body.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: code.into(),
                message: message.into(),
            },
        }
    }
}

// === History ===

/// `GET /v1/users/{user_id}/history` answer: the conversation so far, oldest first.
///
/// The messages are the chat-completions messages the daemon keeps (tagged by `role`:
/// `user`, `assistant` with `content` and/or `tool_calls`, `tool`). The daemon answers with
/// its own message type; a client reads them as [`HistoryMessage`]s (the default `M`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct History<M = HistoryMessage> {
    /// Whose conversation.
    pub user_id: String,
    /// The messages, oldest first.
    pub messages: Vec<M>,
}

/// A history message, as a client reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryMessage {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// The text; `None` for an assistant message that only called tools.
    #[serde(default)]
    pub content: Option<String>,
    /// The tools an assistant message called.
    #[serde(default)]
    pub tool_calls: Vec<HistoryToolCall>,
}

/// A tool call of an assistant message in the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryToolCall {
    /// The call's id.
    #[serde(default)]
    pub id: String,
    /// The function called.
    pub function: HistoryFunction,
}

/// The function a history tool call names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryFunction {
    /// Tool name.
    pub name: String,
    /// Arguments as the model wrote them.
    #[serde(default)]
    pub arguments: String,
}

/// `DELETE /v1/users/{user_id}/history` answer: `{"deleted": true}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deleted {
    /// Always true.
    pub deleted: bool,
}

// === Health, readiness, sign-in ===

/// `GET /healthz` answer: `{"status": "ok"}` while the process serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `ok`.
    pub status: String,
}

/// `GET /readyz` answer (200 when `ready`, 503 otherwise).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    /// Every part below is up.
    pub ready: bool,
    /// `connected` or `disconnected`: the memory server's MCP session.
    pub mcp: String,
    /// `ready` or `unavailable`: the LLM actor.
    pub llm: String,
    /// The rate limits' mode: `local`, `redis`, or `fallback` (Redis is unreachable and this
    /// daemon spends only its share of the quota: still ready, but worth an alert).
    pub limits: String,
    /// `running` or `failed`: the shared actors (LLM, MCP, conversation supervisor).
    pub actors: String,
    /// The shared actors that ended while the daemon runs.
    pub failed_actors: Vec<String>,
}

/// `GET /v1/auth/mode` answer: `token` when API tokens are configured, `loopback` when
/// none are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthMode {
    /// `token` or `loopback`.
    pub mode: String,
}

/// `GET /v1/auth/whoami` answer: who the caller's credentials make it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhoAmI {
    /// `user` (a user token), `service` (a service token: any user) or `local` (loopback
    /// mode).
    pub caller: String,
    /// The user, for a user token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

#[cfg(test)]
mod tests;
