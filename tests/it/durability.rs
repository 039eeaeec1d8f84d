//! Durability: an acknowledged store survives `kill -9` of the server process, with either
//! `storage.sync` (`full`, the default, fsyncs every commit; `normal` leaves the fsync to the
//! checkpoints, which only a power cut or kernel crash can tell apart).

use crate::support::{BOTH, connect, retrieve_ids, spawn_mcp_server_with_env, store};
use serde_json::json;

#[tokio::test]
async fn acknowledged_stores_survive_kill_9() {
    stores_survive_kill_9("full").await;
}

#[tokio::test]
async fn with_sync_normal_acknowledged_stores_survive_kill_9() {
    stores_survive_kill_9("normal").await;
}

async fn stores_survive_kill_9(sync: &str) {
    let envs = [("MEMENTO_STORAGE__SYNC", sync)];
    let spawn_mcp_server = |dir: &std::path::Path| spawn_mcp_server_with_env(dir, &envs);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut stored = Vec::new();
    {
        let server = spawn_mcp_server(dir.path());
        for transport in BOTH {
            let client = connect(&server.url, transport, server.token.as_deref()).await;
            let peer_stores = (0..50).map(|i| {
                let client = &client;
                async move { store(client, "durable", &format!("memory number {i}"), "kill").await }
            });
            stored.extend(futures::future::join_all(peer_stores).await);
        }
        // SIGKILL: no shutdown path runs, no checkpoint, no flush beyond what was acknowledged.
        let mut server = server;
        server.child.kill().expect("kill -9");
        server.child.wait().expect("reap");
    }
    let server = spawn_mcp_server(dir.path());
    let client = connect(
        &server.url,
        crate::support::Transport::Streamable,
        server.token.as_deref(),
    )
    .await;
    let mut found = Vec::new();
    for offset in [0, 100] {
        found.extend(
            retrieve_ids(
                &client,
                json!({"user_id": "durable", "limit": 100, "offset": offset}),
            )
            .await,
        );
    }
    stored.sort();
    found.sort();
    assert_eq!(
        found, stored,
        "every acknowledged store is there after kill -9 (sync = {sync})"
    );
}

/// A turn's history is committed before its answer is sent: every answered turn is in the
/// history after `kill -9` of the daemon (RELIABILITY.md, "Histories"). Turns of several
/// users run at once, so they share the history thread's transactions.
#[tokio::test]
async fn answered_turns_are_in_the_history_after_kill_9() {
    use crate::support::{spawn_daemon, user_messages};
    let dir = tempfile::tempdir().expect("tempdir");
    let http = reqwest::Client::new();
    let users = ["hana", "ivo", "jun", "kai"];
    let turns_per_user = 6;
    {
        let daemon = spawn_daemon(dir.path(), &[], &[]);
        let per_user = users.iter().map(|user| {
            let (http, url) = (&http, &daemon.url);
            async move {
                for i in 0..turns_per_user {
                    let response = http
                        .post(format!("{url}/v1/users/{user}/messages"))
                        .json(&json!({ "message": format!("hello number {i}") }))
                        .send()
                        .await
                        .expect("send");
                    assert_eq!(response.status(), 200, "turn {i} of {user}");
                    let body: serde_json::Value = response.json().await.expect("json");
                    assert!(body["reply"].is_string(), "{body}");
                }
            }
        });
        futures::future::join_all(per_user).await;
        // SIGKILL right after the last answer: no shutdown path, no final checkpoint.
        let mut daemon = daemon;
        daemon.child.kill().expect("kill -9");
        daemon.child.wait().expect("reap");
    }
    let daemon = spawn_daemon(dir.path(), &[], &[]);
    let expected: Vec<String> = (0..turns_per_user)
        .map(|i| format!("hello number {i}"))
        .collect();
    for user in users {
        assert_eq!(
            user_messages(&http, &daemon.url, user).await,
            expected,
            "every answered turn of {user}, in order, after kill -9"
        );
    }
}
