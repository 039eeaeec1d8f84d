use serde_json::json;

use super::*;

#[test]
fn commands_parse() {
    assert_eq!(parse_input("  "), Ok(Input::Empty));
    assert_eq!(parse_input("/quit"), Ok(Input::Quit));
    assert_eq!(parse_input("/history"), Ok(Input::History));
    assert_eq!(parse_input("/reset"), Ok(Input::Reset));
    assert_eq!(
        parse_input("/user bob"),
        Ok(Input::SwitchUser(UserId::parse("bob").unwrap()))
    );
    assert!(
        parse_input("/user ../x")
            .unwrap_err()
            .contains("invalid user_id")
    );
    assert!(parse_input("/user").is_err());
    assert!(
        parse_input("/frobnicate")
            .unwrap_err()
            .contains("unknown command")
    );
    assert_eq!(
        parse_input("store this: x"),
        Ok(Input::Message("store this: x".into()))
    );
}

#[test]
fn replies_render_like_the_seed() {
    let reply = TurnReply {
        reply: "I've stored it.".into(),
        tool_calls: vec![ToolCall {
            name: "store_memory".into(),
            arguments: json!({"content": "x"}),
            result: "Successfully stored".into(),
            is_error: false,
        }],
        trace_id: "abc".into(),
    };
    assert_eq!(
        render_reply(&reply, false, false),
        "🧠 Memento: I've stored it."
    );
    let verbose = render_reply(&reply, true, false);
    assert!(verbose.contains("store_memory"));
    assert!(verbose.contains("trace_id: abc"));
}

#[test]
fn history_renders_readably() {
    let messages: Vec<HistoryMessage> = serde_json::from_value(json!([
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": null, "tool_calls": [{"function": {"name": "list_tags"}}]},
        {"role": "tool", "content": "{}"},
        {"role": "assistant", "content": "Hello"},
    ]))
    .unwrap();
    let text = render_history(&messages);
    assert_eq!(text, "you: hi\n   (called list_tags)\n🧠 Memento: Hello");
    assert_eq!(render_history(&[]), "(no conversation yet)");
}
