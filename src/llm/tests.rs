use super::*;

fn request(user: &str) -> ChatRequest {
    ChatRequest {
        messages: vec![ChatMessage::User {
            content: "store this: tea".into(),
        }],
        tools: Vec::new(),
        max_tokens: Some(10),
        temperature: None,
        user: Some(user.into()),
    }
}

#[tokio::test]
async fn offline_provider_answers_through_the_actor() {
    let handle = LlmHandle::spawn(LlmConfig::default()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let response = handle.complete(request("alice"), deadline).await.unwrap();
    assert_eq!(response.model, offline::OFFLINE_MODEL_NAME);
    assert_eq!(handle.metrics().successes.get(), 1);
    assert_eq!(handle.provider(), Provider::Offline);
}

#[tokio::test]
async fn rpm_limit_paces_requests() {
    // 600 RPM: a burst of 100 (a tenth of a minute), then one every 100 ms.
    let config = LlmConfig {
        rpm: 600,
        ..LlmConfig::default()
    };
    let handle = LlmHandle::spawn(config).await.unwrap();
    let started = std::time::Instant::now();
    let deadline = Instant::now() + Duration::from_secs(30);
    let calls = (0..103).map(|i| handle.complete(request(&format!("u{i}")), deadline));
    for result in futures::future::join_all(calls).await {
        result.unwrap();
    }
    // 100 from the burst, the 3 beyond it need about 300 ms of refill.
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    assert!(handle.metrics().rate_limit_wait.count() >= 103);
}

#[tokio::test]
async fn a_noisy_user_is_limited_alone() {
    let config = LlmConfig {
        per_user_rpm: 6,
        ..LlmConfig::default()
    };
    let handle = LlmHandle::spawn(config).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    // Burst of 1 for 6 RPM: the second immediate request of the same user is refused.
    handle.complete(request("noisy"), deadline).await.unwrap();
    let second = handle.complete(request("noisy"), deadline).await;
    assert!(
        matches!(second, Err(LlmError::UserRateLimited { retry_after }) if retry_after > Duration::ZERO),
        "{second:?}"
    );
    // Others are unaffected.
    handle.complete(request("quiet"), deadline).await.unwrap();
}

#[tokio::test]
async fn a_passed_deadline_while_waiting_fails_cleanly() {
    let config = LlmConfig {
        rpm: 6,
        ..LlmConfig::default()
    };
    let handle = LlmHandle::spawn(config).await.unwrap();
    let deadline = Instant::now() + Duration::from_millis(300);
    handle.complete(request("a"), deadline).await.unwrap();
    let second = handle.complete(request("b"), deadline).await;
    assert!(
        matches!(second, Err(LlmError::DeadlineExceeded)),
        "{second:?}"
    );
}

#[test]
fn http_errors_keep_status_code_and_hints() {
    let mut headers = http::HeaderMap::new();
    headers.insert("retry-after-ms", "300".parse().unwrap());
    let error = LlmError::from_http(
        429,
        &headers,
        r#"{"error":{"code":"429","message":"Requests ... have exceeded token rate limit"}}"#,
    );
    assert!(error.is_retryable());
    assert_eq!(error.retry_after(), Some(Duration::from_millis(300)));
    for status in [400, 401, 403, 404] {
        assert!(!LlmError::from_http(status, &http::HeaderMap::new(), "{}").is_retryable());
    }
    for status in [408, 500, 502, 503, 504] {
        assert!(LlmError::from_http(status, &http::HeaderMap::new(), "").is_retryable());
    }
    let filtered = LlmError::from_http(
        400,
        &http::HeaderMap::new(),
        r#"{"error":{"code":"content_filter","message":"blocked","param":"prompt"}}"#,
    );
    assert!(matches!(filtered, LlmError::ContentFilter));
    assert!(!filtered.is_retryable());
}

#[test]
fn providers_need_their_settings() {
    let azure = LlmConfig {
        provider: Provider::Azure,
        ..LlmConfig::default()
    };
    assert!(azure.validate().is_err());
    let azure = LlmConfig {
        provider: Provider::Azure,
        endpoint: Some("https://x.openai.azure.com".into()),
        api_key: Some("k".into()),
        deployment: Some("gpt-4o-mini".into()),
        ..LlmConfig::default()
    };
    assert!(azure.validate().is_ok());
    assert!(
        !format!("{azure:?}").contains("\"k\""),
        "the key is redacted"
    );
}

#[test]
fn token_estimates_include_max_tokens() {
    let estimate = estimate_tokens(&request("x"));
    assert!(estimate >= 10 && estimate < 20, "{estimate}");
}

#[test]
fn wire_responses_decode() {
    let wire: WireResponse = serde_json::from_str(
        r#"{"id":"chatcmpl-1","model":"gpt-4o-mini","choices":[{"index":0,"finish_reason":"tool_calls","message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"store_memory","arguments":"{\"content\":\"x\"}"}}]}}],"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}"#,
    )
    .unwrap();
    let response = wire.into_response().unwrap();
    assert_eq!(response.finish_reason, FinishReason::ToolCalls);
    assert_eq!(response.usage.unwrap().total_tokens, 12);
    match response.message {
        ChatMessage::Assistant { tool_calls, .. } => {
            assert_eq!(tool_calls[0].function.name, "store_memory")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn text_len_counts_content_and_tool_calls() {
    use crate::llm::types::{FunctionCall, ToolCall};
    let user = ChatMessage::User {
        content: "héllo".into(),
    };
    assert_eq!(user.text_len(), 6, "bytes, not characters");
    let assistant = ChatMessage::Assistant {
        content: Some("ok".into()),
        tool_calls: vec![ToolCall {
            id: "call_1".into(),
            kind: "function".into(),
            function: FunctionCall {
                name: "get_memory".into(),
                arguments: r#"{"id":"x"}"#.into(),
            },
        }],
    };
    assert_eq!(assistant.text_len(), 2 + 10 + 10);
}
