//! Child processes that announce readiness with `--ready-file` (`memento serve`,
//! `memento mcp-server`, `memento-loadtest mock-azure`): start one and learn its address
//! from the file, never from its stdout.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use memento::shared::ready_file::{self, Ready};

/// How long a child may take to write its ready file (a loaded 2-core machine, a debug
/// build, migrations on a fresh database).
pub const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// Waits until `child` has written its ready file at `path`; fails if the child exits first
/// or `timeout` passes.
pub fn wait_ready(path: &Path, child: &mut Child, timeout: Duration) -> anyhow::Result<Ready> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(ready) = ready_file::read(path)? {
            return Ok(ready);
        }
        if let Some(status) = child.try_wait()? {
            bail!("it exited before it was ready: {status}");
        }
        if Instant::now() > deadline {
            bail!("it wrote no ready file within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Appends `--ready-file TMP` to `command` (the subcommand's flags must come last), spawns
/// it with stdout discarded (stderr inherited, unless the caller set it) and waits for the
/// file. On failure the child is killed; the error names `what`.
pub fn spawn_ready(mut command: Command, what: &str) -> anyhow::Result<(Child, Ready)> {
    let dir = tempfile::tempdir().context("a directory for the ready file")?;
    let path = dir.path().join("ready.json");
    command.arg("--ready-file").arg(&path).stdout(Stdio::null());
    let mut child = command.spawn().with_context(|| format!("start {what}"))?;
    match wait_ready(&path, &mut child, READY_TIMEOUT) {
        Ok(ready) => Ok((child, ready)),
        Err(error) => {
            kill(&mut child);
            Err(error.context(format!("{what} did not start")))
        }
    }
}

/// Kills and reaps a child (errors ignored: it may be gone already).
pub fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Sends SIGTERM with `kill -TERM` (libc is not a dependency).
pub fn sigterm(pid: u32) -> std::io::Result<std::process::ExitStatus> {
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
}

/// Runs `command` to its end; panics, naming `what` and showing its stdout and stderr,
/// unless it exits successfully. Returns its output.
pub fn run_ok(mut command: Command, what: &str) -> std::process::Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{what}: could not run: {e}"));
    assert_success(&output, what);
    output
}

/// [`run_ok`] from async code, on a blocking thread.
pub async fn run_ok_async(command: Command, what: &str) -> std::process::Output {
    let what = what.to_owned();
    tokio::task::spawn_blocking(move || run_ok(command, &what))
        .await
        .unwrap_or_else(|e| panic!("the blocking task running {e}"))
}

/// Panics, naming `what` and showing the child's stdout and stderr, unless it succeeded.
pub fn assert_success(output: &std::process::Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
