use serde_json::json;

use super::*;
use crate::daemon::llm::types::{FunctionCall, ToolCall};
use crate::shared::api::HistoryMessage;

/// The daemon answers the history with its own message type; clients read it with the
/// shared `History<HistoryMessage>`: both must agree on the wire.
#[test]
fn the_history_the_daemon_writes_is_the_history_clients_read() {
    let sent = History {
        user_id: "alice".to_owned(),
        messages: vec![
            ChatMessage::User {
                content: "hi".into(),
            },
            ChatMessage::Assistant {
                content: None,
                tool_calls: vec![ToolCall {
                    id: "c1".into(),
                    kind: "function".into(),
                    function: FunctionCall {
                        name: "list_tags".into(),
                        arguments: "{}".into(),
                    },
                }],
            },
            ChatMessage::Tool {
                tool_call_id: "c1".into(),
                content: "{\"tags\": []}".into(),
            },
            ChatMessage::Assistant {
                content: Some("You have no tags yet.".into()),
                tool_calls: Vec::new(),
            },
        ],
    };
    let wire = serde_json::to_string(&sent).unwrap();
    let read: History<HistoryMessage> = serde_json::from_str(&wire).unwrap();
    assert_eq!(read.user_id, "alice");
    let roles: Vec<&str> = read.messages.iter().map(|m| m.role.as_str()).collect();
    assert_eq!(roles, ["user", "assistant", "tool", "assistant"]);
    assert_eq!(read.messages[1].content, None);
    assert_eq!(read.messages[1].tool_calls[0].function.name, "list_tags");
    assert_eq!(
        read.messages[3].content.as_deref(),
        Some("You have no tags yet.")
    );
}

#[test]
fn tool_calls_keep_their_result_and_error_flag() {
    let record = ToolCallRecord {
        id: "c1".into(),
        name: "delete_memory".into(),
        arguments: json!({"id": "x"}),
        result: "no memory with id x".into(),
        is_error: true,
    };
    let call = api_tool_call(&record);
    assert_eq!(
        serde_json::to_value(&call).unwrap(),
        json!({"name": "delete_memory", "arguments": {"id": "x"},
               "result": "no memory with id x", "is_error": true})
    );
}
