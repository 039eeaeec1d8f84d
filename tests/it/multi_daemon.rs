//! One daemon at a time per user (issue 14 item 3): two real `memento serve` processes on
//! one PostgreSQL (histories and memories) and one shared `memento mcp-server`. Turns of one
//! user sent directly to both daemons, interleaved and concurrent, stay in order, none is
//! lost, and both daemons see the same history; a daemon killed with `kill -9` while it holds
//! a user's lease frees that user within 10 s.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::http::{post_message as post, send_json};

use testkit::services::postgres_url;

use crate::support::{
    ChildServer, create_schema, eventually, gated_llm, spawn_daemon, spawn_mcp_server_with_env,
    user_messages, with_search_path,
};

/// A fresh schema and the URL whose connections use it.
async fn schema_url(base: &str) -> String {
    with_search_path(base, &create_schema(base, "multi").await)
}

/// One shared memory server and the environment of daemons that use it and `url`.
struct Cluster {
    _memory: ChildServer,
    env: Vec<(&'static str, String)>,
    mcp_url: String,
    _dirs: Vec<tempfile::TempDir>,
}

impl Cluster {
    async fn start(url: &str) -> Cluster {
        let storage = [
            ("MEMENTO_STORAGE__BACKEND", "postgres"),
            ("MEMENTO_STORAGE__POSTGRES_URL", url),
        ];
        let memory_dir = tempfile::tempdir().expect("tempdir");
        let memory = spawn_mcp_server_with_env(memory_dir.path(), &storage);
        let token = memory.token.clone().expect("memory server token");
        let mcp_url = format!("{}/mcp", memory.url);
        let env = vec![
            ("MEMENTO_STORAGE__BACKEND", "postgres".to_owned()),
            ("MEMENTO_STORAGE__POSTGRES_URL", url.to_owned()),
            ("MEMENTO_MCP_TOKEN", token),
        ];
        Cluster {
            _memory: memory,
            env,
            mcp_url,
            _dirs: vec![memory_dir],
        }
    }

    /// A `memento serve` process with its own (empty) data directory.
    fn daemon(&mut self, extra_env: &[(&'static str, String)]) -> ChildServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .chain(extra_env)
            .map(|(k, v)| (*k, v.as_str()))
            .collect();
        let daemon = spawn_daemon(dir.path(), &["--mcp-url", &self.mcp_url], &env);
        self._dirs.push(dir);
        daemon
    }
}

async fn turn(http: &reqwest::Client, base: &str, user: &str, message: &str) {
    let (status, body) = post(http, base, user, message).await;
    assert_eq!(status, 200, "turn {message:?} of {user} at {base}: {body}");
    assert!(body["reply"].is_string(), "{body}");
}

/// The whole history as (role, content) pairs.
async fn history(http: &reqwest::Client, base: &str, user: &str) -> Vec<(String, String)> {
    let body: Value = send_json(http.get(format!("{base}/v1/users/{user}/history"))).await;
    body["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            (
                m["role"].as_str().unwrap_or_default().to_owned(),
                m["content"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn turns_of_one_user_on_two_daemons_stay_in_order_and_complete() {
    let Some(base) = postgres_url() else { return };
    let url = schema_url(&base).await;
    let mut cluster = Cluster::start(&url).await;
    let one = cluster.daemon(&[]);
    let two = cluster.daemon(&[]);
    let http = reqwest::Client::new();
    let user = "mia";
    let mut expected = Vec::new();
    // Interleaved: each daemon continues the conversation the other one wrote.
    for i in 0..8 {
        let daemon = if i % 2 == 0 { &one } else { &two };
        let message = format!("interleaved note {i}");
        turn(&http, &daemon.url, user, &message).await;
        expected.push(message);
    }
    assert_eq!(user_messages(&http, &one.url, user).await, expected);
    assert_eq!(user_messages(&http, &two.url, user).await, expected);
    // Concurrent: both daemons take turns of the same user at once, each in order.
    let send_all = |daemon: &ChildServer, tag: &'static str| {
        let (http, url) = (http.clone(), daemon.url.clone());
        async move {
            let mut sent = Vec::new();
            for i in 0..6 {
                let message = format!("concurrent {tag} {i}");
                turn(&http, &url, user, &message).await;
                sent.push(message);
            }
            sent
        }
    };
    let (sent_one, sent_two) = tokio::join!(send_all(&one, "one"), send_all(&two, "two"));
    let seen = user_messages(&http, &two.url, user).await;
    assert_eq!(&seen[..expected.len()], &expected[..]);
    let rest = &seen[expected.len()..];
    assert_eq!(rest.len(), 12, "none lost, none doubled: {rest:?}");
    for sent in [&sent_one, &sent_two] {
        let order: Vec<&String> = rest.iter().filter(|m| sent.contains(m)).collect();
        assert_eq!(
            order,
            sent.iter().collect::<Vec<_>>(),
            "each daemon's turns in order"
        );
    }
    // Consistent: every turn whole (the person's message, then the answer), and both
    // daemons serve the same conversation.
    let whole = history(&http, &one.url, user).await;
    assert_eq!(whole, history(&http, &two.url, user).await);
    let users = whole.iter().filter(|(role, _)| role == "user").count();
    assert_eq!(users, 20);
    for (index, (role, _)) in whole.iter().enumerate() {
        if role == "user" {
            assert!(
                whole.get(index + 1).is_some_and(|(next, _)| next != "user"),
                "a turn without its answer at {index}: {whole:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_lease_holder_killed_with_kill_9_frees_its_user_within_10_s() {
    let Some(base) = postgres_url() else { return };
    let url = schema_url(&base).await;
    let mut cluster = Cluster::start(&url).await;
    // The first daemon's model holds every request: its turn holds the user's lease.
    let gated = gated_llm().await;
    let mut holder = cluster.daemon(&gated.openai_env());
    let other = cluster.daemon(&[]);
    let http = reqwest::Client::new();
    let user = "noa";
    turn(&http, &other.url, user, "before the crash").await;
    // Never answered: the daemon dies under it (the connection error is expected).
    let stuck = tokio::spawn({
        let (http, url) = (http.clone(), holder.url.clone());
        async move {
            http.post(format!("{url}/v1/users/{user}/messages"))
                .json(&json!({ "message": "lost with the daemon" }))
                .send()
                .await
                .map(|response| response.status())
        }
    });
    eventually(
        Duration::from_secs(20),
        "the holder's turn waiting at the model",
        || async { gated.stats().requests >= 1 },
    )
    .await;
    // While it holds the lease, the other daemon's turn for the user waits (not fails).
    let waiting = tokio::spawn({
        let (http, url) = (http.clone(), other.url.clone());
        async move { post(&http, &url, user, "after the crash").await }
    });
    // The other daemon has the turn and holds it: the lease is the holder's.
    eventually(
        Duration::from_secs(20),
        "the other daemon's turn waiting for the lease (memento_turns_in_progress 1)",
        || async { turns_in_progress(&http, &other.url).await == Some(1) },
    )
    .await;
    assert!(
        !waiting.is_finished(),
        "the other daemon waits for the lease"
    );
    holder.child.kill().expect("kill -9");
    holder.child.wait().expect("reap");
    let killed = Instant::now();
    let (status, body) = waiting.await.expect("join");
    let freed = killed.elapsed();
    assert_eq!(status, 200, "{body}");
    assert!(
        freed < Duration::from_secs(10),
        "answered {freed:?} after the kill"
    );
    eprintln!("multi_daemon: the user was answered {freed:?} after kill -9 of the lease holder");
    assert!(
        stuck.await.expect("join").is_err(),
        "the killed daemon answered"
    );
    assert_eq!(
        user_messages(&http, &other.url, user).await,
        ["before the crash", "after the crash"],
        "the killed daemon's unanswered turn left nothing"
    );
}

/// `memento_turns_in_progress` of the daemon at `base` (`None` while unreadable).
async fn turns_in_progress(http: &reqwest::Client, base: &str) -> Option<u64> {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("memento_turns_in_progress "))
        .and_then(|value| value.trim().parse().ok())
}
