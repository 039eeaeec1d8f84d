//! The open loop's arrival schedule: when each simulated user sends its turns under
//! `--rate N`.
//!
//! Arrivals form one Poisson process of `N` turns/s in aggregate (exponential gaps, drawn
//! from a seeded generator, so the same `--seed` gives the same schedule), and each arrival
//! goes to a user picked uniformly at random. By the thinning property each user's own
//! arrivals are again a Poisson process, of `N / users` turns/s, and there is no ramp-up and
//! no common phase: the load has no bursts beyond what Poisson itself has. A user sends its
//! turns in schedule order and never starts one before its previous turn was answered; a
//! turn that falls due while the previous one is still running waits in the user's queue,
//! and its latency still counts from its scheduled time (no coordinated omission).

use std::time::Duration;

use rand::{Rng, SeedableRng};

/// How many arrivals to draw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Horizon {
    /// Every arrival that falls before this offset from the start.
    Until(Duration),
    /// Exactly this many arrivals.
    Turns(u64),
}

/// The scheduled send times of every user, as offsets from the start of the run.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// Per user, in order: when each of its turns is due.
    pub per_user: Vec<Vec<Duration>>,
    /// Arrivals in all (the sum of the per-user lengths).
    pub total: u64,
}

impl Schedule {
    /// Draws a Poisson schedule of `rate` arrivals per second in aggregate over `users`
    /// users, from `seed`. `rate` must be positive and finite and `users` at least 1 (the
    /// caller validates the flags); otherwise the schedule is empty.
    pub fn poisson(rate: f64, users: usize, seed: u64, horizon: Horizon) -> Schedule {
        let mut per_user = vec![Vec::new(); users];
        let mut total = 0;
        for (at, user) in arrivals(rate, users, seed, horizon) {
            per_user[user].push(at);
            total += 1;
        }
        Schedule { per_user, total }
    }
}

/// The aggregate arrival sequence, in time order: `(offset from start, user index)`.
pub fn arrivals(rate: f64, users: usize, seed: u64, horizon: Horizon) -> Vec<(Duration, usize)> {
    if !(rate.is_finite() && rate > 0.0) || users == 0 {
        return Vec::new();
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    let mut at = 0.0f64;
    loop {
        if let Horizon::Turns(n) = horizon
            && out.len() as u64 >= n
        {
            break;
        }
        // Inverse transform: u in [0, 1), so 1 - u is in (0, 1] and the log is finite.
        let u: f64 = rng.random();
        at += -(1.0 - u).ln() / rate;
        let offset = Duration::from_secs_f64(at);
        if let Horizon::Until(end) = horizon
            && offset >= end
        {
            break;
        }
        out.push((offset, rng.random_range(0..users)));
    }
    out
}

#[cfg(test)]
mod tests;
