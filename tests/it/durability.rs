//! Durability: an acknowledged store survives `kill -9` of the server process.

use crate::support::{BOTH, connect, retrieve_ids, spawn_mcp_server, store};
use serde_json::json;

#[tokio::test]
async fn acknowledged_stores_survive_kill_9() {
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
        "every acknowledged store is there after kill -9"
    );
}
