//! The legacy HTTP+SSE transport (MCP 2024-11-05), which the seed's Python client uses.
//!
//! rmcp 3 removed its SSE server, so this adapter feeds each SSE session into rmcp's generic
//! (sink, stream) transport:
//!
//! - `GET /sse` opens a session: a fresh random id, a channel pair, and an rmcp service
//!   task. The first event is `endpoint` with the URL to POST to; every server message
//!   follows as a `message` event.
//! - `POST /messages?session_id=ID` (also `/messages/`, and `sessionId=` as the TypeScript
//!   SDK sends) delivers one client message to that session and answers 202.
//! - When the SSE stream closes (client gone) or the service ends, the session's state is
//!   removed and its service cancelled: nothing outlives the stream.
//! - A session is closed after `session_idle_timeout` without activity (a message delivered
//!   by POST, or one sent on the stream; keep-alive comments do not count): before
//!   initialisation, and after it too, so an abandoned but still-connected client cannot
//!   hold a session forever.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use dashmap::DashMap;
use futures::{Stream, StreamExt, stream};
use rmcp::ServiceExt;
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::{CancellationToken, PollSender};

use super::MemoryServer;

/// Messages buffered per session in each direction.
const CHANNEL_CAPACITY: usize = 64;
/// How long a POST may wait for room in a busy session's queue before 503.
const POST_WAIT: Duration = Duration::from_secs(10);

/// Live SSE sessions: id -> the sender that feeds the session's rmcp service, and its
/// activity clock.
#[derive(Clone, Default)]
pub struct SseSessions(Arc<DashMap<String, SessionEntry>>);

/// A live session: the sender feeding its service, and when it was last active.
type SessionEntry = (mpsc::Sender<ClientJsonRpcMessage>, Arc<Activity>);

/// When a session last did something.
struct Activity {
    start: tokio::time::Instant,
    /// Milliseconds from `start` to the last activity.
    last: std::sync::atomic::AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: tokio::time::Instant::now(),
            last: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last
            .fetch_max(now, std::sync::atomic::Ordering::Relaxed);
    }

    /// How long the session has been idle.
    fn idle(&self) -> Duration {
        let last = Duration::from_millis(self.last.load(std::sync::atomic::Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

impl SseSessions {
    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when no session is live.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What the handlers share.
pub(crate) struct SseState {
    pub(crate) server: MemoryServer,
    pub(crate) sessions: SseSessions,
    pub(crate) shutdown: CancellationToken,
    pub(crate) keep_alive: Duration,
    /// A session that has not initialised within this time, or that is idle this long
    /// afterwards, is closed.
    pub(crate) idle_timeout: Duration,
    /// Each session's service task, waited for by the server's shutdown.
    pub(crate) tasks: tokio_util::task::TaskTracker,
}

/// `/sse` and `/messages`.
pub(crate) fn router(state: SseState, max_body: usize) -> Router {
    Router::new()
        .route("/sse", get(open))
        .route("/messages", post(deliver))
        .route("/messages/", post(deliver))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(Arc::new(state))
}

/// Removes the session and stops its service when the SSE stream is dropped.
struct SessionGuard {
    id: String,
    sessions: SseSessions,
    ct: CancellationToken,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.sessions.0.remove(&self.id);
        self.ct.cancel();
    }
}

async fn open(
    State(state): State<Arc<SseState>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (to_server_tx, to_server_rx) = mpsc::channel::<ClientJsonRpcMessage>(CHANNEL_CAPACITY);
    let (from_server_tx, from_server_rx) = mpsc::channel::<ServerJsonRpcMessage>(CHANNEL_CAPACITY);
    let activity = Arc::new(Activity::new());
    state
        .sessions
        .0
        .insert(id.clone(), (to_server_tx, activity.clone()));
    let ct = state.shutdown.child_token();

    let server = state.server.for_session();
    let service_ct = ct.clone();
    let idle_timeout = state.idle_timeout;
    let session_id = id.clone();
    let watched = activity.clone();
    state.tasks.spawn(async move {
        let transport = (
            PollSender::new(from_server_tx),
            ReceiverStream::new(to_server_rx),
        );
        let serving = server.serve_with_ct(transport, service_ct.clone());
        tokio::select! {
            started = tokio::time::timeout(idle_timeout, serving) => match started {
                Ok(Ok(running)) => {
                    tracing::debug!(session = %session_id, "sse session initialised");
                    let waiting = running.waiting();
                    tokio::pin!(waiting);
                    loop {
                        let idle = watched.idle();
                        if idle >= idle_timeout {
                            tracing::debug!(session = %session_id, ?idle, "sse session idle; closing it");
                            break;
                        }
                        tokio::select! {
                            _ = &mut waiting => break,
                            () = tokio::time::sleep(idle_timeout - idle) => {}
                        }
                    }
                }
                Ok(Err(error)) => tracing::debug!(session = %session_id, %error, "sse session ended before initialisation"),
                Err(_) => tracing::debug!(session = %session_id, "sse session never initialised"),
            },
            () = service_ct.cancelled() => {}
        }
        // However the service ended, end the stream too.
        service_ct.cancel();
    });

    let guard = SessionGuard {
        id: id.clone(),
        sessions: state.sessions.clone(),
        ct: ct.clone(),
    };
    let endpoint = Event::default()
        .event("endpoint")
        .data(format!("/messages?session_id={id}"));
    let messages = ReceiverStream::new(from_server_rx).map(move |message| {
        activity.touch();
        let data = serde_json::to_string(&message).unwrap_or_else(|error| {
            // Serialising rmcp's own message types cannot fail; keep the stream alive anyway.
            tracing::error!(%error, "cannot serialise an MCP message");
            String::from("{}")
        });
        Event::default().event("message").data(data)
    });
    let events = stream::once(async move { endpoint })
        .chain(messages)
        .take_until(ct.cancelled_owned())
        .map(move |event| {
            let _keep = &guard;
            Ok(event)
        });
    Sse::new(events).keep_alive(KeepAlive::new().interval(state.keep_alive))
}

#[derive(Debug, Deserialize)]
struct SessionParams {
    session_id: Option<String>,
    #[serde(rename = "sessionId")]
    session_id_camel: Option<String>,
}

async fn deliver(
    State(state): State<Arc<SseState>>,
    Query(params): Query<SessionParams>,
    body: Bytes,
) -> Response {
    let Some(id) = params.session_id.or(params.session_id_camel) else {
        return error(
            StatusCode::BAD_REQUEST,
            "missing_session",
            "missing session_id query parameter",
        );
    };
    let Some((sender, activity)) = state.sessions.0.get(&id).map(|s| s.clone()) else {
        return error(
            StatusCode::NOT_FOUND,
            "unknown_session",
            "unknown or closed session: open a new one with GET /sse",
        );
    };
    let message: ClientJsonRpcMessage = match serde_json::from_slice(&body) {
        Ok(message) => message,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_message",
                &format!("not a JSON-RPC message: {e}"),
            );
        }
    };
    activity.touch();
    match tokio::time::timeout(POST_WAIT, sender.send(message)).await {
        Ok(Ok(())) => (StatusCode::ACCEPTED, "Accepted").into_response(),
        Ok(Err(_)) => error(StatusCode::NOT_FOUND, "unknown_session", "session closed"),
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "session_busy",
            "session queue full; retry later",
        ),
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({ "error": { "code": code, "message": message } })),
    )
        .into_response()
}
