//! Traces over OTLP: an in-test OTLP/HTTP receiver decodes what the real binary exports.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::json;
use testkit::http::post_message;

use crate::support::{Transport, connect, eventually, is_error, spawn_mcp_server_with_env};

/// An OTLP/HTTP (protobuf) receiver on 127.0.0.1:0 that keeps every span it gets, with its
/// service name.
pub struct Receiver {
    pub url: String,
    pub spans: Arc<Mutex<Vec<(String, Span)>>>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let spans: Arc<Mutex<Vec<(String, Span)>>> = Arc::default();
        let sink = spans.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            post(move |body: Bytes| {
                let sink = sink.clone();
                async move {
                    if let Ok(request) = ExportTraceServiceRequest::decode(body) {
                        let mut sink = sink.lock().expect("lock");
                        for resource in request.resource_spans {
                            let service = resource
                                .resource
                                .as_ref()
                                .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
                                .and_then(|a| a.value.as_ref())
                                .and_then(|v| match &v.value {
                                    Some(AnyValue::StringValue(s)) => Some(s.clone()),
                                    _ => None,
                                })
                                .unwrap_or_default();
                            for scope in resource.scope_spans {
                                for span in scope.spans {
                                    sink.push((service.clone(), span));
                                }
                            }
                        }
                    }
                    ""
                }
            }),
        );
        let addr = testkit::http::serve(app).await;
        Receiver {
            url: format!("http://{addr}"),
            spans,
        }
    }

    pub fn spans_of_trace(&self, trace_id: &[u8]) -> Vec<(String, Span)> {
        self.spans
            .lock()
            .expect("lock")
            .iter()
            .filter(|(_, s)| s.trace_id == trace_id)
            .cloned()
            .collect()
    }
}

pub fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref())
        .and_then(|v| match &v.value {
            Some(AnyValue::StringValue(s)) => Some(s.clone()),
            Some(AnyValue::IntValue(i)) => Some(i.to_string()),
            Some(AnyValue::BoolValue(b)) => Some(b.to_string()),
            _ => None,
        })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mcp_server_continues_the_callers_trace_from_meta() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = spawn_mcp_server_with_env(
        dir.path(),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_SERVICE_NAME", "memento-mcp-server-test"),
        ],
    );
    let trace_id = [
        0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47,
        0x36,
    ];
    let parent_id = [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7];
    let traceparent = format!("00-{}-{}-01", hex(&trace_id), hex(&parent_id));

    for transport in [Transport::Streamable, Transport::Sse] {
        let client = connect(&server.url, transport, server.token.as_deref()).await;
        let mut params = rmcp::model::CallToolRequestParams::new("store_memory");
        params.arguments = json!({"user_id": "traced", "content": "secret diary entry"})
            .as_object()
            .cloned();
        let mut meta = serde_json::Map::new();
        meta.insert("traceparent".into(), json!(traceparent));
        params.meta = Some(rmcp::model::RequestMetaObject::from(meta));
        let result = client.peer().call_tool(params).await.expect("call");
        assert!(!is_error(&result));
        client.cancel().await.expect("close");
    }

    eventually(Duration::from_secs(20), "spans exported", || async {
        receiver
            .spans_of_trace(&trace_id)
            .iter()
            .filter(|(_, s)| s.name == "sqlite store")
            .count()
            >= 2
    })
    .await;
    let spans = receiver.spans_of_trace(&trace_id);
    let calls: Vec<&Span> = spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| s.name == "tools/call store_memory")
        .collect();
    assert_eq!(calls.len(), 2, "one server span per call: {spans:?}");
    for call in &calls {
        assert_eq!(call.parent_span_id, parent_id, "child of the caller's span");
        assert_eq!(call.kind, 2, "SPAN_KIND_SERVER");
        assert_eq!(
            attribute(call, "mcp.method.name").as_deref(),
            Some("tools/call")
        );
        assert_eq!(
            attribute(call, "gen_ai.tool.name").as_deref(),
            Some("store_memory")
        );
        assert_eq!(
            attribute(call, "gen_ai.operation.name").as_deref(),
            Some("execute_tool")
        );
        let storage: Vec<&Span> = spans
            .iter()
            .map(|(_, s)| s)
            .filter(|s| s.name == "sqlite store" && s.parent_span_id == call.span_id)
            .collect();
        assert_eq!(storage.len(), 1, "a storage span under each tool span");
    }
    let services: Vec<&String> = spans.iter().map(|(service, _)| service).collect();
    assert!(
        services.iter().all(|s| *s == "memento-mcp-server-test"),
        "{services:?}"
    );
    // Memory contents are not recorded.
    let dump = format!("{spans:?}");
    assert!(!dump.contains("secret diary"), "content leaked into spans");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_collector_does_not_break_or_slow_the_server() {
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", listener.local_addr().expect("addr"))
    }; // closed again here
    let dir = tempfile::tempdir().expect("tempdir");
    let traced = spawn_mcp_server_with_env(
        dir.path(),
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", dead.as_str())],
    );
    let dir2 = tempfile::tempdir().expect("tempdir");
    let plain = crate::support::spawn_mcp_server(dir2.path());
    let mut timings = Vec::new();
    for server in [&plain, &traced] {
        let client = connect(&server.url, Transport::Streamable, server.token.as_deref()).await;
        let started = std::time::Instant::now();
        for i in 0..200 {
            crate::support::store(&client, "fast", &format!("note {i}"), "").await;
        }
        timings.push(started.elapsed());
        client.cancel().await.expect("close");
    }
    // Generous bound: the exporter is off the request path, so a dead collector costs at
    // most noise.
    assert!(
        timings[1] < timings[0] * 3 + Duration::from_secs(1),
        "with a dead collector {:?}, without tracing {:?}",
        timings[1],
        timings[0]
    );
}

/// One turn, two processes, one trace: `memento serve` -> `memento mcp-server`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_per_turn_across_daemon_and_mcp_server() {
    let receiver = Receiver::start().await;
    let mcp_dir = tempfile::tempdir().expect("tempdir");
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
    ];
    let mut mcp_env = otel.to_vec();
    mcp_env.push(("OTEL_SERVICE_NAME", "mcp-test"));
    let mcp = spawn_mcp_server_with_env(mcp_dir.path(), &mcp_env);
    let daemon_dir = tempfile::tempdir().expect("tempdir");
    let mut daemon_env = otel.to_vec();
    daemon_env.push(("OTEL_SERVICE_NAME", "daemon-test"));
    let mcp_token = mcp.token.clone().expect("mcp token");
    daemon_env.push(("MEMENTO_MCP_TOKEN", mcp_token.as_str()));
    let mcp_url = format!("{}/mcp", mcp.url);
    let daemon =
        crate::support::spawn_daemon(daemon_dir.path(), &["--mcp-url", &mcp_url], &daemon_env);

    let http = reqwest::Client::new();
    let (status, body) = post_message(
        &http,
        &daemon.url,
        "tina",
        "store this: my secret garden plan",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let trace_hex = body["trace_id"].as_str().expect("trace id").to_owned();
    let trace_id: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&trace_hex[2 * i..2 * i + 2], 16).expect("hex"))
        .collect();
    eventually(
        Duration::from_secs(20),
        "both services exported the turn",
        || async {
            let spans = receiver.spans_of_trace(&trace_id);
            spans.iter().any(|(_, s)| s.name == "sqlite store")
                && spans
                    .iter()
                    .any(|(_, s)| s.name == "POST /v1/users/{user_id}/messages")
                && spans
                    .iter()
                    .filter(|(_, s)| s.name.starts_with("chat "))
                    .count()
                    >= 2
        },
    )
    .await;
    let spans = receiver.spans_of_trace(&trace_id);
    let find = |name: &str| {
        spans
            .iter()
            .find(|(_, s)| s.name == name)
            .unwrap_or_else(|| {
                panic!(
                    "no span {name:?} in {:?}",
                    spans.iter().map(|(_, s)| &s.name).collect::<Vec<_>>()
                )
            })
    };
    let (http_service, http_span) = find("POST /v1/users/{user_id}/messages");
    assert_eq!(http_service, "daemon-test");
    let (_, turn) = find("conversation turn");
    assert_eq!(turn.parent_span_id, http_span.span_id);
    // Issue 11: the turn carries the user's keyed pseudonym (key generated into the data
    // directory), never the id itself unless record_user_id is set.
    let key = std::fs::read_to_string(daemon_dir.path().join("trace-key")).expect("trace-key");
    let opaque =
        memento::daemon::llm::pseudonym::UserPseudonyms::with_key(key.trim().as_bytes()).of("tina");
    assert_eq!(
        attribute(turn, "memento.user.opaque").as_deref(),
        Some(opaque.as_str())
    );
    assert!(attribute(turn, "memento.user.id").is_none());
    let chats: Vec<&Span> = spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| s.name.starts_with("chat "))
        .collect();
    for chat in &chats {
        assert_eq!(
            chat.parent_span_id, turn.span_id,
            "chat spans are children of the turn"
        );
        assert_eq!(
            attribute(chat, "gen_ai.operation.name").as_deref(),
            Some("chat")
        );
        assert!(attribute(chat, "gen_ai.provider.name").is_some());
        assert!(attribute(chat, "gen_ai.request.model").is_some());
        assert!(attribute(chat, "gen_ai.usage.input_tokens").is_some());
        assert!(attribute(chat, "gen_ai.response.finish_reasons").is_some());
    }
    let (client_service, client) = find("tools/call store_memory");
    let client = if client_service == "daemon-test" {
        client
    } else {
        &spans
            .iter()
            .find(|(service, s)| service == "daemon-test" && s.name == "tools/call store_memory")
            .expect("client span")
            .1
    };
    assert_eq!(client.parent_span_id, turn.span_id);
    assert_eq!(client.kind, 3, "SPAN_KIND_CLIENT");
    assert_eq!(
        attribute(client, "mcp.method.name").as_deref(),
        Some("tools/call")
    );
    let (_, server) = spans
        .iter()
        .find(|(service, s)| service == "mcp-test" && s.name == "tools/call store_memory")
        .expect("server span in the MCP server's service");
    assert_eq!(
        server.parent_span_id, client.span_id,
        "the server continues the client's span"
    );
    let (_, storage) = find("sqlite store");
    assert_eq!(storage.parent_span_id, server.span_id);
    let dump = format!("{spans:?}");
    assert!(
        !dump.contains("secret garden"),
        "message text is not recorded by default"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_collector_does_not_slow_the_daemons_turns() {
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", listener.local_addr().expect("addr"))
    };
    let plain_dir = tempfile::tempdir().expect("tempdir");
    let traced_dir = tempfile::tempdir().expect("tempdir");
    let plain = crate::support::spawn_daemon(plain_dir.path(), &[], &[]);
    let traced = crate::support::spawn_daemon(
        traced_dir.path(),
        &[],
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", dead.as_str())],
    );
    let http = reqwest::Client::new();
    let mut timings = Vec::new();
    for daemon in [&plain, &traced] {
        let started = std::time::Instant::now();
        for i in 0..60 {
            let response = http
                .post(format!("{}/v1/users/dc{}/messages", daemon.url, i % 6))
                .json(&json!({"message": format!("store this: note {i}")}))
                .send()
                .await
                .expect("send");
            assert_eq!(response.status(), 200);
        }
        timings.push(started.elapsed());
    }
    assert!(
        timings[1] < timings[0] * 3 + Duration::from_secs(1),
        "with a dead collector {:?}, without tracing {:?}",
        timings[1],
        timings[0]
    );
}
