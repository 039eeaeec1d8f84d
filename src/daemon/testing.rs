//! Chat messages the daemon's unit tests build (conversation, history, offline model).

use crate::daemon::llm::types::{ChatMessage, FunctionCall, ToolCall};

/// A user message.
pub(crate) fn user(text: &str) -> ChatMessage {
    ChatMessage::User {
        content: text.into(),
    }
}

/// An assistant's text answer.
pub(crate) fn answer(text: &str) -> ChatMessage {
    ChatMessage::Assistant {
        content: Some(text.into()),
        tool_calls: Vec::new(),
    }
}

/// An assistant message calling `tool` with `args` (JSON text) as call `id`.
pub(crate) fn assistant_call(id: &str, tool: &str, args: &str) -> ChatMessage {
    ChatMessage::Assistant {
        content: None,
        tool_calls: vec![ToolCall {
            id: id.into(),
            kind: "function".into(),
            function: FunctionCall {
                name: tool.into(),
                arguments: args.into(),
            },
        }],
    }
}
