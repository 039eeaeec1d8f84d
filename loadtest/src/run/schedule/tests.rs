use std::time::Duration;

use super::{Horizon, Schedule, arrivals};

const RATE: f64 = 300.0;
const SECONDS: u64 = 200;

fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Counts of arrivals in consecutive bins of `width` seconds over the whole horizon.
fn binned(times: &[Duration], width: f64, horizon_s: f64) -> Vec<u64> {
    let mut bins = vec![0u64; (horizon_s / width).round() as usize];
    for t in times {
        let bin = (seconds(*t) / width) as usize;
        if let Some(count) = bins.get_mut(bin) {
            *count += 1;
        }
    }
    bins
}

/// The arrivals of 1000 users at `RATE` over `SECONDS`, drawn with `seed`.
fn standard_run(seed: u64) -> Vec<(Duration, usize)> {
    arrivals(
        RATE,
        1000,
        seed,
        Horizon::Until(Duration::from_secs(SECONDS)),
    )
}

fn mean_and_variance(values: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
    let n = values.clone().count() as f64;
    let mean = values.clone().sum::<f64>() / n;
    let variance = values.map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1.0);
    (mean, variance)
}

#[test]
fn the_aggregate_rate_is_what_was_asked() {
    for seed in 1..=5 {
        let all = standard_run(seed);
        let achieved = all.len() as f64 / SECONDS as f64;
        // 60,000 expected arrivals: one standard deviation is 0.4 %.
        assert!(
            (achieved - RATE).abs() / RATE < 0.02,
            "seed {seed}: {achieved:.1}/s offered instead of {RATE}"
        );
        assert!(all.windows(2).all(|w| w[0].0 <= w[1].0), "time order");
        assert!(
            all.last()
                .is_some_and(|(t, _)| seconds(*t) < SECONDS as f64)
        );
    }
}

#[test]
fn gaps_are_exponential_with_a_coefficient_of_variation_of_one() {
    for seed in 1..=5 {
        let all = standard_run(seed);
        let gaps: Vec<f64> = all
            .windows(2)
            .map(|w| seconds(w[1].0) - seconds(w[0].0))
            .collect();
        let (mean, variance) = mean_and_variance(gaps.iter().copied());
        let cv = variance.sqrt() / mean;
        assert!((cv - 1.0).abs() < 0.03, "seed {seed}: CV {cv:.3}");
        assert!(
            (mean * RATE - 1.0).abs() < 0.02,
            "seed {seed}: mean gap {mean}"
        );
        // Exponential: P(gap > mean) = 1/e, and P(gap > 3 mean) = e^-3.
        let above =
            |k: f64| gaps.iter().filter(|g| **g > k * mean).count() as f64 / gaps.len() as f64;
        assert!((above(1.0) - (-1.0f64).exp()).abs() < 0.01, "seed {seed}");
        assert!((above(3.0) - (-3.0f64).exp()).abs() < 0.005, "seed {seed}");
    }
}

#[test]
fn counts_per_interval_are_poisson_without_bursts() {
    for seed in 1..=5 {
        let times: Vec<Duration> = standard_run(seed).into_iter().map(|(t, _)| t).collect();
        // 100 ms bins: Poisson with mean 30, so variance / mean (the dispersion index) is 1.
        let bins = binned(&times, 0.1, SECONDS as f64);
        let (mean, variance) = mean_and_variance(bins.iter().map(|c| *c as f64));
        let dispersion = variance / mean;
        assert!(
            (dispersion - 1.0).abs() < 0.15,
            "seed {seed}: dispersion index {dispersion:.3}"
        );
        // P(Poisson(30) >= 60) is about 1e-6: no bin comes near it. The old schedule sent
        // all 1,000 users within the first second.
        let max = bins.iter().copied().max().unwrap_or(0);
        assert!(max < 60, "seed {seed}: {max} arrivals in 100 ms (mean 30)");
        // The first second holds about 300 like every other, not a ramp of every user.
        let first = binned(&times, 1.0, SECONDS as f64)[0];
        assert!(
            (200..=400).contains(&first),
            "seed {seed}: {first} in the first second"
        );
    }
}

#[test]
fn each_user_gets_its_share_in_order() {
    let users = 1000;
    let schedule = Schedule::poisson(RATE, users, 7, Horizon::Until(Duration::from_secs(SECONDS)));
    assert_eq!(schedule.per_user.len(), users);
    let total: usize = schedule.per_user.iter().map(Vec::len).sum();
    assert_eq!(total as u64, schedule.total);
    for (user, times) in schedule.per_user.iter().enumerate() {
        assert!(
            times.windows(2).all(|w| w[0] <= w[1]),
            "user {user}: turns out of order"
        );
    }
    // Each user's share is Poisson with mean 60 (300/s * 200 s / 1,000 users).
    let (mean, variance) =
        mean_and_variance(schedule.per_user.iter().map(|times| times.len() as f64));
    assert!((mean - 60.0).abs() < 1.5, "mean share {mean}");
    assert!(
        (variance / mean - 1.0).abs() < 0.2,
        "share dispersion {}",
        variance / mean
    );
    assert!(
        schedule.per_user.iter().all(|t| !t.is_empty()),
        "every user sends"
    );
    // A user's own gaps are exponential too (thinning): CV about 1 across all users' gaps.
    let gaps: Vec<f64> = schedule
        .per_user
        .iter()
        .flat_map(|t| t.windows(2).map(|w| seconds(w[1]) - seconds(w[0])))
        .collect();
    let (mean, variance) = mean_and_variance(gaps.iter().copied());
    assert!(
        (variance.sqrt() / mean - 1.0).abs() < 0.05,
        "per-user CV {}",
        variance.sqrt() / mean
    );
    assert!(
        (mean - users as f64 / RATE).abs() / mean < 0.05,
        "per-user mean gap {mean}"
    );
}

#[test]
fn the_seed_decides_the_schedule() {
    let horizon = Horizon::Until(Duration::from_secs(5));
    let a = Schedule::poisson(RATE, 50, 1, horizon);
    assert_eq!(a, Schedule::poisson(RATE, 50, 1, horizon));
    assert_ne!(a, Schedule::poisson(RATE, 50, 2, horizon));
}

#[test]
fn a_turn_budget_gives_exactly_that_many_arrivals() {
    let schedule = Schedule::poisson(RATE, 10, 1, Horizon::Turns(150));
    assert_eq!(schedule.total, 150);
    assert_eq!(schedule.per_user.iter().map(Vec::len).sum::<usize>(), 150);
    let one = Schedule::poisson(RATE, 1, 1, Horizon::Turns(20));
    assert_eq!(one.per_user[0].len(), 20, "one user gets every arrival");
}

#[test]
fn nonsense_rates_give_no_arrivals() {
    for rate in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert!(
            arrivals(rate, 10, 1, Horizon::Turns(5)).is_empty(),
            "{rate}"
        );
    }
    assert!(arrivals(RATE, 0, 1, Horizon::Turns(5)).is_empty());
}
