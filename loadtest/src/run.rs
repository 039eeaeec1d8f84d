//! `memento-loadtest run`: drives a daemon's HTTP API with simulated users and reports
//! throughput, latency, errors, LLM and tool activity, daemon RSS and CPU (per turn, and
//! the MCP server's per tool call), and an integrity check of every memory the daemon said
//! it stored.
//!
//! - Closed loop (default): `--users` users, each sending its next turn when the previous one
//!   is answered (plus the scenario's think time). Open loop (`--rate N`): Poisson arrivals
//!   at N turns/s in aggregate, seeded by `--seed`, each user's turns in order
//!   (`run/schedule.rs`); latency is measured from the *intended* send time, so a stalled
//!   daemon cannot hide behind fewer sends (coordinated omission).
//! - `--spawn` (the default without `--target`): starts the Azure mock (`memento-loadtest
//!   mock-azure`), `memento mcp-server` and `memento serve` as child processes on free
//!   loopback ports with a temporary data directory; the daemon talks to the mock over real
//!   HTTP as if it were Azure. The mock has its own process, so its work never delays the
//!   harness's clocks (that delay would count as daemon overhead), and each process's CPU is
//!   measured apart (`run/cpu.rs`).
//! - Every stored memory carries a unique marker word; at the end each marker must be found
//!   for its user through the MCP server and never for another user.
//! - The users themselves live in `run/drive.rs`; `capacity.rs` steps the open loop's rate.

use memento::shared::domain::tool as tools;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::mock_azure::MockStats;

mod cpu;
mod drive;
pub mod schedule;
mod stack;

pub(crate) use stack::{Stack, spawn_stack, uuid_like};

pub(crate) use drive::{Load, Measured, OpenLoop, UserLog, drive};

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
    /// Open loop: Poisson arrivals at this many turns/s in aggregate (seeded by --seed),
    /// each user's turns in order; latency counts from the scheduled send time.
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
    /// Seed of the open loop's arrival schedule and of the users' messages: the same seed
    /// gives the same load.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Spawned stack: this many daemons behind a spawned nginx (deploy/nginx/memento.conf,
    /// consistent hash on the user), two MCP servers on PostgreSQL, the LLM quota shared
    /// through Redis. More than 1 needs PostgreSQL and Redis: --postgres-url/--redis-url, or
    /// the ones tests/services/{postgres,redis}.sh find or start.
    #[arg(long, default_value_t = 1)]
    pub daemons: usize,
    /// With --daemons N > 1: kill -9 one daemon this long into the load (e.g. 10s); the
    /// report's `failover` says how many turns failed and when its users were answered again.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub kill_daemon_at: Option<Duration>,
    /// PostgreSQL for the spawned MCP servers' memories (postgresql://user@host:port/db).
    #[arg(long, env = "MEMENTO_LOADTEST_POSTGRES_URL", hide_env_values = true)]
    pub postgres_url: Option<String>,
    /// Redis for the spawned daemons' shared limits (redis://host:port/db).
    #[arg(long, env = "MEMENTO_LOADTEST_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
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
    /// Open loop: the turns/s offered (`--rate`); `turns_per_s` is what was achieved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offered_rate: Option<f64>,
    /// Open loop: turns in the arrival schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_turns: Option<u64>,
    /// Open loop: scheduled turns never sent, because the daemon fell so far behind that
    /// the run reached its hard stop (twice the schedule's span plus 10 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsent_turns: Option<u64>,
    /// Open loop: how late each turn was sent after its scheduled time, ms (the user's
    /// previous turn still running, or the harness behind). Latency includes it; overhead
    /// does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_lag_ms: Option<Latency>,
    /// Daemon CPU (utime + stime) over the measured window, µs per turn answered 200
    /// (spawn mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daemon_cpu_us_per_turn: Option<f64>,
    /// MCP server CPU over the measured window, µs per tool call (spawn mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp_cpu_us_per_call: Option<f64>,
    /// Mean cores used over the measured window, per process (`daemon`, `mcp_server`,
    /// `mock`, `harness`): shows when the load generator or the mock, not the daemon, is
    /// short of CPU.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cpu_cores: BTreeMap<String, f64>,
    /// Spawned daemons (`--daemons`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daemons: Option<usize>,
    /// `--kill-daemon-at`: the failover figures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<Failover>,
}

/// `--kill-daemon-at`: what the users saw when one daemon died.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Failover {
    /// When the daemon was killed (kill -9), seconds from the start of the load.
    pub killed_at_s: f64,
    /// From the kill until every user that saw a failed turn was answered again, seconds
    /// (0 when no turn failed).
    pub recovered_after_s: f64,
    /// Turns that failed after the kill (in flight on the killed daemon, or sent to it
    /// before the proxy skipped it).
    pub failed_turns: u64,
    /// Users that saw at least one failed turn.
    pub affected_users: u64,
    /// Of those, users never answered again before the run ended.
    pub unrecovered_users: u64,
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

/// Reads the scenario file, or the built-in default.
pub(crate) fn scenario(args: &RunArgs) -> anyhow::Result<Scenario> {
    Ok(match &args.scenario {
        Some(path) => toml::from_str::<Scenario>(
            &std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?,
        )
        .with_context(|| format!("parse scenario {}", path.display()))?,
        None => Scenario::default(),
    })
}

/// The load of `args` against `base`, measuring the stack's processes when spawned.
pub(crate) fn load(
    args: &RunArgs,
    scenario: &Scenario,
    base: &str,
    stack: Option<&Stack>,
    rate: Option<f64>,
) -> Load {
    Load {
        base: base.to_owned(),
        users: args.users,
        token: args
            .token
            .clone()
            .or_else(|| stack.and_then(|s| s.service_token.clone())),
        scenario: scenario.clone(),
        turns: args.turns,
        duration: args.duration,
        open: rate.map(|rate| OpenLoop {
            rate,
            seed: args.seed,
        }),
        seed: args.seed,
        quiet: args.quiet,
        processes: stack.map(Stack::processes).unwrap_or_default(),
        kill: None,
    }
}

/// Runs the load test and writes the report; `Ok(report)` even when integrity fails (the
/// caller decides the exit code).
pub async fn run(args: RunArgs) -> anyhow::Result<Report> {
    let scenario = scenario(&args)?;
    if args.users == 0 {
        bail!("--users must be at least 1");
    }
    if let Some(rate) = args.rate
        && !(rate.is_finite() && rate > 0.0)
    {
        bail!("--rate must be a positive number of turns per second (got {rate})");
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
    let mut load = load(&args, &scenario, &base, stack.as_ref(), args.rate);
    if let Some(at) = args.kill_daemon_at {
        match &stack {
            Some(stack) if stack.daemons.len() > 1 => {
                // The last daemon: the first one's port is no different, but this keeps
                // `daemon_urls[0]` (metrics, telemetry) answering after the kill.
                let victim = stack.daemons.last().map(std::process::Child::id);
                load.kill = victim.map(|pid| (pid, at));
            }
            _ => bail!("--kill-daemon-at needs a spawned stack with --daemons 2 or more"),
        }
    }
    let measured = drive(load).await?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;

    let (llm, llm_retries) = match &stack {
        Some(stack) => {
            // Summed over the daemons still up.
            let mut retries = None;
            for url in &stack.daemon_urls {
                let mut request = http.get(format!("{url}/metrics"));
                if let Some(token) = &stack.service_token {
                    request = request.bearer_auth(token);
                }
                let Ok(response) = request.send().await else {
                    continue;
                };
                if let Some(n) = response
                    .text()
                    .await
                    .ok()
                    .and_then(|t| metric(&t, "memento_llm_retries_total"))
                {
                    retries = Some(retries.unwrap_or(0) + n);
                }
            }
            (Some(stack.mock_stats(&http).await?), retries)
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
        Some(stack) => check_integrity(stack, &measured.logs, &http, &base).await?,
        None => Integrity {
            ok: true,
            skipped: Some("--target given: the MCP server is not known to the harness".into()),
            ..Integrity::default()
        },
    };
    let mut report = report(&scenario.name, args.users, args.rate, &measured);
    report.llm = llm;
    report.llm_retries = llm_retries;
    report.integrity = integrity;
    report.telemetry = telemetry;
    report.daemons = stack.as_ref().map(|s| s.daemons.len());
    report.failover = measured
        .killed_at_s
        .map(|killed_at_s| failover(killed_at_s, &measured.shared.ends, measured.elapsed_s));
    if let (Some(rpm), Some(llm)) = (args.mock_rpm.filter(|_| args.target.is_none()), &report.llm) {
        report.rate_limit = Some(rate_limit_check(rpm, llm, &report.errors));
    }
    write_reports(&args.out, &report)?;
    drop(stack);
    Ok(report)
}

/// The report of what the users measured (no LLM figures, no integrity check yet).
pub(crate) fn report(
    scenario: &str,
    users: usize,
    rate: Option<f64>,
    measured: &Measured,
) -> Report {
    let shared = &measured.shared;
    let elapsed = measured.elapsed_s;
    let tool_calls: u64 = shared.tool_calls.values().sum();
    Report {
        scenario: scenario.to_owned(),
        mode: if rate.is_some() {
            "open".into()
        } else {
            "closed".into()
        },
        users,
        turns: shared.turns,
        elapsed_s: elapsed,
        turns_per_s: shared.turns as f64 / elapsed.max(0.001),
        latency_ms: Latency::of(&shared.latency),
        errors: shared.errors.clone(),
        tool_calls: shared.tool_calls.clone(),
        llm: None,
        llm_retries: None,
        daemon_rss_mib: measured.rss_mib.clone(),
        daemon_cpu: measured.cpu_per_s.clone(),
        throughput_per_s: shared.per_second.iter().map(|(_, h)| h.len()).collect(),
        p99_per_s_ms: shared
            .per_second
            .iter()
            .map(|(_, h)| h.value_at_quantile(0.99) as f64 / 1000.0)
            .collect(),
        integrity: Integrity::default(),
        overhead_ms: (!shared.overhead.is_empty()).then(|| Latency::of(&shared.overhead)),
        rate_limit: None,
        telemetry: None,
        offered_rate: rate,
        scheduled_turns: measured.scheduled,
        unsent_turns: measured.scheduled.map(|_| shared.unsent),
        send_lag_ms: (!shared.send_lag.is_empty()).then(|| Latency::of(&shared.send_lag)),
        daemon_cpu_us_per_turn: measured.cpu.us_per("daemon", shared.answered),
        mcp_cpu_us_per_call: measured.cpu.us_per("mcp_server", tool_calls),
        cpu_cores: measured.cpu.cores(),
        daemons: None,
        failover: None,
    }
}

/// The failover figures: turns that failed after the kill, and how long until every user
/// that saw a failure was answered again.
pub(crate) fn failover(killed_at_s: f64, ends: &[(usize, f64, bool)], elapsed_s: f64) -> Failover {
    let mut last_failure: BTreeMap<usize, f64> = BTreeMap::new();
    let mut failed_turns = 0;
    for &(user, at, ok) in ends {
        if !ok && at >= killed_at_s {
            failed_turns += 1;
            let last = last_failure.entry(user).or_insert(at);
            *last = last.max(at);
        }
    }
    let mut recovered_at = killed_at_s;
    let mut unrecovered_users = 0;
    for (&user, &failed_at) in &last_failure {
        let answered = ends
            .iter()
            .filter(|&&(u, at, ok)| u == user && ok && at > failed_at)
            .map(|&(_, at, _)| at)
            .fold(f64::INFINITY, f64::min);
        if answered.is_finite() {
            recovered_at = recovered_at.max(answered);
        } else {
            unrecovered_users += 1;
            recovered_at = recovered_at.max(elapsed_s);
        }
    }
    Failover {
        killed_at_s,
        recovered_after_s: recovered_at - killed_at_s,
        failed_turns,
        affected_users: last_failure.len() as u64,
        unrecovered_users,
    }
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
            let mut params = rmcp::model::CallToolRequestParams::new(tools::RETRIEVE_MEMORIES);
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
        let mut request = http.get(format!("{base}/v1/users/{}/history", name(*i)));
        if let Some(token) = &stack.service_token {
            request = request.bearer_auth(token);
        }
        let history: Value = request.send().await?.json().await?;
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
    if let Some(offered) = report.offered_rate {
        out.push_str(&format!(
            "| offered / achieved turns/s (open loop, Poisson) | {offered:.1} / {:.1} ({} scheduled, {} unsent) |\n",
            report.turns_per_s,
            report.scheduled_turns.unwrap_or(0),
            report.unsent_turns.unwrap_or(0)
        ));
    }
    if let Some(o) = &report.send_lag_ms {
        out.push_str(&format!(
            "| send lag behind schedule p50 / p90 / p99 / p99.9 / max (ms) | {:.2} / {:.2} / {:.2} / {:.2} / {:.2} |\n",
            o.p50, o.p90, o.p99, o.p999, o.max
        ));
    }
    if let Some(us) = report.daemon_cpu_us_per_turn {
        out.push_str(&format!("| daemon CPU per turn (µs) | {us:.0} |\n"));
    }
    if let Some(us) = report.mcp_cpu_us_per_call {
        out.push_str(&format!(
            "| MCP server CPU per tool call (µs) | {us:.0} |\n"
        ));
    }
    if !report.cpu_cores.is_empty() {
        let cores: Vec<String> = report
            .cpu_cores
            .iter()
            .map(|(name, cores)| format!("{name} {cores:.2}"))
            .collect();
        out.push_str(&format!(
            "| CPU over the run (cores, mean) | {} |\n",
            cores.join(", ")
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
