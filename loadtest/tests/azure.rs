//! The LLM actor's real HTTP path (async-openai with Memento's HTTP service and retry
//! policy) against the Azure mock. The mock's own behaviour (and the official Python SDK
//! against it) is tested in `mock_azure.rs`.

use std::time::Duration;

use memento::daemon::llm::types::{ChatMessage, ChatRequest, FunctionDefinition, ToolDefinition};
use memento::daemon::llm::{LlmConfig, LlmError, LlmHandle, Provider};
use memento_loadtest::mock_azure::{MockConfig, MockServer};
use tokio::time::Instant;

async fn mock(adjust: impl FnOnce(&mut MockConfig)) -> MockServer {
    let mut config = MockConfig {
        port: 0,
        deployment: Some("gpt-4o-mini".into()),
        ..MockConfig::default()
    };
    adjust(&mut config);
    MockServer::start(config).await.expect("start mock")
}

fn azure(server: &MockServer, adjust: impl FnOnce(&mut LlmConfig)) -> LlmConfig {
    let mut config = LlmConfig {
        provider: Provider::Azure,
        endpoint: Some(server.endpoint()),
        deployment: Some("gpt-4o-mini".into()),
        api_key: Some("mock-key".into()),
        retry_initial: Duration::from_millis(20),
        retry_max: Duration::from_millis(200),
        ..LlmConfig::default()
    };
    adjust(&mut config);
    config
}

fn store_request(user: &str) -> ChatRequest {
    ChatRequest {
        messages: vec![ChatMessage::User {
            content: "store this recipe: chocolate cake with 2 cups flour".into(),
        }],
        tools: vec![ToolDefinition {
            kind: "function".into(),
            function: FunctionDefinition {
                name: "store_memory".into(),
                description: Some("Store content".into()),
                parameters: serde_json::json!({"type": "object", "properties": {"content": {"type": "string"}}}),
            },
        }],
        max_tokens: None,
        temperature: None,
        user: Some(user.into()),
    }
}

/// The LLM actor on the mock, its config changed by `adjust`.
async fn spawn_on(server: &MockServer, adjust: impl FnOnce(&mut LlmConfig)) -> LlmHandle {
    LlmHandle::spawn(azure(server, adjust))
        .await
        .expect("spawn")
}

/// `n` store requests at once (users `u0`, `u1`, ...), each with `seconds` to finish; every
/// one must succeed (`what` names the expectation).
async fn complete_all(llm: &LlmHandle, n: usize, seconds: u64, what: &str) {
    let calls = (0..n).map(|i| llm.complete(store_request(&format!("u{i}")), deadline(seconds)));
    for result in futures::future::join_all(calls).await {
        result.expect(what);
    }
}

fn deadline(seconds: u64) -> Instant {
    Instant::now() + Duration::from_secs(seconds)
}

#[tokio::test]
async fn azure_provider_calls_the_mock_over_http() {
    let server = mock(|_| {}).await;
    let llm = spawn_on(&server, |_| {}).await;
    let response = llm
        .complete(store_request("alice"), deadline(10))
        .await
        .expect("complete");
    match &response.message {
        ChatMessage::Assistant { tool_calls, .. } => {
            assert_eq!(tool_calls[0].function.name, "store_memory");
            let args: serde_json::Value =
                serde_json::from_str(&tool_calls[0].function.arguments).expect("json");
            assert!(
                args["content"]
                    .as_str()
                    .is_some_and(|c| c.contains("chocolate cake"))
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(response.model, "gpt-4o-mini");
    assert!(response.usage.is_some_and(|u| u.total_tokens > 0));
    let stats = server.stats();
    assert_eq!((stats.requests, stats.answered_ok), (1, 1));
    assert_eq!(stats.tool_calls_by_name.get("store_memory"), Some(&1));
}

#[tokio::test]
async fn wrong_key_and_unknown_deployment_are_not_retried() {
    let server = mock(|_| {}).await;
    let llm = spawn_on(&server, |c| c.api_key = Some("wrong".into())).await;
    let error = llm
        .complete(store_request("a"), deadline(10))
        .await
        .unwrap_err();
    assert!(
        matches!(error, LlmError::Http { status: 401, .. }),
        "{error:?}"
    );
    assert_eq!(server.stats().requests, 1, "401 is not retried");

    let llm = spawn_on(&server, |c| c.deployment = Some("nope".into())).await;
    let error = llm
        .complete(store_request("a"), deadline(10))
        .await
        .unwrap_err();
    match error {
        LlmError::Http {
            status: 404, code, ..
        } => assert_eq!(code.as_deref(), Some("DeploymentNotFound")),
        other => panic!("{other:?}"),
    }
    assert_eq!(server.stats().bad_requests, 1, "404 is not retried");
}

#[tokio::test]
async fn server_errors_are_retried_until_success() {
    let server = mock(|c| {
        c.fail_rate = 0.5;
        c.seed = 7;
    })
    .await;
    let llm = spawn_on(&server, |c| c.max_retries = 10).await;
    for i in 0..20 {
        llm.complete(store_request(&format!("u{i}")), deadline(30))
            .await
            .expect("retried to success");
    }
    let stats = server.stats();
    assert!(stats.server_errors_500 > 0, "{stats:?}");
    assert_eq!(stats.answered_ok, 20);
    assert_eq!(llm.metrics().retries.get(), stats.server_errors_500);
}

#[tokio::test]
async fn quota_429s_wait_for_retry_after_and_succeed() {
    // 60 RPM: 10 per 10-second window at the mock. Memento's own limiter is off, so the
    // mock's 429s (with retry-after-ms) are what paces the 11th request.
    let server = mock(|c| c.rpm = Some(60)).await;
    let llm = spawn_on(&server, |c| c.max_retry_after = Duration::from_secs(15)).await;
    let started = std::time::Instant::now();
    complete_all(&llm, 11, 40, "succeeds after waiting").await;
    let stats = server.stats();
    assert!(stats.rate_limited >= 1, "{stats:?}");
    assert!(llm.metrics().throttled.get() >= 1);
    assert!(stats.max_admitted_in_any_10s <= 10);
    // The retry waited for the window to reopen instead of hammering the mock.
    assert!(stats.rate_limited <= 3, "{stats:?}");
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[tokio::test]
async fn our_limiter_keeps_requests_under_the_quota() {
    // Memento configured like the deployment (600 RPM: burst 10, then 10/s): arrivals at
    // the mock never exceed the rate plus the burst, and nobody is throttled.
    let server = mock(|c| c.rpm = Some(600)).await;
    let llm = spawn_on(&server, |c| c.rpm = 600).await;
    complete_all(&llm, 35, 30, "complete").await;
    let stats = server.stats();
    assert_eq!(stats.rate_limited, 0, "{stats:?}");
    assert!(stats.max_requests_in_any_second <= 20, "{stats:?}");
}

#[tokio::test]
async fn requests_do_not_queue_behind_each_other() {
    let server = mock(|c| c.latency_ms = 200).await;
    let llm = spawn_on(&server, |_| {}).await;
    let started = std::time::Instant::now();
    complete_all(&llm, 100, 30, "complete").await;
    let elapsed = started.elapsed();
    // Serial would be 20 s; concurrent is one latency plus overhead.
    assert!(
        elapsed < Duration::from_millis(1500),
        "100 requests took {elapsed:?}"
    );
}

#[tokio::test]
async fn malformed_arguments_reach_the_caller_unchanged() {
    let server = mock(|c| c.malformed_rate = 1.0).await;
    let llm = spawn_on(&server, |_| {}).await;
    let response = llm
        .complete(store_request("m"), deadline(10))
        .await
        .expect("complete");
    match response.message {
        ChatMessage::Assistant { tool_calls, .. } => {
            assert!(
                serde_json::from_str::<serde_json::Value>(&tool_calls[0].function.arguments)
                    .is_err()
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn openai_compatible_provider_works_too() {
    let server = mock(|_| {}).await;
    let config = LlmConfig {
        provider: Provider::Openai,
        base_url: Some(format!("{}/v1", server.endpoint())),
        api_key: Some("mock-key".into()),
        model: Some("llama3".into()),
        ..LlmConfig::default()
    };
    let llm = LlmHandle::spawn(config).await.expect("spawn");
    let response = llm
        .complete(store_request("o"), deadline(10))
        .await
        .expect("complete");
    assert_eq!(response.model, "llama3");
}

#[tokio::test]
async fn hung_requests_time_out_within_the_deadline() {
    let server = mock(|c| c.hang_rate = 1.0).await;
    let llm = spawn_on(&server, |c| {
        c.request_timeout = Duration::from_millis(300);
        c.max_retries = 2;
    })
    .await;
    let started = std::time::Instant::now();
    let error = llm
        .complete(store_request("h"), deadline(5))
        .await
        .unwrap_err();
    assert!(matches!(error, LlmError::Timeout), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(server.stats().hung, 3, "first attempt and two retries");
}
