//! The direct path against rmcp's own answers: two real servers on port 0, one with
//! `direct_tool_calls` and one without, sent the same requests over HTTP.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::memory_server::storage::{SqliteOptions, SqliteStore};
use crate::memory_server::{RunningMemoryServer, start};
use crate::shared::config::McpServerConfig;

struct Server {
    running: RunningMemoryServer,
    _dir: tempfile::TempDir,
}

async fn server(direct: bool) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = McpServerConfig {
        port: 0,
        direct_tool_calls: direct,
        ..McpServerConfig::default()
    };
    let store = SqliteStore::open(dir.path(), &SqliteOptions::default()).expect("open store");
    let running = start(&config, Arc::new(store), CancellationToken::new())
        .await
        .expect("start server");
    Server { running, _dir: dir }
}

/// A daemon-style stateless call (what `daemon::mcp::direct` sends).
fn call(id: u64, name: &str, arguments: Value) -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": id,
        "method": "tools/call",
        "params": {
            "name": name,
            "arguments": arguments,
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {},
                "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"}
            }
        }
    })
}

/// Status, content type and body of one POST to `/mcp`.
async fn post(
    server: &Server,
    headers: &[(&str, &str)],
    body: &Value,
) -> (u16, Option<String>, String) {
    let mut request = reqwest::Client::new()
        .post(format!("{}/mcp", server.running.url()))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request
        .body(body.to_string())
        .send()
        .await
        .expect("POST /mcp");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, content_type, response.text().await.expect("body"))
}

/// Extra request headers of a case.
type Headers<'a> = Vec<(&'a str, &'a str)>;

async fn direct_calls(server: &Server) -> u64 {
    let stats: Value = reqwest::get(format!("{}/stats", server.running.url()))
        .await
        .expect("GET /stats")
        .json()
        .await
        .expect("stats JSON");
    stats["direct_tool_calls"]
        .as_u64()
        .expect("direct_tool_calls")
}

#[tokio::test]
async fn the_direct_answer_is_rmcps_answer() {
    let direct = server(true).await;
    let rmcp = server(false).await;
    // Deterministic answers (no generated ids in them) are compared byte for byte.
    let cases = [
        (
            "store_memory",
            call(
                7,
                "store_memory",
                json!({"user_id": "alice", "content": "ship in Q4", "tags": ["plan"]}),
            ),
        ),
        (
            "list_tags",
            call(8, "list_tags", json!({"user_id": "alice"})),
        ),
        // A tool error is a result with isError, answered directly too.
        (
            "store_memory",
            call(
                9,
                "store_memory",
                json!({"user_id": "alice", "content": ""}),
            ),
        ),
        (
            "retrieve_memories",
            call(
                10,
                "retrieve_memories",
                json!({"user_id": "bob", "query": "nothing stored"}),
            ),
        ),
        (
            "list_tags",
            call(11, "list_tags", json!({"user_id": "../x"})),
        ),
    ];
    for (name, body) in &cases {
        let headers = [("mcp-name", *name)];
        let (status, content_type, text) = post(&direct, &headers, body).await;
        let expected = post(&rmcp, &headers, body).await;
        assert_eq!(status, 200, "{name}: {text}");
        assert_eq!(content_type.as_deref(), Some("application/json"));
        if name == &"store_memory" && status == 200 && !text.contains("isError\":true") {
            // The stored id differs between the two servers: compare the shape.
            let a: Value = serde_json::from_str(&text).expect("JSON");
            let b: Value = serde_json::from_str(&expected.2).expect("JSON");
            assert_eq!(a["id"], b["id"]);
            assert_eq!(
                a["result"]["content"][0]["type"],
                b["result"]["content"][0]["type"]
            );
            assert!(
                a["result"]["content"][0]["text"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("Successfully stored"))
            );
            assert_eq!((status, content_type), (expected.0, expected.1));
        } else {
            assert_eq!((status, content_type, text), expected, "{name}");
        }
    }
    assert_eq!(direct_calls(&direct).await, cases.len() as u64);
    assert_eq!(direct_calls(&rmcp).await, 0);

    // What the direct path stored, rmcp reads back (and the other way round).
    let (_, _, text) = post(
        &rmcp,
        &[("mcp-name", "list_tags")],
        &call(12, "list_tags", json!({"user_id": "alice"})),
    )
    .await;
    let (_, _, direct_text) = post(
        &direct,
        &[("mcp-name", "list_tags")],
        &call(12, "list_tags", json!({"user_id": "alice"})),
    )
    .await;
    assert_eq!(text, direct_text);
    assert!(text.contains("plan"), "{text}");
}

#[tokio::test]
async fn anything_unusual_is_left_to_rmcp_unchanged() {
    let direct = server(true).await;
    let rmcp = server(false).await;
    let tags = call(1, "list_tags", json!({"user_id": "alice"}));
    let mut no_capabilities = tags.clone();
    no_capabilities["params"]["_meta"]
        .as_object_mut()
        .expect("meta")
        .remove("io.modelcontextprotocol/clientCapabilities");
    let mut task = tags.clone();
    task["params"]["task"] = json!({"ttl": 1000});
    let mut other_version = tags.clone();
    other_version["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] =
        json!("2025-06-18");
    let cases: Vec<(&str, Headers, Value)> = vec![
        (
            "Mcp-Name disagrees",
            vec![("mcp-name", "store_memory")],
            tags.clone(),
        ),
        ("no Mcp-Name", vec![], tags.clone()),
        (
            "two Mcp-Name values",
            vec![("mcp-name", "list_tags"), ("mcp-name", "list_tags")],
            tags.clone(),
        ),
        (
            "unknown tool",
            vec![("mcp-name", "drop_table")],
            call(2, "drop_table", json!({})),
        ),
        (
            "no client capabilities",
            vec![("mcp-name", "list_tags")],
            no_capabilities,
        ),
        ("a task request", vec![("mcp-name", "list_tags")], task),
        (
            "_meta disagrees with the header",
            vec![("mcp-name", "list_tags")],
            other_version,
        ),
        (
            "a parameter header",
            vec![("mcp-name", "list_tags"), ("mcp-param-user", "alice")],
            tags.clone(),
        ),
        (
            "a batch",
            vec![("mcp-name", "list_tags")],
            json!([tags.clone()]),
        ),
        ("not JSON-RPC 2.0", vec![("mcp-name", "list_tags")], {
            let mut v = tags.clone();
            v["jsonrpc"] = json!("1.0");
            v
        }),
    ];
    for (case, headers, body) in &cases {
        let got = post(&direct, headers, body).await;
        let expected = post(&rmcp, headers, body).await;
        assert_eq!(got, expected, "{case}");
    }
    assert_eq!(direct_calls(&direct).await, 0, "every case went to rmcp");

    // A session's call is rmcp's too (its answer is an SSE stream).
    let (status, content_type, _) = post(
        &direct,
        &[
            ("mcp-name", "list_tags"),
            ("mcp-session-id", "no-such-session"),
        ],
        &tags,
    )
    .await;
    let expected = post(
        &rmcp,
        &[
            ("mcp-name", "list_tags"),
            ("mcp-session-id", "no-such-session"),
        ],
        &tags,
    )
    .await;
    assert_eq!((status, content_type), (expected.0, expected.1));
    assert_eq!(direct_calls(&direct).await, 0);
}

#[test]
fn accept_and_content_type_are_read_as_media_types() {
    use axum::http::{HeaderMap, HeaderValue, header};
    let mut headers = HeaderMap::new();
    headers.insert(
        header::ACCEPT,
        HeaderValue::from_static("text/event-stream;q=0.5, Application/JSON"),
    );
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    assert!(super::accepts_json_and_sse(&headers));
    assert!(super::content_type_is_json(&headers));
    headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    assert!(!super::accepts_json_and_sse(&headers));
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    assert!(!super::content_type_is_json(&headers));
}
