//! The rounds of one turn, and the cached history they start from and extend.
//!
//! Every round's prompt is the shared context (system prompt and history, serialised once
//! and kept between turns while the history is unchanged) plus the turn's own messages,
//! each serialised once when it is made; the tools are the MCP actor's one serialised set.
//! So a round allocates only its new messages and the request body.

use std::sync::Arc;

use futures::future::join_all;
use tokio::time::Instant;

use super::prompt::{context_after, context_of};
use super::tools::{refused_delete, run_tool};
use super::{
    ConversationState, TurnContext, TurnError, TurnEvent, TurnOutcome, TurnRequest, TurnTimings,
};
use crate::daemon::history::CachedHistory;
use crate::daemon::history::lease::LeaseGuard;
use crate::daemon::llm::LlmError;
use crate::daemon::llm::types::{ChatMessage, Prompt, SharedMessage, Usage};

impl ConversationState {
    /// Replaces the cached history, and with it the serialised context built from it.
    pub(super) fn set_history(&mut self, history: Option<CachedHistory>) {
        self.history = history;
        self.context = None;
    }

    pub(super) async fn loaded(&mut self) -> Result<&CachedHistory, TurnError> {
        if self.history.is_none() {
            let budget = self.args.config.history_token_budget;
            let loaded = self.args.history.load(&self.args.user, budget).await?;
            self.set_history(Some(loaded));
        }
        Ok(self.history.get_or_insert_with(CachedHistory::default))
    }

    /// The system prompt and the cached history, serialised (built once per history).
    async fn context(&mut self) -> Result<Arc<[SharedMessage]>, TurnError> {
        if let (Some(context), Some(_)) = (&self.context, &self.history) {
            return Ok(context.clone());
        }
        let context = context_of(self.loaded().await?.messages().iter().cloned());
        self.context = Some(context.clone());
        Ok(context)
    }

    /// On a store shared by several daemons, drops the cached history if another daemon
    /// wrote since it was read.
    pub(super) async fn check_version(&mut self) -> Result<(), TurnError> {
        let backend = self.args.history.backend();
        if let (true, Some(cached)) = (backend.uses_leases(), &self.history) {
            if backend.version(&self.args.user).await? != cached.version() {
                self.set_history(None);
            }
        }
        Ok(())
    }

    /// Takes the user's lease when the store is shared (waiting for another daemon's turn
    /// to end, until the deadline); a cached history another daemon has written past since
    /// is dropped, so the turn reloads it.
    async fn lease(&mut self, deadline: Instant) -> Result<Option<LeaseGuard>, TurnError> {
        let backend = self.args.history.backend();
        if !backend.uses_leases() {
            return Ok(None);
        }
        let lease = LeaseGuard::acquire(backend, &self.args.user, deadline).await?;
        if self
            .history
            .as_ref()
            .is_some_and(|cached| cached.version() != lease.version())
        {
            self.set_history(None);
        }
        Ok(Some(lease))
    }

    pub(super) async fn turn(&mut self, request: TurnRequest) -> Result<TurnOutcome, TurnError> {
        let started = Instant::now();
        let mut timings = TurnTimings::default();
        let args = self.args.clone();
        let (context, stored, lease) = match request.context {
            TurnContext::Stored => {
                let lease = self.lease(request.deadline).await?;
                (self.context().await?, true, lease)
            }
            TurnContext::Given(messages) => (context_of(messages.into_iter()), false, None),
        };
        let mut usage = Usage::default();
        // The turn's messages, each serialised once: every round's prompt after `context`,
        // and what the history appends.
        let mut turn = Vec::with_capacity(8);
        turn.push(SharedMessage::new(ChatMessage::User {
            content: request.message.clone(),
        }));
        let user = Some(args.user.as_str().to_owned());
        let mut records = Vec::new();
        let max_rounds = args.config.max_tool_rounds;
        let frame_nonce = crate::daemon::llm::framing::nonce();
        let mut deletes = 0usize;
        let mut reply = String::new();
        for round in 0..=max_rounds {
            let prompt = Prompt {
                context: context.clone(),
                turn: turn.clone(),
                tools: (round < max_rounds).then(|| args.mcp.tools()),
                max_tokens: None,
                temperature: None,
                user: user.clone(),
            };
            let estimated_prompt = prompt.estimated_tokens();
            let response = args
                .llm
                .complete(prompt, request.deadline)
                .await
                .map_err(|error| llm_failure(error, request.deadline))?;
            timings.llm_ms += response.provider_time.as_secs_f64() * 1000.0;
            add_usage(
                &mut usage,
                response.usage.unwrap_or_else(|| {
                    let completion = crate::shared::tokens::of_bytes(response.message.text_len());
                    Usage {
                        prompt_tokens: estimated_prompt,
                        completion_tokens: completion,
                        total_tokens: estimated_prompt.saturating_add(completion),
                    }
                }),
            );
            let (content, tool_calls) = match response.message {
                ChatMessage::Assistant {
                    content,
                    tool_calls,
                } => (content, tool_calls),
                other => (Some(message_text(other)), Vec::new()),
            };
            if tool_calls.is_empty() || round == max_rounds {
                reply = content.unwrap_or_default();
                turn.push(SharedMessage::new(ChatMessage::Assistant {
                    content: Some(reply.clone()),
                    tool_calls: Vec::new(),
                }));
                break;
            }
            let tools_started = Instant::now();
            // At most `max_deletes_per_turn` deletes run: a model talked into "delete
            // everything" by a stored note empties a bounded part of the store, not all of it.
            let max_deletes = args.config.max_deletes_per_turn;
            let results = join_all(tool_calls.iter().enumerate().map(|(index, call)| {
                let allowed = call.function.name != crate::daemon::mcp::DELETE_TOOL || {
                    deletes += 1;
                    deletes <= max_deletes
                };
                // The daemon's own key, never the provider's call id (it may be empty or
                // repeated): unique per call within the turn, identical on a replay.
                let key = format!("{}:{round}:{index}", request.turn_id);
                let (args, events) = (&args, request.events.as_ref());
                async move {
                    if allowed {
                        run_tool(args, call, key, events).await
                    } else {
                        refused_delete(call, max_deletes, events)
                    }
                }
            }))
            .await;
            timings.tools_ms += tools_started.elapsed().as_secs_f64() * 1000.0;
            turn.push(SharedMessage::new(ChatMessage::Assistant {
                content,
                tool_calls,
            }));
            for record in results {
                turn.push(SharedMessage::new(ChatMessage::Tool {
                    tool_call_id: record.id.clone(),
                    content: crate::daemon::llm::framing::frame(
                        &record.name,
                        &record.result,
                        &frame_nonce,
                        record.is_error,
                    ),
                }));
                records.push(record);
            }
        }
        if stored {
            // Committed before any of the answer is sent (RELIABILITY.md, "Histories").
            let budget = args.config.history_token_budget;
            self.loaded().await?;
            // Taken, not copied: if the append fails, the next turn reloads the history.
            // The turn's messages go in as serialised for the LLM (not serialised again).
            let current = self.history.take().unwrap_or_default();
            let (mut append, next) = current.with_turn(turn.iter().cloned(), budget, &args.user);
            if let Some(lease) = &lease {
                append.fence = Some(lease.token());
                append.release = true;
            }
            match args.history.backend().append(append).await {
                Ok(_) => {
                    let kept = next.messages().len();
                    self.set_history(Some(next));
                    // The next turn's context: what stayed of this one's, and this turn.
                    self.context = context_after(&context, &turn, kept);
                    if let Some(lease) = lease {
                        lease.released();
                    }
                }
                Err(error) => {
                    // The cached copy was taken: the next turn reloads what the store has
                    // (another writer's turns, after `Stale` or `Fenced`).
                    self.set_history(None);
                    return Err(error.into());
                }
            }
        }
        if let Some(events) = &request.events {
            let _ = events.send(TurnEvent::Text(reply.clone()));
        }
        timings.turn_ms = started.elapsed().as_secs_f64() * 1000.0;
        Ok(TurnOutcome {
            reply,
            tool_calls: records,
            timings,
            usage,
        })
    }
}

/// Adds one round's token counts to the turn's.
fn add_usage(total: &mut Usage, round: Usage) {
    total.prompt_tokens = total.prompt_tokens.saturating_add(round.prompt_tokens);
    total.completion_tokens = total
        .completion_tokens
        .saturating_add(round.completion_tokens);
    total.total_tokens = total.total_tokens.saturating_add(round.total_tokens);
}

/// An LLM failure the turn's deadline caused is the turn's deadline failure, whichever of
/// the two timers (the turn's, or the LLM call's, capped at the same instant) fired first.
fn llm_failure(error: LlmError, deadline: Instant) -> TurnError {
    match error {
        LlmError::DeadlineExceeded => TurnError::DeadlineExceeded,
        LlmError::Timeout if Instant::now() >= deadline => TurnError::DeadlineExceeded,
        other => TurnError::Llm(other),
    }
}

fn message_text(message: ChatMessage) -> String {
    match message {
        ChatMessage::System { content }
        | ChatMessage::User { content }
        | ChatMessage::Tool { content, .. } => content,
        ChatMessage::Assistant { content, .. } => content.unwrap_or_default(),
    }
}
