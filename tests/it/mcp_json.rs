//! The daemon's tool calls as plain JSON-RPC POSTs answered with JSON (issue 12 item 4):
//! the server's answer format over real HTTP, the daemon's client against a JSON server, an
//! SSE-answering server and a server without stateless requests, and the drain at shutdown.

use std::sync::Arc;
use std::time::Duration;

use memento::daemon::mcp::{McpError, McpHandle};
use memento::memory_server::MemoryServer;
use memento::memory_server::storage::{SqliteOptions, SqliteStore};
use memento::shared::config::{McpClientConfig, McpServerConfig};
use memento::shared::domain::UserId;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ErrorData,
    ListToolsResult, PaginatedRequestParams, ProtocolVersion, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{RoleServer, ServerHandler};
use serde_json::{Value, json};

use crate::support::{McpFixture, eventually};

fn object(value: Value) -> rmcp::model::JsonObject {
    match value {
        Value::Object(object) => object,
        _ => panic!("not an object"),
    }
}

fn user(name: &str) -> UserId {
    UserId::parse(name).expect("user id")
}

async fn handle(url: String) -> McpHandle {
    let handle = McpHandle::spawn(McpClientConfig::default(), url)
        .await
        .expect("spawn the MCP actor");
    assert!(
        handle.wait_connected(Duration::from_secs(30)).await,
        "no session"
    );
    handle
}

async fn store(handle: &McpHandle, who: &str, content: &str) -> memento::daemon::mcp::ToolOutput {
    handle
        .call_tool(
            &user(who),
            "store_memory",
            object(json!({ "content": content, "filename": "note.txt" })),
            object(json!({ "io.memento/idempotency-key": uuid::Uuid::new_v4().to_string() })),
            memento::daemon::mcp::Structured::Keep,
        )
        .await
        .expect("store_memory")
}

#[tokio::test]
async fn a_stateless_tool_call_is_answered_with_json_and_a_session_call_with_sse() {
    let fixture = McpFixture::start().await;
    let url = format!("{}/mcp", fixture.url());
    let http = reqwest::Client::new();
    let call = json!({
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {
            "name": "store_memory",
            "arguments": {"user_id": "alice", "content": "stateless JSON note"},
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {}
            }
        }
    });
    let response = http
        .post(&url)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "store_memory")
        .json(&call)
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    assert!(response.headers().get("mcp-session-id").is_none());
    let body: Value = response.json().await.expect("a JSON body");
    assert_eq!(body["id"], 1);
    let text = body["result"]["content"][0]["text"].as_str().expect("text");
    assert!(text.starts_with("Successfully stored"), "{text}");

    // A client that initialises a session keeps the SSE answers it always had.
    let init = http
        .post(&url)
        .header("accept", "application/json, text/event-stream")
        .json(&json!({
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "t", "version": "1"}}
        }))
        .send()
        .await
        .expect("initialize");
    let session = init.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    drop(init.text().await);
    let initialized = http
        .post(&url)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-06-18")
        .json(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .send()
        .await
        .expect("initialized");
    assert_eq!(initialized.status(), 202);
    let response = http
        .post(&url)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-06-18")
        .json(&json!({
            "jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "list_tags", "arguments": {"user_id": "alice"}}
        }))
        .send()
        .await
        .expect("session call");
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let events = response.text().await.expect("event stream");
    assert!(events.contains("\"tags\""), "{events}");
}

#[tokio::test]
async fn the_daemon_calls_tools_with_json_answers() {
    let fixture = McpFixture::start().await;
    let handle = handle(format!("{}/mcp", fixture.url())).await;
    let stored = store(&handle, "alice", "the JSON path stores this").await;
    assert!(!stored.is_error, "{}", stored.text);
    assert!(
        stored.text.starts_with("Successfully stored"),
        "{}",
        stored.text
    );
    let id = stored.structured.as_ref().expect("structured")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    // The user is bound by the daemon: bob cannot read alice's memory.
    let got = handle
        .call_tool(
            &user("bob"),
            "get_memory",
            object(json!({ "id": id, "user_id": "alice" })),
            Default::default(),
            memento::daemon::mcp::Structured::Keep,
        )
        .await
        .expect("get_memory");
    assert!(got.is_error, "{}", got.text);
    let got = handle
        .call_tool(
            &user("alice"),
            "get_memory",
            object(json!({ "id": id })),
            Default::default(),
            memento::daemon::mcp::Structured::Keep,
        )
        .await
        .expect("get_memory");
    assert!(!got.is_error, "{}", got.text);
    assert!(got.structured.is_some());
    // For the model (a conversation turn): the same text, the structured content skipped.
    let for_model = handle
        .call_tool(
            &user("alice"),
            "get_memory",
            object(json!({ "id": id })),
            Default::default(),
            memento::daemon::mcp::Structured::Skip,
        )
        .await
        .expect("get_memory");
    assert_eq!(for_model.text, got.text);
    assert!(!for_model.is_error && for_model.structured.is_none());
    // A JSON-RPC error (bad arguments) is a rejection, not a broken connection.
    let rejected = handle
        .call_tool(
            &user("alice"),
            "get_memory",
            object(json!({ "id": 17 })),
            Default::default(),
            memento::daemon::mcp::Structured::Keep,
        )
        .await;
    assert!(
        matches!(rejected, Err(McpError::Rejected(_)))
            || rejected.as_ref().is_ok_and(|r| r.is_error),
        "{rejected:?}"
    );
    let metrics = handle.metrics();
    assert!(
        metrics.json_answers.get() >= 3,
        "{}",
        metrics.json_answers.get()
    );
    assert_eq!(metrics.sse_answers.get(), 0);
    assert_eq!(metrics.connects.get(), 1);
    handle.stop(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn a_server_that_streams_its_answers_still_works() {
    let fixture = McpFixture::start_with(|config| config.json_response = false).await;
    let handle = handle(format!("{}/mcp", fixture.url())).await;
    let stored = store(&handle, "carol", "streamed answer").await;
    assert!(
        stored.text.starts_with("Successfully stored"),
        "{}",
        stored.text
    );
    assert_eq!(handle.metrics().sse_answers.get(), 1);
    assert_eq!(handle.metrics().json_answers.get(), 0);
    handle.stop(Duration::from_secs(10)).await;
}

/// The memory server, limited to the revisions with sessions (no stateless requests), or with
/// a `wait` tool that holds its call until the test releases it.
#[derive(Clone)]
struct TestServer {
    inner: MemoryServer,
    up_to_2025: bool,
    release: Arc<tokio::sync::Notify>,
}

impl ServerHandler for TestServer {
    fn get_info(&self) -> ServerConfig {
        self.inner.get_info()
    }

    fn supported_protocol_versions(&self) -> std::borrow::Cow<'static, [ProtocolVersion]> {
        if self.up_to_2025 {
            std::borrow::Cow::Borrowed(ProtocolVersion::known_up_to(&ProtocolVersion::V_2025_11_25))
        } else {
            std::borrow::Cow::Borrowed(ProtocolVersion::KNOWN_VERSIONS)
        }
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let mut tools = self.inner.list_tools(request, context).await?;
        tools.tools.push(Tool::new(
            "wait",
            "waits for the test",
            Arc::new(object(json!({"type": "object", "properties": {}}))),
        ));
        Ok(tools)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if request.name == "wait" {
            self.release.notified().await;
            return Ok(CallToolResult::success(vec![ContentBlock::text("released")]).into());
        }
        self.inner.call_tool(request, context).await
    }
}

async fn serve(server: TestServer) -> String {
    let service = StreamableHttpService::new(
        move || Ok(server.clone()),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default().with_json_response(true),
    );
    let app = axum::Router::new().nest_service("/mcp", service);
    format!("http://{}/mcp", testkit::http::serve(app).await)
}

fn test_server(up_to_2025: bool) -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path(), &SqliteOptions::default()).expect("open store");
    let server = TestServer {
        inner: MemoryServer::new(Arc::new(store), &McpServerConfig::default()),
        up_to_2025,
        release: Arc::new(tokio::sync::Notify::new()),
    };
    (server, dir)
}

#[tokio::test]
async fn a_server_without_stateless_requests_keeps_the_calls_on_the_session() {
    let (server, _dir) = test_server(true);
    let handle = handle(serve(server).await).await;
    let stored = store(&handle, "dave", "over the session").await;
    assert!(
        stored.text.starts_with("Successfully stored"),
        "{}",
        stored.text
    );
    assert_eq!(handle.metrics().json_answers.get(), 0);
    assert_eq!(handle.metrics().sse_answers.get(), 0);
    assert_eq!(handle.metrics().calls.get(), 1);
    handle.stop(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn stop_refuses_new_calls_and_waits_for_those_in_flight() {
    let (server, _dir) = test_server(false);
    let release = server.release.clone();
    let handle = handle(serve(server).await).await;
    let caller = handle.clone();
    let in_flight = tokio::spawn(async move {
        caller
            .call_tool(
                &user("erin"),
                "wait",
                Default::default(),
                Default::default(),
                memento::daemon::mcp::Structured::Keep,
            )
            .await
    });
    eventually(Duration::from_secs(10), "the call is in flight", || {
        let handle = handle.clone();
        async move { handle.calls_in_flight() == 1 }
    })
    .await;
    let stopper = handle.clone();
    let stopping = tokio::spawn(async move { stopper.stop(Duration::from_secs(30)).await });
    eventually(Duration::from_secs(10), "new calls are refused", || {
        let handle = handle.clone();
        async move {
            matches!(
                handle
                    .call_tool(
                        &user("erin"),
                        "list_tags",
                        Default::default(),
                        Default::default(),
                        memento::daemon::mcp::Structured::Keep,
                    )
                    .await,
                Err(McpError::Closed)
            )
        }
    })
    .await;
    assert!(
        !stopping.is_finished(),
        "stop returned with a call in flight"
    );
    assert!(
        handle.is_connected(),
        "the session ended under a call in flight"
    );
    release.notify_one();
    let answer = in_flight.await.expect("join").expect("the call completes");
    assert_eq!(answer.text, "released");
    tokio::time::timeout(Duration::from_secs(30), stopping)
        .await
        .expect("stop returns once the call is done")
        .expect("join");
    assert_eq!(handle.calls_in_flight(), 0);
    assert!(!handle.is_connected());
}
