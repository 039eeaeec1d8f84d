//! Memento's own chat types: what conversation actors send to the LLM actor and get back.
//!
//! They serialise to the OpenAI / Azure OpenAI chat-completions wire format (the subset
//! Memento uses), so the offline model, the Azure mock and the async-openai edge all speak
//! the same shapes. Provider-specific types (async-openai's) never leave `llm.rs`.

use serde::{Deserialize, Serialize};

/// One chat message, tagged by `role` exactly as on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "lowercase")]
pub enum ChatMessage {
    /// Instructions for the model.
    System {
        /// The system prompt.
        content: String,
    },
    /// What the person said.
    User {
        /// The person's message.
        content: String,
    },
    /// What the model said: text, tool calls, or both.
    Assistant {
        /// Text of the answer; `None` when the model only called tools.
        #[serde(default)]
        content: Option<String>,
        /// Tool calls the model asked for, in the model's order.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<ToolCall>,
    },
    /// The result of one tool call, answered to the model.
    Tool {
        /// The `id` of the [`ToolCall`] this answers.
        tool_call_id: String,
        /// The tool's result as text (JSON or prose).
        content: String,
    },
}

impl ChatMessage {
    /// Bytes of text the message carries: its content, and for an assistant message each
    /// tool call's name and arguments. The unit of every token estimate (four bytes a
    /// token), in the daemon and in the Azure mock alike.
    pub fn text_len(&self) -> usize {
        match self {
            ChatMessage::System { content }
            | ChatMessage::User { content }
            | ChatMessage::Tool { content, .. } => content.len(),
            ChatMessage::Assistant {
                content,
                tool_calls,
            } => {
                content.as_ref().map_or(0, String::len)
                    + tool_calls
                        .iter()
                        .map(|c| c.function.name.len() + c.function.arguments.len())
                        .sum::<usize>()
            }
        }
    }
}

/// A tool call requested by the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// Id chosen by the model; the tool result must echo it.
    pub id: String,
    /// Always `"function"` on the wire.
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    /// Function name and raw argument text.
    pub function: FunctionCall,
}

/// Name and arguments of a function call. `arguments` is the model's raw text: it is not
/// guaranteed to be valid JSON, and callers must treat a parse failure as a tool error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    /// The tool's name.
    pub name: String,
    /// The arguments as the model wrote them (normally a JSON object).
    pub arguments: String,
}

/// A tool offered to the model (`{"type":"function","function":{...}}` on the wire).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolDefinition {
    /// Always `"function"`.
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    /// The function's name, description and JSON Schema.
    pub function: FunctionDefinition,
}

/// A function's name, description and JSON Schema for its arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionDefinition {
    /// Tool name, as the model must call it.
    pub name: String,
    /// What the tool does and when to use it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON Schema (an object schema) of the arguments.
    #[serde(default)]
    pub parameters: serde_json::Value,
}

/// A request for one chat completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// System prompt, history and the new message, oldest first.
    pub messages: Vec<ChatMessage>,
    /// Tools the model may call; empty means none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolDefinition>,
    /// Upper bound on generated tokens; also used for rate-limit estimates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// The end user this request is for (rate-limit key; sent as `user` on the wire only
    /// as an opaque id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

impl ChatRequest {
    /// Bytes of prompt text: every message's [`ChatMessage::text_len`] plus each offered
    /// tool's name, description and parameter schema. Azure's on-arrival estimate, and so
    /// ours, is this over four, plus `max_tokens`.
    pub fn prompt_text_len(&self) -> usize {
        let messages: usize = self.messages.iter().map(ChatMessage::text_len).sum();
        let tools: usize = self
            .tools
            .iter()
            .map(|t| {
                t.function.name.len()
                    + t.function.description.as_ref().map_or(0, String::len)
                    + t.function.parameters.to_string().len()
            })
            .sum();
        messages + tools
    }
}

/// Why the model stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// A natural end of the answer.
    Stop,
    /// `max_tokens` reached.
    Length,
    /// The model asked for tool calls.
    ToolCalls,
    /// The provider's content filter stopped the answer.
    ContentFilter,
}

/// Token counts reported by the provider.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the prompt.
    pub prompt_tokens: u32,
    /// Tokens generated.
    pub completion_tokens: u32,
    /// Sum of both.
    pub total_tokens: u32,
}

/// One chat completion: the assistant message and its metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    /// The model that answered, as the provider names it (the offline model says so here).
    pub model: String,
    /// The assistant's message (always [`ChatMessage::Assistant`]).
    pub message: ChatMessage,
    /// Why generation stopped.
    pub finish_reason: FinishReason,
    /// Token usage, when the provider reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Provider's response id, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Time spent in the provider call that produced this answer (the HTTP round trip, or
    /// the offline model's work), excluding rate-limit waits, queueing and retries. Not on
    /// the wire: it lets a turn report how much of its time was the model's.
    #[serde(skip)]
    pub provider_time: std::time::Duration,
}

fn function_type() -> String {
    "function".to_owned()
}
