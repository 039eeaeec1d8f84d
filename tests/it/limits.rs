//! `[limits] backend = "redis"`: a daemon whose Redis goes away keeps answering on its local
//! share of the quota and says so in /readyz and /metrics, then shares again when Redis is
//! back. (Two limiters sharing one quota: src/daemon/limits/tests.rs.)

use std::process::{Child, Command, Stdio};
use std::time::Duration;
use testkit::http::send_json;

use memento::daemon::limits::LimitsBackend;
use memento::shared::config::SecretUrl;

use crate::support::{DaemonFixture, eventually, free_port};

/// A private `redis-server` on `port`, killed on drop.
struct Redis(Child);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn start_redis(port: u16) -> Redis {
    let child = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .expect(
            "redis-server is not installed: `bash tests/services/redis.sh` installs it \
             (tests/run.sh runs it)",
        );
    let redis = Redis(child);
    eventually(Duration::from_secs(10), "redis-server answers", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await;
    redis
}

async fn readyz_limits(daemon: &DaemonFixture) -> String {
    let body: serde_json::Value =
        send_json(daemon.http.get(format!("{}/readyz", daemon.url))).await;
    body["limits"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_falls_back_to_the_local_share_and_back_to_the_shared_quota() {
    let port = free_port();
    let redis = start_redis(port).await;
    let daemon = DaemonFixture::start_with(|config| {
        config.llm.rpm = 6_000;
        config.limits.backend = LimitsBackend::Redis;
        config.limits.redis_url = SecretUrl::new(format!("redis://127.0.0.1:{port}/0"));
        config.limits.key_prefix = format!("memento-it:{}", uuid::Uuid::new_v4().simple());
        config.limits.redis_timeout = Duration::from_millis(300);
    })
    .await;
    daemon.turn("lim-user", "hello").await;
    assert_eq!(readyz_limits(&daemon).await, "shared");
    assert_eq!(daemon.metric("memento_limits_fallback").await, 0.0);

    drop(redis);
    // Turns keep being answered, on the daemon's own share of the quota.
    for i in 0..3 {
        daemon
            .turn("lim-user", &format!("while Redis is down {i}"))
            .await;
    }
    assert_eq!(readyz_limits(&daemon).await, "fallback");
    let status = daemon
        .http
        .get(format!("{}/readyz", daemon.url))
        .send()
        .await
        .expect("readyz")
        .status();
    assert_eq!(status, 200, "a daemon on its fallback still answers turns");
    assert_eq!(daemon.metric("memento_limits_fallback").await, 1.0);
    assert!(daemon.metric("memento_limits_redis_errors_total").await >= 1.0);

    // Redis back on the same port: the probe finds it and the shared quota decides again.
    let _redis = start_redis(port).await;
    eventually(Duration::from_secs(15), "limits shared again", || async {
        readyz_limits(&daemon).await == "shared"
    })
    .await;
    assert_eq!(daemon.metric("memento_limits_fallback").await, 0.0);
    daemon.turn("lim-user", "Redis is back").await;
    assert_eq!(readyz_limits(&daemon).await, "shared");
    assert_eq!(daemon.metric("memento_limits_fallbacks_total").await, 1.0);
}
