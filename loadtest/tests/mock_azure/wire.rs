//! Paths, keys and versions, error bodies, tool calls and their follow-up, OpenAI-compatible
//! paths and streaming, over real HTTP.

use std::collections::BTreeMap;
use std::time::Duration;

use memento_loadtest::mock_azure::MockServer;
use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::eventually;

use super::support::*;

/// `body` sent to Azure's v1 path (the model names the deployment) with the key.
async fn azure_v1(http: &reqwest::Client, server: &MockServer, body: &Value) -> Reply {
    send(
        http,
        server,
        "/openai/v1/chat/completions",
        Some(("api-key", KEY)),
        &body.to_string(),
    )
    .await
}

/// The mock with its default settings, and a client to talk to it.
async fn default_mock() -> (MockServer, reqwest::Client) {
    (start(|_| {}).await, reqwest::Client::new())
}

#[tokio::test]
async fn keys_versions_deployments_and_paths_are_checked_as_azure_does() {
    let (server, http) = default_mock().await;
    let body = chat("hello").to_string();

    let no_key = send(&http, &server, &azure_path(), None, &body).await;
    assert_eq!(no_key.status, StatusCode::UNAUTHORIZED);
    assert_eq!(no_key.body["error"]["code"], "401");
    assert!(
        no_key.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Access denied due to invalid subscription key"))
    );
    let wrong = send_with(&http, &server, ("api-key", "nope"), &body).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let bearer = send_with(&http, &server, ("authorization", "Bearer mock-key"), &body).await;
    assert_eq!(bearer.status, StatusCode::OK, "{}", bearer.text);

    let base = format!("/openai/deployments/{DEPLOYMENT}/chat/completions");
    let no_version = send(&http, &server, &base, Some(("api-key", KEY)), &body).await;
    assert_eq!(no_version.status, StatusCode::NOT_FOUND);
    assert_eq!(
        no_version.body,
        json!({"error": {"code": "404", "message": "Resource not found"}})
    );
    let bad_version = keyed(&http, &server, &format!("{base}?api-version=banana"), &body).await;
    assert_eq!(bad_version.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        bad_version.body["error"]["message"],
        "API version not supported"
    );
    let preview = keyed(
        &http,
        &server,
        &format!("{base}?api-version=2025-04-01-preview"),
        &body,
    )
    .await;
    assert_eq!(preview.status, StatusCode::OK);

    let unknown = keyed(
        &http,
        &server,
        "/openai/deployments/gpt-5/chat/completions?api-version=2024-10-21",
        &body,
    )
    .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.body["error"]["code"], "DeploymentNotFound");

    let wrong_path = keyed(&http, &server, "/openai/chat", &body).await;
    assert_eq!(wrong_path.status, StatusCode::NOT_FOUND);
    assert_eq!(wrong_path.body["error"]["message"], "Resource not found");

    let stats = server.stats();
    assert_eq!(stats.requests, 7, "{stats:?}");
    assert_eq!(stats.auth_failures, 2);
    assert_eq!(stats.bad_requests, 3);
    assert_eq!(stats.answered_ok, 2);
    server.shutdown().await;
}

#[tokio::test]
async fn bad_bodies_get_azure_shaped_400s() {
    let (server, http) = default_mock().await;
    for (body, param) in [
        ("{\"messages\": [", Value::Null),
        ("{}", json!("messages")),
        ("{\"messages\": []}", json!("messages")),
        (
            "{\"messages\": [{\"role\": \"robot\", \"content\": \"x\"}]}",
            json!("messages"),
        ),
        (
            "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"tools\": 3}",
            json!("tools"),
        ),
    ] {
        let reply = send(&http, &server, &azure_path(), Some(("api-key", KEY)), body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        let error = &reply.body["error"];
        assert_eq!(error["code"], "BadRequest", "{body}");
        assert_eq!(error["type"], "invalid_request_error", "{body}");
        assert_eq!(error["param"], param, "{body}");
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    assert_eq!(server.stats().bad_requests, 5);
    server.shutdown().await;
}

#[tokio::test]
async fn a_store_request_gets_tool_calls_and_the_tool_result_gets_an_answer() {
    let (server, http) = default_mock().await;
    let mut request = chat("Hey memento, store this recipe: chocolate cake with 2 cups flour");
    // Fields real clients send are accepted.
    for (key, value) in [
        ("tool_choice", json!("auto")),
        ("parallel_tool_calls", json!(true)),
        ("user", json!("u-123")),
        ("n", json!(1)),
        ("temperature", json!(0.2)),
        ("max_completion_tokens", json!(512)),
        ("stream_options", Value::Null),
        ("seed", json!(42)),
    ] {
        request[key] = value;
    }
    let reply = azure(&http, &server, &request).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let body = &reply.body;
    assert!(
        body["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("chatcmpl-"))
    );
    assert_eq!(body["object"], "chat.completion");
    assert!(body["created"].as_u64().is_some_and(|t| t > 1_600_000_000));
    assert_eq!(body["model"], DEPLOYMENT);
    assert!(body["prompt_filter_results"].is_array());
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["role"], "assistant");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert!(
        call["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("call_"))
    );
    assert_eq!(call["function"]["name"], "store_memory");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap_or_default())
            .expect("arguments are JSON");
    assert_eq!(args["content"], "chocolate cake with 2 cups flour");
    assert_eq!(args["filename"], "recipe.txt");
    assert!(args.get("user_id").is_none());
    let usage = &body["usage"];
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(
            usage["prompt_tokens"].as_u64().unwrap_or(0)
                + usage["completion_tokens"].as_u64().unwrap_or(0)
        )
    );

    // The follow-up with the tool's result gets the final text.
    let mut follow_up = request.clone();
    let messages = follow_up["messages"].as_array_mut().expect("messages");
    messages.push(choice["message"].clone());
    messages.push(json!({
        "role": "tool",
        "tool_call_id": call["id"],
        "content": "Successfully stored 'recipe.txt' for user alice as 20240715_143052_recipe.txt",
    }));
    let answer = azure(&http, &server, &follow_up).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.body["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        answer.body["choices"][0]["message"]["content"],
        "I've stored your recipe as 'recipe.txt' (tags: cooking, recipe)."
    );
    assert_ne!(answer.body["id"], body["id"]);
    let stats = server.stats();
    assert_eq!(stats.tool_calls_by_name.get("store_memory"), Some(&1));
    assert!(stats.prompt_tokens > 0 && stats.completion_tokens > 0);
    server.shutdown().await;
}

#[tokio::test]
async fn openai_compatible_paths_take_the_model_from_the_body() {
    let (server, http) = default_mock().await;
    let mut body = chat("what did I store about the Q4 plan?");
    body["model"] = json!("llama3");
    let bearer = Some(("authorization", "Bearer mock-key"));

    let reply = send(
        &http,
        &server,
        "/v1/chat/completions",
        bearer,
        &body.to_string(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.body["model"], "llama3");
    assert!(reply.body.get("prompt_filter_results").is_none());
    let call = &reply.body["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "retrieve_memories");

    let wrong = send(
        &http,
        &server,
        "/v1/chat/completions",
        Some(("authorization", "Bearer nope")),
        &body.to_string(),
    )
    .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.body["error"]["code"], "invalid_api_key");

    let no_model = send(
        &http,
        &server,
        "/v1/chat/completions",
        bearer,
        &chat("hi").to_string(),
    )
    .await;
    assert_eq!(no_model.status, StatusCode::BAD_REQUEST);
    assert_eq!(no_model.body["error"]["param"], "model");

    // Azure's v1 API: the model is the deployment.
    body["model"] = json!(DEPLOYMENT);
    let v1 = azure_v1(&http, &server, &body).await;
    assert_eq!(v1.status, StatusCode::OK, "{}", v1.text);
    assert_eq!(v1.body["model"], DEPLOYMENT);
    body["model"] = json!("llama3");
    let other = azure_v1(&http, &server, &body).await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);
    assert_eq!(other.body["error"]["code"], "DeploymentNotFound");
    server.shutdown().await;
}

/// The `data:` payloads of an SSE body.
fn sse_events(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter_map(|event| event.trim().strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn streamed_chunks_reassemble_into_the_same_answer() {
    let (server, http) = default_mock().await;
    let request = chat("remember that the wifi password is hunter2 and the router is in the hall");
    let whole = azure(&http, &server, &request).await;
    let expected = &whole.body["choices"][0]["message"]["tool_calls"][0];

    let mut streaming = request.clone();
    streaming["stream"] = json!(true);
    streaming["stream_options"] = json!({"include_usage": true});
    let reply = azure(&http, &server, &streaming).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        reply
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"))
    );
    let events = sse_events(&reply.text);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).expect("chunk JSON"))
        .collect();
    let mut calls: BTreeMap<u64, (String, String, String)> = BTreeMap::new();
    let mut finish = Value::Null;
    let mut fragments = 0;
    for chunk in &chunks {
        for choice in chunk["choices"].as_array().into_iter().flatten() {
            assert_eq!(chunk["object"], "chat.completion.chunk");
            for part in choice["delta"]["tool_calls"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let entry = calls
                    .entry(part["index"].as_u64().expect("index"))
                    .or_default();
                if let Some(id) = part["id"].as_str() {
                    entry.0 = id.into();
                }
                if let Some(name) = part["function"]["name"].as_str() {
                    entry.1 = name.into();
                }
                if let Some(args) = part["function"]["arguments"].as_str() {
                    entry.2.push_str(args);
                    fragments += 1;
                }
            }
            if !choice["finish_reason"].is_null() {
                finish = choice["finish_reason"].clone();
            }
        }
    }
    assert!(fragments > 2, "arguments come in several chunks");
    assert_eq!(finish, "tool_calls");
    assert_eq!(calls.len(), 1);
    // The same conversation gets the same answer, streamed or not.
    assert_eq!(calls[&0].0, expected["id"].as_str().unwrap_or_default());
    assert_eq!(calls[&0].1, "store_memory");
    assert_eq!(
        calls[&0].2,
        expected["function"]["arguments"]
            .as_str()
            .unwrap_or_default()
    );
    let usage = chunks.last().expect("usage chunk");
    assert_eq!(usage["choices"], json!([]));
    assert!(
        usage["usage"]["total_tokens"]
            .as_u64()
            .is_some_and(|t| t > 0)
    );

    // A text answer streams as content deltas.
    let mut text = chat("thanks a lot");
    text["stream"] = json!(true);
    let reply = azure(&http, &server, &text).await;
    let content: String = sse_events(&reply.text)
        .iter()
        .filter(|e| *e != "[DONE]")
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(content, "You're welcome!");
    eventually(Duration::from_secs(10), "both streams to finish", || {
        std::future::ready(server.stats().in_flight == 0)
    })
    .await;
    assert_eq!(server.stats().streamed, 2);
    server.shutdown().await;
}
