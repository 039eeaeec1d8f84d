//! The accept loop both servers use, instead of `axum::serve`, for the limits it lacks.
//!
//! - **Open connections** are capped (`max_connections`); one over the cap gets a short 503
//!   and is closed, so a flood of sockets cannot exhaust file descriptors.
//! - **Header-read timeout**: a connection that has started a request (sent a byte) must
//!   finish its headers within `header_read_timeout`, and a new connection must start one
//!   within it; otherwise it is closed (slowloris).
//! - **Idle keep-alive timeout**: a connection with no request in flight and no byte received
//!   for `keep_alive_timeout` after its last answer is closed.
//! - The body's own deadline is [`super::body`]'s.
//! - Shutdown: stop accepting, ask every connection to finish its current request, and wait
//!   for the connection tasks (they are tracked, none is detached).
//!
//! Each connection has a watchdog, run in the connection's own task: a request in flight
//! (from its headers until its response body ends) is never timed out here.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// The connection limits of one server.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Most open connections.
    pub max_connections: usize,
    /// Time to send a request's headers (and, on a new connection, to start one).
    pub header_read_timeout: Duration,
    /// Idle time allowed between requests on a kept-alive connection.
    pub keep_alive_timeout: Duration,
}

impl ConnectionLimits {
    /// Limits from a server's config section.
    pub fn new(
        max_connections: usize,
        header_read_timeout: Duration,
        keep_alive_timeout: Duration,
    ) -> ConnectionLimits {
        ConnectionLimits {
            max_connections,
            header_read_timeout,
            keep_alive_timeout,
        }
    }
}

/// Counters of the accept loop.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    /// Connections open now.
    pub open: AtomicUsize,
    /// Connections refused at the cap.
    pub refused: AtomicU64,
    /// Connections closed by the header-read or keep-alive timeout.
    pub timed_out: AtomicU64,
}

const NONE: u64 = u64::MAX;

/// What the watchdog knows of one connection.
struct ConnState {
    epoch: Instant,
    /// Requests whose response has not ended.
    in_flight: AtomicUsize,
    /// Milliseconds since `epoch` when the connection last became idle.
    idle_since: AtomicU64,
    /// Milliseconds since `epoch` of the first byte received while idle, or `NONE`.
    first_byte: AtomicU64,
    /// A request has been answered on this connection.
    served: std::sync::atomic::AtomicBool,
}

impl ConnState {
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(NONE - 1)
    }
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then drains its connections.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    stats: Arc<ConnectionStats>,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let tracker = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (socket, peer) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_millis(50)) => continue,
                }
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            tracker.spawn(refuse(socket));
            continue;
        };
        let _ = socket.set_nodelay(true);
        let router = router.clone();
        let stats = stats.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            stats.open.fetch_add(1, Ordering::Relaxed);
            serve_connection(socket, peer, router, limits, &stats, shutdown).await;
            stats.open.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
}

/// One over the cap: a short 503, then close.
async fn refuse(mut socket: TcpStream) {
    const BODY: &str = r#"{"error":{"code":"too_many_connections","message":"too many open connections; retry shortly"}}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: 1\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = socket.write_all(response.as_bytes()).await;
        let _ = socket.shutdown().await;
    })
    .await;
}

async fn serve_connection(
    socket: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: ConnectionLimits,
    stats: &ConnectionStats,
    shutdown: CancellationToken,
) {
    let state = Arc::new(ConnState {
        epoch: Instant::now(),
        in_flight: AtomicUsize::new(0),
        idle_since: AtomicU64::new(0),
        first_byte: AtomicU64::new(NONE),
        served: std::sync::atomic::AtomicBool::new(false),
    });
    let io = TokioIo::new(Watched {
        inner: socket,
        state: state.clone(),
    });
    let service_state = state.clone();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let in_flight = InFlight::begin(service_state.clone());
        let router = router.clone();
        async move {
            let response = match router.oneshot(request.map(Body::new)).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            Ok::<_, Infallible>(response.map(|body| {
                Body::new(Tracked {
                    inner: body,
                    _in_flight: in_flight,
                })
            }))
        }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let tick = (limits.header_read_timeout.min(limits.keep_alive_timeout) / 4)
        .clamp(Duration::from_millis(20), Duration::from_secs(1));
    let header_ms = u64::try_from(limits.header_read_timeout.as_millis()).unwrap_or(NONE - 1);
    let idle_ms = u64::try_from(limits.keep_alive_timeout.as_millis()).unwrap_or(NONE - 1);
    let mut draining = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, %peer, "connection ended with an error");
                }
                return;
            }
            () = shutdown.cancelled(), if !draining => {
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
            () = tokio::time::sleep(tick) => {
                if state.in_flight.load(Ordering::Acquire) > 0 {
                    continue;
                }
                let now = state.now();
                let first_byte = state.first_byte.load(Ordering::Acquire);
                let expired = if first_byte != NONE {
                    now.saturating_sub(first_byte) > header_ms
                } else {
                    let limit = if state.served.load(Ordering::Acquire) { idle_ms } else { header_ms };
                    now.saturating_sub(state.idle_since.load(Ordering::Acquire)) > limit
                };
                if expired {
                    stats.timed_out.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, "connection closed: header-read or keep-alive timeout");
                    return;
                }
            }
        }
    }
}

/// Marks a request in flight until its response body is dropped.
struct InFlight(Arc<ConnState>);

impl InFlight {
    fn begin(state: Arc<ConnState>) -> InFlight {
        state.in_flight.fetch_add(1, Ordering::AcqRel);
        state.first_byte.store(NONE, Ordering::Release);
        InFlight(state)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let state = &self.0;
        state.served.store(true, Ordering::Release);
        state.idle_since.store(state.now(), Ordering::Release);
        state.first_byte.store(NONE, Ordering::Release);
        state.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request in flight until it ends.
struct Tracked {
    inner: Body,
    _in_flight: InFlight,
}

impl http_body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The socket, noting the first byte of each request for the header-read timeout.
struct Watched {
    inner: TcpStream,
    state: Arc<ConnState>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before
            && self.state.in_flight.load(Ordering::Acquire) == 0
            && self.state.first_byte.load(Ordering::Acquire) == NONE
        {
            let now = self.state.now();
            self.state.first_byte.store(now, Ordering::Release);
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
