//! 1. Azure mock faults through the daemon: a 429 storm, 500s, hangs, cut tool-call
//!    arguments, and a redirecting provider.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::support::*;
use axum::Router;
use axum::http::StatusCode;
use serde_json::{Value, json};
use testkit::daemon::TestDaemon;
use testkit::eventually;
use tokio::time::Instant;

// === 1. Azure mock faults through the daemon ===

/// RPM 6 at the mock is one request per 10-second window. One daemon has time to wait
/// for the window to reopen and does so once, as the `retry-after-ms` hint says; another,
/// with a 3-second turn deadline, fails at once with a 503 instead of waiting past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_storm_waits_for_retry_after_or_fails_fast_with_503() {
    bounded(async {
        // The daemons call the LLM only for turns, so the mock starts after them: its
        // quota windows (and per-second arrival counts) start with the storm.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let endpoint = format!("http://127.0.0.1:{port}");
        let patient = TestDaemon::start_with(|c| {
            use_azure_at(c, &endpoint);
            c.llm.turn_deadline = Duration::from_secs(30);
            c.llm.max_retry_after = Duration::from_secs(20);
        })
        .await;
        let impatient = TestDaemon::start_with(|c| {
            use_azure_at(c, &endpoint);
            c.llm.turn_deadline = Duration::from_secs(3);
        })
        .await;
        let windows_start = Instant::now();
        let server = mock_on(port, |c| c.rpm = Some(6)).await;

        // Alice's store turn: the tool-call request takes the window's one slot, the
        // answer request after the tool is refused until the window turns.
        let started = Instant::now();
        let alice = {
            let http = patient.http.clone();
            let url = patient.messages_url("alice");
            tokio::spawn(async move {
                let response = http
                    .post(url)
                    .json(&json!({"message": "remember that the storm note is kiwi"}))
                    .send()
                    .await
                    .expect("send");
                let status = response.status().as_u16();
                (
                    status,
                    response.json::<Value>().await.unwrap_or(Value::Null),
                )
            })
        };
        eventually(
            Duration::from_secs(8),
            "alice's second request throttled",
            || {
                let stats = server.stats();
                async move { stats.rate_limited >= 1 }
            },
        )
        .await;

        // Bob, on the impatient daemon, meets the closed window: the hint (9+ s) is past
        // his deadline, so the turn ends now with a clear error instead of hanging.
        let bob_started = Instant::now();
        let (status, body) = impatient
            .post("bob", "remember that the storm note is fig")
            .await;
        let bob_took = bob_started.elapsed();
        let storm_over = windows_start.elapsed().as_secs();
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"]["code"], "llm_unavailable", "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("429")),
            "{body}"
        );
        assert!(
            bob_took < Duration::from_secs(3),
            "failed fast, not at or past the deadline: {bob_took:?}"
        );

        let (status, body) = alice.await.expect("alice's turn");
        let alice_took = started.elapsed();
        let window_turned = windows_start.elapsed();
        assert_eq!(status, 200, "{body}");
        let call = only_call(&body, "store_memory");
        assert_eq!(call["is_error"], false, "{body}");
        assert!(
            window_turned >= Duration::from_secs(10) && alice_took < Duration::from_secs(30),
            "waited for the window (10 s from the mock's start), within the deadline: \
             {alice_took:?}"
        );

        let stats = server.stats();
        // Alice: 1 admitted, 1 refused, 1 admitted after the hint. Bob: 1 refused. A retry
        // that ignored the hint (20-200 ms backoff) would have been refused again and again;
        // the hint is whole milliseconds rounded down, so one extra refusal a millisecond
        // before the window turns is possible.
        assert_eq!(stats.answered_ok, 2, "{stats:?}");
        assert!(
            (2..=3).contains(&stats.rate_limited),
            "retries honoured retry-after: {stats:?}"
        );
        assert_eq!(stats.max_admitted_in_any_10s, 1, "{stats:?}");
        let early: u64 = stats
            .arrivals_per_second
            .range(storm_over + 1..9)
            .map(|(_, n)| n)
            .sum();
        assert_eq!(
            early, 0,
            "nothing arrived between the storm (until second {storm_over}) and the window's \
             end: {stats:?}"
        );
        assert!(
            stats
                .arrivals_per_second
                .keys()
                .next_back()
                .is_some_and(|s| *s >= 9),
            "the retry came when the window turned: {stats:?}"
        );
        let patient_throttled = patient.metric("memento_llm_throttled_total").await;
        assert!(patient_throttled >= 1.0);
        assert_eq!(
            patient_throttled + 1.0,
            stats.rate_limited as f64,
            "every 429 is counted: {stats:?}"
        );
        assert_eq!(
            patient.metric("memento_llm_retries_total").await,
            patient_throttled
        );
        assert_eq!(patient.metric("memento_llm_failures_total").await, 0.0);
        assert_eq!(impatient.metric("memento_llm_throttled_total").await, 1.0);
        assert_eq!(impatient.metric("memento_llm_retries_total").await, 0.0);
        assert_eq!(impatient.metric("memento_turn_errors_total").await, 1.0);
    })
    .await;
}

/// Half the requests fail with 500: every turn still succeeds, and the daemon's
/// `/metrics` counts exactly the retries the mock caused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_and_counted_in_metrics() {
    bounded(async {
        let server = mock(|c| {
            c.fail_rate = 0.5;
            c.seed = 7;
        })
        .await;
        let daemon = TestDaemon::start_with(|c| {
            use_mock(c, &server);
            c.llm.max_retries = 12;
        })
        .await;
        let turns = (0..5).map(|i| {
            let daemon = &daemon;
            async move {
                let body = daemon
                    .turn(
                        &format!("user{i}"),
                        &format!("remember that note {i} is fig{i}"),
                    )
                    .await;
                let call = only_call(&body, "store_memory");
                assert_eq!(call["is_error"], false, "{body}");
                assert!(
                    call["result"]
                        .as_str()
                        .is_some_and(|r| r.starts_with("Successfully stored")),
                    "{body}"
                );
            }
        });
        futures::future::join_all(turns).await;
        let stats = server.stats();
        assert!(stats.server_errors_500 > 0, "{stats:?}");
        assert_eq!(stats.answered_ok, 10, "two requests a turn: {stats:?}");
        assert_eq!(
            daemon.metric("memento_llm_retries_total").await,
            stats.server_errors_500 as f64,
            "{stats:?}"
        );
        assert_eq!(daemon.metric("memento_llm_failures_total").await, 0.0);
        assert_eq!(daemon.metric("memento_turn_errors_total").await, 0.0);
    })
    .await;
}

/// The mock never answers: the turn ends at its deadline with a 504 JSON error, the
/// daemon hangs up on the mock, and the same user's next turn works once the provider is
/// healthy again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_provider_ends_the_turn_at_its_deadline_with_504() {
    bounded(async {
        let deadline = Duration::from_secs(3);
        let server = mock(|c| c.hang_rate = 1.0).await;
        let daemon = TestDaemon::start_with(|c| {
            use_mock(c, &server);
            c.llm.turn_deadline = deadline;
            // Longer than the turn: the attempt is cut by the turn's deadline.
            c.llm.request_timeout = Duration::from_secs(30);
        })
        .await;
        let started = Instant::now();
        let (status, body) = daemon
            .post("alice", "remember that the hang note is plum")
            .await;
        let took = started.elapsed();
        assert_eq!(status, 504, "{body}");
        assert_eq!(body["error"]["code"], "deadline_exceeded", "{body}");
        assert!(body["error"]["message"].is_string(), "{body}");
        assert!(
            took >= deadline - Duration::from_millis(50)
                && took < deadline + Duration::from_secs(2),
            "ended by its deadline: {took:?}"
        );
        // The daemon hung up on the hung request rather than keeping it open.
        eventually(Duration::from_secs(5), "the hung request abandoned", || {
            let stats = server.stats();
            async move { stats.in_flight == 0 && stats.abandoned >= 1 }
        })
        .await;
        assert!(server.stats().hung >= 1);
        eventually(
            Duration::from_secs(5),
            "no LLM request in flight",
            || async { daemon.metric("memento_llm_in_flight").await == 0.0 },
        )
        .await;

        let server = restart_mock(server, |_| {}).await;
        let body = daemon
            .turn("alice", "remember that the hang note is plum")
            .await;
        let call = only_call(&body, "store_memory");
        assert_eq!(call["is_error"], false, "{body}");
        assert_eq!(server.stats().answered_ok, 2);
    })
    .await;
}

/// Every tool call the mock sends has its arguments cut in half (invalid JSON): each
/// becomes an `is_error` tool result saying so, nothing reaches the memory server (no
/// call with `{}`), nothing is stored, and the reply does not claim success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_tool_arguments_are_errors_never_empty_calls() {
    bounded(async {
        let server = mock(|c| c.malformed_rate = 1.0).await;
        let daemon = TestDaemon::start_with(|c| use_mock(c, &server)).await;
        let body = daemon
            .turn(
                "alice",
                "remember that my passport number is X1234567 and it expires in May",
            )
            .await;
        let calls = tool_calls(&body);
        assert!(!calls.is_empty(), "{body}");
        for call in &calls {
            assert_eq!(call["name"], "store_memory", "{body}");
            assert_eq!(call["is_error"], true, "{body}");
            let result = call["result"].as_str().unwrap_or_default();
            assert!(
                result.contains("not valid JSON"),
                "the error says why: {result}"
            );
            // The raw text the model sent, not a parsed (or emptied) object.
            let raw = call["arguments"].as_str().expect("raw arguments kept");
            assert!(serde_json::from_str::<Value>(raw).is_err(), "{raw}");
        }
        let stats = server.stats();
        assert_eq!(
            stats.malformed_tool_args as usize,
            calls.len(),
            "every call the model made is reported: {stats:?}"
        );
        let reply = body["reply"].as_str().unwrap_or_default().to_lowercase();
        for claim in [
            "successfully",
            "i've stored",
            "i stored",
            "saved",
            "i'll remember",
        ] {
            assert!(!reply.contains(claim), "the reply claims success: {reply}");
        }
        assert!(
            [
                "couldn't",
                "could not",
                "error",
                "wasn't",
                "not able",
                "unable"
            ]
            .iter()
            .any(|w| reply.contains(w)),
            "the reply says it failed: {reply}"
        );
        // Not one call reached the memory server.
        assert_eq!(daemon.metric("memento_mcp_calls_total").await, 0.0);

        // With a healthy model, Alice's memories are listed: there are none.
        let _server = restart_mock(server, |_| {}).await;
        let body = daemon.turn("alice", "list my memories").await;
        let call = only_call(&body, "retrieve_memories");
        assert_eq!(result_json(&call)["count"], 0, "{body}");
    })
    .await;
}

/// Issue 11, item 8: an Azure endpoint that answers 307 to another host never gets the
/// daemon to follow it: the other host sees no connection (so no `api-key`), and the turn
/// fails at once with a message saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirecting_provider_fails_the_turn_and_the_key_stays_home() {
    bounded(async {
        let thief = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let thief_addr = thief.local_addr().expect("addr");
        let reached = Arc::new(AtomicUsize::new(0));
        let counter = reached.clone();
        tokio::spawn(async move {
            while let Ok((_socket, _)) = thief.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
            }
        });
        let location =
            format!("http://{thief_addr}/openai/deployments/{DEPLOYMENT}/chat/completions");
        let app = Router::new().fallback(move || {
            let location = location.clone();
            async move {
                (
                    StatusCode::TEMPORARY_REDIRECT,
                    [(axum::http::header::LOCATION, location)],
                )
            }
        });
        let endpoint = format!("http://{}", testkit::http::serve(app).await);
        let daemon = TestDaemon::start_with(|c| use_azure_at(c, &endpoint)).await;
        let started = Instant::now();
        let (status, body) = daemon.post("alice", "store this: the vault code").await;
        assert_eq!(status, 503, "{body}");
        let message = body.to_string();
        assert!(message.contains("redirects are not followed"), "{body}");
        // Not retried: well under the retry schedule and the turn deadline.
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(
            reached.load(Ordering::SeqCst),
            0,
            "the redirect target was contacted"
        );
    })
    .await;
}
