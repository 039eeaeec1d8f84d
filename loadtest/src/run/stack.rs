//! The spawned stack of `memento-loadtest run`: the Azure mock, the memory MCP server(s) and
//! the daemon(s), as child processes on free loopback ports with a temporary data directory.
//!
//! With `--daemons N` (N > 1): N daemons behind a private nginx running
//! deploy/nginx/memento.conf (consistent hash on the user), two MCP servers on one
//! PostgreSQL (memories), the LLM quota shared through Redis (`[limits] backend = "redis"`,
//! each daemon's fallback at 1/N), one pseudonym key and one service token for all. The
//! PostgreSQL and Redis are `--postgres-url` / `--redis-url`, or the ones
//! tests/services/{postgres,redis}.sh give (one already on the default port, or a private one
//! they start and leave running for the next run).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, bail};
use rand::Rng;

use super::RunArgs;
use crate::mock_azure::MockStats;
use crate::servers::{mcp_server_command, memento_bin, spawn_mcp_server};
use testkit::nginx::Nginx;
use testkit::process::spawn_ready;

/// What a spawned stack consists of.
pub(crate) struct Stack {
    /// Where the users send turns: the daemon, or nginx in front of the daemons.
    pub(crate) daemon_url: String,
    /// Each daemon's own URL.
    pub(crate) daemon_urls: Vec<String>,
    pub(crate) mcp_url: String,
    pub(crate) mcp_token: String,
    /// The service token the daemons accept (several daemons: nginx forwards, so loopback
    /// alone is not trusted).
    pub(crate) service_token: Option<String>,
    pub(crate) daemons: Vec<Child>,
    mcps: Vec<Child>,
    nginx: Option<Nginx>,
    /// `memento-loadtest mock-azure`, in its own process.
    mock: Child,
    mock_url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Stack {
    fn drop(&mut self) {
        // nginx first (its drop stops it with SIGTERM), then what it fronts.
        self.nginx = None;
        for daemon in &mut self.daemons {
            kill(daemon);
        }
        for mcp in &mut self.mcps {
            kill(mcp);
        }
        kill(&mut self.mock);
    }
}

impl Stack {
    /// The processes whose CPU a run measures, by the names the report uses (several
    /// daemons or MCP servers add up under one name).
    pub(crate) fn processes(&self) -> Vec<(&'static str, u32)> {
        let mut processes: Vec<(&'static str, u32)> =
            self.daemons.iter().map(|d| ("daemon", d.id())).collect();
        processes.extend(self.mcps.iter().map(|m| ("mcp_server", m.id())));
        processes.push(("mock", self.mock.id()));
        processes
    }

    /// Zeroes the mock's counters (`POST /stats/reset`), between capacity steps.
    pub(crate) async fn reset_mock_stats(&self, http: &reqwest::Client) -> anyhow::Result<()> {
        let url = format!("{}/stats/reset", self.mock_url);
        http.post(&url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .with_context(|| format!("POST {url}"))?;
        Ok(())
    }

    /// The mock's counters, from its `GET /stats`.
    pub(crate) async fn mock_stats(&self, http: &reqwest::Client) -> anyhow::Result<MockStats> {
        let url = format!("{}/stats", self.mock_url);
        http.get(&url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .with_context(|| format!("GET {url}"))?
            .json()
            .await
            .with_context(|| format!("GET {url}: not the mock's stats"))
    }
}

pub(crate) use testkit::process::kill;

/// The `memento-loadtest` binary that serves the mock: this one, or the one next to the
/// `memento` binary (when the harness runs as a library inside a test).
fn mock_bin(memento: &Path) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    if exe.file_stem().is_some_and(|s| s == "memento-loadtest") {
        return Ok(exe);
    }
    let beside = memento.with_file_name("memento-loadtest");
    if beside.is_file() {
        return Ok(beside);
    }
    bail!(
        "cannot find the `memento-loadtest` binary (for the mock) next to {}",
        memento.display()
    )
}

/// Starts `memento-loadtest mock-azure` on a free loopback port; returns it and its URL.
fn spawn_mock(args: &RunArgs, memento: &Path) -> anyhow::Result<(Child, String)> {
    let bin = mock_bin(memento)?;
    let mut command = Command::new(&bin);
    command
        .args(["mock-azure", "--host", "127.0.0.1", "--port", "0"])
        .args(["--api-key", "mock-key"])
        .args(["--latency-ms", &args.mock_latency_ms.to_string()])
        .env("RUST_LOG", "warn")
        .stderr(Stdio::inherit());
    if let Some(rpm) = args.mock_rpm {
        command.args(["--rpm", &rpm.to_string()]);
    }
    // Fault rates and quotas set for a hand-run mock must not leak into the benchmark's.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("MOCK_AZURE_") {
            command.env_remove(name);
        }
    }
    let (mock, ready) = spawn_ready(command, &format!("{} mock-azure", bin.display()))?;
    Ok((mock, ready.url))
}

/// Starts the stack `args` asks for.
pub(crate) async fn spawn_stack(args: &RunArgs) -> anyhow::Result<Stack> {
    let daemons = args.daemons.max(1);
    let bin = memento_bin(args.memento_bin.as_deref())?;
    let dir = tempfile::tempdir()?;
    // Services first: nothing to clean up yet if they fail.
    let (postgres_url, redis_url) = if daemons > 1 {
        (
            Some(service_url(
                args.postgres_url.as_deref(),
                "postgres.sh",
                "--postgres-url",
            )?),
            Some(service_url(
                args.redis_url.as_deref(),
                "redis.sh",
                "--redis-url",
            )?),
        )
    } else {
        (args.postgres_url.clone(), args.redis_url.clone())
    };
    let (mock, mock_url) = spawn_mock(args, &bin)?;
    let mcp_token = format!("loadtest-{}", uuid_like());
    let service_token = (daemons > 1).then(|| format!("loadtest-service-{}", uuid_like()));
    let mut stack = Stack {
        daemon_url: String::new(),
        daemon_urls: Vec::new(),
        mcp_url: String::new(),
        mcp_token,
        service_token,
        daemons: Vec::new(),
        mcps: Vec::new(),
        nginx: None,
        mock,
        mock_url,
        _dir: dir,
    };
    // Dropping `stack` on an error below stops whatever started.
    let mcp_servers = if daemons > 1 { 2 } else { 1 };
    let mut mcp_urls = Vec::new();
    for i in 0..mcp_servers {
        let mut command = mcp_server_command(&bin, &stack._dir.path().join(format!("mcp-{i}")));
        command
            .env("MEMENTO_MCP_TOKEN", &stack.mcp_token)
            .envs(crate::otlp::otel_env(
                args.otlp_endpoint.as_deref(),
                &args.otlp_protocol,
                crate::otlp::MCP_SERVICE,
            ));
        if let Some(url) = &postgres_url {
            command
                .env("MEMENTO_STORAGE__BACKEND", "postgres")
                .env("MEMENTO_STORAGE__POSTGRES_URL", url);
        }
        let (mcp, url) = spawn_mcp_server(command, &bin)?;
        stack.mcps.push(mcp);
        mcp_urls.push(url);
    }
    stack.mcp_url = mcp_urls[0].clone();
    // One pseudonym key for every daemon: a user's per-user limit is one Redis key.
    let trace_key = format!("{}{}", uuid_like(), uuid_like());
    let run_id = uuid_like();
    for i in 0..daemons {
        let mut command = Command::new(&bin);
        command
            .args(["serve", "--port", "0", "--data-dir"])
            .arg(stack._dir.path().join(format!("daemon-{i}")))
            .args([
                "--mcp-url",
                &format!("{}/mcp", mcp_urls[i % mcp_urls.len()]),
            ])
            .env("MEMENTO_MCP_TOKEN", &stack.mcp_token)
            .env("AZURE_OPENAI_ENDPOINT", &stack.mock_url)
            .env("AZURE_OPENAI_API_KEY", "mock-key")
            .env("AZURE_OPENAI_DEPLOYMENT", "gpt-4o-mini")
            .env("MEMENTO_CONVERSATION__MAX_ACTORS", "1000000")
            .env("RUST_LOG", "warn")
            .envs(crate::otlp::otel_env(
                args.otlp_endpoint.as_deref(),
                &args.otlp_protocol,
                crate::otlp::DAEMON_SERVICE,
            ))
            .stderr(Stdio::inherit());
        if let Some(rpm) = args.mock_rpm {
            command.env("MEMENTO_LLM__RPM", rpm.to_string());
        }
        if let Some(token) = &stack.service_token {
            command.env("MEMENTO_AUTH__SERVICE_TOKENS", format!("[\"{token}\"]"));
        }
        if daemons > 1 {
            command.env("MEMENTO_CONVERSATION__TRACE_USER_KEY", &trace_key);
        }
        if let Some(url) = &redis_url {
            command
                .env("MEMENTO_LIMITS__BACKEND", "redis")
                .env("MEMENTO_LIMITS__REDIS_URL", url)
                .env(
                    "MEMENTO_LIMITS__KEY_PREFIX",
                    format!("memento-loadtest:{run_id}"),
                )
                .env(
                    "MEMENTO_LIMITS__FALLBACK_SHARE",
                    format!("{:.4}", 1.0 / daemons as f64),
                );
        }
        let (daemon, ready) = spawn_ready(command, "memento serve")?;
        stack.daemons.push(daemon);
        stack.daemon_urls.push(ready.url);
    }
    if daemons > 1 {
        let nginx = Nginx::start(&stack.daemon_urls, "error").await?;
        stack.daemon_url = nginx.url.clone();
        stack.nginx = Some(nginx);
    } else {
        stack.daemon_url = stack.daemon_urls[0].clone();
    }
    Ok(stack)
}

/// `given`, or the URL that tests/services/`script` prints (a service already on its default
/// port, or a private one it starts).
fn service_url(given: Option<&str>, script: &str, flag: &str) -> anyhow::Result<String> {
    if let Some(url) = given {
        return Ok(url.to_owned());
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/services")
        .join(script);
    if !path.is_file() {
        bail!("--daemons needs {flag} (tests/services/{script} is not here to start one)");
    }
    let output = Command::new("bash")
        .arg(&path)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("run {}", path.display()))?;
    let url = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if !output.status.success() || url.is_empty() {
        bail!(
            "{} found no service and could not start one; pass {flag}",
            path.display()
        );
    }
    Ok(url)
}

pub(crate) fn uuid_like() -> String {
    let mut rng = rand::rng();
    format!("{:016x}{:016x}", rng.random::<u64>(), rng.random::<u64>())
}
