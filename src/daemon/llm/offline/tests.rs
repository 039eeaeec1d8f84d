//! Tests of the offline model, one file per concern:
//! - `intent`: what a person's message asks for, and the call it becomes;
//! - `results`: answers to tool results (confirmations, lists, errors, follow-up calls);
//! - `robustness`: determinism, `max_tokens`, garbage input, case folding.

use serde_json::Value;

use super::*;
use crate::daemon::llm::types::{FunctionDefinition, ToolDefinition};
use crate::daemon::testing::{assistant_call, user};

const ALL_TOOLS: &[&str] = &[
    "store_memory",
    "retrieve_memories",
    "get_memory",
    "delete_memory",
    "list_tags",
];

const ID: &str = "0190c2a4-7b1e-7000-8000-00000000abcd";

fn tools(names: &[&str]) -> Vec<ToolDefinition> {
    names
        .iter()
        .map(|name| ToolDefinition {
            kind: "function".into(),
            function: FunctionDefinition {
                name: (*name).into(),
                description: Some(format!("The {name} tool")),
                parameters: serde_json::json!({"type": "object"}),
            },
        })
        .collect()
}

fn request(messages: Vec<ChatMessage>, offered: &[&str]) -> ChatRequest {
    ChatRequest {
        messages,
        tools: tools(offered),
        max_tokens: None,
        temperature: None,
        user: None,
    }
}

fn ask(message: &str) -> ChatResponse {
    OfflineModel::new().complete(&request(
        vec![
            ChatMessage::System {
                content: "You are Memento.".into(),
            },
            user(message),
        ],
        ALL_TOOLS,
    ))
}

fn calls(response: &ChatResponse) -> Vec<(String, Value)> {
    match &response.message {
        ChatMessage::Assistant { tool_calls, .. } => tool_calls
            .iter()
            .map(|c| {
                let args: Value = serde_json::from_str(&c.function.arguments)
                    .unwrap_or_else(|e| panic!("arguments are not JSON ({e}): {c:?}"));
                (c.function.name.clone(), args)
            })
            .collect(),
        other => panic!("not an assistant message: {other:?}"),
    }
}

fn reply(response: &ChatResponse) -> String {
    match &response.message {
        ChatMessage::Assistant { content, .. } => content.clone().unwrap_or_default(),
        other => panic!("not an assistant message: {other:?}"),
    }
}
/// The conversation after one tool round: the person's message, the call, its result.
fn after_tool(message: &str, tool: &str, args: &str, result: &str) -> ChatResponse {
    after_tool_with(message, tool, args, result, ALL_TOOLS)
}

fn after_tool_with(
    message: &str,
    tool: &str,
    args: &str,
    result: &str,
    offered: &[&str],
) -> ChatResponse {
    OfflineModel::new().complete(&request(
        vec![
            ChatMessage::System {
                content: "sys".into(),
            },
            user(message),
            assistant_call("call_1", tool, args),
            ChatMessage::Tool {
                tool_call_id: "call_1".into(),
                content: result.into(),
            },
        ],
        offered,
    ))
}

mod intent;
mod results;
mod robustness;
