//! Traces in a real Jaeger v2: the Jaeger binary that `deploy/jaeger-local.sh` builds, started
//! with deploy/jaeger/config.yaml on free ports, receives OTLP from the real `memento serve`
//! and `memento mcp-server` processes; the assertions read Jaeger's own query API, as a
//! user looking at a turn would.
//!
//! The binary is `$JAEGER_BIN`, or the one `deploy/jaeger-local.sh --build-only` caches
//! (tests/run.sh builds it when it is missing). Without either the tests fail: they never
//! skip.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{ChildServer, eventually, repo_root, spawn_daemon, spawn_mcp_server_with_env};

const DAEMON_SERVICE: &str = "memento";
const MCP_SERVICE: &str = "memento-mcp-server";
const HTTP_SPAN: &str = "POST /v1/users/{user_id}/messages";
/// A word that must never show up in a trace: it is only in the messages and the memory.
const SECRET: &str = "zanzibarorchid";

/// The Jaeger binary: `$JAEGER_BIN`, or the cache of `deploy/jaeger-local.sh`.
fn jaeger_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("JAEGER_BIN").filter(|b| !b.is_empty()) {
        let bin = PathBuf::from(bin);
        assert!(
            bin.is_file(),
            "JAEGER_BIN={} is not a file; unset it or run deploy/jaeger-local.sh --build-only",
            bin.display()
        );
        return bin;
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|c| !c.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .expect("neither XDG_CACHE_HOME nor HOME is set");
    let bin = cache.join("memento/jaeger-v1.76.0/jaeger");
    assert!(
        bin.is_file(),
        "no Jaeger binary at {}: run `deploy/jaeger-local.sh --build-only` (builds Jaeger v1.76.0 with Go, \
         a few minutes once; tests/run.sh does it for you) or set JAEGER_BIN",
        bin.display()
    );
    bin
}

/// A Jaeger process on free loopback ports, killed on drop.
struct Jaeger {
    child: Child,
    /// Query API and UI, e.g. `http://127.0.0.1:16686`.
    query: String,
    otlp_http: String,
    otlp_grpc: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Jaeger {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Jaeger {
    /// Starts Jaeger with the shared configuration file and waits until its health check says
    /// every component (the OTLP receivers included) is up. A port taken between choosing
    /// and binding makes Jaeger exit; then it is tried again on other ports.
    async fn start() -> Jaeger {
        let bin = jaeger_binary();
        let config = repo_root().join("deploy/jaeger/config.yaml");
        let http = reqwest::Client::new();
        let mut last_log = String::new();
        for _attempt in 0..3 {
            let dir = tempfile::tempdir().expect("tempdir");
            let log = dir.path().join("jaeger.log");
            // Hold all five listeners at once so the ports differ, then free them for Jaeger.
            let ports: Vec<u16> = {
                let listeners: Vec<std::net::TcpListener> = (0..5)
                    .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
                    .collect();
                listeners
                    .iter()
                    .map(|l| l.local_addr().expect("addr").port())
                    .collect()
            };
            let log_file = std::fs::File::create(&log).expect("log file");
            let child = Command::new(&bin)
                .arg("--config")
                .arg(&config)
                .env("JAEGER_LISTEN_HOST", "127.0.0.1")
                .env("JAEGER_OTLP_GRPC_PORT", ports[0].to_string())
                .env("JAEGER_OTLP_HTTP_PORT", ports[1].to_string())
                .env("JAEGER_QUERY_HTTP_PORT", ports[2].to_string())
                .env("JAEGER_QUERY_GRPC_PORT", ports[3].to_string())
                .env("JAEGER_HEALTH_PORT", ports[4].to_string())
                .stdin(Stdio::null())
                .stdout(log_file.try_clone().expect("log file"))
                .stderr(log_file)
                .spawn()
                .unwrap_or_else(|error| panic!("cannot start {}: {error}", bin.display()));
            let mut jaeger = Jaeger {
                child,
                query: format!("http://127.0.0.1:{}", ports[2]),
                otlp_http: format!("http://127.0.0.1:{}", ports[1]),
                otlp_grpc: format!("http://127.0.0.1:{}", ports[0]),
                log,
                _dir: dir,
            };
            let health = format!("http://127.0.0.1:{}/status", ports[4]);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            loop {
                if let Ok(Some(_)) = jaeger.child.try_wait() {
                    break; // exited: try other ports
                }
                let healthy = http
                    .get(&health)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                let queryable = healthy
                    && http
                        .get(format!("{}/api/services", jaeger.query))
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success());
                if queryable {
                    return jaeger;
                }
                if tokio::time::Instant::now() > deadline {
                    panic!("Jaeger not healthy within 60 s:\n{}", jaeger.log_text());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            last_log = jaeger.log_text();
        }
        panic!("Jaeger exited at start three times; last log:\n{last_log}");
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET /api/...` as JSON; `None` until the answer is a 200.
    async fn api(&self, path: &str) -> Option<Value> {
        let response = reqwest::Client::new()
            .get(format!("{}{path}", self.query))
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.json().await.ok()
    }
}

/// One span of Jaeger's query API (`/api/traces/{id}`), with its service name resolved.
#[derive(Debug, Clone)]
struct JaegerSpan {
    span_id: String,
    parent: Option<String>,
    name: String,
    service: String,
    tags: HashMap<String, String>,
}

impl JaegerSpan {
    fn tag(&self, key: &str) -> Option<&str> {
        self.tags.get(key).map(String::as_str)
    }
}

/// The spans of the one trace in a `/api/traces/{id}` answer.
fn spans_of(answer: &Value, trace_id: &str) -> Vec<JaegerSpan> {
    let traces = answer["data"].as_array().expect("data");
    assert_eq!(traces.len(), 1, "one trace for {trace_id}: {answer}");
    let trace = &traces[0];
    assert_eq!(trace["traceID"].as_str(), Some(trace_id));
    let processes = &trace["processes"];
    trace["spans"]
        .as_array()
        .expect("spans")
        .iter()
        .map(|span| {
            assert_eq!(span["traceID"].as_str(), Some(trace_id), "{span}");
            let parent = span["references"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|r| r["refType"] == "CHILD_OF")
                .map(|r| {
                    assert_eq!(
                        r["traceID"].as_str(),
                        Some(trace_id),
                        "parent in the same trace"
                    );
                    r["spanID"].as_str().expect("parent id").to_owned()
                });
            let process = span["processID"].as_str().expect("processID");
            JaegerSpan {
                span_id: span["spanID"].as_str().expect("spanID").to_owned(),
                parent,
                name: span["operationName"]
                    .as_str()
                    .expect("operationName")
                    .to_owned(),
                service: processes[process]["serviceName"]
                    .as_str()
                    .expect("serviceName")
                    .to_owned(),
                tags: span["tags"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|tag| {
                        let value = match &tag["value"] {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        };
                        (tag["key"].as_str().unwrap_or_default().to_owned(), value)
                    })
                    .collect(),
            }
        })
        .collect()
}

/// The one span named `name` in `service`.
fn only<'a>(spans: &'a [JaegerSpan], service: &str, name: &str) -> &'a JaegerSpan {
    let found: Vec<&JaegerSpan> = spans
        .iter()
        .filter(|s| s.service == service && s.name == name)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one {name:?} span in {service}; the trace has {:?}",
        spans
            .iter()
            .map(|s| (&s.service, &s.name))
            .collect::<Vec<_>>()
    );
    found[0]
}

/// Sends one turn and returns its answer.
async fn turn(daemon: &ChildServer, user: &str, message: &str) -> Value {
    let response = reqwest::Client::new()
        .post(format!("{}/v1/users/{user}/messages", daemon.url))
        .json(&json!({ "message": message }))
        .send()
        .await
        .expect("send turn");
    assert_eq!(response.status(), 200);
    response.json().await.expect("turn json")
}

/// Waits until Jaeger holds the whole trace of one turn (both services' spans, the storage
/// span last in the chain) and returns it.
async fn complete_trace(jaeger: &Jaeger, trace_id: &str, storage: &str) -> Vec<JaegerSpan> {
    let path = format!("/api/traces/{trace_id}");
    eventually(
        Duration::from_secs(60),
        &format!("Jaeger has the whole trace {trace_id}"),
        || async {
            let Some(answer) = jaeger.api(&path).await else {
                return false;
            };
            let spans = spans_of(&answer, trace_id);
            let has = |service: &str, name: &str| {
                spans.iter().any(|s| s.service == service && s.name == name)
            };
            has(DAEMON_SERVICE, HTTP_SPAN)
                && has(DAEMON_SERVICE, "conversation turn")
                && has(MCP_SERVICE, storage)
                && spans.iter().filter(|s| s.name.starts_with("chat ")).count() >= 2
        },
    )
    .await;
    let answer = jaeger.api(&path).await.expect("trace");
    let dump = answer.to_string();
    assert!(
        !dump.contains(SECRET),
        "message or memory text in the trace: {dump}"
    );
    spans_of(&answer, trace_id)
}

/// Checks one turn's span tree: HTTP -> turn -> `chat {model}` and `tools/call {tool}`
/// (client, daemon) -> `tools/call {tool}` (server, MCP server process) -> `storage`.
fn assert_turn_tree(spans: &[JaegerSpan], tool: &str, storage: &str) {
    let http = only(spans, DAEMON_SERVICE, HTTP_SPAN);
    assert_eq!(http.parent, None, "the HTTP span is the root");
    assert_eq!(http.tag("span.kind"), Some("server"));
    let turn = only(spans, DAEMON_SERVICE, "conversation turn");
    assert_eq!(turn.parent.as_ref(), Some(&http.span_id));

    let chats: Vec<&JaegerSpan> = spans
        .iter()
        .filter(|s| s.name.starts_with("chat "))
        .collect();
    assert!(
        chats.len() >= 2,
        "a tool call and the final answer: {chats:?}"
    );
    for chat in &chats {
        assert_eq!(chat.service, DAEMON_SERVICE);
        assert_eq!(
            chat.parent.as_ref(),
            Some(&turn.span_id),
            "chat under the turn"
        );
        assert_eq!(chat.tag("span.kind"), Some("client"));
        assert_eq!(chat.tag("gen_ai.operation.name"), Some("chat"));
        let model = chat
            .tag("gen_ai.request.model")
            .expect("gen_ai.request.model");
        assert_eq!(chat.name, format!("chat {model}"));
        for key in [
            "gen_ai.provider.name",
            "gen_ai.response.model",
            "gen_ai.usage.input_tokens",
            "gen_ai.usage.output_tokens",
            "gen_ai.response.finish_reasons",
        ] {
            assert!(chat.tag(key).is_some(), "{key} missing on {chat:?}");
        }
    }

    let name = format!("tools/call {tool}");
    let client = only(spans, DAEMON_SERVICE, &name);
    assert_eq!(
        client.parent.as_ref(),
        Some(&turn.span_id),
        "tool call under the turn"
    );
    assert_eq!(client.tag("span.kind"), Some("client"));
    assert_eq!(client.tag("mcp.method.name"), Some("tools/call"));
    assert_eq!(client.tag("gen_ai.operation.name"), Some("execute_tool"));
    assert_eq!(client.tag("gen_ai.tool.name"), Some(tool));

    let server = only(spans, MCP_SERVICE, &name);
    assert_eq!(
        server.parent.as_ref(),
        Some(&client.span_id),
        "the MCP server's span continues the daemon's client span (from _meta.traceparent)"
    );
    assert_eq!(server.tag("span.kind"), Some("server"));
    assert_eq!(server.tag("mcp.method.name"), Some("tools/call"));
    assert_eq!(server.tag("gen_ai.tool.name"), Some(tool));
    assert!(server.tag("jsonrpc.request.id").is_some(), "{server:?}");

    let store = only(spans, MCP_SERVICE, storage);
    assert_eq!(store.parent.as_ref(), Some(&server.span_id));
    assert_eq!(store.tag("db.system.name"), Some("sqlite"));
}

/// Both services export to Jaeger over `protocol`; a storing and a retrieving turn each make
/// one trace with the whole span tree across the two processes.
async fn turns_in_jaeger(protocol: &str) {
    let jaeger = Jaeger::start().await;
    let endpoint = match protocol {
        "grpc" => jaeger.otlp_grpc.clone(),
        _ => jaeger.otlp_http.clone(),
    };
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
    ];
    let mcp_dir = tempfile::tempdir().expect("tempdir");
    let mut mcp_env = otel.to_vec();
    mcp_env.push(("OTEL_SERVICE_NAME", MCP_SERVICE));
    let mcp = spawn_mcp_server_with_env(mcp_dir.path(), &mcp_env);
    let daemon_dir = tempfile::tempdir().expect("tempdir");
    let mut daemon_env = otel.to_vec();
    daemon_env.push(("OTEL_SERVICE_NAME", DAEMON_SERVICE));
    let mcp_token = mcp.token.clone().expect("the memory server's token");
    daemon_env.push(("MEMENTO_MCP_TOKEN", mcp_token.as_str()));
    let daemon = spawn_daemon(
        daemon_dir.path(),
        &["--mcp-url", &format!("{}/mcp", mcp.url)],
        &daemon_env,
    );

    let stored = turn(
        &daemon,
        "jaeger-user",
        &format!("store this: the {SECRET} seeds go in the north bed"),
    )
    .await;
    assert_eq!(stored["tool_calls"][0]["name"], "store_memory", "{stored}");
    let retrieved = turn(
        &daemon,
        "jaeger-user",
        &format!("what did I store about {SECRET}?"),
    )
    .await;
    assert_eq!(
        retrieved["tool_calls"][0]["name"], "retrieve_memories",
        "{retrieved}"
    );
    assert!(
        retrieved["tool_calls"][0]["result"]
            .to_string()
            .contains(SECRET),
        "the memory was found: {retrieved}"
    );
    let store_trace = stored["trace_id"].as_str().expect("trace_id").to_owned();
    let retrieve_trace = retrieved["trace_id"].as_str().expect("trace_id").to_owned();
    assert_ne!(store_trace, retrieve_trace, "one trace per turn");

    let spans = complete_trace(&jaeger, &store_trace, "sqlite store").await;
    assert_turn_tree(&spans, "store_memory", "sqlite store");
    let spans = complete_trace(&jaeger, &retrieve_trace, "sqlite search").await;
    assert_turn_tree(&spans, "retrieve_memories", "sqlite search");

    // Both services are known to Jaeger...
    let services = jaeger.api("/api/services").await.expect("services");
    let services: Vec<&str> = services["data"]
        .as_array()
        .expect("services")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        services.contains(&DAEMON_SERVICE) && services.contains(&MCP_SERVICE),
        "{services:?}"
    );
    // ...and the daemon's HTTP turns are exactly the two traces, one per turn.
    let search = jaeger
        .api(&format!(
            "/api/traces?service={DAEMON_SERVICE}&operation={}&limit=100&lookback=1h",
            HTTP_SPAN
                .replace('/', "%2F")
                .replace(' ', "%20")
                .replace('{', "%7B")
                .replace('}', "%7D")
        ))
        .await
        .expect("trace search");
    let mut found: Vec<&str> = search["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|t| t["traceID"].as_str())
        .collect();
    found.sort_unstable();
    let mut expected = vec![store_trace.as_str(), retrieve_trace.as_str()];
    expected.sort_unstable();
    assert_eq!(found, expected, "one trace per turn");
    drop(daemon);
    drop(mcp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storing_and_a_retrieving_turn_in_jaeger_over_otlp_http() {
    turns_in_jaeger("http/protobuf").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storing_and_a_retrieving_turn_in_jaeger_over_otlp_grpc() {
    turns_in_jaeger("grpc").await;
}
