//! The run's report: its types, the figures computed from what the users measured, and
//! report.json, report.md and report.svg.

use super::*;

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
    pub(crate) fn of(histogram: &Histogram<u64>) -> Latency {
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
pub(crate) fn max_in_window(per_second: &BTreeMap<u64, u64>, window: u64) -> u64 {
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

pub(crate) fn write_reports(dir: &Path, report: &Report) -> anyhow::Result<()> {
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

pub(crate) fn draw_svg(
    report: &Report,
    out: &mut String,
) -> Result<(), Box<dyn std::error::Error>> {
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
