//! Memento's own chat types: what conversation actors send to the LLM actor and get back.
//!
//! They serialise to the OpenAI / Azure OpenAI chat-completions wire format (the subset
//! Memento uses), so the offline model, the Azure mock and the async-openai edge all speak
//! the same shapes. Provider-specific types (async-openai's) never leave `llm.rs`.
//!
//! The daemon's own requests are [`Prompt`]s: messages and tools held as [`SharedMessage`]s
//! and a [`ToolSet`], each serialised to its wire JSON once and shared (by reference count)
//! by every round of a turn, so a round clones no JSON tree and serialises only what is new.
//! [`ChatRequest`] is the same request as one plain value (what the Azure mock parses, what
//! tests and the offline model read).

use std::ops::Deref;
use std::sync::Arc;

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
    /// tool's [`ToolDefinition::text_len`]. Azure's on-arrival estimate, and so ours, is
    /// this over four, plus `max_tokens`.
    pub fn prompt_text_len(&self) -> usize {
        let messages: usize = self.messages.iter().map(ChatMessage::text_len).sum();
        let tools: usize = self.tools.iter().map(ToolDefinition::text_len).sum();
        messages + tools
    }

    /// Tokens this request may use, estimated before sending ([`crate::shared::tokens`]).
    pub fn estimated_tokens(&self) -> u32 {
        crate::shared::tokens::of_request(self.prompt_text_len(), self.max_tokens)
    }
}

impl ToolDefinition {
    /// Bytes of text the tool adds to a prompt: its name, description and serialised
    /// parameter schema.
    pub fn text_len(&self) -> usize {
        self.function.name.len()
            + self.function.description.as_ref().map_or(0, String::len)
            + self.function.parameters.to_string().len()
    }
}

/// A message with its wire JSON, serialised once. Cloning it is a reference count.
#[derive(Clone)]
pub struct SharedMessage(Arc<EncodedMessage>);

struct EncodedMessage {
    message: ChatMessage,
    json: Box<str>,
    text_len: usize,
}

impl SharedMessage {
    /// `message`, serialised now.
    pub fn new(message: ChatMessage) -> SharedMessage {
        let json = to_json(&message);
        let text_len = message.text_len();
        SharedMessage(Arc::new(EncodedMessage {
            message,
            json,
            text_len,
        }))
    }

    /// The message.
    pub fn message(&self) -> &ChatMessage {
        &self.0.message
    }

    /// Its wire JSON (one object).
    pub fn json(&self) -> &str {
        &self.0.json
    }

    /// [`ChatMessage::text_len`], computed once.
    pub fn text_len(&self) -> usize {
        self.0.text_len
    }
}

impl Deref for SharedMessage {
    type Target = ChatMessage;

    fn deref(&self) -> &ChatMessage {
        &self.0.message
    }
}

impl From<ChatMessage> for SharedMessage {
    fn from(message: ChatMessage) -> SharedMessage {
        SharedMessage::new(message)
    }
}

impl std::fmt::Debug for SharedMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.message.fmt(f)
    }
}

impl PartialEq for SharedMessage {
    fn eq(&self, other: &SharedMessage) -> bool {
        self.0.message == other.0.message
    }
}

/// The tools offered to the model, serialised once (when the MCP tools are listed) with
/// their prompt size; every LLM round shares it through an `Arc`.
#[derive(Debug, Default, PartialEq)]
pub struct ToolSet {
    definitions: Vec<ToolDefinition>,
    /// The wire JSON of `definitions` (one array).
    json: Box<str>,
    /// Sum of [`ToolDefinition::text_len`].
    text_len: usize,
}

impl ToolSet {
    /// `definitions`, serialised now.
    pub fn new(definitions: Vec<ToolDefinition>) -> ToolSet {
        let json = to_json(&definitions);
        let text_len = definitions.iter().map(ToolDefinition::text_len).sum();
        ToolSet {
            definitions,
            json,
            text_len,
        }
    }

    /// The definitions.
    pub fn definitions(&self) -> &[ToolDefinition] {
        &self.definitions
    }

    /// Their wire JSON (one array).
    pub fn json(&self) -> &str {
        &self.json
    }

    /// Bytes of prompt text the tools add.
    pub fn text_len(&self) -> usize {
        self.text_len
    }
}

impl Deref for ToolSet {
    type Target = [ToolDefinition];

    fn deref(&self) -> &[ToolDefinition] {
        &self.definitions
    }
}

/// JSON of a chat type. Serialising these types cannot fail (no map has a non-string key);
/// an empty object stands in if it ever did, and the provider then rejects the request.
fn to_json<T: Serialize + ?Sized>(value: &T) -> Box<str> {
    serde_json::to_string(value)
        .unwrap_or_else(|_| "{}".to_owned())
        .into_boxed_str()
}

/// A chat request as the daemon sends it: the conversation so far (system prompt and
/// history, shared by every round of a turn), the turn's own messages, and the tools,
/// each already serialised.
#[derive(Debug, Clone, Default)]
pub struct Prompt {
    /// System prompt and history, oldest first: one allocation shared by every round.
    pub context: Arc<[SharedMessage]>,
    /// The turn's messages after the context: the person's message, then each round's
    /// tool calls and results.
    pub turn: Vec<SharedMessage>,
    /// Tools the model may call; `None` (or an empty set) means none.
    pub tools: Option<Arc<ToolSet>>,
    /// Upper bound on generated tokens; also used for rate-limit estimates.
    pub max_tokens: Option<u32>,
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// The end user (as in [`ChatRequest::user`]).
    pub user: Option<String>,
}

impl Prompt {
    /// Every message, oldest first.
    pub fn messages(&self) -> impl Iterator<Item = &SharedMessage> {
        self.context.iter().chain(self.turn.iter())
    }

    /// The tools offered, if any.
    pub fn tools(&self) -> Option<&ToolSet> {
        self.tools.as_deref().filter(|tools| !tools.is_empty())
    }

    /// As [`ChatRequest::prompt_text_len`], from the sizes computed at serialisation.
    pub fn prompt_text_len(&self) -> usize {
        self.messages().map(SharedMessage::text_len).sum::<usize>()
            + self.tools().map_or(0, ToolSet::text_len)
    }

    /// Tokens this request may use, estimated before sending ([`crate::shared::tokens`]).
    pub fn estimated_tokens(&self) -> u32 {
        crate::shared::tokens::of_request(self.prompt_text_len(), self.max_tokens)
    }

    /// The same request as one plain value (deep copies: for the offline model and tests).
    pub fn to_chat_request(&self) -> ChatRequest {
        ChatRequest {
            messages: self.messages().map(|m| m.message().clone()).collect(),
            tools: self
                .tools()
                .map(|t| t.definitions().to_vec())
                .unwrap_or_default(),
            max_tokens: self.max_tokens,
            temperature: self.temperature,
            user: self.user.clone(),
        }
    }
}

impl From<ChatRequest> for Prompt {
    fn from(request: ChatRequest) -> Prompt {
        Prompt {
            context: request
                .messages
                .into_iter()
                .map(SharedMessage::new)
                .collect(),
            turn: Vec::new(),
            tools: (!request.tools.is_empty()).then(|| Arc::new(ToolSet::new(request.tools))),
            max_tokens: request.max_tokens,
            temperature: request.temperature,
            user: request.user,
        }
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
