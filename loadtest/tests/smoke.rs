//! The harness never rots: a few-second `run` that spawns the whole stack, checked field by
//! field, with the integrity check passing.

use std::path::PathBuf;
use std::process::{Command, Output};

use testkit::process::assert_success;
use testkit::services::{postgres_url, redis_url};

#[test]
fn a_spawned_smoke_run_reports_and_passes_integrity() {
    let (output, report, out) = run_harness(&["--users", "10", "--turns", "150"]);
    assert_success(&output, "the harness");
    assert_eq!(report["turns"], 150);
    assert!(report["turns_per_s"].as_f64().is_some_and(|t| t > 0.0));
    for key in ["p50", "p90", "p99", "p999", "max"] {
        assert!(
            report["latency_ms"][key].as_f64().is_some_and(|v| v > 0.0),
            "latency {key}"
        );
    }
    assert!(
        report["errors"].as_object().is_some_and(|e| e.is_empty()),
        "{}",
        report["errors"]
    );
    assert_eq!(report["integrity"]["ok"], true, "{}", report["integrity"]);
    assert!(
        report["integrity"]["checked"]
            .as_u64()
            .is_some_and(|c| c > 0)
    );
    assert_eq!(report["integrity"]["lost"], 0);
    assert_eq!(report["integrity"]["leaked"], 0);
    assert!(report["llm"]["requests"].as_u64().is_some_and(|r| r >= 150));
    assert!(
        report["tool_calls"]["store_memory"]
            .as_u64()
            .is_some_and(|n| n > 0)
    );
    for key in ["p50", "p99", "max"] {
        assert!(
            report["overhead_ms"][key].as_f64().is_some_and(|v| v > 0.0),
            "overhead {key}: {}",
            report["overhead_ms"]
        );
    }
    assert!(
        report["overhead_ms"]["p50"].as_f64() <= report["latency_ms"]["p50"].as_f64(),
        "overhead is a share of the latency"
    );
    assert_cpu_figures(&report);
    assert!(
        report.get("offered_rate").is_none(),
        "a closed loop offers no rate"
    );
    assert!(out.path().join("report.md").is_file());
    let svg = std::fs::read_to_string(out.path().join("report.svg")).expect("svg");
    assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
    assert!(
        svg.matches("<polyline").count() >= 2,
        "a throughput line and a latency line"
    );
    assert!(svg.contains("turns answered") && svg.contains("p99 latency"));
}

/// The open loop: 100 Poisson arrivals at 50 turns/s over 10 users. The report gives the
/// offered and the achieved rate, every scheduled turn sent and answered, how late the
/// harness sent them, and the CPU figures; report.md shows them too.
#[test]
fn an_open_loop_run_reports_offered_and_achieved_rates() {
    let (output, report, out) = run_harness(&["--users", "10", "--rate", "50", "--turns", "100"]);
    assert_success(&output, "the harness");
    assert_eq!(report["mode"], "open");
    assert_eq!(report["offered_rate"], 50.0);
    assert_eq!(report["scheduled_turns"], 100);
    assert_eq!(report["unsent_turns"], 0);
    assert_eq!(report["turns"], 100);
    assert!(
        report["errors"].as_object().is_some_and(|e| e.is_empty()),
        "{}",
        report["errors"]
    );
    // 100 arrivals at 50/s span about 2 s (Poisson: 1.6-2.4 s almost surely); the achieved
    // rate is the turns over the whole run, answers included, so never above about the
    // offered rate (how far below depends on how loaded the machine is: a debug build on
    // a busy CI machine falls behind, and the send lag says by how much).
    let achieved = report["turns_per_s"].as_f64().expect("turns_per_s");
    let elapsed = report["elapsed_s"].as_f64().expect("elapsed_s");
    assert!(achieved > 0.0 && achieved <= 65.0, "achieved {achieved}/s");
    assert!((achieved * elapsed - 100.0).abs() < 0.5, "turns / elapsed");
    assert!(
        elapsed >= 1.5,
        "the schedule spans about 2 s, not a burst: {elapsed} s"
    );
    for key in ["p50", "p99", "max"] {
        assert!(
            report["send_lag_ms"][key]
                .as_f64()
                .is_some_and(|v| v >= 0.0),
            "send lag {key}: {}",
            report["send_lag_ms"]
        );
        assert!(
            report["overhead_ms"][key].as_f64().is_some_and(|v| v > 0.0),
            "overhead {key}"
        );
    }
    assert_cpu_figures(&report);
    assert_eq!(report["integrity"]["ok"], true, "{}", report["integrity"]);
    let md = std::fs::read_to_string(out.path().join("report.md")).expect("report.md");
    assert!(
        md.contains("| offered / achieved turns/s (open loop, Poisson) | 50.0 / "),
        "{md}"
    );
    assert!(md.contains("| daemon CPU per turn (µs) |"), "{md}");
    assert!(md.contains("| MCP server CPU per tool call (µs) |"), "{md}");
}

/// The daemon's CPU per turn and the MCP server's per tool call are there and plausible
/// (a turn costs the daemon more than 10 µs and less than a CPU-second), and each spawned
/// process's cores are reported.
fn assert_cpu_figures(report: &serde_json::Value) {
    for key in ["daemon_cpu_us_per_turn", "mcp_cpu_us_per_call"] {
        assert!(
            report[key]
                .as_f64()
                .is_some_and(|us| (10.0..1_000_000.0).contains(&us)),
            "{key}: {}",
            report[key]
        );
    }
    for process in ["daemon", "mcp_server", "mock", "harness"] {
        assert!(
            report["cpu_cores"][process]
                .as_f64()
                .is_some_and(|c| c >= 0.0),
            "cores of {process}: {}",
            report["cpu_cores"]
        );
    }
    assert!(
        report["cpu_cores"]["daemon"]
            .as_f64()
            .is_some_and(|c| c > 0.0),
        "the daemon worked: {}",
        report["cpu_cores"]
    );
}

/// With a 600-RPM quota on the mock and the daemon, 60 turns (about 120 LLM requests, more
/// than one 10-second window's 100) run past the first window: arrivals at the mock stay
/// within the quota plus the daemon's burst, and no user sees a 429.
#[test]
fn a_rate_limited_run_keeps_the_quota_and_users_see_no_429() {
    let (output, report, _out) =
        run_harness(&["--users", "10", "--turns", "60", "--mock-rpm", "600"]);
    let what = format!("the harness (rate limit check: {})", report["rate_limit"]);
    assert_success(&output, &what);
    let check = &report["rate_limit"];
    assert_eq!(check["ok"], true, "{check}");
    assert_eq!(check["window_quota"], 100);
    assert_eq!(check["burst"], 10);
    assert!(
        check["max_arrivals_in_10s"]
            .as_u64()
            .is_some_and(|n| n <= 110),
        "{check}"
    );
    assert_eq!(check["user_429s"], 0);
    assert!(
        report["errors"].as_object().is_some_and(|e| e.is_empty()),
        "{}",
        report["errors"]
    );
    assert_eq!(report["integrity"]["ok"], true, "{}", report["integrity"]);
}

/// Runs `memento-loadtest run --quiet --scenario smoke.toml` with `args`, spawning the stack
/// from the `memento` binary built beside it; returns the process output, report.json and
/// the output directory (kept alive for the caller's file checks).
fn run_harness(args: &[&str]) -> (Output, serde_json::Value, tempfile::TempDir) {
    let harness = PathBuf::from(env!("CARGO_BIN_EXE_memento-loadtest"));
    let memento = harness.with_file_name("memento");
    assert!(
        memento.is_file(),
        "the memento binary is not built next to {} (run the workspace tests: cargo test --workspace)",
        harness.display()
    );
    let out = tempfile::tempdir().expect("tempdir");
    let scenario = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios/smoke.toml");
    let output = Command::new(&harness)
        .arg("run")
        .args(args)
        .arg("--quiet")
        .arg("--scenario")
        .arg(&scenario)
        .arg("--out")
        .arg(out.path())
        .arg("--memento-bin")
        .arg(&memento)
        .output()
        .expect("run the harness");
    let report = std::fs::read(out.path().join("report.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_else(|| {
            panic!(
                "no report.json:\n{}\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )
        });
    (output, report, out)
}

/// Issue 14: three daemons behind nginx on one PostgreSQL and one Redis keep the mock's
/// 600 RPM between them, and killing one under load loses and leaks no memory; its users are
/// answered again.
#[test]
fn three_daemons_share_the_quota_and_survive_a_kill() {
    let (Some(postgres), Some(redis)) = (postgres_url(), redis_url()) else {
        return;
    };
    let (output, report, _out) = run_harness(&[
        "--daemons",
        "3",
        "--users",
        "12",
        "--duration",
        "12s",
        "--mock-rpm",
        "600",
        "--kill-daemon-at",
        "4s",
        "--postgres-url",
        &postgres,
        "--redis-url",
        &redis,
    ]);
    assert_eq!(report["daemons"], 3);
    let rate_limit = &report["rate_limit"];
    assert_eq!(rate_limit["ok"], true, "{rate_limit}");
    // Issue 14's target: no 429 reaches a user and arrivals stay within the quota plus its
    // burst (`ok`). The mock may still refuse a few requests when the daemons spend the
    // burst inside one of its 10-second windows; the daemons retry those.
    assert_eq!(rate_limit["user_429s"], 0, "{rate_limit}");
    let failover = &report["failover"];
    assert!(
        failover["killed_at_s"].as_f64().is_some_and(|s| s >= 4.0),
        "{failover}"
    );
    assert_eq!(failover["unrecovered_users"], 0, "{failover}");
    let integrity = &report["integrity"];
    assert_eq!(integrity["lost"], 0, "{integrity}");
    assert_eq!(integrity["leaked"], 0, "{integrity}");
    assert!(
        integrity["checked"].as_u64().is_some_and(|n| n > 0),
        "{integrity}"
    );
    // Every error is a turn lost with the killed daemon (nginx's 502) or none.
    let errors = report["errors"].as_object().cloned().unwrap_or_default();
    assert!(errors.keys().all(|k| k.starts_with("502")), "{errors:?}");
    assert_eq!(
        failover["failed_turns"].as_u64(),
        Some(errors.values().filter_map(|v| v.as_u64()).sum::<u64>()),
        "{failover} {errors:?}"
    );
    assert!(
        output.status.success() || integrity["out_of_order"] != 0,
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
