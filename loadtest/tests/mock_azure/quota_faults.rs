//! Quotas, fault injection, latency and `/stats`.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use memento_loadtest::mock_azure::MockStats;
use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::eventually;

use super::support::*;

#[tokio::test]
async fn quota_429s_carry_azure_headers() {
    // 6 RPM: one request per 10-second window.
    let server = start(|c| c.rpm = Some(6)).await;
    let http = reqwest::Client::new();
    let mut replies = Vec::new();
    for _ in 0..5 {
        let reply = azure(&http, &server, &chat("hello")).await;
        let throttled = reply.status == StatusCode::TOO_MANY_REQUESTS;
        replies.push(reply);
        if throttled {
            break;
        }
    }
    let ok = &replies[0];
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(header(ok, "x-ratelimit-remaining-requests"), Some(0));
    assert!(
        ok.headers.get("x-ratelimit-remaining-tokens").is_none(),
        "no TPM quota set"
    );
    let throttled = replies.last().expect("a reply");
    assert_eq!(
        throttled.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        throttled.text
    );
    let millis = header(throttled, "retry-after-ms").expect("retry-after-ms");
    let seconds = header(throttled, "retry-after").expect("retry-after");
    assert!((1..=10_000).contains(&millis), "{millis}");
    assert!((1..=10).contains(&seconds), "{seconds}");
    assert!(
        seconds * 1000 >= millis && seconds * 1000 < millis + 1001,
        "{seconds} {millis}"
    );
    assert_eq!(header(throttled, "x-ratelimit-remaining-requests"), Some(0));
    assert_eq!(throttled.body["error"]["code"], "429");
    let message = throttled.body["error"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(message.contains("exceeded call rate limit"), "{message}");
    assert!(
        message.contains(&format!("Please retry after {seconds} seconds")),
        "{message}"
    );
    assert!(server.stats().rate_limited >= 1);
    server.shutdown().await;

    // 1,000 TPM: two requests estimated at 600 tokens each do not fit in one minute.
    let server = start(|c| c.tpm = Some(1_000)).await;
    let mut big = chat("hello");
    big["max_tokens"] = json!(600);
    let mut replies = Vec::new();
    for _ in 0..5 {
        let reply = azure(&http, &server, &big).await;
        let throttled = reply.status == StatusCode::TOO_MANY_REQUESTS;
        replies.push(reply);
        if throttled {
            break;
        }
    }
    let remaining = header(&replies[0], "x-ratelimit-remaining-tokens").expect("remaining tokens");
    assert!(remaining < 400, "{remaining}");
    let throttled = replies.last().expect("a reply");
    assert_eq!(throttled.status, StatusCode::TOO_MANY_REQUESTS);
    assert!((1..=60).contains(&header(throttled, "retry-after").unwrap_or(0)));
    assert!(header(throttled, "x-ratelimit-remaining-tokens").is_some_and(|t| t < 600));
    assert!(
        throttled.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("exceeded token rate limit"))
    );
    let stats = server.stats();
    assert!(stats.rate_limited_tokens >= 1 && stats.rate_limited == stats.rate_limited_tokens);
    server.shutdown().await;
}

#[derive(Debug, Default, PartialEq)]
struct Observed {
    ok: u64,
    e500: u64,
    e503: u64,
    malformed: u64,
}

async fn inject_faults(seed: u64) -> (Observed, MockStats) {
    let server = start(|c| {
        c.fail_rate = 0.2;
        c.fail_503_rate = 0.1;
        c.malformed_rate = 0.3;
        c.seed = seed;
    })
    .await;
    let http = reqwest::Client::new();
    let request = chat("store this: a note about faults").to_string();
    let path = azure_path();
    let replies: Vec<Reply> = futures::stream::iter(0..400)
        .map(|_| send(&http, &server, &path, Some(("api-key", KEY)), &request))
        .buffer_unordered(16)
        .collect()
        .await;
    let mut observed = Observed::default();
    for reply in replies {
        match reply.status {
            StatusCode::OK => {
                observed.ok += 1;
                let args =
                    reply.body["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                if serde_json::from_str::<Value>(&args).is_err() {
                    observed.malformed += 1;
                }
            }
            StatusCode::INTERNAL_SERVER_ERROR => {
                observed.e500 += 1;
                assert_eq!(reply.body["error"]["type"], "server_error");
                assert!(reply.body["error"]["code"].is_null());
            }
            StatusCode::SERVICE_UNAVAILABLE => observed.e503 += 1,
            other => panic!("unexpected {other}: {}", reply.text),
        }
    }
    let stats = server.stats();
    server.shutdown().await;
    (observed, stats)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_rates_are_honoured_and_repeat_with_the_seed() {
    let (observed, stats) = inject_faults(7).await;
    assert_eq!(observed.ok + observed.e500 + observed.e503, 400);
    assert!((55..=105).contains(&observed.e500), "{observed:?}");
    assert!((22..=58).contains(&observed.e503), "{observed:?}");
    assert!((55..=115).contains(&observed.malformed), "{observed:?}");
    assert_eq!(stats.server_errors_500, observed.e500);
    assert_eq!(stats.unavailable_503, observed.e503);
    assert_eq!(stats.malformed_tool_args, observed.malformed);
    assert_eq!(stats.answered_ok, observed.ok);
    assert_eq!(stats.requests, 400);
    // The same seed gives the same faults, whatever the arrival order.
    let (again, _) = inject_faults(7).await;
    assert_eq!(again, observed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_requests_end_when_the_client_gives_up_or_the_mock_stops() {
    let server = start(|c| c.hang_rate = 1.0).await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .expect("client");
    let error = impatient
        .post(format!("{}{}", server.endpoint(), azure_path()))
        .header("api-key", KEY)
        .json(&chat("hello"))
        .send()
        .await
        .expect_err("never answered");
    assert!(error.is_timeout(), "{error}");
    eventually(
        Duration::from_secs(10),
        "the abandoned request to be counted",
        || {
            let stats = server.stats();
            std::future::ready(stats.hung == 1 && stats.abandoned == 1 && stats.in_flight == 0)
        },
    )
    .await;

    // A patient client is released by shutdown.
    let endpoint = server.endpoint();
    let patient = tokio::spawn(async move {
        reqwest::Client::new()
            .post(format!("{endpoint}{}", azure_path()))
            .header("api-key", KEY)
            .json(&chat("hello"))
            .send()
            .await
            .map(|r| r.status())
    });
    eventually(
        Duration::from_secs(10),
        "the second request to hang",
        || std::future::ready(server.stats().hung == 2),
    )
    .await;
    tokio::time::timeout(Duration::from_secs(10), server.shutdown())
        .await
        .expect("shutdown ends hung requests");
    let outcome = tokio::time::timeout(Duration::from_secs(10), patient)
        .await
        .expect("the client is released")
        .expect("join");
    if let Ok(status) = outcome {
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_is_per_request_and_requests_overlap() {
    let server = start(|c| {
        c.latency_ms = 1_000;
        c.latency_per_token_ms = 5.0;
    })
    .await;
    let http = reqwest::Client::new();
    let request = chat("store this: latency");
    let started = std::time::Instant::now();
    let replies: Vec<Reply> =
        futures::future::join_all((0..10).map(|_| azure(&http, &server, &request))).await;
    let elapsed = started.elapsed();
    let completion = replies[0].body["usage"]["completion_tokens"]
        .as_u64()
        .expect("usage");
    assert!(replies.iter().all(|r| r.status == StatusCode::OK));
    assert!(
        elapsed >= Duration::from_millis(1_000 + 5 * completion),
        "{elapsed:?}"
    );
    // Ten serial answers would take over ten seconds.
    assert!(elapsed < Duration::from_secs(8), "{elapsed:?}");
    assert!(server.stats().max_in_flight >= 2, "{:?}", server.stats());
    server.shutdown().await;
}

#[tokio::test]
async fn stats_are_served_and_reset() {
    let server = start(|_| {}).await;
    let http = reqwest::Client::new();
    for message in ["store this: a", "list my tags", "what did I store?", "hi"] {
        assert_eq!(
            azure(&http, &server, &chat(message)).await.status,
            StatusCode::OK
        );
    }
    let health = http
        .get(format!("{}/healthz", server.endpoint()))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), StatusCode::OK);
    let served: MockStats = http
        .get(format!("{}/stats", server.endpoint()))
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("stats JSON");
    assert_eq!(served, server.stats());
    assert_eq!(served.requests, 4);
    assert_eq!(served.answered_ok, 4);
    assert_eq!(
        served.tool_calls_by_name,
        BTreeMap::from([
            ("list_tags".to_owned(), 1),
            ("retrieve_memories".to_owned(), 1),
            ("store_memory".to_owned(), 1),
        ])
    );
    assert!(served.max_requests_in_any_second >= 1);
    assert_eq!(served.arrivals_per_second.values().sum::<u64>(), 4);
    let reset = http
        .post(format!("{}/stats/reset", server.endpoint()))
        .send()
        .await
        .expect("reset");
    assert!(reset.status().is_success());
    assert_eq!(server.stats(), MockStats::default());
    server.shutdown().await;
}
