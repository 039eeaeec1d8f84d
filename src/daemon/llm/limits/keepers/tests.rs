use std::time::Duration;

use tokio::time::Instant;

use super::redis::Gcra;
use super::*;

fn quotas(rpm: u32, tpm: u32, per_user_rpm: u32) -> Quotas {
    Quotas {
        rpm,
        tpm,
        per_user_rpm,
        largest_request: 1_000,
    }
}

#[test]
fn the_fallback_share_scales_each_limited_quota_and_keeps_unlimited_ones() {
    let scaled = quotas(600, 90_000, 7).share(1.0 / 3.0);
    assert_eq!(scaled.rpm, 200);
    assert_eq!(scaled.tpm, 30_000);
    assert_eq!(scaled.per_user_rpm, 2);
    assert_eq!(quotas(0, 0, 1).share(0.1), quotas(0, 0, 1));
}

#[test]
fn redis_buckets_pace_like_the_local_ones() {
    // 600 RPM: one request per 100 ms, a burst of one second's worth (10).
    let gcra = Gcra::per_minute(600, 1).expect("limited");
    assert_eq!(gcra.interval_us, 100_000);
    assert_eq!(gcra.burst, 10);
    assert_eq!(gcra.tau_us, 1_000_000);
    let local = quota(600, 1).expect("limited");
    assert_eq!(local.burst_size().get(), gcra.burst);
    assert_eq!(
        local.replenish_interval(),
        Duration::from_micros(gcra.interval_us)
    );
    assert_eq!(Gcra::per_minute(0, 1), None);
}

#[test]
fn config_needs_a_redis_url_for_redis_and_a_share_in_range() {
    let mut config = LimitsConfig::default();
    assert!(config.validate().is_ok());
    config.backend = LimitsBackend::Redis;
    assert!(matches!(config.validate(), Err(LimitError::Config(m)) if m.contains("redis_url")));
    config.redis_url = SecretUrl::new("not a url");
    assert!(config.validate().is_err());
    config.redis_url = SecretUrl::new("redis://127.0.0.1:6379/0");
    assert!(config.validate().is_ok());
    for share in [0.0, -0.5, 1.5, f64::NAN] {
        config.fallback_share = share;
        assert!(config.validate().is_err(), "{share}");
    }
    // The URL may hold a password: Debug never prints it.
    config.redis_url = SecretUrl::new("redis://:hunter2@db:6379");
    assert!(!format!("{config:?}").contains("hunter2"));
}

#[tokio::test]
async fn the_local_limiter_admits_the_burst_then_waits_and_refuses_past_the_deadline() {
    let limits = Limits::new(&LimitsConfig::default(), quotas(600, 0, 0), "t").expect("limits");
    assert_eq!(limits.mode(), LimitsMode::Local);
    let now = Instant::now();
    for _ in 0..10 {
        limits.acquire(1, now).await.expect("within the burst");
    }
    assert_eq!(
        limits.acquire(1, Instant::now()).await,
        Err(LimitError::DeadlineExceeded)
    );
    // The next one comes 100 ms later.
    let started = Instant::now();
    limits
        .acquire(1, started + Duration::from_secs(1))
        .await
        .expect("after one interval");
    assert!(started.elapsed() >= Duration::from_millis(90));
}

#[tokio::test]
async fn the_per_user_limit_refuses_with_a_retry_time() {
    let limits = Limits::new(&LimitsConfig::default(), quotas(0, 0, 60), "t").expect("limits");
    limits.check_user("u1").await.expect("first");
    match limits.check_user("u1").await {
        Err(LimitError::UserLimited { retry_after }) => {
            assert!(retry_after > Duration::from_millis(500), "{retry_after:?}")
        }
        other => panic!("{other:?}"),
    }
    limits.check_user("u2").await.expect("another user");
}

/// With Redis unreachable the daemon still admits requests, at its share of the quota, and
/// says so.
#[tokio::test]
async fn an_unreachable_redis_falls_back_to_the_local_share() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    // Nothing listens there any more.
    let config = LimitsConfig {
        backend: LimitsBackend::Redis,
        redis_url: SecretUrl::new(format!("redis://127.0.0.1:{port}/0")),
        fallback_share: 0.5,
        redis_timeout: Duration::from_millis(300),
        ..LimitsConfig::default()
    };
    let limits = Limits::new(&config, quotas(1_200, 0, 0), "t").expect("limits");
    assert_eq!(limits.mode(), LimitsMode::Shared);
    let now = Instant::now();
    // The fallback's burst is half of 20.
    let mut admitted = 0;
    for _ in 0..20 {
        if limits.acquire(1, now).await.is_ok() {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 10);
    assert_eq!(limits.mode(), LimitsMode::Fallback);
    assert_eq!(limits.metrics().fallback.get(), 1);
    assert_eq!(limits.metrics().fallbacks.get(), 1);
    assert!(limits.metrics().redis_errors.get() >= 1);
}

/// The URL of the test Redis (tests/services/redis.sh), or `None` to skip; under
/// `MEMENTO_REQUIRE_SERVICES=1` (tests/run.sh) a missing URL fails the test.
fn test_redis_url() -> Option<String> {
    match std::env::var("MEMENTO_TEST_REDIS_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("MEMENTO_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "MEMENTO_TEST_REDIS_URL is not set but MEMENTO_REQUIRE_SERVICES=1: start one \
                 with `bash tests/services/redis.sh`"
            );
            eprintln!(
                "skipped: MEMENTO_TEST_REDIS_URL is not set (start one with \
                 `export MEMENTO_TEST_REDIS_URL=$(bash tests/services/redis.sh)`)"
            );
            None
        }
    }
}

fn redis_config(url: &str) -> LimitsConfig {
    LimitsConfig {
        backend: LimitsBackend::Redis,
        redis_url: SecretUrl::new(url),
        fallback_share: 0.5,
        // A fresh prefix per test: runs never share buckets.
        key_prefix: format!("memento-test:{}", uuid::Uuid::new_v4().simple()),
        redis_timeout: Duration::from_secs(2),
    }
}

/// Two daemons' limiters on one Redis spend one quota: together they admit one burst, where
/// two local limiters would admit two.
#[tokio::test]
async fn two_limiters_on_one_redis_share_the_quota() {
    let Some(url) = test_redis_url() else {
        return;
    };
    let config = redis_config(&url);
    // 60 RPM: a burst of 1, then one a second; 6,000 TPM with requests of 50 tokens.
    let quotas = Quotas {
        rpm: 60,
        tpm: 6_000,
        per_user_rpm: 60,
        largest_request: 100,
    };
    let a = Limits::new(&config, quotas, "scope").expect("a");
    let b = Limits::new(&config, quotas, "scope").expect("b");
    let now = Instant::now();
    let mut admitted = 0;
    for _ in 0..5 {
        for limits in [&a, &b] {
            if limits.acquire(50, now).await.is_ok() {
                admitted += 1;
            }
        }
    }
    assert_eq!(admitted, 1, "one burst of 1 across both daemons");
    assert_eq!(a.mode(), LimitsMode::Shared);
    assert_eq!(b.mode(), LimitsMode::Shared);
    // A waiting request gets the next slot, about a second later, from the other daemon.
    let started = Instant::now();
    b.acquire(50, started + Duration::from_secs(3))
        .await
        .expect("the next slot");
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    // The per-user limit is shared too; other users and other scopes are not affected.
    a.check_user("pseudonym-1").await.expect("first");
    assert!(matches!(
        b.check_user("pseudonym-1").await,
        Err(LimitError::UserLimited { retry_after }) if retry_after > Duration::from_millis(500)
    ));
    b.check_user("pseudonym-2").await.expect("another user");
    let other = Limits::new(&config, quotas, "other-deployment").expect("other");
    other
        .acquire(50, Instant::now())
        .await
        .expect("another scope has its own quota");
    // Tokens: a charge of the whole bucket makes the next request wait.
    let tokens = Limits::new(
        &redis_config(&url),
        Quotas {
            rpm: 0,
            tpm: 6_000,
            per_user_rpm: 0,
            largest_request: 100,
        },
        "tokens",
    )
    .expect("tokens");
    tokens.acquire(100, Instant::now()).await.expect("burst");
    tokens.charge(100).await;
    assert_eq!(
        tokens.acquire(1, Instant::now()).await,
        Err(LimitError::DeadlineExceeded)
    );
}
