//! The external services some tests need (PostgreSQL, Redis): their URLs come from
//! tests/run.sh, which starts them with tests/services/*.sh. A test without its service
//! skips, unless `MEMENTO_REQUIRE_SERVICES=1` (tests/run.sh, CI) makes that a failure.

/// The URL in `var`, or `None` (the caller skips, after this printed why). Panics when the
/// URL is missing and `MEMENTO_REQUIRE_SERVICES=1`. `script` names the starter under
/// tests/services/ (for the messages).
pub fn service_url(var: &str, script: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("MEMENTO_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "{var} is not set but MEMENTO_REQUIRE_SERVICES=1: start one with \
                 `bash tests/services/{script}`"
            );
            eprintln!(
                "skipped: {var} is not set (start one with \
                 `export {var}=$(bash tests/services/{script})`)"
            );
            None
        }
    }
}

/// The test PostgreSQL (`MEMENTO_TEST_POSTGRES_URL`), see [`service_url`].
pub fn postgres_url() -> Option<String> {
    service_url("MEMENTO_TEST_POSTGRES_URL", "postgres.sh")
}

/// The test Redis (`MEMENTO_TEST_REDIS_URL`), see [`service_url`].
pub fn redis_url() -> Option<String> {
    service_url("MEMENTO_TEST_REDIS_URL", "redis.sh")
}
