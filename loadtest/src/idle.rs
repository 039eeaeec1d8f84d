//! `memento-loadtest idle-actors`: what an idle conversation costs the daemon.
//!
//! Spawns the whole stack (as `run --spawn` does: Azure mock, `memento mcp-server`,
//! `memento serve`), warms the daemon up with `--warmup` users (so that allocator arenas,
//! connection pools and caches exist before the baseline), then has `--users` new users
//! each send one small-talk turn. Every one of them leaves a live, idle conversation actor
//! holding a one-turn history. The daemon's RSS growth divided by the growth in live actors
//! (from its `/metrics`) is the memory per idle actor.
//!
//! With `--after-release` it measures what a user idle for longer costs: the warm-up users
//! are first left idle until the daemon's sweep has dealt with every one of them (stopped
//! after `conversation.idle_timeout`, or its history released after
//! `conversation.history_cache_idle` when the actor is kept longer), so the baseline holds
//! none of them; then, after the new users, it waits the same way and measures again. Last,
//! `--returning` of those users send a second turn one at a time (each starts a new actor
//! that reloads the history from disk, when it was stopped) and then a third one (the actor
//! is live): the price of coming back after a pause.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use serde::Serialize;
use serde_json::json;

use hdrhistogram::Histogram;

use crate::run::{Latency, RunArgs, metric, rss_mib, spawn_stack};

/// Flags of `idle-actors`.
#[derive(Debug, Clone, clap::Args)]
pub struct IdleArgs {
    /// Users (and so idle conversation actors) to add after the warm-up.
    #[arg(long, default_value_t = 10_000)]
    pub users: usize,
    /// Users served before the baseline is measured.
    #[arg(long, default_value_t = 1_000)]
    pub warmup: usize,
    /// Turns in flight at once while creating users.
    #[arg(long, default_value_t = 128)]
    pub concurrency: usize,
    /// Where to write idle.json (created if missing).
    #[arg(long, default_value = "loadtest/out")]
    pub out: PathBuf,
    /// The `memento` binary (default: next to this one).
    #[arg(long, env = "MEMENTO_BIN")]
    pub memento_bin: Option<PathBuf>,
    /// Also measure users idle for longer: wait until the daemon's idle sweep has stopped
    /// every conversation (`conversation.idle_timeout`, 1 min by default) or released its
    /// cached history (`history_cache_idle`, when the actor is kept longer), before the
    /// baseline and again after the new users (at most 5 min each), then time returning turns.
    #[arg(long)]
    pub after_release: bool,
    /// With `--after-release`: users who come back after the pause, one turn at a time.
    #[arg(long, default_value_t = 500)]
    pub returning: usize,
}

/// The measurement (`idle.json`).
#[derive(Debug, Clone, Serialize)]
pub struct IdleReport {
    /// Live conversation actors at the baseline (the warm-up users).
    pub actors_before: u64,
    /// Live conversation actors at the end.
    pub actors_after: u64,
    /// Daemon RSS at the baseline, MiB.
    pub rss_before_mib: f64,
    /// Daemon RSS with every actor alive and idle, MiB.
    pub rss_after_mib: f64,
    /// (after - before) / (actors added), bytes.
    pub bytes_per_idle_actor: f64,
    /// Seconds spent creating the users.
    pub create_s: f64,
    /// With `--after-release`: daemon RSS once the sweep had stopped every idle
    /// conversation (or released its history), MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_released_mib: Option<f64>,
    /// With `--after-release`: (released - before) / (users added), bytes: what a user idle
    /// past the timeouts costs the daemon.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_per_released_actor: Option<f64>,
    /// With `--after-release`: live conversation actors once the sweep was done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actors_released: Option<u64>,
    /// With `--after-release`: latency of a returning user's first turn after the pause
    /// (a new actor reloads the history when the old one was stopped), ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub returning_turn_ms: Option<Latency>,
    /// With `--after-release`: the same users' next turn, on their live actor, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live_turn_ms: Option<Latency>,
}

/// Runs the measurement and writes `idle.json`.
pub async fn run(args: IdleArgs) -> anyhow::Result<IdleReport> {
    if args.users == 0 {
        bail!("--users must be at least 1");
    }
    let stack_args = RunArgs {
        target: None,
        users: 1,
        duration: None,
        turns: None,
        rate: None,
        scenario: None,
        out: args.out.clone(),
        token: None,
        mock_latency_ms: 0,
        mock_rpm: None,
        memento_bin: args.memento_bin.clone(),
        quiet: true,
        otlp_endpoint: None,
        otlp_protocol: "http/protobuf".into(),
        seed: 1,
        daemons: 1,
        kill_daemon_at: None,
        postgres_url: None,
        redis_url: None,
    };
    let stack = spawn_stack(&stack_args).await?;
    let pid = stack.daemons[0].id();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(120))
        .build()?;
    let base = stack.daemon_url.clone();

    create_users(&http, &base, "warm", args.warmup, args.concurrency).await?;
    let rss_before_mib = if args.after_release {
        let warm = live_actors(&http, &base).await?;
        wait_until_idle_handled(&http, &base, warm).await?;
        slowly_settled_rss(pid).await
    } else {
        settled_rss(pid).await
    };
    let actors_before = live_actors(&http, &base).await?;
    eprintln!("baseline: {actors_before} actors, {rss_before_mib:.1} MiB");

    let started = Instant::now();
    create_users(&http, &base, "idle", args.users, args.concurrency).await?;
    let create_s = started.elapsed().as_secs_f64();
    let actors_after = live_actors(&http, &base).await?;
    let rss_after_mib = settled_rss(pid).await;
    let added = actors_after.saturating_sub(actors_before);
    if added == 0 {
        bail!("no conversation actor was added (is the daemon's max_actors too low?)");
    }
    let mut released = None;
    if args.after_release {
        wait_until_idle_handled(&http, &base, added).await?;
        let rss = slowly_settled_rss(pid).await;
        let actors = live_actors(&http, &base).await?;
        let (returning, live) =
            returning_turns(&http, &base, args.returning.min(args.users)).await?;
        released = Some((rss, actors, returning, live));
    }
    let per_actor = |rss: f64| (rss - rss_before_mib) * 1024.0 * 1024.0 / added as f64;
    let rss_released_mib = released.as_ref().map(|r| r.0);
    let report = IdleReport {
        actors_before,
        actors_after,
        rss_before_mib,
        rss_after_mib,
        bytes_per_idle_actor: per_actor(rss_after_mib),
        create_s,
        rss_released_mib,
        bytes_per_released_actor: rss_released_mib.map(per_actor),
        actors_released: released.as_ref().map(|r| r.1),
        returning_turn_ms: released.as_ref().map(|r| r.2.clone()),
        live_turn_ms: released.map(|r| r.3),
    };
    std::fs::create_dir_all(&args.out).with_context(|| format!("create {}", args.out.display()))?;
    std::fs::write(
        args.out.join("idle.json"),
        serde_json::to_vec_pretty(&report)?,
    )?;
    drop(stack);
    Ok(report)
}

/// `count` users named `{prefix}-{n}`, one small-talk turn each, `concurrency` at a time.
async fn create_users(
    http: &reqwest::Client,
    base: &str,
    prefix: &str,
    count: usize,
    concurrency: usize,
) -> anyhow::Result<()> {
    let progress = indicatif::ProgressBar::new(count as u64);
    let results = futures::stream::iter(0..count)
        .map(|n| {
            let request = http
                .post(format!("{base}/v1/users/{prefix}-{n:06}/messages"))
                .json(&json!({"message": "hello, how are you?"}));
            let progress = progress.clone();
            async move {
                let status = request.send().await.map(|r| r.status());
                progress.inc(1);
                status
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect::<Vec<_>>()
        .await;
    progress.finish_and_clear();
    let failed = results
        .iter()
        .filter(|r| !matches!(r, Ok(status) if status.is_success()))
        .count();
    if failed > 0 {
        bail!("{failed} of {count} turns failed while creating users");
    }
    Ok(())
}

/// The daemon's `/metrics` text.
async fn metrics_text(http: &reqwest::Client, base: &str) -> anyhow::Result<String> {
    Ok(http
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .text()
        .await?)
}

async fn live_actors(http: &reqwest::Client, base: &str) -> anyhow::Result<u64> {
    let text = metrics_text(http, base).await?;
    metric(&text, "memento_live_conversations").context("no memento_live_conversations metric")
}

/// The sweep's work so far: conversations stopped plus history caches released.
async fn idle_handled(http: &reqwest::Client, base: &str) -> anyhow::Result<u64> {
    let text = metrics_text(http, base).await?;
    let stopped = metric(&text, "memento_conversation_stops_total").unwrap_or(0);
    let released = metric(&text, "memento_history_cache_releases_total").unwrap_or(0);
    Ok(stopped + released)
}

/// Polls `/metrics` until the idle sweep has stopped or released `count` more conversations
/// than when called (at most 5 min).
async fn wait_until_idle_handled(
    http: &reqwest::Client,
    base: &str,
    count: u64,
) -> anyhow::Result<()> {
    let start = idle_handled(http, base).await?;
    let deadline = Instant::now() + Duration::from_secs(300);
    eprintln!("waiting for the idle sweep to stop or release {count} conversations");
    loop {
        let done = idle_handled(http, base).await?.saturating_sub(start);
        if done >= count {
            eprintln!("{done} idle conversations stopped or released");
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the idle sweep stopped or released only {done} of {count} conversations within 5 min"
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// `count` of the idle users come back, one turn at a time: their first turn after the
/// pause, then their next one (on the now live actor). Latency of each, ms.
async fn returning_turns(
    http: &reqwest::Client,
    base: &str,
    count: usize,
) -> anyhow::Result<(Latency, Latency)> {
    let mut first = Histogram::<u64>::new(3)?;
    let mut next = Histogram::<u64>::new(3)?;
    for n in 0..count {
        for histogram in [&mut first, &mut next] {
            let started = Instant::now();
            let status = http
                .post(format!("{base}/v1/users/idle-{n:06}/messages"))
                .json(&json!({"message": "hello again"}))
                .send()
                .await?
                .status();
            if !status.is_success() {
                bail!("a returning user's turn failed with {status}");
            }
            histogram.record(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX))?;
        }
    }
    Ok((Latency::of(&first), Latency::of(&next)))
}

/// RSS once freed memory has gone back to the system (jemalloc returns dirty pages over
/// about ten seconds): the last of five samples 1 s apart within 0.1 MiB, at most 60 s.
async fn slowly_settled_rss(pid: u32) -> f64 {
    let mut samples = vec![rss_mib(pid)];
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        samples.push(rss_mib(pid));
        let tail = &samples[samples.len().saturating_sub(5)..];
        let (low, high) = tail
            .iter()
            .fold((f64::MAX, f64::MIN), |(l, h), &x| (l.min(x), h.max(x)));
        if tail.len() == 5 && high - low < 0.1 {
            break;
        }
    }
    samples.last().copied().unwrap_or(0.0)
}

/// RSS once it stops moving (background work such as history writes has finished): the
/// last of consecutive samples 200 ms apart that differ by under 0.1 MiB, at most 5 s.
async fn settled_rss(pid: u32) -> f64 {
    let mut last = rss_mib(pid);
    for _ in 0..25 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = rss_mib(pid);
        if (now - last).abs() < 0.1 {
            return now;
        }
        last = now;
    }
    last
}
