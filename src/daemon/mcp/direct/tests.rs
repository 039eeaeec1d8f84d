use serde_json::json;

use super::*;

#[test]
fn plain_names_go_in_the_header_and_others_do_not() {
    assert!(plain_name("store_memory"));
    assert!(plain_name("a.b-c/d"));
    for name in [
        "",
        " lead",
        "trail\t",
        "caf\u{e9}",
        "line\nbreak",
        "=?base64?x?=",
    ] {
        assert!(!plain_name(name), "{name:?}");
    }
}

#[test]
fn the_request_body_carries_the_lifecycle_meta_beside_the_callers() {
    let mut lifecycle = JsonObject::new();
    lifecycle.insert(
        "io.modelcontextprotocol/protocolVersion".into(),
        json!(PROTOCOL_VERSION),
    );
    let Value::Object(extra) = json!({"io.memento/idempotency-key": "k1", "traceparent": "00-x"})
    else {
        unreachable!()
    };
    let Value::Object(arguments) = json!({"user_id": "alice", "content": "hi"}) else {
        unreachable!()
    };
    let params = Params {
        name: Some("store_memory"),
        arguments: Some(&arguments),
        meta: Meta {
            lifecycle: &lifecycle,
            extra: &extra,
        },
    };
    let body = serde_json::to_value(Request {
        jsonrpc: "2.0",
        id: 7,
        method: "tools/call",
        params: &params,
    })
    .unwrap();
    assert_eq!(
        body,
        json!({
            "jsonrpc": "2.0",
            "id": 7,
            "method": "tools/call",
            "params": {
                "name": "store_memory",
                "arguments": {"user_id": "alice", "content": "hi"},
                "_meta": {
                    "io.modelcontextprotocol/protocolVersion": PROTOCOL_VERSION,
                    "io.memento/idempotency-key": "k1",
                    "traceparent": "00-x"
                }
            }
        })
    );
}

#[test]
fn answers_parse_into_text_structured_content_and_the_error_flag() {
    let answer = json!({
        "jsonrpc": "2.0",
        "id": 3,
        "result": {
            "content": [
                {"type": "text", "text": "first"},
                {"type": "image", "data": "AAAA", "mimeType": "image/png"},
                {"type": "text", "text": "second"}
            ],
            "structuredContent": {"id": "m1"},
            "isError": true
        }
    });
    let envelope: Envelope<CallResult<Value>> = serde_json::from_value(answer).unwrap();
    assert_eq!(envelope.id, Some(json!(3)));
    let result = envelope.into_result().ok().unwrap();
    let texts: Vec<_> = result
        .content
        .iter()
        .filter_map(|b| b.text.as_deref())
        .collect();
    assert_eq!(texts, ["first", "second"]);
    assert_eq!(result.structured_content, Some(json!({"id": "m1"})));
    assert_eq!(result.is_error, Some(true));

    // For the model: the same answer, its structured content skipped, not parsed.
    let skipped: Envelope<CallResult<IgnoredAny>> = serde_json::from_slice(
        br#"{"jsonrpc":"2.0","id":6,"result":{"structuredContent":{"memories":[{"id":"m1","tags":["a"]}],"total":1},"content":[{"type":"text","text":"one memory"}],"isError":false}}"#,
    )
    .unwrap();
    let skipped = skipped.into_result().ok().unwrap().without_structured();
    assert_eq!(skipped.content.len(), 1);
    assert_eq!(skipped.content[0].text.as_deref(), Some("one memory"));
    assert_eq!(skipped.structured_content, None);
    assert_eq!(skipped.is_error, Some(false));

    let rejected: Envelope<CallResult<Value>> = serde_json::from_value(json!({
        "jsonrpc": "2.0", "id": 4, "error": {"code": -32602, "message": "unknown tool"}
    }))
    .unwrap();
    match rejected.into_result() {
        Err(DirectError::Rejected(message)) => assert_eq!(message, "unknown tool"),
        _ => panic!("a JSON-RPC error is a rejection"),
    }
    let empty: Envelope<CallResult<Value>> =
        serde_json::from_value(json!({"jsonrpc": "2.0", "id": 5})).unwrap();
    assert!(matches!(
        empty.into_result(),
        Err(DirectError::Transport(_))
    ));
}
