//! The HTTP edge both servers share: what every request passes before it reaches a route.
//!
//! - [`guard`]: browser and proxy rules (`Host`, `Origin`, `Forwarded`/`X-Forwarded-For`/
//!   `X-Real-IP` in no-token mode, JSON-only bodies, exact-origin CORS). One policy type, used
//!   by the daemon's API and by the memory MCP server, so the two can never disagree.
//! - [`bearer`]: bearer-token parsing and constant-time comparison over fixed-length digests.
//! - [`body`]: request bodies read under a size limit and a deadline; an oversized body is
//!   drained (within a bound) so the client reads the 413 instead of a connection reset.
//! - [`serve`]: the accept loop: a cap on open connections, a header-read timeout, an idle
//!   keep-alive timeout, graceful shutdown that waits for the connections it tracks.

pub mod bearer;
pub mod body;
pub mod guard;
pub mod serve;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// A JSON error in the shape both servers use: `{"error": {"code", "message"}}`.
pub fn reject(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(serde_json::json!({ "error": { "code": code, "message": message } })),
    )
        .into_response()
}
