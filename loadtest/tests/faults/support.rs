//! What every fault test shares: a bound on each test, the Azure mock and the scripted
//! model, and readers of a turn's tool calls.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use memento::daemon::llm::Provider;
use memento::daemon::llm::types::{ChatMessage, ChatRequest, FunctionCall, ToolCall};
use memento::shared::config::Config;
use memento_loadtest::mock_azure::{Action, MockConfig, MockServer, Script};
use serde_json::Value;

pub const DEPLOYMENT: &str = "gpt-4o-mini";
/// No test may take longer than this, whatever goes wrong.
pub const TEST_LIMIT: Duration = Duration::from_secs(90);

/// Runs a test body, failing instead of hanging past [`TEST_LIMIT`].
pub async fn bounded<T>(body: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_LIMIT, body)
        .await
        .unwrap_or_else(|_| panic!("the test did not finish within {TEST_LIMIT:?}"))
}

pub async fn mock_on(port: u16, adjust: impl FnOnce(&mut MockConfig)) -> MockServer {
    let mut config = MockConfig {
        port,
        deployment: Some(DEPLOYMENT.into()),
        ..MockConfig::default()
    };
    adjust(&mut config);
    MockServer::start(config).await.expect("start mock")
}

pub async fn mock(adjust: impl FnOnce(&mut MockConfig)) -> MockServer {
    mock_on(0, adjust).await
}

/// Replaces a mock by a new one with other knobs on the same port (the daemon's endpoint
/// does not change).
pub async fn restart_mock(old: MockServer, adjust: impl FnOnce(&mut MockConfig)) -> MockServer {
    let port = old.addr().port();
    old.shutdown().await;
    mock_on(port, adjust).await
}

/// Points the daemon's LLM at the Azure mock, with quick retries.
pub fn use_mock(config: &mut Config, server: &MockServer) {
    use_azure_at(config, &server.endpoint());
}

/// Like [`use_mock`], for a mock that starts later at `endpoint`.
pub fn use_azure_at(config: &mut Config, endpoint: &str) {
    config.llm.provider = Provider::Azure;
    config.llm.endpoint = Some(endpoint.to_owned());
    config.llm.deployment = Some(DEPLOYMENT.into());
    config.llm.api_key = Some("mock-key".into());
    config.llm.retry_initial = Duration::from_millis(20);
    config.llm.retry_max = Duration::from_millis(200);
}

pub fn tool_calls(body: &Value) -> Vec<Value> {
    body["tool_calls"].as_array().cloned().unwrap_or_default()
}

/// The JSON a tool returned (retrieve_memories, get_memory).
pub fn result_json(call: &Value) -> Value {
    serde_json::from_str(call["result"].as_str().unwrap_or_default())
        .unwrap_or_else(|e| panic!("tool result is not JSON ({e}): {call}"))
}

/// The single call of a turn, which must be `name`.
pub fn only_call(body: &Value, name: &str) -> Value {
    let calls = tool_calls(body);
    assert_eq!(calls.len(), 1, "one tool call expected: {body}");
    assert_eq!(calls[0]["name"], name, "{body}");
    calls[0].clone()
}

/// The mock with `script` as its model, on the OpenAI-compatible path (key
/// `scripted-key`): returns its base URL and the mock (its requests and hold counts).
pub async fn scripted_model(script: Script) -> (String, MockServer) {
    let config = MockConfig {
        port: 0,
        api_key: "scripted-key".into(),
        ..MockConfig::default()
    };
    let mock = MockServer::start_scripted(config, script)
        .await
        .expect("start the scripted mock");
    (mock.openai_base_url(), mock)
}

pub fn use_scripted(config: &mut Config, base_url: &str) {
    config.llm.provider = Provider::Openai;
    config.llm.base_url = Some(base_url.to_owned());
    config.llm.model = Some("scripted".into());
    config.llm.api_key = Some("scripted-key".into());
}

pub fn last_user_message(request: &ChatRequest) -> &str {
    request
        .messages
        .iter()
        .rev()
        .find_map(|m| match m {
            ChatMessage::User { content } => Some(content.as_str()),
            _ => None,
        })
        .unwrap_or("")
}

pub fn ends_with_tool_results(request: &ChatRequest) -> bool {
    matches!(request.messages.last(), Some(ChatMessage::Tool { .. }))
}

/// A model that asks for `tool_call` and, once it has the result, answers `reply`.
pub fn one_call_then_reply(tool_call: ToolCall, reply: &'static str) -> Script {
    Arc::new(move |request: &ChatRequest| {
        if ends_with_tool_results(request) {
            return Action::Say(ChatMessage::Assistant {
                content: Some(reply.into()),
                tool_calls: Vec::new(),
            });
        }
        Action::Say(ChatMessage::Assistant {
            content: None,
            tool_calls: vec![tool_call.clone()],
        })
    })
}

pub fn call(id: &str, name: &str, arguments: Value) -> ToolCall {
    ToolCall {
        id: id.into(),
        kind: "function".into(),
        function: FunctionCall {
            name: name.into(),
            arguments: arguments.to_string(),
        },
    }
}
