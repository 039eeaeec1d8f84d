//! Request bodies read whole, under a size limit and a deadline, before any handler runs.
//!
//! - A body declared larger than the limit (`Content-Length`) is refused before it is read;
//!   a chunked body is refused when it crosses the limit.
//! - Either way the rest of the body is read and dropped, up to [`DRAIN_LIMIT`] bytes and
//!   within the deadline, and the answer is a JSON 413 with `Connection: close`: a client
//!   still sending when the server closes gets a connection reset instead of the answer.
//! - A body that does not arrive within the deadline (a slow client) gets 408.
//!
//! Requests without a body pass through untouched, so streams (`GET /sse`) are unaffected.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use bytes::BytesMut;
use futures::StreamExt;

use super::reject;

/// Most bytes of an oversized body read and dropped before answering 413.
pub const DRAIN_LIMIT: usize = 32 * 1024 * 1024;

/// Limits of one router's request bodies.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// Largest body accepted, in bytes.
    pub max_bytes: usize,
    /// Longest time to receive the whole body.
    pub timeout: Duration,
    /// The config key that sets `max_bytes`, named in the 413 message.
    pub key: &'static str,
}

enum Read {
    Whole(bytes::Bytes),
    TooLarge,
    Failed,
}

/// The middleware: buffers the body under `limits`, or answers 408/413/400.
pub async fn bounded(State(limits): State<BodyLimits>, request: Request, next: Next) -> Response {
    if !has_body(request.headers()) {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let declared = declared_length(&parts.headers);
    let deadline = tokio::time::Instant::now() + limits.timeout;
    let mut stream = body.into_data_stream();
    let outcome = if declared.is_some_and(|n| n > limits.max_bytes) {
        Some(Read::TooLarge)
    } else {
        let read = async {
            let mut buffer = BytesMut::with_capacity(declared.unwrap_or(0).min(limits.max_bytes));
            while let Some(chunk) = stream.next().await {
                let Ok(chunk) = chunk else {
                    return Read::Failed;
                };
                if buffer.len() + chunk.len() > limits.max_bytes {
                    return Read::TooLarge;
                }
                buffer.extend_from_slice(&chunk);
            }
            Read::Whole(buffer.freeze())
        };
        tokio::time::timeout_at(deadline, read).await.ok()
    };
    match outcome {
        Some(Read::Whole(bytes)) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Some(Read::TooLarge) => {
            // Read and drop the rest (bounded), so the client is not reset mid-send.
            let drain = async {
                let mut drained = 0usize;
                while drained < DRAIN_LIMIT {
                    match stream.next().await {
                        Some(Ok(chunk)) => drained += chunk.len(),
                        _ => break,
                    }
                }
            };
            let _ = tokio::time::timeout_at(deadline, drain).await;
            closing(reject(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                &format!(
                    "request body is larger than {} bytes (the limit is {})",
                    limits.max_bytes, limits.key
                ),
            ))
        }
        Some(Read::Failed) => closing(reject(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "the request body could not be read",
        )),
        None => closing(reject(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            &format!(
                "the request body did not arrive within {}",
                humantime::format_duration(limits.timeout)
            ),
        )),
    }
}

fn closing(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

fn declared_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || declared_length(headers).is_some_and(|n| n > 0)
}
