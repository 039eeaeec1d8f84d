//! The `memento-loadtest mock-azure` command and the official Python `AzureOpenAI` client.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;

use super::support::*;

fn harness() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_memento-loadtest"))
}

#[test]
fn every_flag_has_help_and_an_environment_variable() {
    let output = Command::new(harness())
        .args(["mock-azure", "--help"])
        .output()
        .expect("run --help");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "host",
        "port",
        "api-key",
        "deployment",
        "latency-ms",
        "latency-per-token-ms",
        "rpm",
        "tpm",
        "fail-rate",
        "fail-503-rate",
        "hang-rate",
        "malformed-rate",
        "seed",
    ] {
        assert!(help.contains(&format!("--{flag} ")), "--{flag} in:\n{help}");
        let env = format!("MOCK_AZURE_{}", flag.to_uppercase().replace('-', "_"));
        assert!(help.contains(&format!("[env: {env}")), "{env} in:\n{help}");
    }
    let bad = Command::new(harness())
        .args(["mock-azure", "--port", "0", "--fail-rate", "2"])
        .output()
        .expect("run");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("fail_rate"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_writes_its_ready_file_and_stops_on_sigterm() {
    let mut command = Command::new(harness());
    command
        .args(["mock-azure", "--port", "0", "--api-key", "k"])
        .stderr(Stdio::null());
    let (mut child, ready) =
        testkit::process::spawn_ready(command, "mock-azure").expect("the mock gets ready");
    assert_eq!(ready.pid, child.id());
    assert!(ready.url.starts_with("http://127.0.0.1:"), "{ready:?}");
    assert_eq!(ready.mcp_url, None);
    let endpoint = ready.url;
    let health = reqwest::get(format!("{endpoint}/healthz"))
        .await
        .expect("healthz");
    assert_eq!(health.status(), StatusCode::OK);
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "mock-azure ignored SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status}");
}

fn python() -> PathBuf {
    if let Some(path) = std::env::var_os("MEMENTO_TEST_PYTHON") {
        return PathBuf::from(path);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    assert!(
        venv.exists(),
        "no Python test environment at {}: run `bash .ci/python-env` (or set MEMENTO_TEST_PYTHON)",
        venv.display()
    );
    venv
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_azure_client_uses_the_mock_unchanged() {
    let server = start(|_| {}).await;
    let endpoint = server.endpoint();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/py/azure_openai_client.py");
    let python = python();
    let mut command = Command::new(&python);
    command.arg(script).arg(endpoint).arg(KEY).arg(DEPLOYMENT);
    testkit::process::run_ok_async(command, "the python AzureOpenAI client").await;
    let stats = server.stats();
    assert_eq!(stats.streamed, 2, "{stats:?}");
    assert_eq!(stats.auth_failures, 1, "{stats:?}");
    assert_eq!(stats.bad_requests, 1, "{stats:?}");
    server.shutdown().await;
}
