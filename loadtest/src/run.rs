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
use serde_json::json;

use crate::mock_azure::MockStats;

mod cpu;
mod drive;
mod integrity;
mod report;
mod scenario;
pub mod schedule;
mod stack;
mod workload;

pub(crate) use stack::{Stack, spawn_stack, uuid_like};

pub(crate) use drive::{Load, Measured, OpenLoop, UserLog, drive};
pub use integrity::*;
pub use report::*;
pub use scenario::*;
pub(crate) use workload::*;

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

#[cfg(test)]
mod tests;
