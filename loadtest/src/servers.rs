//! Starting and reaching the `memento` servers the harness measures: the one way to find
//! the `memento` binary, start `memento mcp-server` (it announces its address in its ready
//! file) and open an MCP session to it. Used by `run`'s stack, `recall` and `mcp-bench`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::bail;
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceExt};

/// An MCP client session.
pub(crate) type McpClient = RunningService<RoleClient, ()>;

/// Opens an MCP session to the server at `base` (its `/mcp`), with `token` as its bearer.
pub(crate) async fn connect_mcp(base: &str, token: Option<&str>) -> anyhow::Result<McpClient> {
    let mut config = StreamableHttpClientTransportConfig::with_uri(format!("{base}/mcp"));
    if let Some(token) = token {
        config = config.auth_header(token);
    }
    let transport = StreamableHttpClientTransport::with_client(reqwest::Client::new(), config);
    Ok(().serve(transport).await?)
}

/// The `memento` binary: `explicit` (`--memento-bin`), or the one beside this executable
/// (or up to two folders above it, as cargo lays out test binaries).
pub(crate) fn memento_bin(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        return Ok(path.to_owned());
    }
    let exe = std::env::current_exe()?;
    for dir in exe.ancestors().skip(1).take(3) {
        let candidate = dir.join("memento");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "cannot find the `memento` binary next to {}; build it (cargo build --release) or pass --memento-bin",
        exe.display()
    )
}

/// `bin mcp-server` on a free loopback port with `data_dir`, quiet (`RUST_LOG=warn`), its
/// errors on ours; the caller adds its token and configuration, then [`spawn_mcp_server`].
pub(crate) fn mcp_server_command(bin: &Path, data_dir: &Path) -> Command {
    let mut command = Command::new(bin);
    command
        .args(["mcp-server", "--port", "0", "--data-dir"])
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .stderr(Stdio::inherit());
    command
}

/// Starts `command` (from [`mcp_server_command`]) and waits for its ready file; returns the
/// child and the server's base URL.
pub(crate) fn spawn_mcp_server(command: Command, bin: &Path) -> anyhow::Result<(Child, String)> {
    let (child, ready) =
        testkit::process::spawn_ready(command, &format!("{} mcp-server", bin.display()))?;
    Ok((child, ready.url))
}
