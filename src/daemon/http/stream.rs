//! A turn as Server-Sent Events, for both APIs: the native stream (`tool_call`,
//! `tool_result`, `text`, then `done` or `error`: [`StreamEvent`]) and the OpenAI-compatible
//! one (`chat.completion.chunk`s, built in `openai.rs`).
//!
//! **Invariant:** the turn runs in its own task, owned by the response stream: when the
//! client goes away the stream is dropped and the task aborted, so no turn outlives its
//! caller. A keep-alive comment every 15 s keeps proxies from closing a slow turn.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::ApiState;
use super::error::ApiError;
use super::turns::{api_tool_call, outcome_json, run_turn};
use crate::daemon::conversation::{TurnError, TurnEvent, TurnOutcome};
use crate::shared::api::{ErrorBody, StreamEvent, TextEvent, ToolCallEvent, ToolResultEvent};
use crate::shared::domain::UserId;

/// How often an idle stream sends a keep-alive comment.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Aborts the turn's task when the SSE stream is dropped (client gone).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How one API renders a streamed turn.
pub(super) struct Render<P, E, L> {
    /// Sent at once, before the turn's first event.
    pub first: Vec<Event>,
    /// What a turn event becomes (nothing, for an event this API does not show).
    pub progress: P,
    /// The last events, from the turn's result.
    pub end: E,
    /// The last events when the turn's task ended without a result.
    pub lost: L,
}

/// Streams the turn `start` begins (given the sender of its progress events), rendered by
/// `render`.
pub(super) fn sse_turn<T, P, E, L>(
    start: impl FnOnce(mpsc::UnboundedSender<TurnEvent>) -> T,
    render: Render<P, E, L>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>>
where
    T: Future<Output = Result<TurnOutcome, TurnError>> + Send + 'static,
    P: FnMut(TurnEvent) -> Option<Event> + Send + 'static,
    E: FnOnce(Result<TurnOutcome, TurnError>) -> Vec<Event> + Send + 'static,
    L: FnOnce() -> Vec<Event> + Send + 'static,
{
    let Render {
        first,
        mut progress,
        end,
        lost,
    } = render;
    let (events_tx, events_rx) = mpsc::unbounded_channel::<TurnEvent>();
    let (done_tx, done_rx) = oneshot::channel::<Vec<Event>>();
    let turn = start(events_tx);
    let guard = AbortOnDrop(tokio::spawn(async move {
        let _ = done_tx.send(end(turn.await));
    }));
    let progress = UnboundedReceiverStream::new(events_rx)
        .filter_map(move |event| std::future::ready(progress(event)));
    let done = futures::stream::once(async move { done_rx.await.unwrap_or_else(|_| lost()) })
        .map(futures::stream::iter)
        .flatten();
    let stream = futures::stream::iter(first)
        .chain(progress)
        .chain(done)
        .map(move |event| {
            let _keep = &guard;
            Ok(event)
        });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

/// The native API's streamed turn: a [`StreamEvent`] per SSE event.
pub(super) fn stream_turn(
    state: ApiState,
    user: UserId,
    message: String,
    deadline: Instant,
    trace_id: String,
    span: tracing::Span,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    sse_turn(
        move |events| run_turn(state, user, message, deadline, Some(events), span),
        Render {
            first: Vec::new(),
            progress: |event| Some(sse(&progress_event(event))),
            end: move |result: Result<TurnOutcome, TurnError>| {
                let last = match result {
                    Ok(outcome) => StreamEvent::Done(outcome_json(&outcome, &trace_id)),
                    Err(error) => StreamEvent::Error(ApiError::from(error).body()),
                };
                vec![sse(&last)]
            },
            lost: || {
                vec![sse(&StreamEvent::Error(ErrorBody::new(
                    "conversation_failed",
                    "the turn ended without an answer",
                )))]
            },
        },
    )
}

/// A turn's progress as the native stream shows it.
fn progress_event(event: TurnEvent) -> StreamEvent {
    match event {
        TurnEvent::ToolCall {
            id,
            name,
            arguments,
        } => StreamEvent::ToolCall(ToolCallEvent {
            id,
            name,
            arguments,
        }),
        TurnEvent::ToolResult(record) => StreamEvent::ToolResult(ToolResultEvent {
            id: record.id.clone(),
            call: api_tool_call(&record),
        }),
        TurnEvent::Text(text) => StreamEvent::Text(TextEvent { text }),
    }
}

fn sse(event: &StreamEvent) -> Event {
    Event::default().event(event.name()).data(event.data())
}
