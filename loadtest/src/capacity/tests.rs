use serde_json::json;

use super::{CapacityReport, Step, markdown, verdict};
use crate::run::Report;

/// A 10-second open-loop step's report with the given figures.
fn report(offered: f64, turns: u64, turns_per_s: f64, overhead_p99: f64) -> Report {
    let latency = json!({"p50": 5.0, "p90": 8.0, "p99": 12.0, "p999": 20.0, "max": 30.0});
    serde_json::from_value(json!({
        "scenario": "default", "mode": "open", "users": 100, "turns": turns,
        "elapsed_s": 10.0, "turns_per_s": turns_per_s, "latency_ms": latency,
        "errors": {}, "tool_calls": {}, "llm": null, "llm_retries": null,
        "daemon_rss_mib": [], "daemon_cpu": [], "throughput_per_s": [], "p99_per_s_ms": [],
        "integrity": {"ok": true, "checked": 0, "lost": 0, "leaked": 0, "out_of_order": 0, "skipped": null},
        "overhead_ms": {"p50": 1.0, "p90": 1.5, "p99": overhead_p99, "p999": 3.0, "max": 4.0},
        "offered_rate": offered, "scheduled_turns": turns, "unsent_turns": 0,
        "daemon_cpu_us_per_turn": 900.0, "mcp_cpu_us_per_call": 300.0,
        "cpu_cores": {"daemon": 0.5, "harness": 0.2},
    }))
    .expect("a valid report")
}

#[test]
fn a_step_passes_only_within_the_bound_and_with_the_load_delivered() {
    assert!(verdict(&report(100.0, 1000, 99.5, 1.9), 2.0, 10.0).is_empty());

    let why = verdict(&report(100.0, 1000, 99.5, 2.5), 2.0, 10.0);
    assert_eq!(why.len(), 1, "{why:?}");
    assert!(why[0].contains("p99 overhead 2.50 ms"), "{why:?}");

    let mut failed = report(100.0, 1000, 99.5, 1.0);
    failed.errors.insert("504 deadline".into(), 3);
    assert!(verdict(&failed, 2.0, 10.0)[0].contains("3 turns failed"));

    let mut unsent = report(100.0, 1000, 99.5, 1.0);
    unsent.unsent_turns = Some(7);
    assert!(verdict(&unsent, 2.0, 10.0)[0].contains("7 scheduled turns never sent"));

    // 1,000 turns scheduled over 10 s, but answered at 80/s: the daemon fell behind even
    // though the overhead it reports stayed small (the machine, not the daemon, saturated).
    let behind = verdict(&report(100.0, 1000, 80.0, 1.0), 2.0, 10.0);
    assert!(behind[0].contains("achieved 80.0"), "{behind:?}");

    let mut no_timings = report(100.0, 1000, 99.5, 1.0);
    no_timings.overhead_ms = None;
    assert!(verdict(&no_timings, 2.0, 10.0)[0].contains("no overhead figures"));
}

#[test]
fn the_table_lists_steps_by_rate_and_names_the_highest_pass() {
    let step = |rate: f64, p99: f64| {
        let report = report(rate, (rate * 10.0) as u64, rate, p99);
        let failed_because = verdict(&report, 2.0, 10.0);
        Step {
            offered_rate: rate,
            passed: failed_because.is_empty(),
            failed_because,
            report,
        }
    };
    let capacity = CapacityReport {
        scenario: "default".into(),
        users: 100,
        step_s: 10.0,
        p99_overhead_bound_ms: 2.0,
        max_rate: Some(150.0),
        max_rate_achieved: Some(150.0),
        steps: vec![step(100.0, 1.0), step(225.0, 9.0), step(150.0, 1.5)],
    };
    let table = markdown(&capacity);
    assert!(
        table.contains("Highest passing rate: 150.0 turns/s"),
        "{table}"
    );
    let rows: Vec<&str> = table
        .lines()
        .filter(|l| l.starts_with("| 1") || l.starts_with("| 2"))
        .collect();
    assert_eq!(rows.len(), 3, "{table}");
    assert!(
        rows[0].starts_with("| 100.0")
            && rows[1].starts_with("| 150.0")
            && rows[2].starts_with("| 225.0")
    );
    assert!(
        rows[2].contains("fail: p99 overhead 9.00 ms"),
        "{}",
        rows[2]
    );
    assert!(rows[0].contains("| 900 | 300 |"), "{}", rows[0]);
}
