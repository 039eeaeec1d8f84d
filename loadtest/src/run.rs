//! `memento-loadtest run`: drives a daemon's HTTP API with simulated users and reports
//! throughput, latency, errors, LLM and tool activity, daemon RSS and CPU, and an integrity
//! check of every memory the daemon said it stored.
//!
//! - Closed loop (default): `--users` users, each sending its next turn when the previous one
//!   is answered (plus the scenario's think time). Open loop (`--rate N`): turns are sent on a
//!   fixed schedule, and latency is measured from the *intended* send time, so a stalled
//!   daemon cannot hide behind fewer sends (coordinated omission).
//! - `--spawn` (the default without `--target`): starts the Azure mock in this process and
//!   `memento mcp-server` + `memento serve` as child processes on free loopback ports with a
//!   temporary data directory; the daemon talks to the mock over real HTTP as if it were Azure.
//! - Every stored memory carries a unique marker word; at the end each marker must be found
//!   for its user through the MCP server and never for another user.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::mock_azure::{MockConfig, MockServer, MockStats};

/// Flags of `run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// A running daemon's URL; omit to spawn the whole stack (mock, MCP server, daemon).
    #[arg(long)]
    pub target: Option<String>,
    /// Simulated users.
    #[arg(long, default_value_t = 50)]
    pub users: usize,
    /// How long to run, e.g. 30s (ignored with --turns).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Total turns to send, then stop.
    #[arg(long)]
    pub turns: Option<u64>,
    /// Open loop: turns per second, sent on schedule whatever the latency.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Scenario file (TOML); default: the built-in default mix.
    #[arg(long)]
    pub scenario: Option<PathBuf>,
    /// Output directory for report.json, report.md and report.svg.
    #[arg(long, default_value = "loadtest/out")]
    pub out: PathBuf,
    /// Service token for --target.
    #[arg(long, env = "MEMENTO_LOADTEST_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Spawned mock: latency per request in ms.
    #[arg(long, default_value_t = 0)]
    pub mock_latency_ms: u64,
    /// Spawned mock: requests-per-minute quota (and the daemon's own limit).
    #[arg(long)]
    pub mock_rpm: Option<u32>,
    /// The `memento` binary for --spawn (default: next to this one).
    #[arg(long, env = "MEMENTO_BIN")]
    pub memento_bin: Option<PathBuf>,
    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Spawned stack: both services export traces to this OTLP endpoint (e.g. a Jaeger from
    /// deploy/jaeger-local.sh: http://127.0.0.1:4318, or :4317 with --otlp-protocol grpc).
    #[arg(long)]
    pub otlp_endpoint: Option<String>,
    /// OTLP protocol for --otlp-endpoint: http/protobuf or grpc.
    #[arg(long, default_value = "http/protobuf", value_parser = ["http/protobuf", "grpc"])]
    pub otlp_protocol: String,
}

/// A scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Name in the report.
    pub name: String,
    /// Pause between a user's turns, ms.
    #[serde(default)]
    pub think_ms: u64,
    /// Users start evenly over this many seconds.
    #[serde(default)]
    pub ramp_up_s: f64,
    /// Relative weights of turn kinds.
    pub mix: Mix,
    /// Text sizes.
    pub text: TextSize,
}

/// Turn kinds and their weights.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mix {
    /// "store this: ..."
    pub store: u32,
    /// "what did I store about ...?"
    pub retrieve: u32,
    /// "search my notes for ..."
    pub search: u32,
    /// "forget ..."
    pub delete: u32,
    /// small talk
    pub chat: u32,
}

/// Words per stored text.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextSize {
    /// Fewest words.
    pub min_words: usize,
    /// Most words.
    pub max_words: usize,
}

impl Default for Scenario {
    fn default() -> Self {
        toml::from_str(include_str!("../scenarios/default.toml")).unwrap_or(Scenario {
            name: "default".into(),
            think_ms: 0,
            ramp_up_s: 0.0,
            mix: Mix {
                store: 40,
                retrieve: 30,
                search: 15,
                delete: 5,
                chat: 10,
            },
            text: TextSize {
                min_words: 8,
                max_words: 60,
            },
        })
    }
}

/// The report (`report.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Closed or open loop.
    pub mode: String,
    /// Simulated users.
    pub users: usize,
    /// Turns answered (any status).
    pub turns: u64,
    /// Seconds measured.
    pub elapsed_s: f64,
    /// Turns per second.
    pub turns_per_s: f64,
    /// Latency percentiles, ms.
    pub latency_ms: Latency,
    /// Errors by kind (HTTP status or transport).
    pub errors: BTreeMap<String, u64>,
    /// Tool calls seen in answers, by tool.
    pub tool_calls: BTreeMap<String, u64>,
    /// What the mock saw (spawn mode).
    pub llm: Option<MockStats>,
    /// Daemon retries of LLM calls (from its /metrics).
    pub llm_retries: Option<u64>,
    /// Daemon RSS samples in MiB (spawn mode), one per second.
    pub daemon_rss_mib: Vec<f64>,
    /// Daemon CPU use per second (1.0 = one core), spawn mode.
    pub daemon_cpu: Vec<f64>,
    /// Turns answered in each second.
    pub throughput_per_s: Vec<u64>,
    /// p99 latency in each second, ms.
    pub p99_per_s_ms: Vec<f64>,
    /// The integrity check.
    pub integrity: Integrity,
    /// The daemon's own share of each answered turn, ms: the latency measured here minus
    /// the time the daemon reported in the LLM provider and in MCP tool calls
    /// (`timings` in each API answer). Absent when the target reports no timings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overhead_ms: Option<Latency>,
    /// The rate-limit check, when the spawned mock had an RPM quota.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitCheck>,
    /// Span export of both services, with --otlp-endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telemetry: Option<crate::otlp::TelemetryReport>,
}

/// Whether the daemon kept the LLM deployment's request quota (spawn mode with
/// `--mock-rpm`): arrivals at the mock in any 10 consecutive seconds never exceed the
/// quota's 10-second share plus the daemon's burst, and no user saw a 429.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RateLimitCheck {
    /// The quota, requests per minute (the mock's and the daemon's).
    pub rpm: u32,
    /// What Azure admits in one 10-second window: rpm / 6.
    pub window_quota: u64,
    /// The daemon's burst allowance: one second's worth (rpm / 60, at least 1).
    pub burst: u64,
    /// Most requests that arrived at the mock in any 10 consecutive seconds.
    pub max_arrivals_in_10s: u64,
    /// Requests the mock refused with 429.
    pub mock_429s: u64,
    /// Turns that ended with HTTP 429 at the users.
    pub user_429s: u64,
    /// Both promises held.
    pub ok: bool,
}

/// Latency percentiles, ms.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th.
    pub p90: f64,
    /// 99th.
    pub p99: f64,
    /// 99.9th.
    pub p999: f64,
    /// Slowest.
    pub max: f64,
}

impl Latency {
    /// The percentiles of a histogram of microseconds, in milliseconds.
    fn of(histogram: &Histogram<u64>) -> Latency {
        let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
        Latency {
            p50: ms(0.5),
            p90: ms(0.9),
            p99: ms(0.99),
            p999: ms(0.999),
            max: histogram.max() as f64 / 1000.0,
        }
    }
}

/// The integrity check's outcome.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Integrity {
    /// Memories not checked because their delete turn failed (timeout or error): the
    /// harness cannot know whether the delete happened before the failure.
    #[serde(default)]
    pub uncertain: u64,
    /// Nothing lost, nothing leaked, order kept.
    pub ok: bool,
    /// Memories checked.
    pub checked: u64,
    /// Stored memories not found for their user.
    pub lost: u64,
    /// Memories found for another user.
    pub leaked: u64,
    /// Users whose history order did not match what they sent.
    pub out_of_order: u64,
    /// Why it was not run, when it was not.
    pub skipped: Option<String>,
}

/// What a spawned stack consists of.
pub(crate) struct Stack {
    pub(crate) daemon_url: String,
    mcp_url: String,
    mcp_token: String,
    pub(crate) daemon: Child,
    mcp: Child,
    mock: MockServer,
    _dir: tempfile::TempDir,
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        let _ = self.mcp.kill();
        let _ = self.mcp.wait();
    }
}

fn memento_bin(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        return Ok(path.to_owned());
    }
    let exe = std::env::current_exe()?;
    for dir in exe.ancestors().skip(1).take(3) {
        let candidate = dir.join("memento");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "cannot find the `memento` binary next to {}; build it (cargo build --release) or pass --memento-bin",
        exe.display()
    )
}

/// Reads the first stdout line of a child and returns its last word (the URL it prints).
fn url_from(child: &mut Child, what: &str) -> anyhow::Result<String> {
    let stdout = child.stdout.take().context("child stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().transpose()?.unwrap_or_default();
    std::thread::spawn(move || for _ in lines {});
    first
        .rsplit(' ')
        .next()
        .filter(|u| u.starts_with("http://"))
        .map(str::to_owned)
        .with_context(|| format!("{what} did not start: {first:?}"))
}

pub(crate) async fn spawn_stack(args: &RunArgs) -> anyhow::Result<Stack> {
    let bin = memento_bin(args.memento_bin.as_deref())?;
    let dir = tempfile::tempdir()?;
    let mock = MockServer::start(MockConfig {
        port: 0,
        latency_ms: args.mock_latency_ms,
        rpm: args.mock_rpm,
        ..MockConfig::default()
    })
    .await?;
    let mcp_token = format!("loadtest-{}", uuid_like());
    let mut mcp = Command::new(&bin)
        .args(["mcp-server", "--port", "0", "--data-dir"])
        .arg(dir.path().join("mcp"))
        .env("MEMENTO_MCP_TOKEN", &mcp_token)
        .env("RUST_LOG", "warn")
        .envs(crate::otlp::otel_env(
            args.otlp_endpoint.as_deref(),
            &args.otlp_protocol,
            crate::otlp::MCP_SERVICE,
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("start {} mcp-server", bin.display()))?;
    let mcp_url = url_from(&mut mcp, "memento mcp-server")?;
    let mut daemon_cmd = Command::new(&bin);
    daemon_cmd
        .args(["serve", "--port", "0", "--data-dir"])
        .arg(dir.path().join("daemon"))
        .args(["--mcp-url", &format!("{mcp_url}/mcp")])
        .env("MEMENTO_MCP_TOKEN", &mcp_token)
        .env("AZURE_OPENAI_ENDPOINT", mock.endpoint())
        .env("AZURE_OPENAI_API_KEY", "mock-key")
        .env("AZURE_OPENAI_DEPLOYMENT", "gpt-4o-mini")
        .env("MEMENTO_CONVERSATION__MAX_ACTORS", "1000000")
        .env("RUST_LOG", "warn")
        .envs(crate::otlp::otel_env(
            args.otlp_endpoint.as_deref(),
            &args.otlp_protocol,
            crate::otlp::DAEMON_SERVICE,
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(rpm) = args.mock_rpm {
        daemon_cmd.env("MEMENTO_LLM__RPM", rpm.to_string());
    }
    let mut daemon = daemon_cmd.spawn().context("start memento serve")?;
    let daemon_url = match url_from(&mut daemon, "memento serve") {
        Ok(url) => url,
        Err(error) => {
            let _ = mcp.kill();
            return Err(error);
        }
    };
    Ok(Stack {
        daemon_url,
        mcp_url,
        mcp_token,
        daemon,
        mcp,
        mock,
        _dir: dir,
    })
}

fn uuid_like() -> String {
    let mut rng = rand::rng();
    format!("{:016x}{:016x}", rng.random::<u64>(), rng.random::<u64>())
}

/// One user's record of what it sent and stored.
#[derive(Default)]
struct UserLog {
    sent: Vec<String>,
    markers: Vec<String>,
    /// Markers whose delete turn ended without an answer: the delete may or may not have
    /// happened, so they are neither expected nor counted as lost.
    uncertain: u64,
}

#[derive(Default)]
struct Shared {
    histogram: Option<Histogram<u64>>,
    overhead: Option<Histogram<u64>>,
    per_second: Vec<(u64, Histogram<u64>)>,
    errors: BTreeMap<String, u64>,
    tool_calls: BTreeMap<String, u64>,
    turns: u64,
}

const WORDS: &[&str] = &[
    "meeting",
    "budget",
    "recipe",
    "garden",
    "travel",
    "invoice",
    "birthday",
    "project",
    "launch",
    "review",
    "dentist",
    "flight",
    "hotel",
    "books",
    "running",
    "coffee",
    "design",
    "release",
    "contract",
    "insurance",
    "school",
    "holiday",
    "concert",
    "museum",
    "pasta",
    "bicycle",
    "keyboard",
    "mortgage",
    "plumber",
    "newsletter",
];

fn text(rng: &mut impl Rng, size: TextSize) -> String {
    let n = rng.random_range(size.min_words.max(1)..=size.max_words.max(size.min_words.max(1)));
    (0..n)
        .map(|_| WORDS[rng.random_range(0..WORDS.len())])
        .collect::<Vec<_>>()
        .join(" ")
}

fn pick(rng: &mut impl Rng, mix: Mix) -> &'static str {
    let total = mix.store + mix.retrieve + mix.search + mix.delete + mix.chat;
    let mut roll = rng.random_range(0..total.max(1));
    for (weight, kind) in [
        (mix.store, "store"),
        (mix.retrieve, "retrieve"),
        (mix.search, "search"),
        (mix.delete, "delete"),
        (mix.chat, "chat"),
    ] {
        if roll < weight {
            return kind;
        }
        roll -= weight;
    }
    "chat"
}

/// Runs the load test and writes the report; `Ok(report)` even when integrity fails (the
/// caller decides the exit code).
pub async fn run(args: RunArgs) -> anyhow::Result<Report> {
    let scenario = match &args.scenario {
        Some(path) => toml::from_str::<Scenario>(
            &std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?,
        )
        .with_context(|| format!("parse scenario {}", path.display()))?,
        None => Scenario::default(),
    };
    if args.users == 0 {
        bail!("--users must be at least 1");
    }
    let stack = match &args.target {
        Some(_) => None,
        None => Some(spawn_stack(&args).await?),
    };
    let base = match (&args.target, &stack) {
        (Some(target), _) => target.trim_end_matches('/').to_owned(),
        (None, Some(stack)) => stack.daemon_url.clone(),
        (None, None) => bail!("no target"),
    };
    let duration = match (args.turns, args.duration) {
        (Some(_), _) => None,
        (None, Some(d)) => Some(d),
        (None, None) => Some(Duration::from_secs(10)),
    };
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.users.min(4096))
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(120))
        .build()?;
    let shared = Arc::new(Mutex::new(Shared {
        histogram: Some(
            Histogram::new_with_bounds(1, 3_600_000_000, 3).map_err(|e| anyhow::anyhow!("{e}"))?,
        ),
        overhead: Some(
            Histogram::new_with_bounds(1, 3_600_000_000, 3).map_err(|e| anyhow::anyhow!("{e}"))?,
        ),
        ..Shared::default()
    }));
    let logs: Arc<Vec<Mutex<UserLog>>> = Arc::new(
        (0..args.users)
            .map(|_| Mutex::new(UserLog::default()))
            .collect(),
    );
    let budget = Arc::new(std::sync::atomic::AtomicI64::new(
        args.turns.map_or(i64::MAX, |t| t as i64),
    ));
    let progress = if args.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        match args.turns {
            Some(turns) => indicatif::ProgressBar::new(turns),
            None => indicatif::ProgressBar::new(duration.map_or(0, |d| d.as_secs())),
        }
    };
    progress.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let stop_at = duration.map(|d| started + d);
    let run_id: Arc<str> = Arc::from(&uuid_like()[..8]);

    // Resource sampling of the spawned daemon, once a second.
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let samples: Arc<Mutex<(Vec<f64>, Vec<f64>)>> = Arc::default();
    let sampler = stack.as_ref().map(|s| {
        let pid = s.daemon.id();
        let sampling = sampling.clone();
        let samples = samples.clone();
        tokio::spawn(async move {
            let ticks = 100.0; // USER_HZ on Linux
            let mut last = cpu_ticks(pid);
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let now = cpu_ticks(pid);
                if let Ok(mut s) = samples.lock() {
                    s.0.push(rss_mib(pid));
                    s.1.push((now.saturating_sub(last)) as f64 / ticks);
                }
                last = now;
            }
        })
    });

    let mut tasks = Vec::new();
    let open_loop = args.rate.filter(|r| *r > 0.0);
    for user_index in 0..args.users {
        let http = http.clone();
        let base = base.clone();
        let token = args.token.clone();
        let shared = shared.clone();
        let logs = logs.clone();
        let budget = budget.clone();
        let progress = progress.clone();
        let scenario = scenario.clone();
        let user = format!("lt-{run_id}-{user_index:05}");
        let run_id = run_id.clone();
        let users = args.users as f64;
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(user_index as u64 + 1);
            let ramp =
                Duration::from_secs_f64(scenario.ramp_up_s.max(0.0) * user_index as f64 / users);
            tokio::time::sleep(ramp).await;
            let mut n = 0u64;
            // Open loop: this user's share of the rate, on a fixed schedule.
            let interval = open_loop.map(|rate| Duration::from_secs_f64(users / rate));
            let mut intended = Instant::now();
            loop {
                if stop_at.is_some_and(|t| Instant::now() >= t) {
                    break;
                }
                if budget.fetch_sub(1, std::sync::atomic::Ordering::Relaxed) <= 0 {
                    break;
                }
                if interval.is_some() {
                    let now = Instant::now();
                    if intended > now {
                        tokio::time::sleep(intended - now).await;
                    }
                }
                let kind = pick(&mut rng, scenario.mix);
                let (message, marker) = match kind {
                    "store" => {
                        let marker = format!("mk{run_id}u{user_index}n{n}");
                        (
                            format!("store this: {} {marker}", text(&mut rng, scenario.text)),
                            Some(marker),
                        )
                    }
                    "retrieve" => (
                        format!(
                            "what did I store about {}?",
                            WORDS[rng.random_range(0..WORDS.len())]
                        ),
                        None,
                    ),
                    "search" => (
                        format!(
                            "search my notes for {}",
                            WORDS[rng.random_range(0..WORDS.len())]
                        ),
                        None,
                    ),
                    // Forget one of this user's own markers, so the integrity check knows
                    // exactly which memory is gone.
                    "delete" => {
                        let target = logs[user_index]
                            .lock()
                            .ok()
                            .and_then(|l| l.markers.first().cloned());
                        match target {
                            Some(marker) => (format!("forget {marker}"), Some(marker)),
                            None => ("hello again".to_owned(), None),
                        }
                    }
                    _ => ("hello, how are you?".to_owned(), None),
                };
                // Latency counts from the intended send time in open loop.
                let t0 = if interval.is_some() {
                    intended
                } else {
                    Instant::now()
                };
                let mut request = http
                    .post(format!("{base}/v1/users/{user}/messages"))
                    .json(&json!({"message": message}));
                if let Some(token) = &token {
                    request = request.bearer_auth(token);
                }
                let sent_at = Instant::now();
                let outcome = request.send().await;
                let (status, body) = match outcome {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        (
                            status,
                            response.json::<Value>().await.unwrap_or(Value::Null),
                        )
                    }
                    Err(error) => (0, json!({"transport": error.to_string()})),
                };
                let micros = t0.elapsed().as_micros().max(1) as u64;
                // Overhead counts from the actual send: a late open-loop send is the
                // harness's schedule, not the daemon's work.
                let overhead_micros = (status == 200)
                    .then(|| {
                        let timings = &body["timings"];
                        let outside = timings["llm_ms"].as_f64()? + timings["tools_ms"].as_f64()?;
                        let total = sent_at.elapsed().as_secs_f64() * 1e6;
                        Some((total - outside * 1000.0).max(1.0) as u64)
                    })
                    .flatten();
                let second = started.elapsed().as_secs();
                if let Ok(mut shared) = shared.lock() {
                    shared.turns += 1;
                    if let (Some(h), Some(o)) = (shared.overhead.as_mut(), overhead_micros) {
                        h.saturating_record(o);
                    }
                    if let Some(h) = shared.histogram.as_mut() {
                        h.saturating_record(micros);
                    }
                    if shared.per_second.last().is_none_or(|(s, _)| *s != second)
                        && let Ok(h) = Histogram::new_with_bounds(1, 3_600_000_000, 2)
                    {
                        shared.per_second.push((second, h));
                    }
                    if let Some((_, h)) = shared.per_second.last_mut() {
                        h.saturating_record(micros);
                    }
                    if status != 200 {
                        let kind = if status == 0 {
                            "transport".to_owned()
                        } else {
                            format!("{status} {}", body["error"]["code"].as_str().unwrap_or(""))
                        };
                        *shared.errors.entry(kind).or_default() += 1;
                    }
                    for call in body["tool_calls"].as_array().into_iter().flatten() {
                        if let Some(name) = call["name"].as_str() {
                            *shared.tool_calls.entry(name.to_owned()).or_default() += 1;
                        }
                    }
                }
                if status == 200 {
                    let succeeded = |tool: &str| {
                        body["tool_calls"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .any(|c| c["name"] == tool && c["is_error"] == false)
                    };
                    let stored = succeeded("store_memory");
                    let deleted = succeeded("delete_memory");
                    if let Ok(mut log) = logs[user_index].lock() {
                        log.sent.push(message);
                        match (kind, marker) {
                            ("store", Some(marker)) if stored => log.markers.push(marker),
                            ("delete", Some(marker)) if deleted => {
                                log.markers.retain(|m| *m != marker)
                            }
                            _ => {}
                        }
                    }
                } else if let ("delete", Some(marker)) = (kind, &marker)
                    && let Ok(mut log) = logs[user_index].lock()
                {
                    log.markers.retain(|m| m != marker);
                    log.uncertain += 1;
                }
                if stop_at.is_none() {
                    progress.inc(1);
                }
                n += 1;
                if let Some(interval) = interval {
                    intended += interval;
                } else if scenario.think_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(scenario.think_ms)).await;
                }
            }
        }));
    }
    let ticker = {
        let progress = progress.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let turns = shared.lock().map(|s| s.turns).unwrap_or(0);
                let elapsed = started.elapsed().as_secs_f64();
                if stop_at.is_some() {
                    progress.set_position(elapsed as u64);
                }
                progress.set_message(format!(
                    "{turns} turns, {:.0}/s",
                    turns as f64 / elapsed.max(0.001)
                ));
            }
        })
    };
    for task in tasks {
        let _ = task.await;
    }
    ticker.abort();
    progress.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    if let Some(sampler) = sampler {
        let _ = sampler.await;
    }

    let (llm, llm_retries) = match &stack {
        Some(stack) => {
            let retries = http
                .get(format!("{}/metrics", stack.daemon_url))
                .send()
                .await
                .ok();
            let retries = match retries {
                Some(r) => r
                    .text()
                    .await
                    .ok()
                    .and_then(|t| metric(&t, "memento_llm_retries_total")),
                None => None,
            };
            (Some(stack.mock.stats()), retries)
        }
        None => (None, None),
    };
    let telemetry = match (&stack, &args.otlp_endpoint) {
        (Some(stack), Some(endpoint)) => Some(
            crate::otlp::export_report(
                &http,
                endpoint,
                &args.otlp_protocol,
                &stack.daemon_url,
                &stack.mcp_url,
                &stack.mcp_token,
            )
            .await,
        ),
        _ => None,
    };
    let integrity = match &stack {
        Some(stack) => check_integrity(stack, &logs, &http, &base).await?,
        None => Integrity {
            ok: true,
            skipped: Some("--target given: the MCP server is not known to the harness".into()),
            ..Integrity::default()
        },
    };
    let shared = shared.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    let histogram = shared.histogram.as_ref().context("histogram")?;
    let (rss, cpu) = samples.lock().map(|s| s.clone()).unwrap_or_default();
    let mut report = Report {
        scenario: scenario.name.clone(),
        mode: if open_loop.is_some() {
            "open".into()
        } else {
            "closed".into()
        },
        users: args.users,
        turns: shared.turns,
        elapsed_s: elapsed,
        turns_per_s: shared.turns as f64 / elapsed.max(0.001),
        latency_ms: Latency::of(histogram),
        errors: shared.errors.clone(),
        tool_calls: shared.tool_calls.clone(),
        llm,
        llm_retries,
        daemon_rss_mib: rss,
        daemon_cpu: cpu,
        throughput_per_s: shared.per_second.iter().map(|(_, h)| h.len()).collect(),
        p99_per_s_ms: shared
            .per_second
            .iter()
            .map(|(_, h)| h.value_at_quantile(0.99) as f64 / 1000.0)
            .collect(),
        integrity,
        overhead_ms: shared
            .overhead
            .as_ref()
            .filter(|h| !h.is_empty())
            .map(Latency::of),
        rate_limit: None,
        telemetry,
    };
    drop(shared);
    if let (Some(rpm), Some(llm)) = (args.mock_rpm.filter(|_| args.target.is_none()), &report.llm) {
        report.rate_limit = Some(rate_limit_check(rpm, llm, &report.errors));
    }
    write_reports(&args.out, &report)?;
    drop(stack);
    Ok(report)
}

/// The rate-limit check over what the mock saw and what the users saw.
pub fn rate_limit_check(
    rpm: u32,
    llm: &MockStats,
    errors: &BTreeMap<String, u64>,
) -> RateLimitCheck {
    let window_quota = u64::from((rpm / 6).max(1));
    let burst = u64::from((rpm / 60).max(1));
    let max_arrivals_in_10s = max_in_window(&llm.arrivals_per_second, 10);
    let user_429s = errors
        .iter()
        .filter(|(kind, _)| kind.starts_with("429"))
        .map(|(_, n)| n)
        .sum();
    RateLimitCheck {
        rpm,
        window_quota,
        burst,
        max_arrivals_in_10s,
        mock_429s: llm.rate_limited,
        user_429s,
        ok: max_arrivals_in_10s <= window_quota + burst && user_429s == 0,
    }
}

/// Largest sum of `window` consecutive one-second buckets (missing seconds count 0).
fn max_in_window(per_second: &BTreeMap<u64, u64>, window: u64) -> u64 {
    let mut best = 0;
    for &start in per_second.keys() {
        let sum = per_second
            .range(start..start + window)
            .map(|(_, n)| n)
            .sum();
        best = best.max(sum);
    }
    best
}

pub(crate) fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(name) && l.as_bytes().get(name.len()) == Some(&b' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
}

pub(crate) fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(')')?.1;
            let fields: Vec<&str> = after.split_whitespace().collect();
            Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

/// Every marker found for its user through the MCP server; never for another user; every
/// sampled user's history in the order it was sent.
async fn check_integrity(
    stack: &Stack,
    logs: &[Mutex<UserLog>],
    http: &reqwest::Client,
    base: &str,
) -> anyhow::Result<Integrity> {
    use rmcp::ServiceExt;
    use rmcp::transport::StreamableHttpClientTransport;
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
    let config = StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", stack.mcp_url))
        .auth_header(stack.mcp_token.clone());
    let client = ()
        .serve(StreamableHttpClientTransport::with_client(
            reqwest::Client::new(),
            config,
        ))
        .await?;
    let peer = client.peer().clone();
    let find = |user: String, marker: String| {
        let peer = peer.clone();
        async move {
            let mut params = rmcp::model::CallToolRequestParams::new("retrieve_memories");
            params.arguments = json!({"user_id": user, "query": marker, "limit": 5})
                .as_object()
                .cloned();
            let result = peer.call_tool(params).await.ok()?;
            Some(result.structured_content?["count"].as_u64().unwrap_or(0))
        }
    };
    let mut integrity = Integrity {
        uncertain: logs
            .iter()
            .filter_map(|log| log.lock().ok().map(|l| l.uncertain))
            .sum(),
        ..Integrity::default()
    };
    let users: Vec<(usize, Vec<String>, Vec<String>)> = logs
        .iter()
        .enumerate()
        .filter_map(|(i, log)| {
            log.lock()
                .ok()
                .map(|l| (i, l.markers.clone(), l.sent.clone()))
        })
        .collect();
    // Users are named lt-<run>-<index>; the run id is inside every marker.
    let run_id = users
        .iter()
        .flat_map(|(_, m, _)| m.iter())
        .next()
        .and_then(|m| m.strip_prefix("mk").map(|r| r[..8.min(r.len())].to_owned()));
    let Some(run_id) = run_id else {
        integrity.ok = true;
        integrity.skipped = Some("no memory was stored".into());
        return Ok(integrity);
    };
    let name = |i: usize| format!("lt-{run_id}-{i:05}");
    let count = users.len();
    let jobs: Vec<(String, String, Option<String>)> = users
        .iter()
        .flat_map(|(i, markers, _)| {
            let other = (count > 1).then(|| name((*i + 1) % count));
            markers
                .iter()
                .map(move |m| (name(*i), m.clone(), other.clone()))
        })
        .collect();
    use futures::StreamExt;
    let results: Vec<(Option<u64>, Option<u64>)> = futures::stream::iter(jobs)
        .map(|(own, marker, other)| {
            let find = &find;
            async move {
                let mine = find(own, marker.clone()).await;
                let theirs = match other {
                    Some(other) => find(other, marker).await,
                    None => Some(0),
                };
                (mine, theirs)
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    for (own, other) in results {
        integrity.checked += 1;
        if own.unwrap_or(0) == 0 {
            integrity.lost += 1;
        }
        if other.unwrap_or(0) > 0 {
            integrity.leaked += 1;
        }
    }
    // Per-user order: the history's user messages are what the user sent, in order.
    for (i, _, sent) in users.iter().take(50) {
        if sent.is_empty() {
            continue;
        }
        let history: Value = http
            .get(format!("{base}/v1/users/{}/history", name(*i)))
            .send()
            .await?
            .json()
            .await?;
        let seen: Vec<String> = history["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m["role"] == "user")
            .filter_map(|m| m["content"].as_str().map(str::to_owned))
            .collect();
        // The history is bounded: compare the tail.
        let tail = &sent[sent.len().saturating_sub(seen.len())..];
        if seen.as_slice() != tail {
            integrity.out_of_order += 1;
        }
    }
    let _ = client.cancel().await;
    integrity.ok = integrity.lost == 0 && integrity.leaked == 0 && integrity.out_of_order == 0;
    Ok(integrity)
}

fn write_reports(dir: &Path, report: &Report) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    std::fs::write(dir.join("report.json"), serde_json::to_vec_pretty(report)?)?;
    std::fs::write(dir.join("report.md"), markdown(report))?;
    std::fs::write(dir.join("report.svg"), svg(report))?;
    Ok(())
}

/// The summary table (also printed).
pub fn markdown(report: &Report) -> String {
    let l = &report.latency_ms;
    let mut out = format!(
        "# Load test: {} ({} loop, {} users)\n\n| metric | value |\n| --- | --- |\n| turns | {} |\n| turns/s | {:.1} |\n| latency p50 / p90 / p99 / p99.9 / max (ms) | {:.1} / {:.1} / {:.1} / {:.1} / {:.1} |\n| errors | {} |\n| tool calls | {} |\n",
        report.scenario,
        report.mode,
        report.users,
        report.turns,
        report.turns_per_s,
        l.p50,
        l.p90,
        l.p99,
        l.p999,
        l.max,
        if report.errors.is_empty() {
            "none".into()
        } else {
            format!("{:?}", report.errors)
        },
        format_args!("{:?}", report.tool_calls),
    );
    if let Some(llm) = &report.llm {
        out.push_str(&format!(
            "| LLM requests at the mock / 429s / 500s / 503s | {} / {} / {} / {} |\n| mock max requests in one second | {} |\n",
            llm.requests, llm.rate_limited, llm.server_errors_500, llm.unavailable_503, llm.max_requests_in_any_second
        ));
    }
    if let Some(o) = &report.overhead_ms {
        out.push_str(&format!(
            "| daemon overhead p50 / p90 / p99 / p99.9 / max (ms) | {:.2} / {:.2} / {:.2} / {:.2} / {:.2} |\n",
            o.p50, o.p90, o.p99, o.p999, o.max
        ));
    }
    if let Some(r) = &report.rate_limit {
        out.push_str(&format!(
            "| rate limit ({} RPM) | {}: at most {} arrivals in any 10 s (quota {} + burst {}), {} 429s at the mock, {} at users |\n",
            r.rpm,
            if r.ok { "ok" } else { "FAILED" },
            r.max_arrivals_in_10s,
            r.window_quota,
            r.burst,
            r.mock_429s,
            r.user_429s
        ));
    }
    if let Some(t) = &report.telemetry {
        out.push_str(&format!("| spans exported / dropped / failed exports (daemon; MCP server) | {} / {} / {}; {} / {} / {} ({}) |\n", t.daemon.exported, t.daemon.dropped, t.daemon.export_failures, t.mcp_server.exported, t.mcp_server.dropped, t.mcp_server.export_failures, if t.no_loss { "no loss" } else { "LOSS" }));
    }
    if let Some(retries) = report.llm_retries {
        out.push_str(&format!("| daemon LLM retries | {retries} |\n"));
    }
    if let (Some(first), Some(max)) = (
        report.daemon_rss_mib.first(),
        report.daemon_rss_mib.iter().cloned().reduce(f64::max),
    ) {
        let cpu = report.daemon_cpu.iter().sum::<f64>() / report.daemon_cpu.len().max(1) as f64;
        out.push_str(&format!("| daemon RSS first / max (MiB) | {first:.1} / {max:.1} |\n| daemon CPU (cores, mean) | {cpu:.2} |\n"));
    }
    let i = &report.integrity;
    out.push_str(&format!(
        "| integrity | {} (checked {}, lost {}, leaked {}, out of order {}, unchecked after a failed delete {}){} |\n",
        if i.ok { "ok" } else { "FAILED" },
        i.checked,
        i.lost,
        i.leaked,
        i.out_of_order,
        i.uncertain,
        i.skipped
            .as_ref()
            .map(|s| format!(", {s}"))
            .unwrap_or_default()
    ));
    out
}

/// Throughput and p99 latency per second over the run, as a standalone SVG (plotters): two
/// stacked charts sharing the time axis.
pub fn svg(report: &Report) -> String {
    let mut out = String::new();
    match draw_svg(report, &mut out) {
        Ok(()) => out,
        // Drawing into a String fails only on impossible ranges; say so in the picture
        // rather than failing the whole report.
        Err(error) => format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"600\" height=\"40\"><text x=\"10\" y=\"25\">no plot: {}</text></svg>",
            error.to_string().replace('&', "&amp;").replace('<', "&lt;")
        ),
    }
}

fn draw_svg(report: &Report, out: &mut String) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;

    let seconds = u32::try_from(report.throughput_per_s.len().max(1)).unwrap_or(u32::MAX);
    let max_turns = report
        .throughput_per_s
        .iter()
        .copied()
        .max()
        .unwrap_or(0)
        .max(1);
    let max_p99 = report.p99_per_s_ms.iter().copied().fold(1.0, f64::max);
    let root = SVGBackend::with_string(out, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let (upper, lower) = root.split_vertically(280);

    let mut turns = ChartBuilder::on(&upper)
        .caption(
            format!(
                "{}: {} turns, {:.1} turns/s ({} loop, {} users)",
                report.scenario, report.turns, report.turns_per_s, report.mode, report.users
            ),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(32)
        .y_label_area_size(60)
        .build_cartesian_2d(0u32..seconds, 0u64..max_turns + max_turns / 10 + 1)?;
    turns
        .configure_mesh()
        .x_desc("seconds since start")
        .y_desc("turns answered")
        .draw()?;
    turns.draw_series(LineSeries::new(
        report
            .throughput_per_s
            .iter()
            .enumerate()
            .map(|(second, n)| (u32::try_from(second).unwrap_or(u32::MAX), *n)),
        &BLUE,
    ))?;

    let mut latency = ChartBuilder::on(&lower)
        .caption("p99 latency in each second (ms)", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(32)
        .y_label_area_size(60)
        .build_cartesian_2d(0u32..seconds, 0f64..max_p99 * 1.1)?;
    latency
        .configure_mesh()
        .x_desc("seconds since start")
        .y_desc("ms")
        .draw()?;
    latency.draw_series(LineSeries::new(
        report
            .p99_per_s_ms
            .iter()
            .enumerate()
            .map(|(second, ms)| (u32::try_from(second).unwrap_or(u32::MAX), *ms)),
        &RED,
    ))?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests;
