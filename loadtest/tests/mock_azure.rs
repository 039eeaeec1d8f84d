//! The Azure OpenAI mock over real HTTP: paths, keys and versions, error bodies, tool calls
//! and their follow-up, streaming, quotas, fault injection, `/stats`, the CLI, and the
//! official Python `AzureOpenAI` client.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use futures::StreamExt;
use memento_loadtest::mock_azure::{MockConfig, MockServer, MockStats};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use testkit::eventually;

const DEPLOYMENT: &str = "gpt-4o-mini";
const KEY: &str = "mock-key";

fn azure_path() -> String {
    format!("/openai/deployments/{DEPLOYMENT}/chat/completions?api-version=2024-10-21")
}

async fn start(adjust: impl FnOnce(&mut MockConfig)) -> MockServer {
    let mut config = MockConfig {
        port: 0,
        deployment: Some(DEPLOYMENT.into()),
        ..MockConfig::default()
    };
    adjust(&mut config);
    MockServer::start(config).await.expect("start the mock")
}

fn tools() -> Value {
    let names = [
        "store_memory",
        "retrieve_memories",
        "get_memory",
        "delete_memory",
        "list_tags",
    ];
    Value::Array(
        names
            .iter()
            .map(|name| {
                json!({"type": "function", "function": {
                    "name": name,
                    "description": format!("The {name} tool"),
                    "parameters": {"type": "object", "properties": {}},
                }})
            })
            .collect(),
    )
}

fn chat(message: &str) -> Value {
    json!({
        "messages": [
            {"role": "system", "content": "You are Memento."},
            {"role": "user", "content": message},
        ],
        "tools": tools(),
    })
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
    text: String,
}

async fn send(
    http: &reqwest::Client,
    server: &MockServer,
    path: &str,
    auth: Option<(&str, &str)>,
    body: &str,
) -> Reply {
    let mut request = http
        .post(format!("{}{path}", server.endpoint()))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some((name, value)) = auth {
        request = request.header(name, value);
    }
    let response = request.send().await.expect("send");
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    Reply {
        status,
        headers,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    }
}

/// [`send`] with the right `api-key`.
async fn keyed(http: &reqwest::Client, server: &MockServer, path: &str, body: &str) -> Reply {
    send(http, server, path, Some(("api-key", KEY)), body).await
}

async fn azure(http: &reqwest::Client, server: &MockServer, body: &Value) -> Reply {
    send(
        http,
        server,
        &azure_path(),
        Some(("api-key", KEY)),
        &body.to_string(),
    )
    .await
}

fn header(reply: &Reply, name: &str) -> Option<u64> {
    reply
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn keys_versions_deployments_and_paths_are_checked_as_azure_does() {
    let server = start(|_| {}).await;
    let http = reqwest::Client::new();
    let body = chat("hello").to_string();

    let no_key = send(&http, &server, &azure_path(), None, &body).await;
    assert_eq!(no_key.status, StatusCode::UNAUTHORIZED);
    assert_eq!(no_key.body["error"]["code"], "401");
    assert!(
        no_key.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Access denied due to invalid subscription key"))
    );
    let wrong = send(
        &http,
        &server,
        &azure_path(),
        Some(("api-key", "nope")),
        &body,
    )
    .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let bearer = send(
        &http,
        &server,
        &azure_path(),
        Some(("authorization", "Bearer mock-key")),
        &body,
    )
    .await;
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
    let server = start(|_| {}).await;
    let http = reqwest::Client::new();
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
    let server = start(|_| {}).await;
    let http = reqwest::Client::new();
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
    let server = start(|_| {}).await;
    let http = reqwest::Client::new();
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
    let v1 = send(
        &http,
        &server,
        "/openai/v1/chat/completions",
        Some(("api-key", KEY)),
        &body.to_string(),
    )
    .await;
    assert_eq!(v1.status, StatusCode::OK, "{}", v1.text);
    assert_eq!(v1.body["model"], DEPLOYMENT);
    body["model"] = json!("llama3");
    let other = send(
        &http,
        &server,
        "/openai/v1/chat/completions",
        Some(("api-key", KEY)),
        &body.to_string(),
    )
    .await;
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
    let server = start(|_| {}).await;
    let http = reqwest::Client::new();
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

#[tokio::test]
async fn quota_429s_carry_azure_headers() {
    // 6 RPM: one request per 10-second window.
    let server = start(|c| c.rpm = Some(6)).await;
    let http = reqwest::Client::new();
    let mut replies = Vec::new();
    for _ in 0..5 {
        let reply = azure(&http, &server, &chat("hello")).await;
        let throttled = reply.status == StatusCode::TOO_MANY_REQUESTS;
        replies.push(reply);
        if throttled {
            break;
        }
    }
    let ok = &replies[0];
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(header(ok, "x-ratelimit-remaining-requests"), Some(0));
    assert!(
        ok.headers.get("x-ratelimit-remaining-tokens").is_none(),
        "no TPM quota set"
    );
    let throttled = replies.last().expect("a reply");
    assert_eq!(
        throttled.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        throttled.text
    );
    let millis = header(throttled, "retry-after-ms").expect("retry-after-ms");
    let seconds = header(throttled, "retry-after").expect("retry-after");
    assert!((1..=10_000).contains(&millis), "{millis}");
    assert!((1..=10).contains(&seconds), "{seconds}");
    assert!(
        seconds * 1000 >= millis && seconds * 1000 < millis + 1001,
        "{seconds} {millis}"
    );
    assert_eq!(header(throttled, "x-ratelimit-remaining-requests"), Some(0));
    assert_eq!(throttled.body["error"]["code"], "429");
    let message = throttled.body["error"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(message.contains("exceeded call rate limit"), "{message}");
    assert!(
        message.contains(&format!("Please retry after {seconds} seconds")),
        "{message}"
    );
    assert!(server.stats().rate_limited >= 1);
    server.shutdown().await;

    // 1,000 TPM: two requests estimated at 600 tokens each do not fit in one minute.
    let server = start(|c| c.tpm = Some(1_000)).await;
    let mut big = chat("hello");
    big["max_tokens"] = json!(600);
    let mut replies = Vec::new();
    for _ in 0..5 {
        let reply = azure(&http, &server, &big).await;
        let throttled = reply.status == StatusCode::TOO_MANY_REQUESTS;
        replies.push(reply);
        if throttled {
            break;
        }
    }
    let remaining = header(&replies[0], "x-ratelimit-remaining-tokens").expect("remaining tokens");
    assert!(remaining < 400, "{remaining}");
    let throttled = replies.last().expect("a reply");
    assert_eq!(throttled.status, StatusCode::TOO_MANY_REQUESTS);
    assert!((1..=60).contains(&header(throttled, "retry-after").unwrap_or(0)));
    assert!(header(throttled, "x-ratelimit-remaining-tokens").is_some_and(|t| t < 600));
    assert!(
        throttled.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("exceeded token rate limit"))
    );
    let stats = server.stats();
    assert!(stats.rate_limited_tokens >= 1 && stats.rate_limited == stats.rate_limited_tokens);
    server.shutdown().await;
}

#[derive(Debug, Default, PartialEq)]
struct Observed {
    ok: u64,
    e500: u64,
    e503: u64,
    malformed: u64,
}

async fn inject_faults(seed: u64) -> (Observed, MockStats) {
    let server = start(|c| {
        c.fail_rate = 0.2;
        c.fail_503_rate = 0.1;
        c.malformed_rate = 0.3;
        c.seed = seed;
    })
    .await;
    let http = reqwest::Client::new();
    let request = chat("store this: a note about faults").to_string();
    let path = azure_path();
    let replies: Vec<Reply> = futures::stream::iter(0..400)
        .map(|_| send(&http, &server, &path, Some(("api-key", KEY)), &request))
        .buffer_unordered(16)
        .collect()
        .await;
    let mut observed = Observed::default();
    for reply in replies {
        match reply.status {
            StatusCode::OK => {
                observed.ok += 1;
                let args =
                    reply.body["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                if serde_json::from_str::<Value>(&args).is_err() {
                    observed.malformed += 1;
                }
            }
            StatusCode::INTERNAL_SERVER_ERROR => {
                observed.e500 += 1;
                assert_eq!(reply.body["error"]["type"], "server_error");
                assert!(reply.body["error"]["code"].is_null());
            }
            StatusCode::SERVICE_UNAVAILABLE => observed.e503 += 1,
            other => panic!("unexpected {other}: {}", reply.text),
        }
    }
    let stats = server.stats();
    server.shutdown().await;
    (observed, stats)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_rates_are_honoured_and_repeat_with_the_seed() {
    let (observed, stats) = inject_faults(7).await;
    assert_eq!(observed.ok + observed.e500 + observed.e503, 400);
    assert!((55..=105).contains(&observed.e500), "{observed:?}");
    assert!((22..=58).contains(&observed.e503), "{observed:?}");
    assert!((55..=115).contains(&observed.malformed), "{observed:?}");
    assert_eq!(stats.server_errors_500, observed.e500);
    assert_eq!(stats.unavailable_503, observed.e503);
    assert_eq!(stats.malformed_tool_args, observed.malformed);
    assert_eq!(stats.answered_ok, observed.ok);
    assert_eq!(stats.requests, 400);
    // The same seed gives the same faults, whatever the arrival order.
    let (again, _) = inject_faults(7).await;
    assert_eq!(again, observed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_requests_end_when_the_client_gives_up_or_the_mock_stops() {
    let server = start(|c| c.hang_rate = 1.0).await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .expect("client");
    let error = impatient
        .post(format!("{}{}", server.endpoint(), azure_path()))
        .header("api-key", KEY)
        .json(&chat("hello"))
        .send()
        .await
        .expect_err("never answered");
    assert!(error.is_timeout(), "{error}");
    eventually(
        Duration::from_secs(10),
        "the abandoned request to be counted",
        || {
            let stats = server.stats();
            std::future::ready(stats.hung == 1 && stats.abandoned == 1 && stats.in_flight == 0)
        },
    )
    .await;

    // A patient client is released by shutdown.
    let endpoint = server.endpoint();
    let patient = tokio::spawn(async move {
        reqwest::Client::new()
            .post(format!("{endpoint}{}", azure_path()))
            .header("api-key", KEY)
            .json(&chat("hello"))
            .send()
            .await
            .map(|r| r.status())
    });
    eventually(
        Duration::from_secs(10),
        "the second request to hang",
        || std::future::ready(server.stats().hung == 2),
    )
    .await;
    tokio::time::timeout(Duration::from_secs(10), server.shutdown())
        .await
        .expect("shutdown ends hung requests");
    let outcome = tokio::time::timeout(Duration::from_secs(10), patient)
        .await
        .expect("the client is released")
        .expect("join");
    if let Ok(status) = outcome {
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_is_per_request_and_requests_overlap() {
    let server = start(|c| {
        c.latency_ms = 1_000;
        c.latency_per_token_ms = 5.0;
    })
    .await;
    let http = reqwest::Client::new();
    let request = chat("store this: latency");
    let started = std::time::Instant::now();
    let replies: Vec<Reply> =
        futures::future::join_all((0..10).map(|_| azure(&http, &server, &request))).await;
    let elapsed = started.elapsed();
    let completion = replies[0].body["usage"]["completion_tokens"]
        .as_u64()
        .expect("usage");
    assert!(replies.iter().all(|r| r.status == StatusCode::OK));
    assert!(
        elapsed >= Duration::from_millis(1_000 + 5 * completion),
        "{elapsed:?}"
    );
    // Ten serial answers would take over ten seconds.
    assert!(elapsed < Duration::from_secs(8), "{elapsed:?}");
    assert!(server.stats().max_in_flight >= 2, "{:?}", server.stats());
    server.shutdown().await;
}

#[tokio::test]
async fn stats_are_served_and_reset() {
    let server = start(|_| {}).await;
    let http = reqwest::Client::new();
    for message in ["store this: a", "list my tags", "what did I store?", "hi"] {
        assert_eq!(
            azure(&http, &server, &chat(message)).await.status,
            StatusCode::OK
        );
    }
    let health = http
        .get(format!("{}/healthz", server.endpoint()))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), StatusCode::OK);
    let served: MockStats = http
        .get(format!("{}/stats", server.endpoint()))
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("stats JSON");
    assert_eq!(served, server.stats());
    assert_eq!(served.requests, 4);
    assert_eq!(served.answered_ok, 4);
    assert_eq!(
        served.tool_calls_by_name,
        BTreeMap::from([
            ("list_tags".to_owned(), 1),
            ("retrieve_memories".to_owned(), 1),
            ("store_memory".to_owned(), 1),
        ])
    );
    assert!(served.max_requests_in_any_second >= 1);
    assert_eq!(served.arrivals_per_second.values().sum::<u64>(), 4);
    let reset = http
        .post(format!("{}/stats/reset", server.endpoint()))
        .send()
        .await
        .expect("reset");
    assert!(reset.status().is_success());
    assert_eq!(server.stats(), MockStats::default());
    server.shutdown().await;
}

fn harness() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_memento-loadtest"))
}

#[test]
fn every_flag_has_help_and_an_environment_variable() {
    let output = Command::new(harness())
        .args(["mock-azure", "--help"])
        .output()
        .expect("run --help");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "host",
        "port",
        "api-key",
        "deployment",
        "latency-ms",
        "latency-per-token-ms",
        "rpm",
        "tpm",
        "fail-rate",
        "fail-503-rate",
        "hang-rate",
        "malformed-rate",
        "seed",
    ] {
        assert!(help.contains(&format!("--{flag} ")), "--{flag} in:\n{help}");
        let env = format!("MOCK_AZURE_{}", flag.to_uppercase().replace('-', "_"));
        assert!(help.contains(&format!("[env: {env}")), "{env} in:\n{help}");
    }
    let bad = Command::new(harness())
        .args(["mock-azure", "--port", "0", "--fail-rate", "2"])
        .output()
        .expect("run");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("fail_rate"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_writes_its_ready_file_and_stops_on_sigterm() {
    let mut command = Command::new(harness());
    command
        .args(["mock-azure", "--port", "0", "--api-key", "k"])
        .stderr(Stdio::null());
    let (mut child, ready) =
        testkit::process::spawn_ready(command, "mock-azure").expect("the mock gets ready");
    assert_eq!(ready.pid, child.id());
    assert!(ready.url.starts_with("http://127.0.0.1:"), "{ready:?}");
    assert_eq!(ready.mcp_url, None);
    let endpoint = ready.url;
    let health = reqwest::get(format!("{endpoint}/healthz"))
        .await
        .expect("healthz");
    assert_eq!(health.status(), StatusCode::OK);
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "mock-azure ignored SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status}");
}

fn python() -> PathBuf {
    if let Some(path) = std::env::var_os("MEMENTO_TEST_PYTHON") {
        return PathBuf::from(path);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    assert!(
        venv.exists(),
        "no Python test environment at {}: run `bash .ci/python-env` (or set MEMENTO_TEST_PYTHON)",
        venv.display()
    );
    venv
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_azure_client_uses_the_mock_unchanged() {
    let server = start(|_| {}).await;
    let endpoint = server.endpoint();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/py/azure_openai_client.py");
    let python = python();
    let mut command = Command::new(&python);
    command.arg(script).arg(endpoint).arg(KEY).arg(DEPLOYMENT);
    testkit::process::run_ok_async(command, "the python AzureOpenAI client").await;
    let stats = server.stats();
    assert_eq!(stats.streamed, 2, "{stats:?}");
    assert_eq!(stats.auth_failures, 1, "{stats:?}");
    assert_eq!(stats.bad_requests, 1, "{stats:?}");
    server.shutdown().await;
}
