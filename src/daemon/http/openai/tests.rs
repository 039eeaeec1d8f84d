use std::time::Duration;

use super::request::{CompletionBody, conversation, refuse_client_tools, request_user};
use super::*;
use crate::daemon::http::auth::Caller;
use crate::daemon::llm::types::ChatMessage;
use crate::shared::config::ServerConfig;
use crate::shared::domain::UserId;

fn config(max_message_chars: usize) -> ServerConfig {
    ServerConfig {
        max_message_chars,
        ..ServerConfig::default()
    }
}

fn parse(messages: Value) -> Result<(Vec<ChatMessage>, String), OpenAiError> {
    let Value::Array(messages) = messages else {
        panic!("messages must be an array");
    };
    conversation(&config(100), &messages)
}

fn refused(messages: Value) -> OpenAiError {
    parse(messages).expect_err("refused")
}

fn body(value: Value) -> CompletionBody {
    serde_json::from_value(value).expect("a request body")
}

#[test]
fn client_messages_become_the_prior_conversation_and_the_last_message() {
    let (prior, message) = parse(json!([
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Answer"}, {"type": "text", "text": "in English."}]},
        {"role": "user", "content": "hello", "name": "ann"},
        {"role": "assistant", "content": "Hi!", "refusal": null},
        {"role": "assistant", "content": null},
        {"role": "user", "content": [{"type": "text", "text": "  what did I store?  "}]},
    ]))
    .expect("accepted");
    assert_eq!(message, "what did I store?");
    assert_eq!(
        prior,
        vec![
            ChatMessage::System {
                content: "Be brief.".into()
            },
            ChatMessage::System {
                content: "Answer\nin English.".into()
            },
            ChatMessage::User {
                content: "hello".into()
            },
            ChatMessage::Assistant {
                content: Some("Hi!".into()),
                tool_calls: Vec::new()
            },
            ChatMessage::Assistant {
                content: None,
                tool_calls: Vec::new()
            },
        ]
    );
}

#[test]
fn what_memento_cannot_honour_is_refused_with_the_parameter_named() {
    let cases = [
        (json!([]), "invalid_value"),
        (
            json!([{"role": "assistant", "content": "hi"}]),
            "invalid_value",
        ),
        (json!([{"role": "user", "content": "   "}]), "empty_message"),
        (json!([{"role": "user"}]), "invalid_value"),
        (json!([{"content": "no role"}]), "invalid_value"),
        (json!([{"role": "wizard", "content": "x"}]), "invalid_value"),
        (
            json!([{"role": "tool", "tool_call_id": "a", "content": "x"}, {"role": "user", "content": "hi"}]),
            "invalid_value",
        ),
        (
            json!([
                {"role": "assistant", "content": null, "tool_calls": [{"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "user", "content": "hi"}
            ]),
            "invalid_value",
        ),
        (
            json!([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]),
            "invalid_value",
        ),
        (json!([{"role": "user", "content": 42}]), "invalid_value"),
    ];
    for (messages, code) in cases {
        let error = refused(messages.clone());
        assert_eq!(error.api.status, StatusCode::BAD_REQUEST, "{messages}");
        assert_eq!(error.api.code, code, "{messages}: {}", error.api.message);
        assert_eq!(error.param, Some("messages"));
        assert_eq!(error.body()["error"]["type"], "invalid_request_error");
    }
}

#[test]
fn sizes_are_checked_at_the_edge() {
    let many: Vec<Value> = (0..=MAX_MESSAGES)
        .map(|i| json!({"role": "user", "content": format!("m{i}")}))
        .collect();
    let error = refused(Value::Array(many));
    assert_eq!(error.api.status, StatusCode::BAD_REQUEST);
    assert_eq!(error.api.code, "too_many_messages");

    // One message over `max_message_chars` (characters, not bytes).
    let error = refused(json!([{"role": "user", "content": "é".repeat(101)}]));
    assert_eq!(error.api.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error.api.code, "message_too_long");
    assert!(parse(json!([{"role": "user", "content": "é".repeat(100)}])).is_ok());

    // Each message fits, all together do not.
    let fits = "x".repeat(100);
    let mut messages: Vec<Value> = (0..MAX_TOTAL_CHARS_FACTOR)
        .map(|_| json!({"role": "user", "content": fits}))
        .collect();
    assert!(parse(Value::Array(messages.clone())).is_ok());
    messages.push(json!({"role": "user", "content": "one more"}));
    let error = refused(Value::Array(messages));
    assert_eq!(error.api.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error.api.code, "context_length_exceeded");
}

#[test]
fn the_user_is_the_tokens_or_else_the_user_field() {
    let alice = UserId::parse("alice").expect("valid");
    let own = Caller::User(alice.clone());
    assert_eq!(request_user(&own, None).expect("own user"), alice);
    assert_eq!(
        request_user(&own, Some("bob")).expect("field ignored"),
        alice
    );
    for caller in [Caller::Service, Caller::Local] {
        assert_eq!(
            request_user(&caller, Some("bob")).expect("field").as_str(),
            "bob"
        );
        let missing = request_user(&caller, None).expect_err("required");
        assert_eq!(missing.api.status, StatusCode::BAD_REQUEST);
        assert_eq!(missing.param, Some("user"));
        assert_eq!(missing.api.code, "missing_required_parameter");
        let long = "x".repeat(65);
        for bad in ["", ".hidden", "a/b", long.as_str()] {
            let error = request_user(&caller, Some(bad)).expect_err(bad);
            assert_eq!(error.api.status, StatusCode::BAD_REQUEST);
            assert_eq!(error.api.code, "invalid_user_id");
            assert_eq!(error.param, Some("user"));
        }
    }
}

#[test]
fn client_tools_are_refused_but_harmless_tool_choices_pass() {
    let tool = json!({"type": "function", "function": {"name": "f", "parameters": {}}});
    for (request, param) in [
        (json!({"tools": [tool]}), "tools"),
        (json!({"functions": [{"name": "f"}]}), "functions"),
        (json!({"tool_choice": "required"}), "tool_choice"),
        (
            json!({"tool_choice": {"type": "function", "function": {"name": "f"}}}),
            "tool_choice",
        ),
    ] {
        let error = refuse_client_tools(&body(request.clone())).expect_err("refused");
        assert_eq!(error.api.status, StatusCode::BAD_REQUEST, "{request}");
        assert_eq!(error.param, Some(param));
    }
    for request in [
        json!({}),
        json!({"tools": []}),
        json!({"tool_choice": "auto"}),
        json!({"tool_choice": "none"}),
        json!({"tool_choice": null}),
    ] {
        assert!(
            refuse_client_tools(&body(request.clone())).is_ok(),
            "{request}"
        );
    }
}

#[test]
fn errors_take_openais_shape_and_keep_the_status_and_retry_hint() {
    let unauthorized = OpenAiError::from_api(ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "unknown bearer token",
    ));
    assert_eq!(
        unauthorized.body(),
        json!({"error": {
            "message": "unknown bearer token",
            "type": "invalid_request_error",
            "param": null,
            "code": "invalid_api_key",
        }})
    );

    let limited = OpenAiError::from_turn(
        TurnError::Llm(crate::daemon::llm::LlmError::UserRateLimited {
            retry_after: Duration::from_millis(2500),
        }),
        "abc",
    );
    assert_eq!(limited.body()["error"]["type"], "requests");
    assert_eq!(limited.body()["error"]["code"], "rate_limit_exceeded");
    assert!(
        limited.api.message.ends_with("(trace_id abc)"),
        "{}",
        limited.api.message
    );
    let response = limited.into_response();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()[header::RETRY_AFTER], "3");

    let late = OpenAiError::from_turn(TurnError::DeadlineExceeded, "abc");
    assert_eq!(late.api.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(late.body()["error"]["type"], "server_error");
    assert_eq!(late.body()["error"]["code"], "deadline_exceeded");

    let busy = OpenAiError::from_turn(TurnError::Overloaded, "abc").into_response();
    assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(busy.headers()[header::RETRY_AFTER], "1");

    let unknown = model_not_found("gpt-4o");
    assert_eq!(unknown.api.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.body()["error"]["code"], "model_not_found");
    assert_eq!(unknown.body()["error"]["param"], "model");
}
