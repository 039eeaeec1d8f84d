//! `memento chat` (the binary: chat lives only there) against a real daemon, through its
//! script (pipe) mode.

use std::process::{Output, Stdio};

use tokio::io::AsyncWriteExt;

use crate::support::DaemonFixture;

struct Args<'a> {
    url: &'a str,
    user: &'a str,
    verbose: bool,
    no_stream: bool,
}

fn args<'a>(url: &'a str, user: &'a str, verbose: bool, no_stream: bool) -> Args<'a> {
    Args {
        url,
        user,
        verbose,
        no_stream,
    }
}

/// How a script run ended, and the turns it saw fail (`error: ` lines).
struct Outcome {
    failed: usize,
    output: Output,
}

/// Runs `memento chat` with `input` on its stdin (a pipe: script mode); returns its stdout.
async fn run(args: &Args<'_>, input: &str) -> (String, Outcome) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_memento"));
    command
        .args(["chat", "--user", args.user, "--url", args.url])
        .env_remove("MEMENTO_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if args.verbose {
        command.arg("--verbose");
    }
    if args.no_stream {
        command.arg("--no-stream");
    }
    let mut child = command.spawn().expect("spawn memento chat");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(input.as_bytes())
        .await
        .expect("write stdin");
    drop(stdin);
    let output = child.wait_with_output().await.expect("memento chat");
    let out = String::from_utf8(output.stdout.clone()).expect("utf8");
    let failed = out.lines().filter(|l| l.starts_with("error: ")).count();
    (out, Outcome { failed, output })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_stores_and_retrieves_in_plain_language() {
    let fixture = DaemonFixture::start().await;
    for no_stream in [false, true] {
        let user = if no_stream { "paula" } else { "quinn" };
        let (out, outcome) = run(
            &args(&fixture.url, user, true, no_stream),
            "store this recipe: lemon tart with 3 eggs\n\nwhat did I store about lemon tart?\n/history\n/quit\nnot sent\n",
        )
        .await;
        assert!(outcome.output.status.success(), "{out}");
        assert_eq!(outcome.failed, 0, "{out}");
        let answers: Vec<&str> = out
            .lines()
            .filter(|l| l.starts_with("🧠 Memento: "))
            .collect();
        // Two answers, then both again in /history; nothing after /quit.
        assert_eq!(answers.len(), 4, "{out}");
        assert!(answers[0].contains("stored"), "{out}");
        assert!(answers[1].contains("lemon tart with 3 eggs"), "{out}");
        assert!(
            out.contains("store_memory("),
            "verbose shows tool calls: {out}"
        );
        assert!(out.contains("trace_id: "), "{out}");
        assert!(
            out.contains("you: store this recipe: lemon tart with 3 eggs"),
            "/history: {out}"
        );
        assert!(!out.contains("not sent"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_switches_users_and_resets() {
    let fixture = DaemonFixture::start().await;
    let (out, _) = run(
        &args(&fixture.url, "rita", false, false),
        "remember that the boat is blue\n/user sam\nwhat do you remember about the boat?\n/user ../etc\n/reset\n/history\n",
    )
    .await;
    let answers: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("🧠 Memento: "))
        .collect();
    assert_eq!(answers.len(), 2, "{out}");
    assert!(
        !answers[1].contains("blue"),
        "sam must not see rita's memory: {out}"
    );
    assert!(out.contains("invalid user_id"), "{out}");
    assert!(out.contains("(conversation forgotten"), "{out}");
    assert!(out.contains("(no conversation yet)"), "{out}");
}

#[tokio::test]
async fn chat_says_clearly_when_the_daemon_is_down() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", listener.local_addr().expect("addr"))
    };
    let (out, outcome) = run(&args(&closed, "tom", false, false), "hello\n").await;
    assert!(out.contains("cannot reach the Memento daemon"), "{out}");
    assert!(out.contains("memento serve"), "{out}");
    // Every turn failed to reach the daemon: the exit status says so.
    assert!(!outcome.output.status.success());
    let stderr = String::from_utf8_lossy(&outcome.output.stderr);
    assert!(
        stderr.contains("cannot reach the Memento daemon"),
        "{stderr}"
    );
}
