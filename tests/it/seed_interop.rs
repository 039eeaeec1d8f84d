//! Interop: `memento serve` against a seed-style Python FastMCP server over the legacy SSE
//! transport (`mcp<2` from PyPI), with the seed's own tool shapes and file storage.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::{DaemonFixture, eventually, free_port, python, repo_root, tool_names};

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_uses_the_seed_python_server_over_legacy_sse() {
    let data = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let _server = KillOnDrop(
        Command::new(python())
            .arg(repo_root().join("tests/py/seed_server.py"))
            .arg(port.to_string())
            .arg(data.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the seed server"),
    );
    let http = reqwest::Client::new();
    let sse_url = format!("http://127.0.0.1:{port}/sse");
    eventually(Duration::from_secs(30), "seed server up", || {
        let http = http.clone();
        let url = sse_url.clone();
        async move {
            // A HEAD-like probe: open the stream and drop it.
            http.get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        }
    })
    .await;
    let fixture = DaemonFixture::start_with(|config| {
        config.mcp.url = Some(sse_url.clone());
        config.mcp.transport = memento::shared::config::McpTransport::Sse;
    })
    .await;
    assert!(
        fixture
            .daemon()
            .mcp()
            .wait_connected(Duration::from_secs(20))
            .await
    );

    let body = fixture
        .turn(
            "alice",
            "store this recipe: chocolate cake with 2 cups flour",
        )
        .await;
    assert_eq!(tool_names(&body), ["store_memory"], "{body}");
    let result = body["tool_calls"][0]["result"].as_str().unwrap_or_default();
    assert!(result.starts_with("Successfully stored"), "{body}");
    assert!(
        result.contains("for user alice"),
        "the daemon bound the user: {body}"
    );
    // The seed server wrote the file into alice's folder.
    let files: Vec<_> = std::fs::read_dir(data.path().join("alice"))
        .expect("alice's folder")
        .collect();
    assert_eq!(files.len(), 1);

    let body = fixture
        .turn("alice", "what did I store about chocolate cake?")
        .await;
    assert_eq!(tool_names(&body), ["retrieve_memories"], "{body}");
    assert!(
        body["tool_calls"][0]["result"]
            .as_str()
            .unwrap_or_default()
            .contains("2 cups flour")
    );
}
