//! The supervisor: one conversation actor per user, spawned on the user's first message.
//!
//! - Keeps `user -> conversation` in a `DashMap` shared with [`SupervisorHandle`], so
//!   routing a turn to a live conversation never passes through the supervisor's mailbox;
//!   only spawning does.
//! - Conversations are linked to it: a failed one is removed and restarted on the user's next
//!   message, its history reloaded from disk (saved after every turn).
//! - A periodic sweep stops conversations idle longer than `conversation.idle_timeout`;
//!   at `conversation.max_actors`, spawning evicts the least recently used idle ones.

mod actor;
pub mod root;

use actor::ConversationArgsTemplate;
pub use actor::{Supervisor, SupervisorMsg, SupervisorState};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use ractor::{Actor, ActorProcessingErr, ActorRef, ActorStatus, RpcReplyPort, SupervisionEvent};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;

use crate::daemon::conversation::{
    Conversation, ConversationArgs, ConversationMsg, REPLY_GRACE, TurnContext, TurnError,
    TurnEvent, TurnOutcome, TurnRequest,
};
use crate::daemon::history::HistoryStore;
use crate::daemon::llm::LlmHandle;
use crate::daemon::llm::types::ChatMessage;
use crate::daemon::mcp::McpHandle;
use crate::shared::config::ConversationConfig;
use crate::shared::domain::UserId;
use crate::shared::metrics::{Counter, Gauge, Histogram};

/// What a shutdown step still gets once the bound (`server.shutdown_grace`) is spent: long
/// enough for an actor to take its stop signal, short enough that a late step adds little.
pub(crate) const STOP_FLOOR: Duration = Duration::from_millis(250);

/// How long a shutdown step may wait: what is left until `deadline`, at least
/// [`STOP_FLOOR`]. The daemon's one shutdown bound is carried as that deadline.
pub(crate) fn time_left(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(STOP_FLOOR)
}

/// How often idle conversations are looked for, at most (half the idle timeout when shorter).
const SWEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Turn and actor metrics for `/metrics`.
#[derive(Debug, Default)]
pub struct TurnMetrics {
    /// Turns finished, successfully or not.
    pub turns: Counter,
    /// Turns that failed.
    pub turn_errors: Counter,
    /// Turns refused because too many were in progress.
    pub overloaded: Counter,
    /// Turns refused because their user had `max_queued_turns` waiting.
    pub queue_full: Counter,
    /// Turn latency.
    pub latency: Histogram,
    /// Live conversation actors.
    pub live_actors: Gauge,
    /// Conversations that failed and were removed (restarted on the next message).
    pub actor_failures: Counter,
    /// Conversations stopped for idleness or eviction.
    pub actor_stops: Counter,
    /// Idle conversations told to release their cached history.
    pub history_releases: Counter,
    /// Turns started and not yet ended: queued behind the user's earlier turn, waiting for
    /// the user's lease held by another daemon, or running.
    pub in_progress: Gauge,
}

/// A live conversation and when it was last used.
pub struct ConversationEntry {
    actor: ActorRef<ConversationMsg>,
    /// Milliseconds since the supervisor started.
    last_active: AtomicU64,
    /// Turns queued or running.
    busy: AtomicUsize,
    /// The actor may hold its history in memory (set by every call, cleared when the sweep
    /// tells an idle actor to release it).
    history_cached: std::sync::atomic::AtomicBool,
}

/// The typed handle the HTTP layer uses. Cheap to clone.
#[derive(Clone)]
pub struct SupervisorHandle {
    actor: ActorRef<SupervisorMsg>,
    entries: Arc<DashMap<UserId, Arc<ConversationEntry>>>,
    turn_limit: Arc<Semaphore>,
    /// The configured size of `turn_limit`.
    turn_capacity: usize,
    metrics: Arc<TurnMetrics>,
    /// Reference point of `ConversationEntry::last_active`.
    started: Instant,
    /// Most turns of one user waiting or running.
    max_queued_turns: usize,
}

/// Spawn arguments.
pub struct SupervisorArgs {
    /// Shared LLM actor.
    pub llm: LlmHandle,
    /// Shared MCP actor.
    pub mcp: McpHandle,
    /// History store.
    pub history: HistoryStore,
    /// Limits.
    pub config: ConversationConfig,
    /// Turns in progress at once.
    pub max_concurrent_turns: usize,
}

impl SupervisorHandle {
    /// Spawns the supervisor.
    pub async fn spawn(args: SupervisorArgs) -> Result<SupervisorHandle, ractor::SpawnErr> {
        let entries = Arc::new(DashMap::new());
        let metrics = Arc::new(TurnMetrics::default());
        let turn_capacity = args
            .max_concurrent_turns
            .clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
        let turn_limit = Arc::new(Semaphore::new(turn_capacity));
        let started = Instant::now();
        let max_queued_turns = args.config.max_queued_turns.max(1);
        let state_args = SupervisorState {
            conversation: ConversationArgsTemplate {
                llm: args.llm,
                mcp: args.mcp,
                history: args.history,
                config: Arc::new(args.config),
            },
            entries: entries.clone(),
            metrics: metrics.clone(),
            started,
        };
        let (actor, _join) = Actor::spawn(None, Supervisor, state_args).await?;
        Ok(SupervisorHandle {
            actor,
            entries,
            turn_limit,
            turn_capacity,
            metrics,
            started,
            max_queued_turns,
        })
    }

    /// Runs one turn for `user`: in order with the user's other turns, concurrently with
    /// everyone else's.
    pub async fn turn(
        &self,
        user: &UserId,
        message: String,
        deadline: Instant,
        events: Option<mpsc::UnboundedSender<TurnEvent>>,
    ) -> Result<TurnOutcome, TurnError> {
        self.run_turn(user, message, TurnContext::Stored, deadline, events)
            .await
    }

    /// Runs one turn for `user` on a conversation the caller supplies (`prior`, oldest
    /// first, then `message`) instead of the stored history, which it leaves unchanged:
    /// the OpenAI-compatible API. Same actor, order, limits and tools as [`Self::turn`].
    pub async fn turn_given(
        &self,
        user: &UserId,
        prior: Vec<ChatMessage>,
        message: String,
        deadline: Instant,
        events: Option<mpsc::UnboundedSender<TurnEvent>>,
    ) -> Result<TurnOutcome, TurnError> {
        self.run_turn(user, message, TurnContext::Given(prior), deadline, events)
            .await
    }

    async fn run_turn(
        &self,
        user: &UserId,
        message: String,
        context: TurnContext,
        deadline: Instant,
        events: Option<mpsc::UnboundedSender<TurnEvent>>,
    ) -> Result<TurnOutcome, TurnError> {
        // Dropping this future (the HTTP client went away) cancels the turn.
        let cancel = tokio_util::sync::CancellationToken::new();
        let _cancel_on_drop = cancel.clone().drop_guard();
        if self.turn_limit.is_closed() {
            return Err(TurnError::ShuttingDown);
        }
        // Counted when the turn ends, however it ends: a turn whose caller hung up (this
        // future dropped) is a finished, failed turn too.
        self.metrics.in_progress.inc();
        let mut counted = TurnCounter {
            metrics: &self.metrics,
            started: Instant::now(),
            failed: true,
        };
        let call = TurnCall {
            message,
            context,
            deadline,
            events,
        };
        let result = self.turn_inner(user, call, cancel).await;
        counted.failed = result.is_err();
        if matches!(result, Err(TurnError::Overloaded)) {
            self.metrics.overloaded.inc();
        }
        result
    }

    async fn turn_inner(
        &self,
        user: &UserId,
        call: TurnCall,
        cancel: tokio_util::sync::CancellationToken,
    ) -> Result<TurnOutcome, TurnError> {
        let TurnCall {
            message,
            context,
            deadline,
            events,
        } = call;
        let turn_id = uuid::Uuid::now_v7().simple().to_string();
        // The entry comes back already marked busy (under the map's lock), so the idle sweep
        // cannot stop it between the lookup and the send. A conversation that failed before
        // the message reached it never saw the message, so one retry with a fresh actor is
        // safe. A failure during the turn is not retried.
        for attempt in 0..2 {
            let busy = self.conversation(user).await?;
            let entry = busy.entry.clone();
            if busy.queued_before >= self.max_queued_turns {
                self.metrics.queue_full.inc();
                return Err(TurnError::QueueFull {
                    limit: self.max_queued_turns,
                });
            }
            let request = TurnRequest {
                message: message.clone(),
                context: context.clone(),
                deadline,
                events: events.clone(),
                turn_id: turn_id.clone(),
                cancel: cancel.clone(),
                parent: tracing::Span::current(),
                turn_limit: self.turn_limit.clone(),
            };
            let wait = deadline.saturating_duration_since(Instant::now()) + REPLY_GRACE;
            let result = entry
                .actor
                .call(|reply| ConversationMsg::Turn { request, reply }, Some(wait))
                .await;
            self.touch(&entry);
            match result {
                Ok(ractor::rpc::CallResult::Success(outcome)) => return outcome,
                Ok(ractor::rpc::CallResult::Timeout) => return Err(TurnError::DeadlineExceeded),
                Ok(ractor::rpc::CallResult::SenderError) => return Err(TurnError::ActorFailed),
                Err(_) if attempt == 0 => continue,
                Err(_) => return Err(TurnError::ActorFailed),
            }
        }
        Err(TurnError::ActorFailed)
    }

    /// The user's history, oldest first.
    pub async fn history(&self, user: &UserId) -> Result<Vec<ChatMessage>, TurnError> {
        self.ask(user, true, |reply| ConversationMsg::History { reply })
            .await
    }

    /// Forgets the user's history.
    pub async fn reset(&self, user: &UserId) -> Result<(), TurnError> {
        self.ask(user, false, |reply| ConversationMsg::Reset { reply })
            .await
    }

    /// Asks the user's conversation (marked busy meanwhile; its idle clock restarted when
    /// `touch`) and waits a minute at most for the answer.
    async fn ask<T: Send + 'static>(
        &self,
        user: &UserId,
        touch: bool,
        message: impl FnOnce(RpcReplyPort<Result<T, TurnError>>) -> ConversationMsg,
    ) -> Result<T, TurnError> {
        let busy = self.conversation(user).await?;
        if touch {
            self.touch(&busy.entry);
        }
        match busy
            .entry
            .actor
            .call(message, Some(Duration::from_secs(60)))
            .await
        {
            Ok(ractor::rpc::CallResult::Success(answer)) => answer,
            Ok(ractor::rpc::CallResult::Timeout) => Err(TurnError::DeadlineExceeded),
            _ => Err(TurnError::ActorFailed),
        }
    }

    /// Live conversation actors.
    pub fn live_actors(&self) -> usize {
        self.entries.len()
    }

    /// Metrics.
    pub fn metrics(&self) -> &TurnMetrics {
        &self.metrics
    }

    /// Makes the user's conversation actor panic (tests of supervision only: built with the
    /// `test-hooks` feature).
    #[cfg(any(test, feature = "test-hooks"))]
    #[doc(hidden)]
    pub async fn crash_for_test(&self, user: &UserId) -> Result<(), TurnError> {
        let busy = self.conversation(user).await?;
        busy.entry
            .actor
            .cast(ConversationMsg::Crash)
            .map_err(|_| TurnError::ActorFailed)
    }

    /// The supervisor actor's cell, to link it under the root supervisor.
    pub(crate) fn actor_cell(&self) -> ractor::ActorCell {
        self.actor.get_cell()
    }

    /// True while the conversation supervisor runs (readiness).
    pub fn is_running(&self) -> bool {
        self.actor.get_status() == ActorStatus::Running
    }

    /// Stops taking turns, lets running ones finish until `deadline`, then stops every actor
    /// (each stop waits what is left of the bound, at least [`STOP_FLOOR`]).
    pub async fn shutdown(&self, deadline: Instant) {
        // Taking every permit waits for in-flight turns and refuses new ones.
        let permits = u32::try_from(self.turn_capacity).unwrap_or(u32::MAX);
        let drained =
            tokio::time::timeout_at(deadline, self.turn_limit.acquire_many(permits)).await;
        if drained.is_err() {
            tracing::warn!("turns still running after the grace period; stopping anyway");
        }
        self.turn_limit.close();
        let _ = self
            .actor
            .stop_children_and_wait(Some("shutdown".into()), Some(time_left(deadline)))
            .await;
        let _ = self
            .actor
            .stop_and_wait(Some("shutdown".into()), Some(time_left(deadline)))
            .await;
    }

    fn touch(&self, entry: &ConversationEntry) {
        entry
            .last_active
            .store(millis_since(self.started), Ordering::Relaxed);
        entry.history_cached.store(true, Ordering::Relaxed);
    }

    /// The live conversation of `user`, spawning it if needed, marked busy until the
    /// returned guard drops. The mark is taken while the map's shard is locked, and the sweep
    /// removes only unmarked entries under the same lock, so a conversation handed out here is
    /// never stopped for idleness.
    async fn conversation(&self, user: &UserId) -> Result<Busy, TurnError> {
        if let Some(busy) = mark_live(&self.entries, user) {
            return Ok(busy);
        }
        match self
            .actor
            .call(
                |reply| SupervisorMsg::Spawn {
                    user: user.clone(),
                    reply,
                },
                Some(Duration::from_secs(30)),
            )
            .await
        {
            Ok(ractor::rpc::CallResult::Success(result)) => result,
            _ => Err(TurnError::ShuttingDown),
        }
    }
}

/// One turn's request, as `run_turn` passes it on.
struct TurnCall {
    message: String,
    context: TurnContext,
    deadline: Instant,
    events: Option<mpsc::UnboundedSender<TurnEvent>>,
}

/// Counts one turn in the metrics when dropped: finished, failed, or abandoned by its caller
/// (and no longer in progress).
struct TurnCounter<'a> {
    metrics: &'a TurnMetrics,
    started: Instant,
    failed: bool,
}

impl Drop for TurnCounter<'_> {
    fn drop(&mut self) {
        self.metrics.in_progress.dec();
        self.metrics.turns.inc();
        self.metrics.latency.observe(self.started.elapsed());
        if self.failed {
            self.metrics.turn_errors.inc();
        }
    }
}

/// A conversation marked busy (a turn, history or reset call waiting on it or running).
pub struct Busy {
    entry: Arc<ConversationEntry>,
    /// Turns and calls that were already waiting or running when this one was marked.
    queued_before: usize,
}

impl Busy {
    fn mark(entry: Arc<ConversationEntry>) -> Busy {
        let queued_before = entry.busy.fetch_add(1, Ordering::AcqRel);
        Busy {
            entry,
            queued_before,
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.entry.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The live conversation of `user`, marked busy while the map's shard is still locked (the
/// `Ref` is held), so [`remove_if_idle`], which checks under the same lock, can never remove
/// an entry between this lookup and its mark.
fn mark_live(entries: &DashMap<UserId, Arc<ConversationEntry>>, user: &UserId) -> Option<Busy> {
    let entry = entries.get(user)?;
    (entry.actor.get_status() == ActorStatus::Running).then(|| Busy::mark(entry.value().clone()))
}

/// Removes `user`'s conversation if nothing has it marked busy: the check and the removal
/// happen under the map's lock, where [`mark_live`] marks.
fn remove_if_idle(
    entries: &DashMap<UserId, Arc<ConversationEntry>>,
    user: &UserId,
) -> Option<Arc<ConversationEntry>> {
    entries
        .remove_if(user, |_, entry| SupervisorState::is_idle(entry))
        .map(|(_, entry)| entry)
}

fn millis_since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
