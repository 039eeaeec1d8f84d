//! The state one mock shares between its requests: config, model, quota, counters, the
//! fault generator, the gate and a test's script; a request in flight ([`Flight`]).

use super::*;

/// Shared state of one mock.
pub(super) struct Mock {
    pub(super) config: MockConfig,
    pub(super) model: OfflineModel,
    pub(super) quota: Mutex<Quota>,
    pub(super) counters: Mutex<Counters>,
    /// Requests that reached the fault draw (the generator's position).
    pub(super) draws: AtomicU64,
    /// Answers given (for unique completion ids).
    pub(super) answers: AtomicU64,
    /// Chat requests received (for request ids; never reset).
    pub(super) arrivals: AtomicU64,
    pub(super) shutdown: CancellationToken,
    /// Open (true) unless a test closed it: chat requests wait here while it is closed.
    pub(super) gate: tokio::sync::watch::Sender<bool>,
    /// A test's script in place of the offline model.
    pub(super) script: Option<Script>,
    /// Request bodies, kept for scripted mocks only.
    pub(super) requests: Mutex<Vec<Value>>,
}

pub(super) struct Counters {
    pub(super) stats: MockStats,
    /// Second 0 of `arrivals_per_second`.
    pub(super) epoch: Instant,
}

/// Counts a chat request as in flight until dropped; a drop before [`Flight::finish`]
/// means the client went away first.
pub(super) struct Flight {
    pub(super) mock: Arc<Mock>,
    pub(super) finished: bool,
}

impl Flight {
    pub(super) fn finish(mut self) {
        self.finished = true;
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        let finished = self.finished;
        self.mock.count(|s| {
            s.in_flight = s.in_flight.saturating_sub(1);
            if !finished {
                s.abandoned += 1;
            }
        });
    }
}

/// How a chat request ended, before the answer.
pub(super) enum Fault {
    None,
    Hang,
    ServerError,
    Unavailable,
}

impl Mock {
    /// The counters, even if a panicking thread poisoned the lock (they stay usable).
    pub(super) fn counters(&self) -> MutexGuard<'_, Counters> {
        self.counters.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn count(&self, f: impl FnOnce(&mut MockStats)) {
        f(&mut self.counters().stats);
    }

    pub(super) fn reset(&self) {
        let mut counters = self.counters();
        let in_flight = counters.stats.in_flight;
        counters.stats = MockStats {
            in_flight,
            ..MockStats::default()
        };
        counters.epoch = Instant::now();
    }

    /// Counts an arrival and returns the guard that counts its end.
    pub(super) fn arrive(self: &Arc<Self>) -> Flight {
        let mut counters = self.counters();
        let second = counters.epoch.elapsed().as_secs();
        let stats = &mut counters.stats;
        stats.requests += 1;
        stats.in_flight += 1;
        stats.max_in_flight = stats.max_in_flight.max(stats.in_flight);
        let arrivals = stats.arrivals_per_second.entry(second).or_default();
        *arrivals += 1;
        let arrivals = *arrivals;
        stats.max_requests_in_any_second = stats.max_requests_in_any_second.max(arrivals);
        while stats.arrivals_per_second.len() > ARRIVAL_HISTORY_SECONDS {
            stats.arrivals_per_second.pop_first();
        }
        Flight {
            mock: self.clone(),
            finished: false,
        }
    }

    pub(super) fn key_ok(&self, headers: &HeaderMap) -> bool {
        let key = headers
            .get("api-key")
            .and_then(|v| v.to_str().ok())
            .or_else(|| {
                headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
            });
        key == Some(self.config.api_key.as_str())
    }

    /// Two uniform numbers in [0, 1) for the next request: the n-th request to draw
    /// always gets the same pair.
    pub(super) fn draw(&self) -> (f64, f64) {
        let n = self.draws.fetch_add(1, Ordering::Relaxed);
        let unit = |x: u64| (splitmix64(x) >> 11) as f64 / (1u64 << 53) as f64;
        let base = self.config.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (
            unit(base ^ n.wrapping_mul(2)),
            unit(base ^ n.wrapping_mul(2).wrapping_add(1)),
        )
    }

    pub(super) fn fault(&self, draw: f64) -> Fault {
        let c = &self.config;
        if draw < c.hang_rate {
            Fault::Hang
        } else if draw < c.hang_rate + c.fail_rate {
            Fault::ServerError
        } else if draw < c.hang_rate + c.fail_rate + c.fail_503_rate {
            Fault::Unavailable
        } else {
            Fault::None
        }
    }

    /// Sleeps `duration`, or less when the mock stops.
    pub(super) async fn pause(&self, duration: Duration) {
        if !duration.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(duration) => {}
                () = self.shutdown.cancelled() => {}
            }
        }
    }

    pub(super) fn per_token(&self, tokens: u32) -> Duration {
        let ms = self.config.latency_per_token_ms * f64::from(tokens);
        Duration::try_from_secs_f64(ms / 1000.0).unwrap_or(Duration::ZERO)
    }
}
