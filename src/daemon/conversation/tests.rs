use super::*;
use crate::daemon::testing::{answer, assistant_call, user};

fn call(id: &str) -> ChatMessage {
    assistant_call(id, "store_memory", "{\"content\":\"x\"}")
}

fn result(id: &str) -> ChatMessage {
    ChatMessage::Tool {
        tool_call_id: id.into(),
        content: "Successfully stored".into(),
    }
}

#[test]
fn trimming_drops_whole_oldest_turns() {
    let long = "x".repeat(400);
    let mut history = vec![
        user(&long),
        call("a"),
        result("a"),
        answer(&long),
        user("second"),
        call("b"),
        result("b"),
        answer("ok"),
    ];
    trim_history(&mut history, 100);
    assert_eq!(history.len(), 4);
    assert_eq!(history[0], user("second"));
    // A tool call and its result are never split.
    assert!(matches!(history[1], ChatMessage::Assistant { .. }));
    assert!(matches!(history[2], ChatMessage::Tool { .. }));
}

#[test]
fn the_latest_turn_is_kept_even_over_budget() {
    let mut history = vec![user(&"y".repeat(10_000)), answer("fine")];
    trim_history(&mut history, 10);
    assert_eq!(history.len(), 2);
}

#[test]
fn token_estimate_counts_tool_calls() {
    assert!(estimate_tokens(&call("id")) > 4);
    assert_eq!(estimate_tokens(&user("")), 4);
}
