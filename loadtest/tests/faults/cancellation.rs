//! 3. Cancellation: a client that hangs up mid-turn, and a running tool call cancelled on
//!    hang-up and at the deadline.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::slow_tools::{SlowTools, slow_tools_server};
use super::support::*;
use memento::daemon::llm::types::{ChatMessage, ChatRequest};
use memento::shared::config::Config;
use memento_loadtest::mock_azure::{Action, Script};
use serde_json::json;
use testkit::daemon::TestDaemon;
use testkit::eventually;
use tokio::time::Instant;

// === 3. Cancellation ===

/// The client hangs up while the turn waits for the model (after one tool round): the
/// daemon stops the turn's LLM work at once (the held request is dropped, no further
/// request is made) and the user's next turn runs normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_hanging_up_stops_the_turns_llm_work() {
    bounded(async {
        let script: Script = Arc::new(|request: &ChatRequest| {
            if !last_user_message(request).starts_with("SLOW") {
                return Action::Offline;
            }
            if ends_with_tool_results(request) {
                return Action::Hold;
            }
            Action::Say(ChatMessage::Assistant {
                content: None,
                tool_calls: vec![call(
                    "call_1",
                    "store_memory",
                    json!({"content": "the cancellation note is quince"}),
                )],
            })
        });
        let (base_url, seen) = scripted_model(script).await;
        let daemon = TestDaemon::start_with(|c| {
            use_scripted(c, &base_url);
            // Far longer than the test: only the hang-up can end the held request early.
            c.llm.turn_deadline = Duration::from_secs(120);
            c.llm.request_timeout = Duration::from_secs(120);
        })
        .await;

        let client = daemon.spawn_turn("alice", "SLOW remember the cancellation note");
        eventually(
            Duration::from_secs(20),
            "the follow-up request held",
            || {
                let held = seen.stats().hung;
                async move { held == 1 }
            },
        )
        .await;
        assert_eq!(
            seen.requests().len(),
            2,
            "tool round, then the held request"
        );
        client.abort();
        let _ = client.await;

        eventually(
            Duration::from_secs(10),
            "the daemon to drop the held LLM request",
            || {
                let released = seen.stats().abandoned;
                async move { released == 1 }
            },
        )
        .await;
        eventually(
            Duration::from_secs(10),
            "no LLM request in flight",
            || async { daemon.metric("memento_llm_in_flight").await == 0.0 },
        )
        .await;
        assert_eq!(seen.requests().len(), 2, "no request after the hang-up");
        // The abandoned turn is counted, as a failed one.
        eventually(
            Duration::from_secs(10),
            "the abandoned turn in the turn metrics",
            || async {
                daemon.metric("memento_turns_total").await == 1.0
                    && daemon.metric("memento_turn_errors_total").await == 1.0
            },
        )
        .await;

        // The conversation is free: Alice's next turn runs at once.
        let body = daemon.turn("alice", "list my memories").await;
        let listed = result_json(&only_call(&body, "retrieve_memories"));
        // The store finished before the hang-up, so it is kept.
        assert_eq!(listed["count"], 1, "{listed}");
        assert_eq!(seen.requests().len(), 4);
        assert_eq!(seen.stats().hung, 1);
    })
    .await;
}

/// A tool call is running when the client hangs up, and (on another daemon) when the
/// turn's deadline passes: either way the MCP server is told to cancel it (its
/// `RequestContext::ct` fires) and the model is never asked to continue the turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_tool_call_is_cancelled_on_hang_up_and_at_the_deadline() {
    bounded(async {
        let script = one_call_then_reply(
            call(
                "call_1",
                "slow_note",
                json!({"text": "slowly", "user_id": "mallory"}),
            ),
            "Noted.",
        );
        let (base_url, seen) = scripted_model(script).await;
        let tools = SlowTools::default();
        let mcp_url = slow_tools_server(tools.clone()).await;
        let with = |deadline: u64| {
            let base_url = base_url.clone();
            let mcp_url = mcp_url.clone();
            move |c: &mut Config| {
                use_scripted(c, &base_url);
                c.mcp.url = Some(mcp_url);
                c.llm.turn_deadline = Duration::from_secs(deadline);
            }
        };

        // 1. The client hangs up; the turn's deadline is far away.
        let daemon = TestDaemon::start_with(with(120)).await;
        let client = daemon.spawn_turn("alice", "note this slowly");
        eventually(Duration::from_secs(20), "the tool call running", || {
            let started = tools.started.load(Ordering::SeqCst);
            async move { started == 1 }
        })
        .await;
        client.abort();
        let _ = client.await;
        eventually(
            Duration::from_secs(10),
            "the MCP server told to cancel the tool call",
            || {
                let cancelled = tools.cancelled.load(Ordering::SeqCst);
                async move { cancelled == 1 }
            },
        )
        .await;
        assert_eq!(seen.requests().len(), 1, "the model was not asked to go on");

        // 2. The turn's deadline passes while the tool runs.
        let daemon = TestDaemon::start_with(with(2)).await;
        let started = Instant::now();
        let (status, body) = daemon.post("bob", "note this slowly").await;
        assert_eq!(status, 504, "{body}");
        assert_eq!(body["error"]["code"], "deadline_exceeded", "{body}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        eventually(
            Duration::from_secs(10),
            "the MCP server told to cancel the second tool call",
            || {
                let cancelled = tools.cancelled.load(Ordering::SeqCst);
                async move { cancelled == 2 }
            },
        )
        .await;
        assert_eq!(tools.started.load(Ordering::SeqCst), 2);
        assert_eq!(seen.requests().len(), 2, "the model was not asked to go on");
        // The model's user_id never reached the server: the daemon bound each caller.
        let users = tools
            .users
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        assert_eq!(users, ["alice", "bob"]);
    })
    .await;
}
