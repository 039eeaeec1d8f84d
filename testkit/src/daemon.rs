//! A daemon in-process (`memento::daemon::Daemon`), as `memento serve` runs it: loopback port
//! 0, the embedded memory server on port 0, the offline model, its own data directory, and
//! real HTTP to its API.

use std::path::Path;
use std::time::Duration;

use memento::daemon::Daemon;
use memento::shared::config::Config;
use serde_json::{Value, json};

/// A running test daemon. Dropping it drops the daemon without the graceful shutdown;
/// [`TestDaemon::stop`] shuts down and hands back the data directory (for restarts).
pub struct TestDaemon {
    /// The daemon, until [`TestDaemon::stop`].
    pub daemon: Option<Daemon>,
    /// Its data directory.
    pub dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// A client with a 60 s timeout (a bound, not a wait: turns answer in milliseconds).
    pub http: reqwest::Client,
}

/// The config of a test daemon: everything on loopback port 0, data in `dir`, offline model.
pub fn config(dir: &Path) -> Config {
    let mut config = Config::default();
    config.server.port = 0;
    config.storage.data_dir = dir.to_owned();
    config.mcp.embedded_port = 0;
    config
}

/// The bearer token [`with_tokens`] gives the user `alice`.
pub const ALICE_TOKEN: &str = "alice-secret-token";
/// The service token [`with_tokens`] adds (it may act for any user).
pub const SERVICE_TOKEN: &str = "service-secret-token";

/// Turns authentication on: `alice` with [`ALICE_TOKEN`], and one service token
/// [`SERVICE_TOKEN`].
pub fn with_tokens(config: &mut Config) {
    config
        .auth
        .user_tokens
        .insert("alice".into(), ALICE_TOKEN.into());
    config.auth.service_tokens.push(SERVICE_TOKEN.into());
}

impl TestDaemon {
    /// Starts with the defaults of [`config`].
    pub async fn start() -> TestDaemon {
        Self::start_with(|_| {}).await
    }

    /// Starts with [`config`] changed by `adjust`.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> TestDaemon {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir, adjust).await
    }

    /// Starts on an existing data directory (restarts).
    pub async fn start_in(dir: tempfile::TempDir, adjust: impl FnOnce(&mut Config)) -> TestDaemon {
        let mut config = config(dir.path());
        adjust(&mut config);
        config.validate().expect("valid config");
        let daemon = Daemon::start(config).await.expect("start daemon");
        let url = daemon.url();
        TestDaemon {
            daemon: Some(daemon),
            dir,
            url,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("http client"),
        }
    }

    /// The running daemon.
    pub fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("running")
    }

    /// Shuts down gracefully and returns the data directory for a restart.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(daemon) = self.daemon.take() {
            daemon.shutdown().await;
        }
        self.dir
    }

    /// `POST /v1/users/{user}/messages`.
    pub fn messages_url(&self, user: &str) -> String {
        format!("{}/v1/users/{user}/messages", self.url)
    }

    /// One turn; returns (status, body, `Null` when the body is not JSON).
    pub async fn post(&self, user: &str, message: &str) -> (u16, Value) {
        crate::http::post_message(&self.http, &self.url, user, message).await
    }

    /// One turn sent in a background task, for a client that hangs up (`abort()` the task)
    /// or a turn that must be in flight while the test acts.
    pub fn spawn_turn(
        &self,
        user: &str,
        message: &str,
    ) -> tokio::task::JoinHandle<reqwest::Result<reqwest::Response>> {
        let request = self
            .http
            .post(self.messages_url(user))
            .json(&json!({ "message": message }));
        tokio::spawn(request.send())
    }

    /// `GET path` (for example `/readyz`): the JSON body.
    pub async fn get(&self, path: &str) -> Value {
        crate::http::get_json(&self.http, &format!("{}{path}", self.url)).await
    }

    /// One turn that must succeed.
    pub async fn turn(&self, user: &str, message: &str) -> Value {
        let (status, body) = self.post(user, message).await;
        assert_eq!(status, 200, "turn {message:?} for {user}: {body}");
        body
    }

    /// `GET /v1/users/{user}/history`: the messages.
    pub async fn history(&self, user: &str) -> Vec<Value> {
        let body = self.get(&format!("/v1/users/{user}/history")).await;
        body["messages"].as_array().cloned().unwrap_or_default()
    }

    /// The value of one un-labelled metric at `/metrics`.
    pub async fn metric(&self, name: &str) -> f64 {
        let text = crate::http::get_text(&self.http, &format!("{}/metrics", self.url)).await;
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .find_map(|line| {
                let mut parts = line.split_whitespace();
                (parts.next() == Some(name))
                    .then(|| parts.next().and_then(|v| v.parse::<f64>().ok()))
                    .flatten()
            })
            .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
    }
}
