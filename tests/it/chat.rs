//! `memento chat` against a real daemon, through its script (pipe) mode.

use memento::chat::{ChatArgs, run_script};

use crate::support::DaemonFixture;

fn args(url: &str, user: &str, verbose: bool, no_stream: bool) -> ChatArgs {
    ChatArgs {
        user: user.into(),
        url: url.into(),
        token: None,
        verbose,
        no_stream,
    }
}

async fn run(args: &ChatArgs, input: &str) -> (String, memento::chat::ScriptOutcome) {
    let mut output = Vec::new();
    let outcome = run_script(args, input.as_bytes(), &mut output)
        .await
        .expect("script");
    (String::from_utf8(output).expect("utf8"), outcome)
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
        assert_eq!(outcome.turns, 2, "{out}");
        assert_eq!(outcome.failed, 0, "{out}");
        let answers: Vec<&str> = out
            .lines()
            .filter(|l| l.starts_with("🧠 Memento: "))
            .collect();
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
    assert!(outcome.all_unreachable);
}
