//! `storage.sync = "normal"`: an acknowledged store survives the memory server being killed
//! (`kill -9`), with no fsync on the commit path. (A power cut is what it gives up; the
//! default, `full`, keeps that too, and the kill test of `faults.rs` runs on it.)

use futures::StreamExt;

use crate::support::{Transport, all_memories, connect, spawn_mcp_server_with_env, store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_sync_normal_acknowledged_stores_survive_kill_9() {
    const STORES: usize = 200;
    let data = tempfile::tempdir().expect("tempdir");
    let envs = [("MEMENTO_STORAGE__SYNC", "normal")];
    let mut server = spawn_mcp_server_with_env(data.path(), &envs);
    let client = connect(&server.url, Transport::Streamable, server.token.as_deref()).await;
    // 16 at a time, so that commits group several stores, as under load.
    let acknowledged: Vec<String> = futures::stream::iter(0..STORES)
        .map(|n| {
            let client = &client;
            async move {
                let content = format!("normal sync note {n} is plum{n}");
                store(client, "durable", &content, "sync").await;
                content
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    server.child.kill().expect("kill -9 the MCP server");
    server.child.wait().expect("reap");
    drop(client);

    let restarted = spawn_mcp_server_with_env(data.path(), &envs);
    let client = connect(
        &restarted.url,
        Transport::Streamable,
        restarted.token.as_deref(),
    )
    .await;
    let memories = all_memories(&client, "durable").await;
    let contents: std::collections::HashSet<&str> = memories
        .iter()
        .filter_map(|m| m["preview"].as_str())
        .collect();
    let missing: Vec<&String> = acknowledged
        .iter()
        .filter(|c| !contents.contains(c.as_str()))
        .collect();
    assert!(missing.is_empty(), "lost after kill -9: {missing:?}");
    assert_eq!(memories.len(), STORES);
}
