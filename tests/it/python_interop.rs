//! Interop with clients nobody here wrote: the official Python MCP SDK (`mcp` from PyPI).

use std::process::Command;

use testkit::process::run_ok;

use crate::support::{McpFixture, python, repo_root};

fn run_python_client(url: &str, transport: &str, token: Option<&str>) {
    let mut command = Command::new(python());
    command
        .arg(repo_root().join("tests/py/mcp_client.py"))
        .arg(url)
        .arg(transport);
    if let Some(token) = token {
        command.arg(token);
    }
    run_ok(command, &format!("the python MCP client over {transport}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_client_over_legacy_sse() {
    let fixture = McpFixture::start().await;
    let url = fixture.url();
    tokio::task::spawn_blocking(move || run_python_client(&url, "sse", None))
        .await
        .expect("join");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_client_over_streamable_http_with_token() {
    let fixture = McpFixture::start_with(|c| c.token = Some("python-token-1".into())).await;
    let url = fixture.url();
    tokio::task::spawn_blocking(move || {
        run_python_client(&url, "streamable-http", Some("python-token-1"))
    })
    .await
    .expect("join");
}
