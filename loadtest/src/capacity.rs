//! `memento-loadtest capacity`: the highest open-loop rate the daemon sustains while its p99
//! overhead stays under a bound.
//!
//! One stack (spawned, or `--target`) serves every step. Each step is an open-loop run
//! (Poisson arrivals, `run/schedule.rs`) of `--duration` (default 10 s) with fresh users, at
//! a rate that grows by `--factor` from `--start-rate` until a step fails; then `--refine`
//! bisection steps between the last passing and the first failing rate. A step passes when
//! its p99 daemon overhead is at most `--p99-overhead-ms`, no turn failed, every scheduled
//! turn was sent, and the achieved rate kept up with the schedule (at least 95 % of the
//! scheduled turns per second of the step). The integrity check is `run`'s job and is not
//! repeated here. Writes `capacity.json` and `capacity.md` into `--out`.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::run::{self, Integrity, Report, RunArgs};

/// Flags of `capacity`: those of `run` (its `--duration` is per step; `--rate` and
/// `--turns` are chosen here) and the stepping.
#[derive(Debug, Clone, clap::Args)]
pub struct CapacityArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// The bound: a step passes when the daemon's p99 overhead is at most this many ms
    /// (and no turn failed, every scheduled turn was sent, the achieved rate kept up).
    #[arg(long, default_value_t = 2.0)]
    pub p99_overhead_ms: f64,
    /// Rate of the first step, turns/s.
    #[arg(long, default_value_t = 50.0)]
    pub start_rate: f64,
    /// Each step offers the previous step's rate times this factor.
    #[arg(long, default_value_t = 1.5)]
    pub factor: f64,
    /// Stop stepping up above this rate, turns/s.
    #[arg(long, default_value_t = 20_000.0)]
    pub max_rate: f64,
    /// Bisection steps between the last passing and the first failing rate.
    #[arg(long, default_value_t = 2)]
    pub refine: u32,
}

/// `capacity.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CapacityReport {
    /// Scenario name.
    pub scenario: String,
    /// Simulated users in each step.
    pub users: usize,
    /// Each step's length, seconds.
    pub step_s: f64,
    /// The p99 daemon overhead bound, ms.
    pub p99_overhead_bound_ms: f64,
    /// The highest offered rate that passed, turns/s; absent when the first step failed.
    pub max_rate: Option<f64>,
    /// What that step achieved, turns/s.
    pub max_rate_achieved: Option<f64>,
    /// Every step, in the order run.
    pub steps: Vec<Step>,
}

/// One step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Step {
    /// Turns/s offered.
    pub offered_rate: f64,
    /// Within the bound, and the load was delivered.
    pub passed: bool,
    /// Why it failed (empty when it passed).
    pub failed_because: Vec<String>,
    /// The step's report (as `run` writes it, without the integrity check).
    pub report: Report,
}

/// Whether a step's report passes: every reason it does not.
pub fn verdict(report: &Report, bound_ms: f64, step_s: f64) -> Vec<String> {
    let mut why = Vec::new();
    match &report.overhead_ms {
        Some(o) if o.p99 <= bound_ms => {}
        Some(o) => why.push(format!("p99 overhead {:.2} ms > {bound_ms} ms", o.p99)),
        None => why.push("no overhead figures (the daemon reported no timings)".into()),
    }
    let errors: u64 = report.errors.values().sum();
    if errors > 0 {
        why.push(format!("{errors} turns failed: {:?}", report.errors));
    }
    if let Some(unsent) = report.unsent_turns.filter(|n| *n > 0) {
        why.push(format!("{unsent} scheduled turns never sent"));
    }
    let scheduled_rate = report.scheduled_turns.unwrap_or(report.turns) as f64 / step_s.max(0.001);
    if report.turns_per_s < 0.95 * scheduled_rate {
        why.push(format!(
            "achieved {:.1} turns/s of {scheduled_rate:.1} scheduled",
            report.turns_per_s
        ));
    }
    why
}

/// Runs the steps and writes the reports.
pub async fn run(args: CapacityArgs) -> anyhow::Result<CapacityReport> {
    if args.run.rate.is_some() || args.run.turns.is_some() {
        bail!(
            "capacity chooses the rates and runs each step for --duration: drop --rate and --turns"
        );
    }
    if args.run.users == 0 {
        bail!("--users must be at least 1");
    }
    if !(args.start_rate.is_finite() && args.start_rate > 0.0) {
        bail!("--start-rate must be a positive number of turns per second");
    }
    if !(args.factor.is_finite() && args.factor > 1.0) {
        bail!("--factor must be more than 1");
    }
    if !(args.p99_overhead_ms.is_finite() && args.p99_overhead_ms > 0.0) {
        bail!("--p99-overhead-ms must be a positive number of milliseconds");
    }
    let step = args.run.duration.unwrap_or(Duration::from_secs(10));
    let step_s = step.as_secs_f64();
    let mut run_args = args.run.clone();
    run_args.duration = Some(step);
    let scenario = run::scenario(&run_args)?;
    let stack = match &run_args.target {
        Some(_) => None,
        None => Some(run::spawn_stack(&run_args).await?),
    };
    let base = match (&run_args.target, &stack) {
        (Some(target), _) => target.trim_end_matches('/').to_owned(),
        (None, Some(stack)) => stack.daemon_url.clone(),
        (None, None) => bail!("no target"),
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;

    let mut steps: Vec<Step> = Vec::new();
    let one_step = async |rate: f64, steps: &mut Vec<Step>| -> anyhow::Result<bool> {
        if let Some(stack) = &stack {
            stack.reset_mock_stats(&http).await?;
        }
        let load = run::load(&run_args, &scenario, &base, stack.as_ref(), Some(rate));
        let measured = run::drive(load).await?;
        let mut report = run::report(&scenario.name, run_args.users, Some(rate), &measured);
        if let Some(stack) = &stack {
            report.llm = Some(stack.mock_stats(&http).await?);
        }
        report.integrity = Integrity {
            ok: true,
            skipped: Some("capacity steps measure rates; `run` checks integrity".into()),
            ..Integrity::default()
        };
        let failed_because = verdict(&report, args.p99_overhead_ms, step_s);
        let passed = failed_because.is_empty();
        eprintln!(
            "{rate:.1} turns/s offered: {:.1} achieved, overhead p99 {} ms, daemon CPU {} µs/turn: {}",
            report.turns_per_s,
            report
                .overhead_ms
                .as_ref()
                .map_or("-".into(), |o| format!("{:.2}", o.p99)),
            report
                .daemon_cpu_us_per_turn
                .map_or("-".into(), |us| format!("{us:.0}")),
            if passed {
                "pass".to_owned()
            } else {
                format!("FAIL ({})", failed_because.join("; "))
            }
        );
        steps.push(Step {
            offered_rate: rate,
            passed,
            failed_because,
            report,
        });
        Ok(passed)
    };

    let mut passed_at: Option<f64> = None;
    let mut failed_at: Option<f64> = None;
    let mut rate = args.start_rate;
    while rate <= args.max_rate {
        if one_step(rate, &mut steps).await? {
            passed_at = Some(rate);
            rate *= args.factor;
        } else {
            failed_at = Some(rate);
            break;
        }
    }
    if let (Some(mut low), Some(mut high)) = (passed_at, failed_at) {
        for _ in 0..args.refine {
            let mid = (low + high) / 2.0;
            if one_step(mid, &mut steps).await? {
                low = mid;
            } else {
                high = mid;
            }
        }
        passed_at = Some(low);
    }
    drop(stack);
    let best = passed_at.and_then(|rate| {
        steps
            .iter()
            .find(|s| s.passed && s.offered_rate == rate)
            .map(|s| s.report.turns_per_s)
    });
    let report = CapacityReport {
        scenario: scenario.name.clone(),
        users: run_args.users,
        step_s,
        p99_overhead_bound_ms: args.p99_overhead_ms,
        max_rate: passed_at,
        max_rate_achieved: best,
        steps,
    };
    write(&run_args.out, &report)?;
    Ok(report)
}

fn write(dir: &Path, report: &CapacityReport) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    std::fs::write(
        dir.join("capacity.json"),
        serde_json::to_vec_pretty(report)?,
    )?;
    std::fs::write(dir.join("capacity.md"), markdown(report))?;
    Ok(())
}

/// The steps as a table (also printed).
pub fn markdown(report: &CapacityReport) -> String {
    let mut out = format!(
        "# Capacity: {} ({} users, {:.0} s steps, p99 overhead bound {} ms)\n\n",
        report.scenario, report.users, report.step_s, report.p99_overhead_bound_ms
    );
    match (report.max_rate, report.max_rate_achieved) {
        (Some(rate), Some(achieved)) => out.push_str(&format!(
            "**Highest passing rate: {rate:.1} turns/s offered ({achieved:.1} achieved).**\n\n"
        )),
        _ => out.push_str("**No step passed: lower --start-rate.**\n\n"),
    }
    out.push_str(
        "| offered turns/s | achieved | latency p50 / p99 (ms) | overhead p50 / p99 (ms) | send lag p99 (ms) | daemon CPU µs/turn | MCP CPU µs/call | cores daemon / mcp / mock / harness | result |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    let mut steps: Vec<&Step> = report.steps.iter().collect();
    steps.sort_by(|a, b| a.offered_rate.total_cmp(&b.offered_rate));
    for step in steps {
        let r = &step.report;
        let num =
            |v: Option<f64>, digits: usize| v.map_or("-".to_owned(), |v| format!("{v:.digits$}"));
        let core = |name: &str| num(r.cpu_cores.get(name).copied(), 2);
        out.push_str(&format!(
            "| {:.1} | {:.1} | {:.1} / {:.1} | {} / {} | {} | {} | {} | {} / {} / {} / {} | {} |\n",
            step.offered_rate,
            r.turns_per_s,
            r.latency_ms.p50,
            r.latency_ms.p99,
            num(r.overhead_ms.as_ref().map(|o| o.p50), 2),
            num(r.overhead_ms.as_ref().map(|o| o.p99), 2),
            num(r.send_lag_ms.as_ref().map(|o| o.p99), 2),
            num(r.daemon_cpu_us_per_turn, 0),
            num(r.mcp_cpu_us_per_call, 0),
            core("daemon"),
            core("mcp_server"),
            core("mock"),
            core("harness"),
            if step.passed {
                "pass".to_owned()
            } else {
                format!("fail: {}", step.failed_because.join("; "))
            }
        ));
    }
    out
}

#[cfg(test)]
mod tests;
