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
