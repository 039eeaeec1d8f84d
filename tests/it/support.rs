//! Shared fixtures: in-process servers on port 0, MCP clients over both transports, child
//! processes of the real binary, and a deadline-bounded poll instead of sleeps.

#![allow(dead_code)]

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use memento::config::McpServerConfig;
use memento::memory_server::{self, RunningMemoryServer};
use memento::storage::{SqliteOptions, SqliteStore};
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};
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
            let transport = memento::mcp::sse_client::connect(
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
    let Value::Object(arguments) = args else {
        panic!("arguments must be an object");
    };
    let mut params = CallToolRequestParams::new(tool.to_owned());
    params.arguments = Some(arguments);
    client
        .peer()
        .call_tool(params)
        .await
        .map_err(|e| e.to_string())
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

/// Polls `check` until it returns true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

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
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `memento mcp-server --port 0 --data-dir DIR` and reads its URL from stdout.
pub fn spawn_mcp_server(data_dir: &Path) -> ChildServer {
    spawn_mcp_server_with_env(data_dir, &[])
}

/// Like [`spawn_mcp_server`], with extra environment variables.
pub fn spawn_mcp_server_with_env(data_dir: &Path, envs: &[(&str, &str)]) -> ChildServer {
    let mut child = Command::new(env!("CARGO_BIN_EXE_memento"))
        .args(["mcp-server", "--port", "0", "--data-dir"])
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn memento mcp-server");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let first = lines
        .next()
        .and_then(Result::ok)
        .expect("memento mcp-server printed nothing");
    let url = first
        .rsplit(' ')
        .next()
        .filter(|u| u.starts_with("http://"))
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_owned();
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    ChildServer { child, url }
}

/// A daemon (`memento serve` in-process) with the embedded memory server and the offline
/// model, on port 0 with its own data directory.
pub struct DaemonFixture {
    pub daemon: Option<memento::daemon::Daemon>,
    pub dir: tempfile::TempDir,
    pub url: String,
    pub http: reqwest::Client,
}

impl DaemonFixture {
    pub async fn start() -> DaemonFixture {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut memento::config::Config)) -> DaemonFixture {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir, adjust).await
    }

    /// Starts on an existing data directory (restarts).
    pub async fn start_in(
        dir: tempfile::TempDir,
        adjust: impl FnOnce(&mut memento::config::Config),
    ) -> DaemonFixture {
        let mut config = daemon_config(dir.path());
        adjust(&mut config);
        config.validate().expect("valid config");
        let daemon = memento::daemon::Daemon::start(config)
            .await
            .expect("start daemon");
        let url = daemon.url();
        DaemonFixture {
            daemon: Some(daemon),
            dir,
            url,
            http: reqwest::Client::new(),
        }
    }

    pub fn daemon(&self) -> &memento::daemon::Daemon {
        self.daemon.as_ref().expect("running")
    }

    /// Shuts down gracefully and returns the data directory for a restart.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(daemon) = self.daemon.take() {
            daemon.shutdown().await;
        }
        self.dir
    }

    /// One turn; returns (status, body).
    pub async fn post(&self, user: &str, message: &str) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}/v1/users/{user}/messages", self.url))
            .json(&json!({ "message": message }))
            .send()
            .await
            .expect("send");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// One turn that must succeed.
    pub async fn turn(&self, user: &str, message: &str) -> Value {
        let (status, body) = self.post(user, message).await;
        assert_eq!(status, 200, "turn {message:?} for {user}: {body}");
        body
    }

    pub async fn history(&self, user: &str) -> Vec<Value> {
        let body: Value = self
            .http
            .get(format!("{}/v1/users/{user}/history", self.url))
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("json");
        body["messages"].as_array().cloned().unwrap_or_default()
    }
}

/// The config of a test daemon: everything on loopback port 0, data in `dir`, offline model.
pub fn daemon_config(dir: &Path) -> memento::config::Config {
    let mut config = memento::config::Config::default();
    config.server.port = 0;
    config.storage.data_dir = dir.to_owned();
    config.mcp.embedded_port = 0;
    config
}

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
    let mut child = Command::new(env!("CARGO_BIN_EXE_memento"))
        .args(["mcp-server", "--port", &port.to_string(), "--data-dir"])
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn memento mcp-server");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    assert!(
        first.contains("listening"),
        "memento mcp-server did not start: {first:?}"
    );
    std::thread::spawn(move || for _ in lines {});
    ChildServer {
        child,
        url: format!("http://127.0.0.1:{port}"),
    }
}

/// Starts `memento serve --port 0` as a child process with `args` and `envs`; reads its URL.
pub fn spawn_daemon(data_dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> ChildServer {
    let mut child = Command::new(env!("CARGO_BIN_EXE_memento"))
        .args(["serve", "--port", "0", "--data-dir"])
        .arg(data_dir)
        .args(args)
        .env("RUST_LOG", "warn")
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn memento serve");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    let url = first
        .rsplit(' ')
        .next()
        .filter(|u| u.starts_with("http://"))
        .unwrap_or_else(|| panic!("memento serve did not start: {first:?}"))
        .to_owned();
    std::thread::spawn(move || for _ in lines {});
    ChildServer { child, url }
}
