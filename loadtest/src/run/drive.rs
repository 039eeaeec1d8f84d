//! The load of one run (or of one capacity step): the simulated users, one task each,
//! sending turns in a closed loop or on the open loop's Poisson schedule
//! ([`super::schedule`]), and what they measured: latency, daemon overhead, the harness's
//! own lag behind its schedule, errors, tool calls, and the CPU each process spent in the
//! window (from the first send to the last answer; the integrity check comes after it).

use memento::shared::api::{ErrorBody, MessageResponse};
use memento::shared::domain::tool as tools;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};

use super::cpu::{CpuMeter, CpuUse, cpu_seconds};
use super::schedule::{Horizon, Schedule};
use super::{Mix, Scenario, TextSize, rss_mib, uuid_like};

/// What to send, where, and for how long.
pub(crate) struct Load {
    /// The daemon's base URL, without a trailing slash.
    pub(crate) base: String,
    /// Simulated users.
    pub(crate) users: usize,
    /// Service token for the daemon, if it needs one.
    pub(crate) token: Option<String>,
    /// The turn mix and think time.
    pub(crate) scenario: Scenario,
    /// Stop after this many turns (closed loop), or schedule exactly this many (open loop).
    pub(crate) turns: Option<u64>,
    /// Stop sending after this long (ignored with `turns`).
    pub(crate) duration: Option<Duration>,
    /// Open loop: the Poisson schedule's rate and seed; `None` for a closed loop.
    pub(crate) open: Option<OpenLoop>,
    /// Seed of the users' message texts.
    pub(crate) seed: u64,
    /// Hide the progress bar.
    pub(crate) quiet: bool,
    /// Processes whose CPU is measured, by name (`daemon`, `mcp_server`, `mock`); the
    /// daemon's RSS and CPU are also sampled each second. The harness adds itself.
    pub(crate) processes: Vec<(&'static str, u32)>,
    /// `kill -9` this process this long into the load (`--kill-daemon-at`).
    pub(crate) kill: Option<(u32, Duration)>,
}

/// The open loop's parameters.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OpenLoop {
    /// Turns per second offered, in aggregate.
    pub(crate) rate: f64,
    /// Seed of the arrival schedule.
    pub(crate) seed: u64,
}

/// What the users measured.
pub(crate) struct Measured {
    pub(crate) shared: Shared,
    pub(crate) logs: Vec<Mutex<UserLog>>,
    /// From the start to the last answer, seconds.
    pub(crate) elapsed_s: f64,
    /// Daemon RSS each second, MiB.
    pub(crate) rss_mib: Vec<f64>,
    /// Daemon CPU each second, cores.
    pub(crate) cpu_per_s: Vec<f64>,
    /// CPU per process over the whole window.
    pub(crate) cpu: CpuUse,
    /// Open loop: turns the schedule held.
    pub(crate) scheduled: Option<u64>,
    /// When the `kill` of [`Load`] happened, seconds from the start.
    pub(crate) killed_at_s: Option<f64>,
}

/// One user's record of what it sent and stored.
#[derive(Default)]
pub(crate) struct UserLog {
    pub(crate) sent: Vec<String>,
    pub(crate) markers: Vec<String>,
    /// Markers whose delete turn ended without an answer: the delete may or may not have
    /// happened, so they are neither expected nor counted as lost.
    pub(crate) uncertain: u64,
}

/// Counters the users share.
pub(crate) struct Shared {
    /// Latency of every turn, µs (from the intended send time in open loop).
    pub(crate) latency: Histogram<u64>,
    /// The daemon's share of each answered turn, µs.
    pub(crate) overhead: Histogram<u64>,
    /// Open loop: how late each turn was actually sent, µs (the user's previous turn still
    /// running, or the harness itself behind).
    pub(crate) send_lag: Histogram<u64>,
    /// Per second since the start: the latencies of the turns answered in it.
    pub(crate) per_second: Vec<(u64, Histogram<u64>)>,
    pub(crate) errors: BTreeMap<String, u64>,
    pub(crate) tool_calls: BTreeMap<String, u64>,
    /// Turns that got an answer or a transport error.
    pub(crate) turns: u64,
    /// Turns answered 200.
    pub(crate) answered: u64,
    /// Open loop: scheduled turns never sent because the run hit its hard stop.
    pub(crate) unsent: u64,
    /// Every turn's end: (user index, seconds from the start, answered 200), for the
    /// failover figures.
    pub(crate) ends: Vec<(usize, f64, bool)>,
}

/// 1 µs to one hour, at `significant` digits.
fn histogram(significant: u8) -> Histogram<u64> {
    // Cannot fail: low >= 1, high >= 2 * low, and callers pass 2 or 3 digits (at most 5).
    Histogram::new_with_bounds(1, 3_600_000_000, significant).expect("valid histogram bounds")
}

impl Shared {
    fn new() -> Shared {
        Shared {
            latency: histogram(3),
            overhead: histogram(3),
            send_lag: histogram(3),
            per_second: Vec::new(),
            errors: BTreeMap::new(),
            tool_calls: BTreeMap::new(),
            turns: 0,
            answered: 0,
            unsent: 0,
            ends: Vec::new(),
        }
    }
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

/// What every user task shares.
struct Ctx {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    scenario: Scenario,
    run_id: Arc<str>,
    shared: Mutex<Shared>,
    logs: Vec<Mutex<UserLog>>,
    budget: AtomicI64,
    progress: indicatif::ProgressBar,
    started: Instant,
    /// Closed loop: no new turn starts after this.
    stop_at: Option<Instant>,
    /// Open loop: no scheduled turn is sent after this; the rest count as unsent.
    hard_stop: Instant,
    seed: u64,
}

/// Runs the users until the duration, the turn budget or the schedule is spent, and
/// returns what they measured.
pub(crate) async fn drive(load: Load) -> anyhow::Result<Measured> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(load.users.min(4096))
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(120))
        .build()?;
    let duration = match (load.turns, load.duration) {
        (Some(_), _) => None,
        (None, Some(d)) => Some(d),
        (None, None) => Some(Duration::from_secs(10)),
    };
    let schedule = load.open.map(|open| {
        let horizon = match (load.turns, duration) {
            (Some(turns), _) => Horizon::Turns(turns),
            (None, Some(d)) => Horizon::Until(d),
            (None, None) => Horizon::Until(Duration::from_secs(10)),
        };
        Schedule::poisson(open.rate, load.users, open.seed, horizon)
    });
    let progress = if load.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        match (load.turns, &schedule) {
            (Some(turns), _) => indicatif::ProgressBar::new(turns),
            (None, Some(schedule)) => indicatif::ProgressBar::new(schedule.total),
            (None, None) => indicatif::ProgressBar::new(duration.map_or(0, |d| d.as_secs())),
        }
    };
    progress.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    // The schedule's span: the last arrival, or the duration.
    let span = schedule
        .as_ref()
        .and_then(|s| s.per_user.iter().filter_map(|t| t.last()).max().copied())
        .or(duration)
        .unwrap_or_default();
    let started = Instant::now();
    let ctx = Arc::new(Ctx {
        http,
        base: load.base,
        token: load.token,
        scenario: load.scenario,
        run_id: Arc::from(&uuid_like()[..8]),
        shared: Mutex::new(Shared::new()),
        logs: (0..load.users).map(|_| Mutex::default()).collect(),
        budget: AtomicI64::new(load.turns.map_or(i64::MAX, |t| t as i64)),
        progress: progress.clone(),
        started,
        stop_at: duration.map(|d| started + d),
        // An overloaded daemon is still sent every scheduled turn, however late, up to
        // twice the schedule's span (plus 10 s); whatever is left then is reported.
        hard_stop: started + span * 2 + Duration::from_secs(10),
        seed: load.seed,
    });

    // The CPU window opens now; the harness measures itself too.
    let mut processes = load.processes.clone();
    processes.push(("harness", std::process::id()));
    let meter = CpuMeter::start(&processes);
    let sampling = Arc::new(AtomicBool::new(true));
    let samples: Arc<Mutex<(Vec<f64>, Vec<f64>)>> = Arc::default();
    let sampler = load
        .processes
        .iter()
        .find(|(name, _)| *name == "daemon")
        .map(|&(_, pid)| {
            let sampling = sampling.clone();
            let samples = samples.clone();
            tokio::spawn(async move {
                let mut last = cpu_seconds(pid).unwrap_or(0.0);
                while sampling.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let now = cpu_seconds(pid).unwrap_or(last);
                    if let Ok(mut s) = samples.lock() {
                        s.0.push(rss_mib(pid));
                        s.1.push(now - last);
                    }
                    last = now;
                }
            })
        });

    let scheduled = schedule.as_ref().map(|s| s.total);
    let mut per_user = schedule.map(|s| s.per_user.into_iter());
    let mut tasks = Vec::with_capacity(load.users);
    for user_index in 0..load.users {
        let ctx = ctx.clone();
        let due = per_user.as_mut().map(|p| p.next().unwrap_or_default());
        tasks.push(tokio::spawn(async move {
            match due {
                Some(due) => open_user(&ctx, user_index, &due).await,
                None => closed_user(&ctx, user_index).await,
            }
        }));
    }
    let killer = load.kill.map(|(pid, at)| {
        tokio::spawn(async move {
            tokio::time::sleep_until(tokio::time::Instant::from_std(started + at)).await;
            let killed = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            killed.then(|| started.elapsed().as_secs_f64())
        })
    });
    let ticker = {
        let ctx = ctx.clone();
        let open = scheduled.is_some();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let turns = ctx.shared.lock().map(|s| s.turns).unwrap_or(0);
                let elapsed = ctx.started.elapsed().as_secs_f64();
                if ctx.stop_at.is_some() && !open {
                    ctx.progress.set_position(elapsed as u64);
                }
                ctx.progress.set_message(format!(
                    "{turns} turns, {:.0}/s",
                    turns as f64 / elapsed.max(0.001)
                ));
            }
        })
    };
    for task in tasks {
        let _ = task.await;
    }
    let elapsed_s = started.elapsed().as_secs_f64();
    let killed_at_s = match killer {
        Some(killer) if killer.is_finished() => killer.await.ok().flatten(),
        Some(killer) => {
            killer.abort();
            None
        }
        None => None,
    };
    let cpu = meter.stop();
    ticker.abort();
    progress.finish_and_clear();
    sampling.store(false, Ordering::Relaxed);
    if let Some(sampler) = sampler {
        let _ = sampler.await;
    }
    let ctx = Arc::try_unwrap(ctx).map_err(|_| anyhow::anyhow!("a user task outlived the run"))?;
    let shared = ctx
        .shared
        .into_inner()
        .map_err(|_| anyhow::anyhow!("a user task panicked"))?;
    let (rss_mib, cpu_per_s) = samples.lock().map(|s| s.clone()).unwrap_or_default();
    Ok(Measured {
        shared,
        logs: ctx.logs,
        elapsed_s,
        rss_mib,
        cpu_per_s,
        cpu,
        scheduled,
        killed_at_s,
    })
}

/// A closed-loop user: its next turn when the previous one is answered (plus think time).
async fn closed_user(ctx: &Ctx, user_index: usize) {
    let mut rng = user_rng(ctx.seed, user_index);
    let users = ctx.logs.len() as f64;
    let ramp = Duration::from_secs_f64(ctx.scenario.ramp_up_s.max(0.0) * user_index as f64 / users);
    tokio::time::sleep(ramp).await;
    let mut n = 0u64;
    loop {
        if ctx.stop_at.is_some_and(|t| Instant::now() >= t) {
            break;
        }
        if ctx.budget.fetch_sub(1, Ordering::Relaxed) <= 0 {
            break;
        }
        turn(ctx, user_index, n, &mut rng, None).await;
        if ctx.stop_at.is_none() {
            ctx.progress.inc(1);
        }
        n += 1;
        if ctx.scenario.think_ms > 0 {
            tokio::time::sleep(Duration::from_millis(ctx.scenario.think_ms)).await;
        }
    }
}

/// An open-loop user: each turn at its scheduled time, or as soon as the previous one is
/// answered when that is later.
async fn open_user(ctx: &Ctx, user_index: usize, due: &[Duration]) {
    let mut rng = user_rng(ctx.seed, user_index);
    for (n, offset) in due.iter().enumerate() {
        if Instant::now() >= ctx.hard_stop {
            if let Ok(mut shared) = ctx.shared.lock() {
                shared.unsent += (due.len() - n) as u64;
            }
            return;
        }
        let intended = ctx.started + *offset;
        tokio::time::sleep_until(tokio::time::Instant::from_std(intended)).await;
        turn(ctx, user_index, n as u64, &mut rng, Some(intended)).await;
        ctx.progress.inc(1);
    }
}

fn user_rng(seed: u64, user_index: usize) -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(
        seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (user_index as u64 + 1),
    )
}

/// One turn: picks a message, sends it, records what came back. `intended`: the open
/// loop's scheduled send time, from which latency counts.
async fn turn(
    ctx: &Ctx,
    user_index: usize,
    n: u64,
    rng: &mut rand::rngs::StdRng,
    intended: Option<Instant>,
) {
    let run_id = &ctx.run_id;
    let user = format!("lt-{run_id}-{user_index:05}");
    let kind = pick(rng, ctx.scenario.mix);
    let (message, marker) = match kind {
        "store" => {
            let marker = format!("mk{run_id}u{user_index}n{n}");
            (
                format!("store this: {} {marker}", text(rng, ctx.scenario.text)),
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
        // Forget one of this user's own markers, so the integrity check knows exactly
        // which memory is gone.
        "delete" => {
            let target = ctx.logs[user_index]
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
    let mut request = ctx
        .http
        .post(format!("{}/v1/users/{user}/messages", ctx.base))
        .json(&memento::shared::api::MessageRequest {
            message: message.clone(),
        });
    if let Some(token) = &ctx.token {
        request = request.bearer_auth(token);
    }
    let sent_at = Instant::now();
    // Latency counts from the intended send time in open loop.
    let t0 = intended.unwrap_or(sent_at);
    let outcome = request.send().await;
    // The answer (a 200's body) or the error's code (any other status; "" when the body is
    // not the API's error body).
    let (status, answer, error_code) = match outcome {
        Ok(response) if response.status().is_success() => {
            let status = response.status().as_u16();
            (
                status,
                response.json::<MessageResponse>().await.ok(),
                String::new(),
            )
        }
        Ok(response) => {
            let status = response.status().as_u16();
            let code = response
                .json::<ErrorBody>()
                .await
                .map(|body| body.error.code)
                .unwrap_or_default();
            (status, None, code)
        }
        Err(_) => (0, None, String::new()),
    };
    let micros = t0.elapsed().as_micros().max(1) as u64;
    // Overhead counts from the actual send: a late open-loop send is the harness's
    // schedule (or the user's previous turn), not the daemon's work.
    let overhead_micros = answer.as_ref().map(|answer| {
        let outside = answer.timings.llm_ms + answer.timings.tools_ms;
        let total = sent_at.elapsed().as_secs_f64() * 1e6;
        (total - outside * 1000.0).max(1.0) as u64
    });
    let second = ctx.started.elapsed().as_secs();
    let end_s = ctx.started.elapsed().as_secs_f64();
    if let Ok(mut shared) = ctx.shared.lock() {
        shared.turns += 1;
        shared.ends.push((user_index, end_s, status == 200));
        if status == 200 {
            shared.answered += 1;
        }
        if let Some(o) = overhead_micros {
            shared.overhead.saturating_record(o);
        }
        if let Some(intended) = intended {
            let lag = sent_at.saturating_duration_since(intended).as_micros() as u64;
            shared.send_lag.saturating_record(lag.max(1));
        }
        shared.latency.saturating_record(micros);
        if shared.per_second.last().is_none_or(|(s, _)| *s != second) {
            shared.per_second.push((second, histogram(2)));
        }
        if let Some((_, h)) = shared.per_second.last_mut() {
            h.saturating_record(micros);
        }
        if status != 200 {
            let kind = if status == 0 {
                "transport".to_owned()
            } else {
                format!("{status} {error_code}")
            };
            *shared.errors.entry(kind).or_default() += 1;
        }
        for call in answer.iter().flat_map(|answer| &answer.tool_calls) {
            *shared.tool_calls.entry(call.name.clone()).or_default() += 1;
        }
    }
    if status == 200 {
        let succeeded = |tool: &str| answer.as_ref().is_some_and(|a| a.succeeded(tool));
        let stored = succeeded(tools::STORE_MEMORY);
        let deleted = succeeded(tools::DELETE_MEMORY);
        if let Ok(mut log) = ctx.logs[user_index].lock() {
            log.sent.push(message);
            match (kind, marker) {
                ("store", Some(marker)) if stored => log.markers.push(marker),
                ("delete", Some(marker)) if deleted => log.markers.retain(|m| *m != marker),
                _ => {}
            }
        }
    } else if let ("delete", Some(marker)) = (kind, &marker)
        && let Ok(mut log) = ctx.logs[user_index].lock()
    {
        log.markers.retain(|m| m != marker);
        log.uncertain += 1;
    }
}
