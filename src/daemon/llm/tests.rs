use std::time::Duration;

use tokio::time::Instant;

use super::provider::WireResponse;
use super::types::{ChatMessage, ChatRequest, FinishReason};
use super::*;
use crate::shared::retry::Retryable;

/// Serves `app` on a free loopback port; its base URL (`http://127.0.0.1:PORT`).
async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    base
}

/// A chat completion answering "ok" from `model`.
fn completion(model: &str) -> serde_json::Value {
    serde_json::json!({
        "id": "x", "object": "chat.completion", "created": 0, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                     "finish_reason": "stop"}],
    })
}

/// An OpenAI-compatible provider at `base_url`, model `m`.
fn openai_config(base_url: String) -> LlmConfig {
    LlmConfig {
        provider: Provider::Openai,
        base_url: Some(base_url),
        model: Some("m".into()),
        ..LlmConfig::default()
    }
}

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
    assert!((10..20).contains(&estimate), "{estimate}");
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
    use crate::daemon::llm::types::{FunctionCall, ToolCall};
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

/// Issue 11: a provider answering 307 to another host gets no second request: the api-key
/// stays with the configured endpoint, and the turn fails with a clear, non-retried error.
#[tokio::test]
async fn redirects_are_never_followed() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    // The host a redirect points to: counts every connection it gets.
    let other = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let other_addr = other.local_addr().unwrap();
    let reached = Arc::new(AtomicUsize::new(0));
    let counter = reached.clone();
    tokio::spawn(async move {
        while let Ok((_socket, _)) = other.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    // The configured endpoint: answers every request with a 307 to the other host.
    let target = format!("http://{other_addr}/steal");
    let app = axum::Router::new().fallback(move || {
        let target = target.clone();
        async move {
            (
                axum::http::StatusCode::TEMPORARY_REDIRECT,
                [(axum::http::header::LOCATION, target)],
            )
        }
    });
    let endpoint = serve(app).await;

    let config = LlmConfig {
        provider: Provider::Azure,
        endpoint: Some(endpoint),
        deployment: Some("gpt-4o-mini".into()),
        api_key: Some("secret-azure-key-never-leaves".into()),
        max_retries: 2,
        retry_initial: Duration::from_millis(1),
        ..LlmConfig::default()
    };
    let handle = LlmHandle::spawn(config).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let error = handle
        .complete(request("alice"), deadline)
        .await
        .unwrap_err();
    match &error {
        LlmError::Redirect { status, location } => {
            assert_eq!(*status, 307);
            assert!(location.ends_with("/steal"), "{location}");
        }
        other => panic!("expected a redirect error, got {other:?}"),
    }
    assert!(
        error.to_string().contains("redirects are not followed"),
        "{error}"
    );
    assert_eq!(
        reached.load(Ordering::SeqCst),
        0,
        "the redirect target was contacted"
    );
}

/// Issue 11: opaque user ids are keyed (HMAC), stable per key, and the key comes from the
/// config or a 0600 file generated once per data directory.
#[test]
fn user_pseudonyms_are_keyed_and_stable_per_data_directory() {
    use pseudonym::{TRACE_KEY_FILE, UserPseudonyms};
    let a = UserPseudonyms::with_key(&[1; 32]);
    let b = UserPseudonyms::with_key(&[2; 32]);
    assert_eq!(a.of("alice"), a.of("alice"));
    assert_ne!(a.of("alice"), a.of("bob"));
    assert_ne!(
        a.of("alice"),
        b.of("alice"),
        "another key, another pseudonym"
    );
    assert_eq!(a.of("alice").len(), 33);
    // HMAC-SHA256("alice"), first 16 bytes in lowercase hex: stable across releases.
    assert_eq!(a.of("alice"), "ub9ac4ee7242bea2f07e6764f068b5e8f");
    assert!(!a.of("alice").contains("alice"));

    let dir = tempfile::tempdir().unwrap();
    let first = UserPseudonyms::load(None, dir.path()).unwrap();
    let path = dir.path().join(TRACE_KEY_FILE);
    let key = std::fs::read_to_string(&path).unwrap();
    assert_eq!(key.len(), 64);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{mode:o}");
    }
    // The next start reads the same key: the same pseudonyms.
    let again = UserPseudonyms::load(None, dir.path()).unwrap();
    assert_eq!(first.of("alice"), again.of("alice"));
    assert_eq!(
        first.of("alice"),
        UserPseudonyms::with_key(key.as_bytes()).of("alice")
    );
    // Another data directory, another key.
    let other = tempfile::tempdir().unwrap();
    let elsewhere = UserPseudonyms::load(None, other.path()).unwrap();
    assert_ne!(first.of("alice"), elsewhere.of("alice"));

    // A configured key wins and writes no file; a short one is refused without echoing it.
    let configured_dir = tempfile::tempdir().unwrap();
    let configured = "k".repeat(40);
    let from_config = UserPseudonyms::load(Some(&configured), configured_dir.path()).unwrap();
    assert_eq!(
        from_config.of("alice"),
        UserPseudonyms::with_key(configured.as_bytes()).of("alice")
    );
    assert!(!configured_dir.path().join(TRACE_KEY_FILE).exists());
    let error = UserPseudonyms::load(Some("short-secret-value"), configured_dir.path())
        .unwrap_err()
        .to_string();
    assert!(!error.contains("short-secret-value"), "{error}");
}

/// The provider's `user` field carries the keyed pseudonym, never the user id.
#[tokio::test]
async fn the_provider_sees_the_keyed_pseudonym() {
    use std::sync::{Arc, Mutex};
    let seen: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let record = seen.clone();
    let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
        let record = record.clone();
        async move {
            let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            record.lock().unwrap().push(value);
            axum::Json(completion("m"))
        }
    });
    let base = format!("{}/v1", serve(app).await);
    let config = openai_config(base);
    let pseudonyms = Arc::new(pseudonym::UserPseudonyms::with_key(&[7; 32]));
    let handle = LlmHandle::spawn(config)
        .await
        .unwrap()
        .with_pseudonyms(pseudonyms.clone());
    let deadline = Instant::now() + Duration::from_secs(10);
    handle.complete(request("alice"), deadline).await.unwrap();
    let body = seen.lock().unwrap()[0].clone();
    assert_eq!(body["user"], pseudonyms.of("alice"), "{body}");
    assert_eq!(handle.pseudonym("alice"), pseudonyms.of("alice"));
}

/// Issue 13, item 4: the actor owns its request tasks. Stopping it waits (in `post_stop`)
/// for a request held at the provider, which still gets its answer; after that the client
/// reports not ready.
#[tokio::test]
async fn stopping_drains_the_requests_in_flight() {
    use std::sync::Arc;
    let arrived = Arc::new(tokio::sync::Notify::new());
    let release = Arc::new(tokio::sync::Notify::new());
    let (on_arrival, on_release) = (arrived.clone(), release.clone());
    let app = axum::Router::new().fallback(move || {
        let (on_arrival, on_release) = (on_arrival.clone(), on_release.clone());
        async move {
            on_arrival.notify_one();
            on_release.notified().await;
            axum::Json(completion("m"))
        }
    });
    let base = format!("{}/v1", serve(app).await);
    let config = openai_config(base);
    let handle = LlmHandle::spawn(config).await.unwrap();
    let caller = handle.clone();
    let call = tokio::spawn(async move {
        let deadline = Instant::now() + Duration::from_secs(30);
        caller.complete(request("alice"), deadline).await
    });
    arrived.notified().await;
    assert!(handle.is_ready());
    let stopper = handle.clone();
    let mut stop = tokio::spawn(async move { stopper.stop(Duration::from_secs(30)).await });
    // While the request is held, the stop waits for it.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut stop)
            .await
            .is_err(),
        "the actor stopped with a request in flight"
    );
    release.notify_one();
    stop.await.unwrap();
    let response = call.await.unwrap().unwrap();
    assert!(matches!(
        response.message,
        ChatMessage::Assistant { content: Some(ref text), .. } if text == "ok"
    ));
    assert!(!handle.is_ready());
}

/// Issue 12 item 4: the body written from pre-serialised parts is the JSON a serialised
/// request would be (model, messages, tools with `tool_choice`, limits, user, `stream`).
#[test]
fn request_bodies_are_written_from_the_serialised_parts() {
    use super::types::{FunctionCall, FunctionDefinition, Prompt, ToolCall, ToolDefinition};
    let request = ChatRequest {
        messages: vec![
            ChatMessage::System {
                content: "be \"brief\"".into(),
            },
            ChatMessage::User {
                content: "store thé: ☕ \n tab\t".into(),
            },
            ChatMessage::Assistant {
                content: None,
                tool_calls: vec![ToolCall {
                    id: "call_1".into(),
                    kind: "function".into(),
                    function: FunctionCall {
                        name: "store_memory".into(),
                        arguments: r#"{"content":"thé"}"#.into(),
                    },
                }],
            },
            ChatMessage::Tool {
                tool_call_id: "call_1".into(),
                content: "ok".into(),
            },
        ],
        tools: vec![ToolDefinition {
            kind: "function".into(),
            function: FunctionDefinition {
                name: "store_memory".into(),
                description: Some("Keeps a note".into()),
                parameters: serde_json::json!({"type": "object", "properties": {"content": {"type": "string"}}}),
            },
        }],
        max_tokens: Some(256),
        // Exact in binary: `to_value` widens an f32 to f64, the body writes it as an f32.
        temperature: Some(0.5),
        user: Some("opaque-1".into()),
    };
    let mut expected = serde_json::to_value(&request).unwrap();
    expected["model"] = "gpt-x".into();
    expected["tool_choice"] = "auto".into();
    expected["stream"] = false.into();
    let prompt = Prompt::from(request.clone());
    let body = super::provider::encode_body(&prompt, Some("gpt-x"));
    let sent: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(sent, expected);
    assert_eq!(prompt.estimated_tokens(), request.estimated_tokens());
    assert_eq!(prompt.to_chat_request(), request);

    // No tools, no model (Azure: the deployment is in the URL), no options.
    let bare = ChatRequest {
        tools: Vec::new(),
        max_tokens: None,
        temperature: None,
        user: None,
        ..request
    };
    let body = super::provider::encode_body(&Prompt::from(bare.clone()), None);
    let sent: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let mut expected = serde_json::to_value(&bare).unwrap();
    expected["stream"] = false.into();
    assert_eq!(sent, expected);
    assert!(sent.get("tool_choice").is_none() && sent.get("model").is_none());
}

/// Issue 12 item 4: Azure chat completions go out as a direct POST to the deployment's URL
/// with the `api-key` header built once, and a retried request resends the same bytes
/// after the server's `retry-after-ms`.
#[tokio::test]
async fn azure_requests_carry_the_key_and_retries_resend_the_same_body() {
    use std::sync::{Arc, Mutex};
    type Seen = (
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        Vec<u8>,
    );
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let record = seen.clone();
    let app = axum::Router::new().fallback(
        move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let record = record.clone();
            async move {
                let header = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                let attempt = {
                    let mut seen = record.lock().unwrap();
                    seen.push((
                        uri.path().to_owned(),
                        uri.query().map(str::to_owned),
                        header("api-key"),
                        header("content-type"),
                        body.to_vec(),
                    ));
                    seen.len()
                };
                if attempt == 1 {
                    return axum::response::IntoResponse::into_response((
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        [("retry-after-ms", "5")],
                        "busy",
                    ));
                }
                let mut answer = completion("gpt-4o-mini");
                answer["usage"] =
                    serde_json::json!({"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4});
                axum::response::IntoResponse::into_response(axum::Json(answer))
            }
        },
    );
    let endpoint = format!("{}/", serve(app).await);
    let config = LlmConfig {
        provider: Provider::Azure,
        endpoint: Some(endpoint),
        deployment: Some("gpt-4o-mini".into()),
        api_key: Some("azure-key".into()),
        max_retries: 2,
        retry_initial: Duration::from_millis(1),
        ..LlmConfig::default()
    };
    let api_version = config.api_version.clone();
    let handle = LlmHandle::spawn(config).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let response = handle.complete(request("alice"), deadline).await.unwrap();
    assert_eq!(response.usage.map(|u| u.total_tokens), Some(4));
    assert_eq!(handle.metrics().retries.get(), 1);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    for (path, query, key, content_type, _) in seen.iter() {
        assert_eq!(path, "/openai/deployments/gpt-4o-mini/chat/completions");
        assert_eq!(
            query.as_deref(),
            Some(format!("api-version={api_version}").as_str())
        );
        assert_eq!(key.as_deref(), Some("azure-key"));
        assert_eq!(content_type.as_deref(), Some("application/json"));
    }
    assert_eq!(seen[0].4, seen[1].4, "a retry resends the same body");
    let body: serde_json::Value = serde_json::from_slice(&seen[0].4).unwrap();
    assert!(body.get("model").is_none(), "{body}");
    assert_eq!(body["max_tokens"], 10);
}
