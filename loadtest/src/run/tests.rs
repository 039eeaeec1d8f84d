use std::collections::BTreeMap;

use super::{max_in_window, rate_limit_check};
use crate::mock_azure::MockStats;

fn per_second(pairs: &[(u64, u64)]) -> BTreeMap<u64, u64> {
    pairs.iter().copied().collect()
}

#[test]
fn the_window_sum_slides_over_gaps() {
    let arrivals = per_second(&[(0, 10), (1, 10), (5, 10), (10, 10), (11, 10), (30, 50)]);
    // Seconds 1..=10 hold 10 + 10 + 10 = 30; 0..=9 also 30; 30 alone is 50.
    assert_eq!(max_in_window(&arrivals, 10), 50);
    assert_eq!(max_in_window(&arrivals, 2), 50);
    assert_eq!(max_in_window(&per_second(&[]), 10), 0);
    assert_eq!(
        max_in_window(&per_second(&[(0, 10), (1, 10), (5, 10), (10, 10)]), 10),
        30
    );
}

#[test]
fn the_rate_limit_check_allows_the_burst_and_no_more() {
    // 600 RPM: 100 per 10-second window, burst 10.
    let mut stats = MockStats {
        arrivals_per_second: (0..10).map(|s| (s, 11)).collect(),
        ..MockStats::default()
    };
    let check = rate_limit_check(600, &stats, &BTreeMap::new());
    assert_eq!((check.window_quota, check.burst), (100, 10));
    assert_eq!(check.max_arrivals_in_10s, 110);
    assert!(check.ok, "{check:?}");

    stats.arrivals_per_second.insert(3, 12);
    let check = rate_limit_check(600, &stats, &BTreeMap::new());
    assert_eq!(check.max_arrivals_in_10s, 111);
    assert!(!check.ok, "one over quota + burst must fail");

    let stats = MockStats {
        arrivals_per_second: per_second(&[(0, 5)]),
        ..MockStats::default()
    };
    let errors: BTreeMap<String, u64> = [("429 rate_limited".to_owned(), 1)].into();
    let check = rate_limit_check(600, &stats, &errors);
    assert_eq!(check.user_429s, 1);
    assert!(!check.ok, "a 429 at a user fails the check");
}

#[test]
fn every_bundled_scenario_parses() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("scenarios dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path).expect("read");
            let scenario: super::Scenario =
                toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let mix = scenario.mix;
            assert!(
                mix.store + mix.retrieve + mix.search + mix.delete + mix.chat > 0,
                "{}: empty mix",
                path.display()
            );
            assert!(scenario.text.min_words <= scenario.text.max_words);
            seen += 1;
        }
    }
    assert!(seen >= 3, "expected the bundled scenarios, found {seen}");
}

#[test]
fn failover_counts_failures_after_the_kill_and_the_last_affected_users_recovery() {
    // (user, end s, ok): user 1 fails twice after the kill at 10 s and is answered at 13.5 s;
    // user 2 fails once and is answered at 11 s; user 0 never fails; a failure before the
    // kill is not the failover's.
    let ends = [
        (0, 9.0, true),
        (2, 9.5, false),
        (1, 10.2, false),
        (2, 10.4, false),
        (1, 12.0, false),
        (2, 11.0, true),
        (0, 12.5, true),
        (1, 13.5, true),
        (1, 14.0, true),
    ];
    let failover = super::failover(10.0, &ends, 20.0);
    assert_eq!(failover.failed_turns, 3);
    assert_eq!(failover.affected_users, 2);
    assert_eq!(failover.unrecovered_users, 0);
    assert!(
        (failover.recovered_after_s - 3.5).abs() < 1e-9,
        "{failover:?}"
    );
    // A user never answered again counts until the end of the run.
    let failover = super::failover(10.0, &[(3, 10.5, false)], 20.0);
    assert_eq!(failover.unrecovered_users, 1);
    assert!((failover.recovered_after_s - 10.0).abs() < 1e-9);
    // No failures: recovered at once.
    assert_eq!(
        super::failover(10.0, &[(0, 11.0, true)], 20.0).recovered_after_s,
        0.0
    );
}
