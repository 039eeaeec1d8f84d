use std::cell::Cell;

use super::*;

#[derive(Debug, Clone, PartialEq)]
struct Failure {
    retryable: bool,
    hint: Option<Duration>,
}

impl Retryable for Failure {
    fn is_retryable(&self) -> bool {
        self.retryable
    }
    fn retry_after(&self) -> Option<Duration> {
        self.hint
    }
}

#[tokio::test(start_paused = true)]
async fn honours_retry_after_ms_and_never_retries_sooner() {
    let started = Instant::now();
    let attempts = Cell::new(0);
    let times = std::cell::RefCell::new(Vec::new());
    let result: Result<(), Failure> = retry(
        &RetryPolicy::default(),
        started + Duration::from_secs(60),
        |_, _| {},
        || {
            attempts.set(attempts.get() + 1);
            times.borrow_mut().push(Instant::now());
            async {
                Err(Failure {
                    retryable: true,
                    hint: Some(Duration::from_millis(300)),
                })
            }
        },
    )
    .await;
    assert!(result.is_err());
    assert_eq!(attempts.get(), 7, "first attempt + 6 retries");
    let times = times.borrow();
    for pair in times.windows(2) {
        assert!(pair[1] - pair[0] >= Duration::from_millis(300));
    }
}

#[tokio::test(start_paused = true)]
async fn permanent_errors_are_not_retried() {
    let attempts = Cell::new(0);
    let result: Result<(), Failure> = retry(
        &RetryPolicy::default(),
        Instant::now() + Duration::from_secs(60),
        |_, _| panic!("no retry expected"),
        || {
            attempts.set(attempts.get() + 1);
            async {
                Err(Failure {
                    retryable: false,
                    hint: None,
                })
            }
        },
    )
    .await;
    assert!(result.is_err());
    assert_eq!(attempts.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_deadline_is_respected() {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(2);
    let result: Result<(), Failure> = retry(
        &RetryPolicy {
            max_retries: 100,
            ..RetryPolicy::default()
        },
        deadline,
        |_, _| {},
        || async {
            Err(Failure {
                retryable: true,
                hint: Some(Duration::from_millis(700)),
            })
        },
    )
    .await;
    assert!(result.is_err());
    assert!(Instant::now() <= deadline, "never sleeps past the deadline");
    assert!(Instant::now() - started >= Duration::from_millis(1400));
}

#[tokio::test(start_paused = true)]
async fn hints_are_clamped_and_success_ends_the_loop() {
    let attempts = Cell::new(0);
    let notices = std::cell::RefCell::new(Vec::new());
    let policy = RetryPolicy {
        max_retry_after: Duration::from_secs(1),
        ..RetryPolicy::default()
    };
    let result = retry(
        &policy,
        Instant::now() + Duration::from_secs(60),
        |_, notice| notices.borrow_mut().push(notice),
        || {
            attempts.set(attempts.get() + 1);
            let n = attempts.get();
            async move {
                if n < 3 {
                    Err(Failure {
                        retryable: true,
                        hint: Some(Duration::from_secs(3600)),
                    })
                } else {
                    Ok(n)
                }
            }
        },
    )
    .await;
    assert_eq!(result, Ok(3));
    let notices = notices.borrow();
    assert_eq!(notices.len(), 2);
    assert!(
        notices
            .iter()
            .all(|n| n.delay == Duration::from_secs(1) && n.from_server)
    );
}

#[tokio::test(start_paused = true)]
async fn backoff_grows_without_hints() {
    let notices = std::cell::RefCell::new(Vec::new());
    let _: Result<(), Failure> = retry(
        &RetryPolicy::default(),
        Instant::now() + Duration::from_secs(600),
        |_, notice| notices.borrow_mut().push(notice.delay),
        || async {
            Err(Failure {
                retryable: true,
                hint: None,
            })
        },
    )
    .await;
    let notices = notices.borrow();
    assert_eq!(notices.len(), 6);
    assert!(notices[0] <= Duration::from_millis(375));
    assert!(notices.iter().all(|d| *d <= Duration::from_secs(12)));
    assert!(notices[5] > notices[0]);
}

#[test]
fn retry_after_headers() {
    let headers = |pairs: &[(&str, &str)]| {
        let mut map = http::HeaderMap::new();
        for (k, v) in pairs {
            map.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        map
    };
    assert_eq!(
        parse_retry_after(&headers(&[("retry-after-ms", "300")])),
        Some(Duration::from_millis(300))
    );
    assert_eq!(
        parse_retry_after(&headers(&[("retry-after-ms", "250"), ("retry-after", "9")])),
        Some(Duration::from_millis(250))
    );
    assert_eq!(
        parse_retry_after(&headers(&[("retry-after", "2")])),
        Some(Duration::from_secs(2))
    );
    assert_eq!(
        parse_retry_after(&headers(&[("retry-after", "soon")])),
        None
    );
    assert_eq!(
        parse_retry_after(&headers(&[("retry-after-ms", "-5")])),
        None
    );
    assert_eq!(parse_retry_after(&headers(&[])), None);
    let past = parse_retry_after(&headers(&[(
        "retry-after",
        "Wed, 21 Oct 2015 07:28:00 GMT",
    )]));
    assert_eq!(past, Some(Duration::ZERO));
}

#[test]
fn exponential_delay_is_capped() {
    for attempt in 0..40 {
        let delay = exponential_delay(Duration::from_millis(100), Duration::from_secs(5), attempt);
        assert!(delay <= Duration::from_secs(5));
    }
}
