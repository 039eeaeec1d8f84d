//! Shared fixtures: in-process servers on port 0, MCP clients over both transports, child
//! processes of the real binary, and a deadline-bounded poll instead of sleeps.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::Duration;
use testkit::http::send_json;

use memento::memory_server::storage::{SqliteOptions, SqliteStore};
use memento::memory_server::{self, RunningMemoryServer};
use memento::shared::config::McpServerConfig;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};
use testkit::mock_azure::{MockConfig, MockServer};
use testkit::process::spawn_ready;
use tokio_util::sync::CancellationToken;

/// A client session of either transport.
pub type Client = RunningService<RoleClient, ()>;

/// An in-process memory MCP server with its own temporary data directory.
pub struct McpFixture {
    pub server: RunningMemoryServer,
    pub dir: tempfile::TempDir,
    pub config: McpServerConfig,
}

impl McpFixture {
    pub async fn start() -> McpFixture {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut McpServerConfig)) -> McpFixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = McpServerConfig {
            port: 0,
            ..McpServerConfig::default()
        };
        adjust(&mut config);
        let store = SqliteStore::open(dir.path(), &SqliteOptions::default()).expect("open store");
        let server = memory_server::start(&config, Arc::new(store), CancellationToken::new())
            .await
            .expect("start server");
        McpFixture {
            server,
            dir,
            config,
        }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }
}

/// Which MCP transport a test uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Streamable,
    Sse,
}

pub const BOTH: [Transport; 2] = [Transport::Streamable, Transport::Sse];

/// Connects and initialises an rmcp client.
pub async fn connect(base: &str, transport: Transport, token: Option<&str>) -> Client {
    try_connect(base, transport, token)
        .await
        .unwrap_or_else(|e| panic!("connect over {transport:?}: {e}"))
}

pub async fn try_connect(
    base: &str,
    transport: Transport,
    token: Option<&str>,
) -> Result<Client, String> {
    match transport {
        Transport::Streamable => {
            let mut config = StreamableHttpClientTransportConfig::with_uri(format!("{base}/mcp"));
            if let Some(token) = token {
                config = config.auth_header(token);
            }
            let transport =
                StreamableHttpClientTransport::with_client(reqwest::Client::new(), config);
            ().serve(transport).await.map_err(|e| e.to_string())
        }
        Transport::Sse => {
            let transport = memento::daemon::mcp::sse_client::connect(
                reqwest::Client::new(),
                &format!("{base}/sse"),
                token,
                Duration::from_secs(10),
            )
            .await
            .map_err(|e| e.to_string())?;
            ().serve(transport).await.map_err(|e| e.to_string())
        }
    }
}

/// Calls a tool; panics on a protocol error (tool errors come back as `is_error`).
pub async fn call(client: &Client, tool: &str, args: Value) -> CallToolResult {
    try_call(client, tool, args)
        .await
        .unwrap_or_else(|e| panic!("{tool}: protocol error {e}"))
}

pub async fn try_call(client: &Client, tool: &str, args: Value) -> Result<CallToolResult, String> {
    try_call_peer(client.peer(), tool, args).await
}

/// [`try_call`] for a client of any handler (`client.peer()`).
pub async fn try_call_peer(
    peer: &rmcp::service::Peer<RoleClient>,
    tool: &str,
    args: Value,
) -> Result<CallToolResult, String> {
    let Value::Object(arguments) = args else {
        panic!("arguments must be an object");
    };
    let mut params = CallToolRequestParams::new(tool.to_owned());
    params.arguments = Some(arguments);
    peer.call_tool(params).await.map_err(|e| e.to_string())
}

/// The text content of a result.
pub fn text(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn is_error(result: &CallToolResult) -> bool {
    result.is_error == Some(true)
}

/// Stores a memory and returns its id.
pub async fn store(client: &Client, user: &str, content: &str, tags: &str) -> String {
    let result = call(
        client,
        "store_memory",
        json!({ "user_id": user, "content": content, "tags": tags }),
    )
    .await;
    assert!(!is_error(&result), "store failed: {}", text(&result));
    result.structured_content.as_ref().expect("structured")["id"]
        .as_str()
        .expect("id")
        .to_owned()
}

/// The ids `retrieve_memories` returns.
pub async fn retrieve_ids(client: &Client, args: Value) -> Vec<String> {
    let result = call(client, "retrieve_memories", args).await;
    assert!(!is_error(&result), "retrieve failed: {}", text(&result));
    result.structured_content.as_ref().expect("structured")["memories"]
        .as_array()
        .expect("memories")
        .iter()
        .map(|m| m["id"].as_str().expect("id").to_owned())
        .collect()
}

pub use testkit::eventually;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Python with `mcp` and `openai` installed: `$MEMENTO_TEST_PYTHON`, else `.venv`.
pub fn python() -> PathBuf {
    if let Some(path) = std::env::var_os("MEMENTO_TEST_PYTHON") {
        return PathBuf::from(path);
    }
    let venv = repo_root().join(".venv/bin/python");
    assert!(
        venv.exists(),
        "no Python test environment: run `bash .ci/python-env` (creates .venv with the mcp and \
         openai packages) or set MEMENTO_TEST_PYTHON"
    );
    venv
}

/// A child process of the real `memento` binary, killed on drop.
pub struct ChildServer {
    pub child: Child,
    pub url: String,
    /// The memory server's token (generated into `DATA_DIR/mcp-token`), for MCP servers.
    pub token: Option<String>,
}

/// The token a `memento mcp-server` generated into `data_dir`.
pub fn mcp_token(data_dir: &Path) -> String {
    memento::memory_server::token_file::read(data_dir)
        .expect("read mcp-token")
        .expect("memento mcp-server wrote no mcp-token")
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `memento mcp-server --port 0 --data-dir DIR`; its URL comes from its ready file.
pub fn spawn_mcp_server(data_dir: &Path) -> ChildServer {
    spawn_mcp_server_with_env(data_dir, &[])
}

/// Like [`spawn_mcp_server`], with extra environment variables.
pub fn spawn_mcp_server_with_env(data_dir: &Path, envs: &[(&str, &str)]) -> ChildServer {
    let mut command = Command::new(env!("CARGO_BIN_EXE_memento"));
    command
        .args(["mcp-server", "--port", "0", "--data-dir"])
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .envs(envs.iter().copied());
    let (child, ready) =
        spawn_ready(command, "memento mcp-server").unwrap_or_else(|e| panic!("{e:#}"));
    let token = envs
        .iter()
        .find(|(k, _)| *k == "MEMENTO_MCP_TOKEN")
        .map(|(_, v)| v.to_string())
        .or_else(|| {
            memento::memory_server::token_file::read(data_dir)
                .ok()
                .flatten()
        });
    ChildServer {
        child,
        url: ready.url,
        token,
    }
}

/// A daemon (`memento serve` in-process) with the embedded memory server and the offline
/// model, on port 0 with its own data directory.
pub use testkit::daemon::TestDaemon as DaemonFixture;

/// Names of the tools called in a turn's result.
pub fn tool_names(body: &Value) -> Vec<String> {
    body["tool_calls"]
        .as_array()
        .map(|calls| {
            calls
                .iter()
                .filter_map(|c| c["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A free loopback port (bound, then released) for servers that must come back on the same
/// port after a restart.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Starts `memento mcp-server` on a given port.
pub fn spawn_mcp_server_on(data_dir: &Path, port: u16) -> ChildServer {
    let mut command = Command::new(env!("CARGO_BIN_EXE_memento"));
    command
        .args(["mcp-server", "--port", &port.to_string(), "--data-dir"])
        .arg(data_dir)
        .env("RUST_LOG", "warn");
    let (child, ready) =
        spawn_ready(command, "memento mcp-server").unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(ready.http_addr.port(), port, "{ready:?}");
    ChildServer {
        child,
        url: ready.url,
        token: Some(mcp_token(data_dir)),
    }
}

/// Starts `memento serve --port 0` as a child process with `args` and `envs`; its URL comes
/// from its ready file.
pub fn spawn_daemon(data_dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> ChildServer {
    let mut command = Command::new(env!("CARGO_BIN_EXE_memento"));
    command
        .args(["serve", "--port", "0", "--data-dir"])
        .arg(data_dir)
        .args(args)
        .env("RUST_LOG", "warn")
        .envs(envs.iter().copied());
    let (child, ready) = spawn_ready(command, "memento serve").unwrap_or_else(|e| panic!("{e:#}"));
    ChildServer {
        child,
        url: ready.url,
        token: None,
    }
}

// === Process-level fault tests (faults.rs) ===

/// Sends SIGTERM to a process with `kill -TERM` (libc is not a dependency).
pub fn sigterm(pid: u32) {
    let status = testkit::process::sigterm(pid).expect("run kill");
    assert!(status.success(), "kill -TERM {pid}: {status}");
}

/// Resident set size of a process in KiB (`VmRSS` in `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

/// `GET /stats` of a memory server: `(sse_sessions, streamable_sessions)`.
pub async fn session_counts(http: &reqwest::Client, base: &str) -> (u64, u64) {
    let stats: Value = send_json(http.get(format!("{base}/stats"))).await;
    (
        stats["sse_sessions"].as_u64().expect("sse_sessions"),
        stats["streamable_sessions"]
            .as_u64()
            .expect("streamable_sessions"),
    )
}

/// Every memory summary of `user` (all pages of `retrieve_memories`, newest first).
pub async fn all_memories(client: &Client, user: &str) -> Vec<Value> {
    let mut all = Vec::new();
    loop {
        let result = call(
            client,
            "retrieve_memories",
            json!({"user_id": user, "limit": 100, "offset": all.len()}),
        )
        .await;
        assert!(!is_error(&result), "retrieve failed: {}", text(&result));
        let page = result.structured_content.as_ref().expect("structured")["memories"]
            .as_array()
            .cloned()
            .expect("memories");
        let done = page.len() < 100;
        all.extend(page);
        if done {
            return all;
        }
    }
}

/// `GET /v1/users/{user}/history` of a daemon at `base`: the user messages, oldest first.
pub async fn user_messages(http: &reqwest::Client, base: &str, user: &str) -> Vec<String> {
    let response = http
        .get(format!("{base}/v1/users/{user}/history"))
        .send()
        .await
        .expect("GET history");
    assert_eq!(response.status(), 200, "history of {user}");
    let body: Value = response.json().await.expect("history json");
    body["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["role"] == "user")
        .map(|m| m["content"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The one mock (`testkit::mock_azure`, on loopback port 0) as an OpenAI-compatible model
/// (`openai_env()`, `openai_base_url()`, key `mock-key`) with its gate closed: every request
/// is counted (`stats().requests`) and held until `open_gate()`. It lets a test know for
/// certain that turns are in flight inside a daemon (they are waiting there) and decide when
/// they may finish.
pub async fn gated_llm() -> MockServer {
    let mock = MockServer::start(MockConfig {
        port: 0,
        ..MockConfig::default()
    })
    .await
    .expect("start the mock");
    mock.close_gate();
    mock
}

// === The test PostgreSQL (postgres.rs, multi_daemon.rs) ===

/// A connection to the PostgreSQL at `url` (its connection task runs in the background).
pub async fn pg_client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test PostgreSQL");
    tokio::spawn(connection);
    client
}

/// Creates a fresh schema `{prefix}_{uuid}` on the PostgreSQL at `base`; returns its name.
pub async fn create_schema(base: &str, prefix: &str) -> String {
    let schema = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    pg_client(base)
        .await
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .expect("create schema");
    schema
}

/// `url` with `options=-c search_path={schema}`: its connections use that schema.
pub fn with_search_path(url: &str, schema: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}options=-c%20search_path%3D{schema}")
}
