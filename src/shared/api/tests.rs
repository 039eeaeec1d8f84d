use serde_json::json;

use super::memories::{MemoryList, MemoryQuery};
use super::*;

#[test]
fn a_message_response_round_trips_in_the_documented_shape() {
    let body = json!({
        "reply": "ok",
        "tool_calls": [{"name": "store_memory", "arguments": {"content": "x"},
                        "result": "stored", "is_error": false}],
        "trace_id": "abc",
        "timings": {"turn_ms": 3.0, "llm_ms": 1.0, "tools_ms": 1.5},
    });
    let parsed: MessageResponse = serde_json::from_value(body.clone()).expect("parse");
    assert_eq!(parsed.tool_calls[0].name, "store_memory");
    assert_eq!(parsed.timings.tools_ms, 1.5);
    assert!(parsed.succeeded("store_memory"));
    assert!(!parsed.succeeded("delete_memory"));
    assert_eq!(serde_json::to_value(&parsed).expect("serialize"), body);
    let request: MessageRequest = serde_json::from_str(r#"{"message":"hi"}"#).expect("request");
    assert_eq!(request.message, "hi");
}

#[test]
fn stream_events_have_the_documented_names_and_data() {
    let cases = [
        (
            "tool_call",
            json!({"id": "c1", "name": "list_tags", "arguments": {}}),
        ),
        (
            "tool_result",
            json!({"id": "c1", "name": "list_tags", "arguments": {}, "result": "[]",
                   "is_error": true}),
        ),
        ("text", json!({"text": "Hello"})),
        (
            "done",
            json!({"reply": "Hello", "tool_calls": [], "trace_id": "t",
                   "timings": {"turn_ms": 1.0, "llm_ms": 0.5, "tools_ms": 0.0}}),
        ),
        (
            "error",
            json!({"error": {"code": "deadline_exceeded", "message": "too slow"}}),
        ),
    ];
    for (name, data) in cases {
        let event = StreamEvent::parse(name, &data.to_string())
            .expect("parse")
            .expect("known");
        assert_eq!(event.name(), name);
        let back: Value = serde_json::from_str(&event.data()).expect("json");
        assert_eq!(back, data, "{name}");
    }
    let StreamEvent::ToolResult(result) = StreamEvent::parse("tool_result", &cases_tool_result())
        .expect("parse")
        .expect("known")
    else {
        panic!("not a tool_result");
    };
    assert!(result.call.is_error);
    assert_eq!(StreamEvent::parse("progress", "{}").expect("unknown"), None);
    assert!(StreamEvent::parse("done", r#"{"no_reply": 1}"#).is_err());
}

fn cases_tool_result() -> String {
    json!({"id": "c1", "name": "delete_memory", "arguments": {"id": "x"}, "result": "Error",
           "is_error": true})
    .to_string()
}

#[test]
fn the_error_body_is_code_and_message_under_error() {
    let body = ErrorBody::new("overloaded", "try again");
    assert_eq!(
        serde_json::to_value(&body).expect("json"),
        json!({"error": {"code": "overloaded", "message": "try again"}})
    );
}

#[test]
fn whoami_names_the_user_only_for_a_user_token() {
    let service = WhoAmI {
        caller: "service".into(),
        user_id: None,
    };
    assert_eq!(
        serde_json::to_value(&service).expect("json"),
        json!({"caller": "service"})
    );
    let user: WhoAmI =
        serde_json::from_value(json!({"caller": "user", "user_id": "alice"})).expect("parse");
    assert_eq!(user.user_id.as_deref(), Some("alice"));
}

#[test]
fn history_messages_read_every_role() {
    let history: History = serde_json::from_value(json!({
        "user_id": "alice",
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "c1", "type": "function",
                 "function": {"name": "list_tags", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "{}"},
            {"role": "assistant", "content": "Hello"},
        ],
    }))
    .expect("parse");
    assert_eq!(history.messages.len(), 4);
    assert_eq!(history.messages[1].content, None);
    assert_eq!(history.messages[1].tool_calls[0].function.name, "list_tags");
    assert_eq!(history.messages[3].content.as_deref(), Some("Hello"));
}

#[test]
fn memory_bodies_read_the_tools_structured_content() {
    let list: MemoryList = serde_json::from_value(json!({
        "count": 1,
        "memories": [{
            "id": "0190f5c8-7d3e-7c4a-9b1e-2f1a3b4c5d6e",
            "filename": "plan.txt", "stored_as": "20240715_143052_plan.txt",
            "description": "", "tags": ["work"], "created_at": "2024-07-15T14:30:52.123456Z",
            "size_bytes": 9, "preview": "the plan",
        }],
    }))
    .expect("parse");
    assert_eq!(list.memories[0].meta.tags, ["work"]);
    let again = serde_json::to_value(&list).expect("json");
    assert_eq!(
        again["memories"][0]["created_at"],
        "2024-07-15T14:30:52.123456Z"
    );
    assert_eq!(
        again["memories"][0]["id"],
        "0190f5c8-7d3e-7c4a-9b1e-2f1a3b4c5d6e"
    );
    let query = MemoryQuery {
        query: Some("plan".into()),
        limit: Some(5),
        ..MemoryQuery::default()
    };
    assert_eq!(
        serde_json::to_value(&query).expect("json"),
        json!({"query": "plan", "limit": 5})
    );
}
