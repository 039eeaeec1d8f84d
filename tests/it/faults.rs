//! Process-level faults (issue 7): real `memento` processes killed (`kill -9`) or stopped
//! (SIGTERM) in the middle of real HTTP and MCP traffic, and clients that abandon their
//! MCP sessions by the thousand (`sessions`). Every wait is a condition with a deadline.

mod sessions;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{
    self, DaemonFixture, Transport, all_memories, connect, eventually, free_port, spawn_daemon,
    spawn_mcp_server, spawn_mcp_server_on, user_messages,
};

/// The message of a store turn; the offline model stores `note {n} of {user} is kiwi{n}`.
fn store_message(user: &str, n: usize) -> String {
    format!("remember that note {n} of {user} is kiwi{n}")
}

/// What a finished turn did with its store.
#[derive(Debug)]
enum Store {
    /// The tool result said stored (not `is_error`): the content the model stored.
    Acknowledged(String),
    /// The reply told the person the memory service is unavailable.
    Unavailable,
}

/// Classifies a 200 turn body; panics on anything that is neither a store nor a clear
/// "unavailable" reply.
fn store_outcome(body: &Value) -> Store {
    let calls = body["tool_calls"].as_array().cloned().unwrap_or_default();
    let reply = body["reply"].as_str().unwrap_or_default();
    if let [call] = calls.as_slice()
        && call["name"] == "store_memory"
        && call["is_error"] == false
    {
        let result = call["result"].as_str().unwrap_or_default();
        assert!(result.starts_with("Successfully stored"), "{body}");
        let content = call["arguments"]["content"].as_str().expect("content");
        return Store::Acknowledged(content.to_owned());
    }
    // Two ways a turn meets a dead memory server: the session was already gone (no tools
    // offered, the model says so), or the call itself failed (a tool error the model relays,
    // in plain words: no transport internals).
    let no_tools = calls.is_empty()
        && reply == "Sorry, I can't store that right now: the memory tool is unavailable.";
    let failed_call = !calls.is_empty()
        && calls.iter().all(|c| {
            let result = c["result"].as_str().unwrap_or_default();
            c["is_error"] == true
                && result.starts_with("Error: the memory service is unavailable right now (")
                && [
                    "(memory service unavailable: the connection to it broke during the call)",
                    "(memory service unavailable: not connected; reconnecting)",
                ]
                .iter()
                .any(|reason| result.contains(reason))
        })
        && reply.starts_with("Sorry, I couldn't store that: the memory service is unavailable")
        && !reply.contains("::");
    assert!(
        no_tools || failed_call,
        "neither stored nor a clear 'memory service unavailable' reply: {body}"
    );
    Store::Unavailable
}

/// True when some memory of `memories` has exactly `content` (previews hold 300 characters;
/// these contents are short).
fn holds(memories: &[Value], content: &str) -> bool {
    memories.iter().any(|m| m["preview"] == content)
}

// === 1. kill -9 of the MCP server under load ===

/// Phases of the run, in order: the server is up; SIGKILL is being sent; the server is dead
/// (reaped); a new server is up.
const RUNNING: u8 = 0;
const KILLING: u8 = 1;
const KILLED: u8 = 2;
const RESTARTED: u8 = 3;

#[derive(Debug, Default)]
struct UserLog {
    acknowledged: Vec<String>,
    unavailable: usize,
}

/// 20 users store concurrently through an in-process daemon whose memory server is a child
/// process; it is SIGKILLed mid-run and restarted on the same port and data directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_mcp_server_under_load_fails_fast_recovers_and_keeps_acknowledged_stores() {
    const USERS: usize = 20;
    // A turn must end well before `mcp.call_timeout` (3 x this): a killed server is noticed
    // from the broken connection, not by waiting out a timeout.
    const PROMPT: Duration = Duration::from_secs(10);
    let data = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let server = spawn_mcp_server_on(data.path(), port);
    let fixture = DaemonFixture::start_with(|config| {
        config.mcp.url = Some(format!("http://127.0.0.1:{port}/mcp"));
        config.mcp.token = server.token.clone();
        config.mcp.reconnect_initial = Duration::from_millis(50);
        config.mcp.reconnect_max = Duration::from_millis(500);
        config.mcp.call_timeout = 3 * PROMPT;
    })
    .await;

    let (phase_tx, phase_rx) = tokio::sync::watch::channel(RUNNING);
    let acknowledged = AtomicUsize::new(0);
    let answered_after_kill = AtomicUsize::new(0);
    let stored_after_restart = AtomicUsize::new(0);
    let users: Vec<String> = (0..USERS).map(|i| format!("mkill{i:02}")).collect();

    let user_tasks = users.iter().map(|user| {
        let (fixture, acknowledged) = (&fixture, &acknowledged);
        let (answered_after_kill, stored_after_restart) =
            (&answered_after_kill, &stored_after_restart);
        let mut phase = phase_rx.clone();
        async move {
            let mut log = UserLog::default();
            let mut answered_in_killed = false;
            for n in 0.. {
                let started_in = *phase.borrow_and_update();
                if started_in == KILLED && answered_in_killed {
                    // One answer with the server dead is the point; wait for the restart.
                    let _ = phase.wait_for(|p| *p > KILLED).await;
                    continue;
                }
                let started = Instant::now();
                let (status, body) = fixture.post(user, &store_message(user, n)).await;
                let took = started.elapsed();
                assert_eq!(status, 200, "{user} turn {n}: {body}");
                assert!(took < PROMPT, "{user} turn {n} took {took:?}: {body}");
                let outcome = store_outcome(&body);
                match started_in {
                    // Before the kill nothing may fail: a turn that began and ended while the
                    // server was up stored its memory.
                    RUNNING => assert!(
                        matches!(outcome, Store::Acknowledged(_)) || *phase.borrow() != RUNNING,
                        "{user} turn {n} failed before the kill: {body}"
                    ),
                    // Begun and ended with the server dead: it cannot have stored anything.
                    KILLED => assert!(
                        matches!(outcome, Store::Unavailable),
                        "{user} turn {n} stored with the server dead: {body}"
                    ),
                    _ => {}
                }
                match outcome {
                    Store::Acknowledged(content) => {
                        log.acknowledged.push(content);
                        acknowledged.fetch_add(1, Ordering::SeqCst);
                        if started_in == RESTARTED {
                            stored_after_restart.fetch_add(1, Ordering::SeqCst);
                            return log;
                        }
                    }
                    Store::Unavailable => log.unavailable += 1,
                }
                if started_in == KILLED {
                    answered_in_killed = true;
                    answered_after_kill.fetch_add(1, Ordering::SeqCst);
                }
            }
            log
        }
    });

    let driver = async {
        eventually(
            Duration::from_secs(60),
            "20 stores acknowledged",
            || async { acknowledged.load(Ordering::SeqCst) >= USERS },
        )
        .await;
        let mut server = server;
        phase_tx.send_replace(KILLING);
        server.child.kill().expect("kill -9 the MCP server");
        server.child.wait().expect("reap");
        let killed_at = Instant::now();
        phase_tx.send_replace(KILLED);
        // Each user's turns run one at a time, so a user that got an answer to a turn begun
        // after the kill has no turn from before it left hanging.
        eventually(
            Duration::from_secs(30),
            "every user answered with the server dead",
            || async { answered_after_kill.load(Ordering::SeqCst) == USERS },
        )
        .await;
        let all_answered = killed_at.elapsed();
        let restarted = spawn_mcp_server_on(data.path(), port);
        phase_tx.send_replace(RESTARTED);
        let restarted_at = Instant::now();
        eventually(
            Duration::from_secs(60),
            "every user stores again after the restart",
            || async { stored_after_restart.load(Ordering::SeqCst) == USERS },
        )
        .await;
        eprintln!(
            "mcp kill: all users answered {all_answered:?} after the kill; all stored again \
             {:?} after the restart",
            restarted_at.elapsed()
        );
        restarted
    };
    let (logs, server) = tokio::join!(futures::future::join_all(user_tasks), driver);

    let unavailable: usize = logs.iter().map(|l| l.unavailable).sum();
    assert!(unavailable >= USERS, "{unavailable} unavailable replies");
    // Every acknowledged store is there, read straight from the restarted server.
    let client = connect(&server.url, Transport::Streamable, server.token.as_deref()).await;
    for (user, log) in users.iter().zip(&logs) {
        let memories = all_memories(&client, user).await;
        for content in &log.acknowledged {
            assert!(
                holds(&memories, content),
                "{user}: acknowledged {content:?} is missing"
            );
        }
    }
}

// === 2. SIGTERM of the daemon under load ===

/// 30 turns are provably inside a `memento serve` process (each waits at the model) when it
/// gets SIGTERM: it stops accepting connections at once, finishes every one of them with a
/// complete 200, exits 0 within the grace period, and after a restart the histories and
/// memories of those turns are there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_turns_in_flight_and_exits_cleanly() {
    const USERS: usize = 30;
    const GRACE: Duration = Duration::from_secs(30);
    let data = tempfile::tempdir().expect("tempdir");
    let llm = support::gated_llm().await;
    let mut env = llm.openai_env();
    env.push((
        "MEMENTO_SERVER__SHUTDOWN_GRACE",
        format!("{}s", GRACE.as_secs()),
    ));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut daemon = spawn_daemon(data.path(), &[], &env);
    let addr = daemon.url.trim_start_matches("http://").to_owned();
    let http = reqwest::Client::new();

    let users: Vec<String> = (0..USERS).map(|i| format!("drain{i:02}")).collect();
    let turns: Vec<_> = users
        .iter()
        .map(|user| {
            let (http, url) = (http.clone(), daemon.url.clone());
            let message = store_message(user, 0);
            let user = user.clone();
            tokio::spawn(async move {
                let response = http
                    .post(format!("{url}/v1/users/{user}/messages"))
                    .json(&json!({ "message": message }))
                    .send()
                    .await
                    .map_err(|e| format!("{user}: send: {e}"))?;
                let status = response.status().as_u16();
                let body = response
                    .bytes()
                    .await
                    .map_err(|e| format!("{user}: incomplete body: {e}"))?;
                Ok::<_, String>((status, body))
            })
        })
        .collect();
    // Every turn is in the daemon, held at its first model call.
    eventually(Duration::from_secs(30), "30 turns in flight", || async {
        llm.stats().requests >= USERS as u64
    })
    .await;

    let signalled = Instant::now();
    support::sigterm(daemon.child.id());
    eventually(
        Duration::from_secs(10),
        "new connections refused",
        || async { tokio::net::TcpStream::connect(&addr).await.is_err() },
    )
    .await;
    assert!(
        turns.iter().all(|t| !t.is_finished()),
        "a held turn ended before the model answered"
    );
    assert!(
        daemon.child.try_wait().expect("try_wait").is_none(),
        "the daemon exited with turns in flight"
    );

    llm.open_gate();
    for (user, turn) in users.iter().zip(turns) {
        let (status, body) = turn.await.expect("join").unwrap_or_else(|e| panic!("{e}"));
        let body: Value = serde_json::from_slice(&body).expect("a complete JSON reply");
        assert_eq!(status, 200, "{user}: {body}");
        let Store::Acknowledged(content) = store_outcome(&body) else {
            panic!("{user}: not stored: {body}");
        };
        assert_eq!(content, format!("note 0 of {user} is kiwi0"), "{body}");
    }
    let mut exit = None;
    eventually(GRACE, "the daemon exits", || {
        exit = exit.or(daemon.child.try_wait().expect("try_wait"));
        std::future::ready(exit.is_some())
    })
    .await;
    let exit = exit.expect("exited");
    assert!(exit.success(), "exit status after SIGTERM: {exit}");
    assert!(signalled.elapsed() < GRACE);
    assert!(tokio::net::TcpStream::connect(&addr).await.is_err());
    eprintln!("sigterm: exited {:?} after the signal", signalled.elapsed());
    drop(daemon);

    // Restart on the same data directory (memory server as its own process, so the test can
    // read memories over MCP directly).
    let memory = spawn_mcp_server(data.path());
    let mcp_url = format!("{}/mcp", memory.url);
    let daemon = spawn_daemon(data.path(), &["--mcp-url", &mcp_url], &[]);
    let client = connect(&memory.url, Transport::Streamable, memory.token.as_deref()).await;
    for user in &users {
        assert_eq!(
            user_messages(&http, &daemon.url, user).await,
            [store_message(user, 0)],
            "history of {user}"
        );
        let memories = all_memories(&client, user).await;
        assert_eq!(memories.len(), 1, "{user}: {memories:?}");
        assert!(holds(&memories, &format!("note 0 of {user} is kiwi0")));
    }
}

// === 3. kill -9 of the daemon ===

/// 20 users store through a `memento serve` process (embedded memory server) that is
/// SIGKILLed mid-run. After a restart on the same data directory each user's history holds
/// exactly the turns that were answered (plus at most the one in flight, whole), and every
/// acknowledged memory is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_daemon_keeps_answered_turns_and_acknowledged_memories() {
    const USERS: usize = 20;
    let data = tempfile::tempdir().expect("tempdir");
    // A budget large enough that no turn is trimmed from a history during the test.
    let mut daemon = spawn_daemon(
        data.path(),
        &[],
        &[("MEMENTO_CONVERSATION__HISTORY_TOKEN_BUDGET", "1000000")],
    );
    let http = reqwest::Client::new();
    let answered = AtomicUsize::new(0);
    let users: Vec<String> = (0..USERS).map(|i| format!("dkill{i:02}")).collect();

    #[derive(Debug, Default)]
    struct Log {
        answered: Vec<String>,
        acknowledged: Vec<String>,
        in_flight: Option<String>,
    }
    let user_tasks = users.iter().map(|user| {
        let (http, url, answered) = (&http, daemon.url.clone(), &answered);
        async move {
            let mut log = Log::default();
            // Bounded: the kill comes long before (after 3 turns per user on average).
            for n in 0..200 {
                let message = store_message(user, n);
                let response = http
                    .post(format!("{url}/v1/users/{user}/messages"))
                    .json(&json!({ "message": message }))
                    .send()
                    .await;
                let body = match response {
                    Ok(response) if response.status() == 200 => response.json::<Value>().await,
                    Ok(response) => panic!("{user}: status {}", response.status()),
                    Err(e) => Err(e),
                };
                match body {
                    Ok(body) => {
                        let Store::Acknowledged(content) = store_outcome(&body) else {
                            panic!("{user}: not stored: {body}");
                        };
                        log.answered.push(message);
                        log.acknowledged.push(content);
                        answered.fetch_add(1, Ordering::SeqCst);
                    }
                    // The daemon is gone; this turn may or may not have been saved.
                    Err(_) => {
                        log.in_flight = Some(message);
                        break;
                    }
                }
            }
            log
        }
    });
    let killer = async {
        eventually(Duration::from_secs(60), "60 turns answered", || async {
            answered.load(Ordering::SeqCst) >= 3 * USERS
        })
        .await;
        daemon.child.kill().expect("kill -9 the daemon");
        daemon.child.wait().expect("reap");
    };
    let (logs, ()) = tokio::join!(futures::future::join_all(user_tasks), killer);
    assert!(
        logs.iter().all(|l| l.in_flight.is_some()),
        "every user was still sending at the kill"
    );
    drop(daemon);

    let memory = spawn_mcp_server(data.path());
    let mcp_url = format!("{}/mcp", memory.url);
    let daemon = spawn_daemon(data.path(), &["--mcp-url", &mcp_url], &[]);
    let client = connect(&memory.url, Transport::Streamable, memory.token.as_deref()).await;
    for (user, log) in users.iter().zip(&logs) {
        let history = user_messages(&http, &daemon.url, user).await;
        let mut with_last = log.answered.clone();
        with_last.extend(log.in_flight.clone());
        assert!(
            history == log.answered || history == with_last,
            "history of {user}: {history:?}, answered {:?}, in flight {:?}",
            log.answered,
            log.in_flight
        );
        let memories = all_memories(&client, user).await;
        for content in &log.acknowledged {
            assert!(
                holds(&memories, content),
                "{user}: acknowledged {content:?} is missing"
            );
        }
        // Nothing stored twice, nothing invented: at most the in-flight turn's store extra.
        assert!(
            (log.acknowledged.len()..=log.acknowledged.len() + 1).contains(&memories.len()),
            "{user}: {} memories for {} acknowledged stores",
            memories.len(),
            log.acknowledged.len()
        );
    }
}
