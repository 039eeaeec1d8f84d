//! The conversation actor: one per user, one turn at a time, in order.
//!
//! A turn is: system prompt + bounded history + the new message, then the LLM, then the
//! tools it asked for (concurrently), then the LLM again, for up to
//! `conversation.max_tool_rounds` rounds; the last round offers no tools, so it must answer
//! in words. Invalid tool-call JSON, unknown tools and an unavailable memory service become
//! tool results the model sees (flagged `is_error`, framed as a tool error), never a failed
//! turn. The whole turn runs under its deadline.
//!
//! History is bounded by a token budget (oldest turns dropped first, a tool call and its
//! result always together) and each turn is appended to [`HistoryStore`] (committed before
//! the answer is sent), so a restarted actor or daemon picks the conversation up where it
//! was. On a store shared by several daemons the turn first takes the user's lease
//! (`history::lease`), reloads the history if another daemon wrote since, and appends
//! under the lease's fencing token.
//!
//! A turn of the OpenAI-compatible API ([`TurnContext::Given`]) runs the same way on the
//! messages its client sent instead of the stored history, and leaves that history alone.
//!
//! - `turn`: the rounds of a turn, the history's lease, load and save.
//! - `tools`: one tool call, every failure turned into a tool error the model reads.
//! - `prompt`: the system prompt, the serialised context every round shares, and the
//!   history's token budget.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::daemon::history::{CachedHistory, HistoryError, HistoryStore};
use crate::daemon::llm::types::{ChatMessage, SharedMessage, Usage};
use crate::daemon::llm::{LlmError, LlmHandle};
use crate::daemon::mcp::McpHandle;
use crate::shared::config::ConversationConfig;
use crate::shared::domain::UserId;

mod prompt;
mod tools;
mod turn;

pub use prompt::{SYSTEM_PROMPT, estimate_tokens, trim_history};

/// Why a turn failed. Tool failures are not here: the model sees them as tool results.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TurnError {
    /// The turn's deadline passed.
    #[error("the turn took longer than its deadline")]
    DeadlineExceeded,
    /// The LLM failed (after its own retries).
    #[error("language model error: {0}")]
    Llm(#[from] LlmError),
    /// The history could not be read or saved.
    #[error("history error: {0}")]
    History(String),
    /// Another daemon holds or changed this conversation (its lease, or a newer history
    /// version): nothing was answered or saved; a retry gets it.
    #[error("this conversation is busy elsewhere: {0}")]
    Busy(String),
    /// Too many turns in progress.
    #[error("too many turns in progress; retry shortly")]
    Overloaded,
    /// This user already has the most turns queued (`conversation.max_queued_turns`).
    #[error("you already have {limit} messages waiting for an answer; wait for them, then retry")]
    QueueFull {
        /// The configured limit.
        limit: usize,
    },
    /// The conversation actor failed during the turn (it restarts on the next message).
    #[error("the conversation failed during this turn; please retry")]
    ActorFailed,
    /// The daemon is shutting down.
    #[error("the service is shutting down")]
    ShuttingDown,
    /// The caller went away before the turn finished.
    #[error("the turn was cancelled")]
    Cancelled,
}

impl TurnError {
    /// A short stable name, for `error.type` on spans.
    pub fn kind(&self) -> &'static str {
        match self {
            TurnError::DeadlineExceeded => "deadline_exceeded",
            TurnError::Llm(_) => "llm_error",
            TurnError::History(_) => "history_error",
            TurnError::Busy(_) => "conversation_busy",
            TurnError::Overloaded => "overloaded",
            TurnError::QueueFull { .. } => "queue_full",
            TurnError::ActorFailed => "actor_failed",
            TurnError::ShuttingDown => "shutting_down",
            TurnError::Cancelled => "cancelled",
        }
    }
}

impl From<HistoryError> for TurnError {
    fn from(error: HistoryError) -> Self {
        match error {
            HistoryError::LeaseBusy | HistoryError::Stale | HistoryError::Fenced => {
                TurnError::Busy(error.to_string())
            }
            other => TurnError::History(other.to_string()),
        }
    }
}

/// One tool call of a turn, as the API reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolCallRecord {
    /// The model's id of the call.
    #[serde(skip)]
    pub id: String,
    /// Tool name.
    pub name: String,
    /// Arguments as the model gave them (parsed JSON, or the raw text when invalid).
    /// `user_id` is never among them: the daemon adds it on the way to the server.
    pub arguments: Value,
    /// The tool's result text (or the error the model saw).
    pub result: String,
    /// The call failed.
    pub is_error: bool,
}

/// What a turn produced.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TurnOutcome {
    /// The answer.
    pub reply: String,
    /// Every tool call, in order.
    pub tool_calls: Vec<ToolCallRecord>,
    /// Where the turn's time went.
    pub timings: TurnTimings,
    /// Tokens over every LLM round of the turn: the provider's counts, or the estimate
    /// (four bytes a token) for a round whose provider reported none.
    pub usage: Usage,
}

/// Where a turn's time went, in milliseconds. `turn_ms - llm_ms - tools_ms` is the daemon's
/// own share of the turn (history, prompt building, actor hops), which the load-test
/// harness reports as overhead together with the API's HTTP handling.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct TurnTimings {
    /// The whole turn inside the conversation actor, history load and save included.
    pub turn_ms: f64,
    /// In the LLM provider's calls (`ChatResponse::provider_time`): network round trips
    /// and the model's work; rate-limit waits, queueing and retry delays are not in it.
    pub llm_ms: f64,
    /// In tool rounds (concurrent calls count once, as wall time): the MCP round trips.
    pub tools_ms: f64,
}

/// Progress of a streamed turn.
#[derive(Debug, Clone, PartialEq)]
pub enum TurnEvent {
    /// The model asked for a tool call.
    ToolCall {
        /// Call id.
        id: String,
        /// Tool name.
        name: String,
        /// Arguments (as in [`ToolCallRecord::arguments`]).
        arguments: Value,
    },
    /// A tool call finished.
    ToolResult(ToolCallRecord),
    /// Answer text.
    Text(String),
}

/// Which conversation a turn continues.
#[derive(Debug, Clone, PartialEq)]
pub enum TurnContext {
    /// The user's stored history: the turn reads it, extends it and saves it.
    Stored,
    /// The messages a client sent before `message` (the OpenAI-compatible API, whose
    /// clients keep the conversation themselves): the turn runs on them and neither reads
    /// nor changes the stored history.
    Given(Vec<ChatMessage>),
}

/// A turn to run.
pub struct TurnRequest {
    /// The person's message.
    pub message: String,
    /// The conversation before `message`.
    pub context: TurnContext,
    /// When the turn must be done.
    pub deadline: Instant,
    /// Where to send progress, for streamed turns.
    pub events: Option<mpsc::UnboundedSender<TurnEvent>>,
    /// Unique id of this turn (part of each tool call's idempotency key).
    pub turn_id: String,
    /// Cancelled when the caller goes away (HTTP client disconnected): the turn stops.
    pub cancel: tokio_util::sync::CancellationToken,
    /// The caller's span (the HTTP request): the turn's span is its child.
    pub parent: tracing::Span,
    /// Turns in progress across all users: a permit is taken when this turn starts (not
    /// while it waits behind the user's earlier turns), and released when it ends.
    pub turn_limit: Arc<tokio::sync::Semaphore>,
}

/// Messages of a conversation actor. Every variant with a `reply` must be answered.
pub enum ConversationMsg {
    /// Run one turn; reply with its outcome.
    Turn {
        /// The turn.
        request: TurnRequest,
        /// Where the outcome goes.
        reply: RpcReplyPort<Result<TurnOutcome, TurnError>>,
    },
    /// Reply with the history, oldest first.
    History {
        /// Where the history goes.
        reply: RpcReplyPort<Result<Vec<ChatMessage>, TurnError>>,
    },
    /// Drop the cached history (idle for `conversation.history_cache_idle`); the next turn
    /// reloads it from disk. Sent by the supervisor's sweep.
    ReleaseHistory,
    /// Forget the history (not the memories).
    Reset {
        /// Acknowledgement.
        reply: RpcReplyPort<Result<(), TurnError>>,
    },
    /// Panic on purpose: lets tests prove that a failed conversation is restarted with its
    /// history. Reachable only through `SupervisorHandle::crash_for_test`.
    #[doc(hidden)]
    Crash,
}

/// Everything a conversation needs, given at spawn.
#[derive(Clone)]
pub struct ConversationArgs {
    /// Whose conversation.
    pub user: UserId,
    /// The shared LLM actor.
    pub llm: LlmHandle,
    /// The shared MCP actor.
    pub mcp: McpHandle,
    /// Where histories live.
    pub history: HistoryStore,
    /// Limits.
    pub config: Arc<ConversationConfig>,
}

/// The actor (its state is [`ConversationState`]).
pub struct Conversation;

/// Per-user state.
pub struct ConversationState {
    args: ConversationArgs,
    /// Loaded on the first message (not in `pre_start`, so spawning never waits on disk).
    /// Change it only through [`ConversationState::set_history`].
    history: Option<CachedHistory>,
    /// The system prompt and `history`, serialised: what every round of the next turn
    /// starts its prompt with. Built on a turn's first use, kept while `history` is.
    context: Option<Arc<[SharedMessage]>>,
}

impl Actor for Conversation {
    type Msg = ConversationMsg;
    type State = ConversationState;
    type Arguments = ConversationArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<ConversationMsg>,
        args: ConversationArgs,
    ) -> Result<ConversationState, ActorProcessingErr> {
        Ok(ConversationState {
            args,
            history: None,
            context: None,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<ConversationMsg>,
        message: ConversationMsg,
        state: &mut ConversationState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ConversationMsg::Turn { request, reply } => {
                let _permit = match request.turn_limit.clone().try_acquire_owned() {
                    Ok(permit) => permit,
                    Err(tokio::sync::TryAcquireError::NoPermits) => {
                        let _ = reply.send(Err(TurnError::Overloaded));
                        return Ok(());
                    }
                    Err(tokio::sync::TryAcquireError::Closed) => {
                        let _ = reply.send(Err(TurnError::ShuttingDown));
                        return Ok(());
                    }
                };
                let deadline = request.deadline;
                let cancel = request.cancel.clone();
                let span = tracing::info_span!(
                    parent: &request.parent,
                    "turn",
                    otel.name = "conversation turn",
                    memento.user.id = tracing::field::Empty,
                    memento.user.opaque = tracing::field::Empty,
                    memento.message = tracing::field::Empty,
                    memento.reply = tracing::field::Empty,
                    memento.tool_rounds = tracing::field::Empty,
                    error.type = tracing::field::Empty,
                );
                if state.args.config.record_user_id {
                    span.record("memento.user.id", state.args.user.as_str());
                }
                // Always: the keyed pseudonym the provider also sees (issue 11).
                span.record(
                    "memento.user.opaque",
                    state.args.llm.pseudonym(state.args.user.as_str()),
                );
                if state.args.config.record_content {
                    span.record("memento.message", request.message.as_str());
                }
                // Boxed: an idle actor's task is as large as its biggest pending future,
                // and a turn's (prompt, tool calls, LLM round trips) is kilobytes. Boxing
                // keeps that cost to the turn that runs, not to every idle conversation.
                let turn = tracing::Instrument::instrument(
                    tokio::time::timeout_at(deadline, Box::pin(state.turn(request))),
                    span.clone(),
                );
                let outcome = tokio::select! {
                    outcome = turn => match outcome {
                        Ok(outcome) => outcome,
                        Err(_) => Err(TurnError::DeadlineExceeded),
                    },
                    () = cancel.cancelled() => Err(TurnError::Cancelled),
                };
                match &outcome {
                    Ok(outcome) => {
                        span.record("memento.tool_rounds", outcome.tool_calls.len());
                        if state.args.config.record_content {
                            span.record("memento.reply", outcome.reply.as_str());
                        }
                    }
                    Err(error) => {
                        span.record("error.type", error.kind());
                    }
                }
                let _ = reply.send(outcome);
            }
            ConversationMsg::History { reply } => {
                let history = match state.check_version().await {
                    Ok(()) => state.loaded().await.map(|h| h.messages().to_vec()),
                    Err(error) => Err(error),
                };
                let _ = reply.send(history);
            }
            ConversationMsg::ReleaseHistory => {
                // Saved after every turn, so dropping the copy loses nothing.
                state.set_history(None);
            }
            ConversationMsg::Reset { reply } => {
                let result = state.args.history.delete(&state.args.user).await;
                state.set_history(result.as_ref().ok().map(|v| CachedHistory::empty_at(*v)));
                let _ = reply.send(result.map(|_| ()).map_err(TurnError::from));
            }
            ConversationMsg::Crash => {
                panic!("conversation crash requested by a test");
            }
        }
        Ok(())
    }
}

/// How long `SupervisorHandle` waits beyond a turn's deadline for the actor's answer.
pub const REPLY_GRACE: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests;
