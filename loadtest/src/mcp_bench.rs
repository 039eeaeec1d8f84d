//! `memento-loadtest mcp-bench`: throughput and latency of the memory MCP server's tools
//! over Streamable HTTP (or legacy SSE), with durable stores.
//!
//! Without `--target` it opens a SQLite store in a temporary (or given) data directory (or,
//! with `--backend postgres`, the PostgreSQL store at `--postgres-url`, whose data stays
//! between runs: preload once, measure many times), optionally preloads it with `--preload` memories over `--users` users straight through
//! the storage layer, starts the memory server in this process on a free loopback port and
//! measures:
//! - `store_memory` with each `--clients` count (one MCP session per client);
//! - `retrieve_memories` with a one- or two-word query for a random user.
//!
//! It then reports calls/s, latency percentiles and the process's RSS.

use memento::shared::domain::tool as tools;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use memento::daemon::mcp::direct::DirectCaller;
use memento::memory_server::storage::{
    MemoryStore, NewMemory, PostgresOptions, PostgresStore, SqliteOptions, SqliteStore,
};
use memento::shared::config::McpServerConfig;
use memento::shared::domain::UserId;
use rmcp::model::{CallToolRequestParams, JsonObject};
use serde::Serialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// Flags of `mcp-bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct McpBenchArgs {
    /// Base URL of a running memory server (e.g. http://127.0.0.1:8000). Omit to start one
    /// in this process with a temporary data directory.
    #[arg(long)]
    pub target: Option<String>,
    /// Bearer token for --target.
    #[arg(long, env = "MEMENTO_MCP_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Data directory for the in-process server (default: a temporary directory).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Concurrent clients to measure, comma-separated; each has its own MCP session.
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    pub clients: Vec<usize>,
    /// How long each measurement runs.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Memories to preload before measuring retrieval (in-process server only).
    #[arg(long, default_value_t = 0)]
    pub preload: u64,
    /// Users the preloaded memories are spread over.
    #[arg(long, default_value_t = 10_000)]
    pub users: u64,
    /// Which tools to measure.
    #[arg(long, value_delimiter = ',', default_value = "store,retrieve")]
    pub tools: Vec<String>,
    /// Write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// The in-process server's store: `sqlite` (in --data-dir) or `postgres` (at
    /// --postgres-url; its rows persist across runs, so --preload adds to what is there).
    #[arg(long, value_enum, default_value = "sqlite")]
    pub backend: BenchBackend,
    /// PostgreSQL URL for --backend postgres (e.g. the one tests/services/postgres.sh
    /// prints).
    #[arg(long, env = "MEMENTO_BENCH_POSTGRES_URL", hide_env_values = true)]
    pub postgres_url: Option<String>,
    /// Connections of the PostgreSQL pool.
    #[arg(long, default_value_t = 16)]
    pub postgres_connections: usize,
    /// How each call is sent: `json` (a stateless JSON-RPC POST answered with JSON, as the
    /// daemon sends its calls) or `session` (rmcp's client over its session, answered as
    /// an SSE stream, as older clients do).
    #[arg(long, value_enum, default_value = "json")]
    pub calls: CallPath,
}

/// How `mcp-bench` sends its calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CallPath {
    /// One stateless JSON-RPC POST per call (MCP 2026-07-28), answered with JSON.
    Json,
    /// rmcp's client over an initialised session, answered as an SSE stream.
    Session,
}

/// The store behind the in-process server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BenchBackend {
    /// SQLite (the default engine).
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// One measurement.
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    /// `store_memory` or `retrieve_memories`.
    pub tool: String,
    /// Concurrent clients.
    pub clients: usize,
    /// Calls completed.
    pub calls: u64,
    /// Calls that failed (protocol or tool error).
    pub errors: u64,
    /// Completed calls per second.
    pub calls_per_s: f64,
    /// Latency percentiles in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest call.
    pub max_ms: f64,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Memories in the store when retrieval was measured.
    pub memories: u64,
    /// Users they belong to.
    pub users: u64,
    /// Measurements.
    pub results: Vec<BenchResult>,
    /// Resident set size of this process (server + load generator) at the end, MiB.
    pub rss_mib: f64,
    /// Peak resident set size, MiB.
    pub peak_rss_mib: f64,
    /// Stores per commit (fsync) in the in-process store, when known.
    pub stores_per_commit: Option<f64>,
    /// The in-process server's store.
    pub backend: BenchBackend,
    /// How the calls were sent.
    pub calls: CallPath,
}

use crate::servers::{McpClient as Client, connect_mcp as connect};

/// Runs the benchmark and prints a table.
pub async fn run(args: McpBenchArgs) -> anyhow::Result<BenchReport> {
    let mut _tempdir = None;
    let mut store_handle: Option<Arc<dyn MemoryStore>> = None;
    let shutdown = CancellationToken::new();
    let base = match &args.target {
        Some(target) => target.trim_end_matches('/').to_owned(),
        None => {
            let store: Arc<dyn MemoryStore> = match args.backend {
                BenchBackend::Sqlite => {
                    let dir = match &args.data_dir {
                        Some(dir) => dir.clone(),
                        None => {
                            let temp =
                                tempfile::tempdir().context("create a temporary data dir")?;
                            let path = temp.path().to_owned();
                            _tempdir = Some(temp);
                            path
                        }
                    };
                    let store = Arc::new(SqliteStore::open(&dir, &SqliteOptions::default())?);
                    if args.preload > 0 {
                        preload(store.as_ref(), args.preload, args.users).await?;
                    }
                    store
                }
                BenchBackend::Postgres => {
                    let url = args
                        .postgres_url
                        .as_deref()
                        .context("--backend postgres needs --postgres-url")?;
                    let options = PostgresOptions {
                        pool: memento::shared::pg::PoolOptions {
                            max_connections: args.postgres_connections,
                            ..memento::shared::pg::PoolOptions::default()
                        },
                        ..PostgresOptions::default()
                    };
                    let store = Arc::new(PostgresStore::open(url, &options).await?);
                    if args.preload > 0 {
                        preload(store.as_ref(), args.preload, args.users).await?;
                        // Fresh statistics and an empty GIN pending list, as a database
                        // that has been running a while would have.
                        let started = Instant::now();
                        store
                            .pool()
                            .get()
                            .await
                            .map_err(|e| anyhow::anyhow!("{e}"))?
                            .batch_execute("VACUUM ANALYZE memories")
                            .await?;
                        eprintln!(
                            "VACUUM ANALYZE after the preload: {:.1} s",
                            started.elapsed().as_secs_f64()
                        );
                    }
                    store
                }
            };
            let config = McpServerConfig {
                port: 0,
                ..McpServerConfig::default()
            };
            let server =
                memento::memory_server::start(&config, store.clone(), shutdown.clone()).await?;
            store_handle = Some(store);
            server.url()
        }
    };

    let commits_before = store_handle.as_ref().map(|s| s.stats());
    let mut results = Vec::new();
    for tool in &args.tools {
        for &clients in &args.clients {
            let result = measure(
                &base,
                args.token.as_deref(),
                tool,
                clients,
                args.duration,
                args.users.max(1),
                args.calls,
            )
            .await?;
            eprintln!(
                "{:<18} clients={:<4} calls={:<8} errors={:<4} {:>9.0} calls/s  p50={:.2} ms  p99={:.2} ms  max={:.2} ms",
                result.tool,
                result.clients,
                result.calls,
                result.errors,
                result.calls_per_s,
                result.p50_ms,
                result.p99_ms,
                result.max_ms
            );
            results.push(result);
        }
    }
    let stores_per_commit = match (store_handle.as_ref(), commits_before) {
        (Some(store), Some(before)) => {
            let after = store.stats();
            let commits = after.commits.saturating_sub(before.commits);
            (commits > 0).then(|| (after.writes - before.writes) as f64 / commits as f64)
        }
        _ => None,
    };
    let (rss_mib, peak_rss_mib) = rss_mib();
    let report = BenchReport {
        memories: args.preload,
        users: args.users,
        results,
        rss_mib,
        peak_rss_mib,
        stores_per_commit,
        backend: args.backend,
        calls: args.calls,
    };
    eprintln!(
        "rss={rss_mib:.1} MiB (peak {peak_rss_mib:.1} MiB), stores per commit: {}",
        stores_per_commit.map_or("n/a".into(), |s| format!("{s:.1}"))
    );
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("write {}", path.display()))?;
    }
    shutdown.cancel();
    Ok(report)
}

/// One benchmark client: a session, or a direct JSON caller.
enum Caller {
    Session(Client),
    Json(Arc<DirectCaller>),
}

impl Caller {
    async fn call(&self, tool: &str, arguments: JsonObject) -> bool {
        match self {
            Caller::Session(client) => {
                let mut params = CallToolRequestParams::new(tool.to_owned());
                params.arguments = Some(arguments);
                client
                    .peer()
                    .call_tool(params)
                    .await
                    .is_ok_and(|result| result.is_error != Some(true))
            }
            Caller::Json(caller) => caller
                .call_tool(
                    tool,
                    &arguments,
                    &JsonObject::new(),
                    memento::daemon::mcp::Structured::Keep,
                )
                .await
                .is_ok_and(|(output, _)| !output.is_error),
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    base: &str,
    token: Option<&str>,
    tool: &str,
    clients: usize,
    duration: Duration,
    users: u64,
    path: CallPath,
) -> anyhow::Result<BenchResult> {
    let tool_name = match tool {
        "store" => tools::STORE_MEMORY,
        "retrieve" => tools::RETRIEVE_MEMORIES,
        other => anyhow::bail!("unknown tool {other:?}: use store or retrieve"),
    };
    let mut sessions = Vec::with_capacity(clients);
    match path {
        CallPath::Session => {
            for _ in 0..clients {
                sessions.push(Arc::new(Caller::Session(connect(base, token).await?)));
            }
        }
        CallPath::Json => {
            // One connection pool; each client in flight gets its own connection.
            let http = reqwest::Client::builder()
                .tcp_nodelay(true)
                .pool_max_idle_per_host(clients)
                .build()?;
            let caller = DirectCaller::new(http, &format!("{base}/mcp"), token)?;
            caller.probe().await.context(
                "the server does not serve stateless JSON-RPC requests (try --calls session)",
            )?;
            let caller = Arc::new(Caller::Json(Arc::new(caller)));
            sessions.extend((0..clients).map(|_| caller.clone()));
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (n, session) in sessions.iter().enumerate() {
        let caller = session.clone();
        let stop = stop.clone();
        let errors = errors.clone();
        let tool_name = tool_name.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
                .map_err(|e| anyhow::anyhow!("histogram: {e}"))?;
            let mut rng = Rng::new(n as u64 + 1);
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let arguments = match tool_name.as_str() {
                    tools::STORE_MEMORY => json!({
                        "user_id": format!("bench{}", n),
                        "content": sentence(&mut rng, 60),
                        "filename": format!("note_{i}.txt"),
                        "tags": format!("{},{}", word(rng.zipf()), word(rng.zipf())),
                    }),
                    _ => json!({
                        "user_id": format!("user{}", rng.below(users)),
                        "query": format!("{} {}", word(rng.zipf()), word(rng.zipf())),
                    }),
                };
                let arguments = match arguments {
                    Value::Object(map) => map,
                    _ => JsonObject::new(),
                };
                let sent = Instant::now();
                if caller.call(&tool_name, arguments).await {
                    let micros = sent.elapsed().as_micros().max(1) as u64;
                    histogram.saturating_record(micros);
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
            }
            anyhow::Ok(histogram)
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
        .map_err(|e| anyhow::anyhow!("histogram: {e}"))?;
    for task in tasks {
        let histogram = task.await??;
        total
            .add(&histogram)
            .map_err(|e| anyhow::anyhow!("histogram: {e}"))?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    for session in sessions {
        if let Ok(Caller::Session(client)) = Arc::try_unwrap(session) {
            let _ = client.cancel().await;
        }
    }
    let ms = |q: f64| total.value_at_quantile(q) as f64 / 1000.0;
    Ok(BenchResult {
        tool: tool_name.to_owned(),
        clients,
        calls: total.len(),
        errors: errors.load(Ordering::Relaxed),
        calls_per_s: total.len() as f64 / elapsed,
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        max_ms: total.max() as f64 / 1000.0,
    })
}

/// Stores in flight during the preload (the SQLite writer commits them in groups; the
/// PostgreSQL pool queues them for its connections).
const PRELOAD_IN_FLIGHT: usize = 2048;

/// Fills the store with `count` memories over `users` users, many stores in flight so the
/// writer commits them in large groups.
async fn preload(store: &dyn MemoryStore, count: u64, users: u64) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut rng = Rng::new(42);
    let mut in_flight = futures::stream::FuturesUnordered::new();
    let mut done = 0u64;
    let mut last_report = Instant::now();
    use futures::StreamExt;
    for i in 0..count {
        let user = UserId::parse(&format!("user{}", i % users.max(1)))?;
        let memory = NewMemory {
            user,
            content: sentence(&mut rng, 50),
            filename: format!("note_{i}.txt"),
            description: sentence(&mut rng, 6),
            tags: vec![word(rng.zipf()), word(rng.zipf())],
            idempotency_key: None,
            created_at: None,
            embedding: None,
            embedding_model: None,
        };
        in_flight.push(store.store(memory));
        if in_flight.len() >= PRELOAD_IN_FLIGHT
            && let Some(result) = in_flight.next().await
        {
            result?;
            done += 1;
        }
        if last_report.elapsed() > Duration::from_secs(2) {
            eprintln!(
                "preloading: {done}/{count} memories ({:.0}/s)",
                done as f64 / started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
    }
    while let Some(result) = in_flight.next().await {
        result?;
    }
    eprintln!(
        "preloaded {count} memories over {users} users in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Resident and peak resident set size of this process in MiB (Linux; 0 elsewhere).
pub fn rss_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A tiny deterministic generator (xorshift) so runs are repeatable without extra crates.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    /// Word ranks with a Zipf-like skew over a 5,000-word vocabulary.
    fn zipf(&mut self) -> u64 {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        ((5000f64).powf(u) as u64).saturating_sub(1).min(4999)
    }
}

const SYLLABLES: &[&str] = &[
    "ka", "lo", "mi", "ren", "sa", "tor", "vi", "qua", "ne", "bel", "dra", "fin", "gol", "hu",
    "jas", "ko", "lum", "mar", "nix", "pol",
];

/// The `rank`-th word of the synthetic vocabulary.
fn word(rank: u64) -> String {
    let n = SYLLABLES.len() as u64;
    let mut w = String::new();
    let mut r = rank + n;
    while r > 0 {
        w.push_str(SYLLABLES[(r % n) as usize]);
        r /= n;
    }
    w
}

fn sentence(rng: &mut Rng, words: usize) -> String {
    (0..words)
        .map(|_| word(rng.zipf()))
        .collect::<Vec<_>>()
        .join(" ")
}
