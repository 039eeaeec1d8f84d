//! The built-in offline model: deterministic rules behind the same chat types as a real LLM,
//! so Memento works end to end without an API key, and the Azure mock has a brain.
//!
//! # How it answers
//!
//! - **The conversation ends with a person's message**: [`classify`] reads it (store,
//!   retrieve, list tags, delete, show, or small talk) and the model answers with a real
//!   OpenAI-format `tool_calls` entry, or with plain text for small talk.
//! - **The conversation ends with tool results**: the results of the last round are turned
//!   into a short answer. Two cases call a tool again instead: forgetting by description
//!   ("forget the wifi password") searches first and then deletes the best match, and a call
//!   whose arguments the daemon reported as invalid JSON is issued again (at most
//!   [`MAX_TOOL_ROUNDS`] rounds per turn).
//!
//! # Invariants
//!
//! - It only calls tools offered in the request, and never passes a `user_id`: the daemon
//!   binds the user, the model never chooses it.
//! - It never claims success on an error result (`Error: ...`, "tool unavailable").
//! - It never panics and is linear in its input: messages are parsed by hand on a
//!   case-folded copy that keeps the original's byte offsets, with no regex and no
//!   per-call setup.
//! - The same request always gets the same answer (tool-call ids are a hash of the
//!   conversation). The model marks itself only through [`ChatResponse::model`].

use super::types::{
    ChatMessage, ChatRequest, ChatResponse, FinishReason, FunctionCall, ToolCall, Usage,
};

mod intent;
mod lexicon;
mod reply;
mod results;
mod text;

pub use intent::classify;
use lexicon::*;
use reply::*;
use results::*;
use text::*;

/// The model name in every offline response.
pub const OFFLINE_MODEL_NAME: &str = "memento-offline-1";

/// Most tool rounds the model starts within one turn (a search, a delete, one retry).
pub const MAX_TOOL_ROUNDS: usize = 3;

/// The offline model. Stateless and cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct OfflineModel {
    _private: (),
}

/// What a person's message asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intent {
    /// Keep `content`.
    Store {
        /// The text to keep, as the person wrote it.
        content: String,
        /// Suggested filename (`recipe.txt`, `meeting_summary.txt`, or a slug).
        filename: String,
        /// One-line description.
        description: String,
        /// Tags: the kind of thing, then topical keywords.
        tags: Vec<String>,
    },
    /// Search memories; neither a query nor tags lists the newest.
    Retrieve {
        /// Key words.
        query: Option<String>,
        /// Tag filter ("tagged work").
        tags: Vec<String>,
    },
    /// List the tags in use.
    ListTags,
    /// Forget something: by id, or by searching for `query` first. Neither means the
    /// person did not say what (the model asks).
    Delete {
        /// The memory id, when given.
        id: Option<String>,
        /// Key words to search for otherwise.
        query: Option<String>,
    },
    /// Show one memory by id.
    Show {
        /// The memory id.
        id: String,
    },
    /// Anything else: small talk, thanks, questions about Memento.
    Chat,
}

impl OfflineModel {
    /// A model.
    pub fn new() -> OfflineModel {
        OfflineModel::default()
    }

    /// Answers one request. Never panics.
    pub fn complete(&self, request: &ChatRequest) -> ChatResponse {
        let seed = conversation_hash(&request.messages);
        let offered = |name: &str| request.tools.iter().any(|t| t.function.name == name);
        let mut message = match request.messages.last() {
            Some(ChatMessage::Tool { .. }) => after_tools(&request.messages, &offered, seed),
            Some(ChatMessage::User { content }) => answer(content, &offered, seed),
            Some(ChatMessage::Assistant { .. }) => {
                text("Is there anything else you'd like me to remember or look up?".into())
            }
            Some(ChatMessage::System { .. }) | None => text(GREETING.into()),
        };
        let mut finish_reason = match &message {
            ChatMessage::Assistant { tool_calls, .. } if !tool_calls.is_empty() => {
                FinishReason::ToolCalls
            }
            _ => FinishReason::Stop,
        };
        // A text answer longer than `max_tokens` is cut, as a real model's would be.
        if let (
            Some(max_tokens),
            ChatMessage::Assistant {
                content: Some(content),
                tool_calls,
            },
        ) = (request.max_tokens, &mut message)
            && tool_calls.is_empty()
        {
            let max_bytes = usize::try_from(max_tokens)
                .unwrap_or(usize::MAX)
                .saturating_mul(4);
            if content.len() > max_bytes {
                let mut end = max_bytes;
                while !content.is_char_boundary(end) {
                    end -= 1;
                }
                content.truncate(end);
                finish_reason = FinishReason::Length;
            }
        }
        let prompt_tokens = estimate_prompt(request);
        let completion_tokens = tokens(message.text_len());
        ChatResponse {
            model: OFFLINE_MODEL_NAME.to_owned(),
            message,
            finish_reason,
            usage: Some(Usage {
                prompt_tokens,
                completion_tokens,
                total_tokens: prompt_tokens.saturating_add(completion_tokens),
            }),
            id: Some(format!("offline-{seed:016x}")),
            provider_time: std::time::Duration::ZERO,
        }
    }
}

#[cfg(test)]
mod tests;
