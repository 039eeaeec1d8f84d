//! The history write path, measured against the layout it replaced.

use super::super::*;
use super::pg_options;
use crate::daemon::testing::{answer, user};

/// Worker `w`'s steps: `steps` of them, back to back (closed loop), or at `rate` saves/s
/// over all `workers` with the workers' phases spread evenly (open loop).
struct Paced {
    interval: Option<tokio::time::Interval>,
    next: usize,
    steps: usize,
}

impl Paced {
    fn new(rate: Option<f64>, w: usize, workers: usize, steps: usize) -> Paced {
        let interval = rate.map(|rate| {
            let period = Duration::from_secs_f64(workers as f64 / rate);
            let start = tokio::time::Instant::now() + period.mul_f64(w as f64 / workers as f64);
            tokio::time::interval_at(start, period)
        });
        Paced {
            interval,
            next: 0,
            steps,
        }
    }

    /// The next step's number, once it is due; `None` after the last.
    async fn next(&mut self) -> Option<usize> {
        if self.next >= self.steps {
            return None;
        }
        if let Some(interval) = &mut self.interval {
            interval.tick().await;
        }
        self.next += 1;
        Some(self.next - 1)
    }
}

/// The history write path, measured: `cargo test --lib history::tests::bench_history_saves
/// -- --nocapture` with `BENCH_TURNS=20000` (the BENCHMARKS.md figures); CI runs it at its
/// default 2,000 turns, checking that every save is committed. 64 concurrent conversations over 512 users, each turn about
/// 400 bytes, histories at the default 3,000-token budget, against (a) the layout before
/// issue 12 item 3, reproduced here (one JSON row per user rewritten every turn, one
/// transaction per save, SQLite's automatic checkpoint inside the saves) and (b) turn rows
/// with group commit and background checkpoints. Prints saves/s and latency percentiles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_history_saves() {
    use std::time::Instant;
    let turns_total: usize = std::env::var("BENCH_TURNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let (users, workers, budget) = (512usize, 64usize, 3000usize);
    // BENCH_RATE=N: open loop, N saves/s in all, workers' phases spread evenly; else closed.
    let rate: Option<f64> = std::env::var("BENCH_RATE")
        .ok()
        .and_then(|v| v.parse().ok());
    let steps = turns_total / workers;
    let pace = move |w: usize| Paced::new(rate, w, workers, steps);
    let turn_messages = |i: usize| {
        vec![
            user(&format!(
                "note {i}: {}",
                "the spare key is under the blue pot ".repeat(5)
            )),
            answer(&"I stored that for you, and I will remember it. ".repeat(4)),
        ]
    };
    fn report(name: &str, mut latencies: Vec<Duration>, elapsed: Duration) {
        latencies.sort();
        let at =
            |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
        eprintln!(
            "{name}: {} saves in {:.2?} = {:.0}/s; latency p50 {:.2?} p99 {:.2?} p99.9 {:.2?} max {:.2?}",
            latencies.len(),
            elapsed,
            latencies.len() as f64 / elapsed.as_secs_f64(),
            at(0.5),
            at(0.99),
            at(0.999),
            latencies[latencies.len() - 1]
        );
    }

    // Each worker saves turns of its own users' conversations, one after another (paced in
    // open loop); with `leased`, each save takes the user's lease first and releases it with
    // a fenced append (a PostgreSQL turn). The saves' latencies.
    let saves = move |store: Arc<dyn HistoryBackend>, leased: bool| {
        let tasks: Vec<_> =
            (0..workers)
                .map(|w| {
                    let store = store.clone();
                    tokio::spawn(async move {
                        let mut histories = vec![CachedHistory::default(); users / workers];
                        let ids: Vec<UserId> = (0..histories.len())
                            .map(|slot| UserId::parse(&format!("u{w}x{slot}")).unwrap())
                            .collect();
                        let mut latencies = Vec::new();
                        let mut pace = pace(w);
                        while let Some(i) = pace.next().await {
                            let slot = i % histories.len();
                            let t = Instant::now();
                            let (mut append, next) = std::mem::take(&mut histories[slot])
                                .with_turn(turn_messages(i), budget, &ids[slot]);
                            if leased {
                                let lease = store
                                    .try_lease(&ids[slot], LEASE_TTL)
                                    .await
                                    .unwrap()
                                    .expect("free");
                                append.fence = Some(lease.token);
                                append.release = true;
                            }
                            store.append(append).await.unwrap();
                            latencies.push(t.elapsed());
                            histories[slot] = next;
                        }
                        latencies
                    })
                })
                .collect();
        async move {
            let mut latencies = Vec::new();
            for task in futures::future::join_all(tasks).await {
                latencies.extend(task.unwrap());
            }
            latencies
        }
    };

    // (a) Before: whole-row rewrite, one transaction per save, autocheckpoint in the saves.
    if std::env::var("BENCH_SKIP_BEFORE").is_err() {
        let dir = tempfile::tempdir().unwrap();
        let conn = rusqlite::Connection::open(dir.path().join("conversations.db")).unwrap();
        conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))
            .unwrap();
        conn.execute_batch(
            "PRAGMA synchronous=NORMAL; CREATE TABLE histories (user_id TEXT PRIMARY KEY, \
             messages TEXT NOT NULL, updated_at INTEGER NOT NULL);",
        )
        .unwrap();
        type OldJob = (String, String, tokio::sync::oneshot::Sender<()>);
        let (tx, rx) = crossbeam_channel::unbounded::<OldJob>();
        let thread = std::thread::spawn(move || {
            while let Ok((user, text, done)) = rx.recv() {
                conn.prepare_cached(
                    "INSERT INTO histories (user_id, messages, updated_at) VALUES (?1, ?2, 0) \
                     ON CONFLICT (user_id) DO UPDATE SET messages = excluded.messages",
                )
                .unwrap()
                .execute((user, text))
                .unwrap();
                let _ = done.send(());
            }
        });
        let started = Instant::now();
        let tasks = (0..workers).map(|w| {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut histories: Vec<Vec<ChatMessage>> = vec![Vec::new(); users / workers];
                let mut latencies = Vec::new();
                let mut pace = pace(w);
                while let Some(i) = pace.next().await {
                    let slot = i % histories.len();
                    let history = &mut histories[slot];
                    history.extend(turn_messages(i));
                    crate::daemon::conversation::trim_history(history, budget);
                    let t = Instant::now();
                    let text = serde_json::to_string(&history).unwrap();
                    let (done, wait) = tokio::sync::oneshot::channel();
                    tx.send((format!("u{w}x{slot}"), text, done)).unwrap();
                    wait.await.unwrap();
                    latencies.push(t.elapsed());
                }
                latencies
            })
        });
        let mut latencies = Vec::new();
        for task in futures::future::join_all(tasks).await {
            latencies.extend(task.unwrap());
        }
        report("before (whole-row rewrite)", latencies, started.elapsed());
        drop(tx);
        thread.join().unwrap();
    }

    // (b) Now: turn rows, group commit, background checkpoints.
    {
        let dir = tempfile::tempdir().unwrap();
        let store = HistoryStore::open(dir.path()).unwrap();
        let started = Instant::now();
        let latencies = saves(store.backend().clone(), false).await;
        let elapsed = started.elapsed();
        let stats = store.stats();
        // Every save answered Ok was committed, and saves shared transactions or not, but
        // never took more commits than saves.
        assert_eq!(stats.writes as usize, latencies.len(), "{stats:?}");
        assert!(
            stats.commits >= 1 && stats.commits <= stats.writes,
            "{stats:?}"
        );
        report("now (turn rows, group commit)", latencies, elapsed);
        eprintln!(
            "now: {} writes in {} commits, {} background checkpoints",
            stats.writes, stats.commits, stats.checkpoints
        );
        store.close().await;
    }

    // (c) PostgreSQL (with MEMENTO_TEST_POSTGRES_URL): what a turn does there, the lease
    // taken, then the append that releases it.
    if let Ok(url) = std::env::var("MEMENTO_TEST_POSTGRES_URL") {
        let options = pg_options(16, "histbench");
        let store: Arc<dyn HistoryBackend> =
            Arc::new(postgres::PgHistory::open(&url, &options).await.unwrap());
        let started = Instant::now();
        let latencies = saves(store.clone(), true).await;
        report(
            "PostgreSQL (lease + fenced append)",
            latencies,
            started.elapsed(),
        );
        store.close().await;
    }
}
