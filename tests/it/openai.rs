//! The OpenAI-compatible API end to end: real daemon on port 0, real HTTP, the offline
//! model, the embedded memory server; and the official openai SDKs for Python and Node as
//! clients nobody here wrote.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use testkit::http::send_json;

use futures::StreamExt;
use serde_json::{Value, json};
use testkit::daemon::{ALICE_TOKEN, SERVICE_TOKEN, with_tokens};
use testkit::process::run_ok_async;

use crate::support::{DaemonFixture, python, repo_root};

/// One chat completion request; returns (status, headers, body).
async fn complete(
    fixture: &DaemonFixture,
    token: Option<&str>,
    body: &Value,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut request = fixture
        .http
        .post(format!("{}/v1/chat/completions", fixture.url))
        .json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("send");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (
        status,
        headers,
        response.json().await.unwrap_or(Value::Null),
    )
}

/// A completion that must succeed; returns the answer's text.
async fn answer(fixture: &DaemonFixture, token: Option<&str>, body: Value) -> String {
    let (status, _, response) = complete(fixture, token, &body).await;
    assert_eq!(status, 200, "{body} -> {response}");
    response["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// `POST /v1/chat/completions` with `body` and `"stream": true`: the response, unread.
async fn post_streamed(fixture: &DaemonFixture, mut body: Value) -> reqwest::Response {
    body["stream"] = json!(true);
    fixture
        .http
        .post(format!("{}/v1/chat/completions", fixture.url))
        .json(&body)
        .send()
        .await
        .expect("send")
}

fn ask(user: &str, text: &str) -> Value {
    json!({"model": "memento", "user": user, "messages": [{"role": "user", "content": text}]})
}

fn assert_usage_adds_up(usage: &Value) {
    let prompt = usage["prompt_tokens"].as_u64().expect("prompt_tokens");
    let completion = usage["completion_tokens"]
        .as_u64()
        .expect("completion_tokens");
    assert!(prompt > 0 && completion > 0, "{usage}");
    assert_eq!(usage["total_tokens"].as_u64(), Some(prompt + completion));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_in_one_request_is_found_by_a_question_in_a_later_one() {
    let fixture = DaemonFixture::start().await;
    let models: Value = send_json(fixture.http.get(format!("{}/v1/models", fixture.url))).await;
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], "memento", "{models}");
    assert_eq!(models["data"].as_array().map(Vec::len), Some(1));

    let store = json!({"role": "user", "content": "remember that my locker code is 4512"});
    let (status, headers, stored) = complete(
        &fixture,
        None,
        &json!({"model": "memento", "user": "ann", "messages": [store], "temperature": 0.2}),
    )
    .await;
    assert_eq!(status, 200, "{stored}");
    assert_eq!(stored["object"], "chat.completion");
    assert_eq!(stored["model"], "memento");
    assert!(
        stored["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("chatcmpl-"))
    );
    assert!(
        stored["created"]
            .as_u64()
            .is_some_and(|t| t > 1_700_000_000)
    );
    assert!(headers.contains_key("x-request-id"));
    let choice = &stored["choices"][0];
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(choice["message"]["role"], "assistant");
    let stored_reply = choice["message"]["content"].as_str().unwrap_or_default();
    assert!(!stored_reply.is_empty(), "{stored}");
    // The store took two LLM rounds (tool call, then answer): usage sums both.
    assert_usage_adds_up(&stored["usage"]);

    // The client sends the conversation so far; the memory itself comes from the server.
    let (status, _, found) = complete(
        &fixture,
        None,
        &json!({"model": "memento", "user": "ann", "messages": [
            store,
            {"role": "assistant", "content": stored_reply},
            {"role": "user", "content": "what did I store about my locker code?"},
        ]}),
    )
    .await;
    assert_eq!(status, 200, "{found}");
    let reply = found["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default();
    assert!(reply.contains("4512"), "{found}");
    assert_usage_adds_up(&found["usage"]);
    let fresh = answer(
        &fixture,
        None,
        ask("ann", "what did I store about my locker code?"),
    )
    .await;
    assert!(fresh.contains("4512"), "{fresh}");

    // Stateless: the native API's stored conversation is untouched.
    assert!(fixture.history("ann").await.is_empty());
    // And the memory is the user's own.
    let other = answer(
        &fixture,
        None,
        ask("bob", "what did I store about my locker code?"),
    )
    .await;
    assert!(!other.contains("4512"), "{other}");
    // The native API sees the same memories.
    let native = fixture
        .turn("ann", "what did I store about my locker code?")
        .await;
    assert!(native.to_string().contains("4512"), "{native}");

    // Ann now has a stored conversation, which a completion neither reads nor extends: the
    // same request costs the same prompt tokens for her as for a user with no history.
    let history = fixture.history("ann").await;
    assert!(!history.is_empty());
    let mut prompts = Vec::new();
    for user in ["ann", "newcomer"] {
        let (status, _, body) = complete(&fixture, None, &ask(user, "hello")).await;
        assert_eq!(status, 200, "{body}");
        prompts.push(body["usage"]["prompt_tokens"].clone());
    }
    assert_eq!(prompts[0], prompts[1], "{prompts:?}");
    assert_eq!(fixture.history("ann").await, history);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_past_its_deadline_is_a_504_streamed_or_not() {
    // A deadline already passed when the turn starts: it fails at its first wait.
    let fixture =
        DaemonFixture::start_with(|config| config.llm.turn_deadline = Duration::ZERO).await;
    let (status, _, body) = complete(&fixture, None, &ask("late", "hello")).await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"]["type"], "server_error");
    assert_eq!(body["error"]["code"], "deadline_exceeded");

    let response = post_streamed(&fixture, ask("late", "hello")).await;
    assert_eq!(response.status(), 200);
    let data = sse_data(response).await;
    assert_eq!(data.len(), 2, "a role delta, then the error: {data:?}");
    let error: Value = serde_json::from_str(&data[1]).expect("json");
    assert_eq!(error["error"]["code"], "deadline_exceeded", "{error}");
    assert_eq!(error["error"]["type"], "server_error");
}

/// Reads an SSE response to its end; returns each event's data.
async fn sse_data(response: reqwest::Response) -> Vec<String> {
    let mut parser = memento::shared::sse::SseParser::new(1 << 20);
    let mut data = Vec::new();
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        for event in parser.push(&chunk.expect("chunk")).expect("parse") {
            assert_eq!(event.event, "message", "OpenAI chunks have no event name");
            data.push(event.data);
        }
    }
    data
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_gives_a_role_delta_text_stop_usage_then_done() {
    let fixture = DaemonFixture::start().await;
    answer(
        &fixture,
        None,
        ask("cleo", "remember that the spare key is under the blue pot"),
    )
    .await;
    let mut request = ask("cleo", "what did I store about the spare key?");
    request["stream_options"] = json!({"include_usage": true});
    let response = post_streamed(&fixture, request).await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .is_ok_and(|t| t.starts_with("text/event-stream"))
    );
    let data = sse_data(response).await;
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).expect("chunk json"))
        .collect();
    assert!(chunks.len() >= 4, "{chunks:?}");
    let id = chunks[0]["id"].clone();
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk", "{chunk}");
        assert_eq!(chunk["model"], "memento");
        assert_eq!(chunk["id"], id, "one id for the whole stream");
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert!(text.contains("blue pot"), "{text}");
    let (usage_chunk, rest) = chunks.split_last().expect("chunks");
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_usage_adds_up(&usage_chunk["usage"]);
    let last = rest.last().expect("final chunk");
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert_eq!(last["choices"][0]["delta"], json!({}));
    for chunk in rest {
        assert!(chunk["usage"].is_null(), "{chunk}");
    }

    // Without include_usage: no usage anywhere.
    let response = post_streamed(&fixture, ask("cleo", "hello")).await;
    let data = sse_data(response).await;
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    for chunk in &data[..data.len() - 1] {
        let chunk: Value = serde_json::from_str(chunk).expect("json");
        assert!(chunk.get("usage").is_none(), "{chunk}");
        assert_eq!(chunk["choices"].as_array().map(Vec::len), Some(1));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_decide_the_user_and_errors_take_openais_shape() {
    let fixture = DaemonFixture::start_with(|config| {
        with_tokens(config);
        config.server.max_body_bytes = 8192;
        config.server.max_message_chars = 1000;
    })
    .await;
    // A user token acts for its own user, whatever `user` says.
    let stored = answer(
        &fixture,
        Some(ALICE_TOKEN),
        ask("mallory", "remember that the alarm code is 8080"),
    )
    .await;
    assert!(!stored.is_empty());
    let as_alice = answer(
        &fixture,
        Some(SERVICE_TOKEN),
        ask("alice", "what did I store about the alarm code?"),
    )
    .await;
    assert!(as_alice.contains("8080"), "{as_alice}");
    let as_mallory = answer(
        &fixture,
        Some(SERVICE_TOKEN),
        ask("mallory", "what did I store about the alarm code?"),
    )
    .await;
    assert!(!as_mallory.contains("8080"), "{as_mallory}");

    let text = |content: &str| json!([{"role": "user", "content": content}]);
    let param = |name: &str| json!(name);
    let mut cases: Vec<(Option<&str>, Value, u16, &str, Value)> = vec![
        (
            None,
            ask("alice", "hi"),
            401,
            "invalid_api_key",
            Value::Null,
        ),
        (
            Some("wrong-token-xyz"),
            ask("alice", "hi"),
            401,
            "invalid_api_key",
            Value::Null,
        ),
        (
            Some(SERVICE_TOKEN),
            json!({"model": "memento", "messages": text("hi")}),
            400,
            "missing_required_parameter",
            param("user"),
        ),
        (
            Some(SERVICE_TOKEN),
            ask("../bob", "hi"),
            400,
            "invalid_user_id",
            param("user"),
        ),
    ];
    // Requests from alice herself that the API refuses: (body, status, code, param).
    let tools = json!([{"type": "function", "function": {"name": "f"}}]);
    let tool_first = json!([{"role": "tool", "tool_call_id": "x", "content": "1"}, {"role": "user", "content": "hi"}]);
    let refused: Vec<(Value, u16, &str, Value)> = vec![
        (
            json!({"model": "gpt-4o", "messages": text("hi")}),
            404,
            "model_not_found",
            param("model"),
        ),
        (
            json!({"messages": text("hi")}),
            400,
            "missing_required_parameter",
            param("model"),
        ),
        (
            json!({"model": "memento", "messages": text("hi"), "tools": tools}),
            400,
            "unsupported_parameter",
            param("tools"),
        ),
        (
            json!({"model": "memento", "messages": text("hi"), "n": 2}),
            400,
            "unsupported_value",
            param("n"),
        ),
        (
            json!({"model": "memento", "messages": tool_first}),
            400,
            "invalid_value",
            param("messages"),
        ),
        (
            json!({"model": "memento", "messages": text(&"x".repeat(1001))}),
            413,
            "message_too_long",
            param("messages"),
        ),
        (
            json!({"model": "memento", "messages": text(&"x".repeat(9000))}),
            413,
            "body_too_large",
            Value::Null,
        ),
        (
            json!({"model": "memento", "messages": "hi"}),
            400,
            "invalid_json",
            Value::Null,
        ),
    ];
    for (body, status, code, param) in refused {
        cases.push((Some(ALICE_TOKEN), body, status, code, param));
    }
    for (token, body, status, code, param) in cases {
        let (got, _, response) = complete(&fixture, token, &body).await;
        assert_eq!(got, status, "{token:?} {body}: {response}");
        let error = &response["error"];
        assert_eq!(error["code"], code, "{response}");
        assert_eq!(error["param"], param, "{response}");
        assert_eq!(
            error["type"],
            if status >= 500 {
                "server_error"
            } else {
                "invalid_request_error"
            }
        );
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{response}"
        );
    }
    let models = fixture
        .http
        .get(format!("{}/v1/models", fixture.url))
        .bearer_auth("wrong-token-xyz")
        .send()
        .await
        .expect("send");
    assert_eq!(models.status(), 401);
    let body: Value = models.json().await.expect("json");
    assert_eq!(body["error"]["code"], "invalid_api_key");
    let model = fixture
        .http
        .get(format!("{}/v1/models/gpt-4o", fixture.url))
        .bearer_auth(ALICE_TOKEN)
        .send()
        .await
        .expect("send");
    assert_eq!(model.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_users_own_rate_limit_is_a_429_with_retry_after() {
    // One request a minute per user, a burst of one: small talk (one LLM round) passes,
    // the next request of the same user is refused, another user is not.
    let fixture = DaemonFixture::start_with(|config| config.llm.per_user_rpm = 1).await;
    answer(&fixture, None, ask("quick", "hello")).await;
    let (status, headers, body) = complete(&fixture, None, &ask("quick", "hello again")).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["type"], "requests");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    let retry_after: u64 = headers["retry-after"]
        .to_str()
        .ok()
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    answer(&fixture, None, ask("patient", "hello")).await;
}

// === The official SDKs ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_openai_sdk_streaming_and_not() {
    let fixture = DaemonFixture::start().await;
    let url = fixture.url.clone();
    let mut command = Command::new(python());
    command
        .arg(repo_root().join("tests/py/openai_client.py"))
        .args([&url, "pat"]);
    run_ok_async(command, "the python openai client").await;
    assert!(fixture.history("pat").await.is_empty());
}

/// `tests/js`, with its `node_modules` installed (`bash .ci/node-env`, run by tests/run.sh).
fn js_dir() -> PathBuf {
    let dir = repo_root().join("tests/js");
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.as_ref().is_ok_and(|o| o.status.success()),
        "node is not installed (Node 20 or later is needed for the openai npm interop test): \
         {node:?}"
    );
    assert!(
        dir.join("node_modules/openai/package.json").exists(),
        "the openai npm package is not installed: run `bash .ci/node-env` (npm ci in tests/js)"
    );
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_npm_package_streaming_and_not() {
    let dir = js_dir();
    let fixture = DaemonFixture::start_with(|config| {
        config
            .auth
            .user_tokens
            .insert("nora".into(), "nora-secret-token".into());
        config.auth.service_tokens.push(SERVICE_TOKEN.into());
    })
    .await;
    let url = fixture.url.clone();
    let mut command = Command::new("node");
    command
        .arg(dir.join("openai_client.mjs"))
        .args([&url, "nora-secret-token"])
        .current_dir(&dir);
    run_ok_async(command, "the node openai client").await;
    // The token's user got the memory, not the `user` field's.
    let found = answer(
        &fixture,
        Some(SERVICE_TOKEN),
        ask("nora", "what did I store about the boat?"),
    )
    .await;
    assert!(found.contains("pier 27"), "{found}");
    let (_, _, other) = complete(
        &fixture,
        Some(SERVICE_TOKEN),
        &ask("somebody-else", "what did I store about the boat?"),
    )
    .await;
    assert!(!other.to_string().contains("pier 27"), "{other}");
}
