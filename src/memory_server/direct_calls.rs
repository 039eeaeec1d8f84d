//! Stateless `tools/call` answered without rmcp's per-request service (issue 12).
//!
//! rmcp serves each stateless MCP 2026-07-28 request by building a whole service for it (a
//! one-shot transport, a spawned serve loop, its channels) and by serialising the request
//! back into a `Value` to check the SEP-2243 headers against it. For the daemon's tool calls,
//! which are all well-formed stateless `tools/call`s, that machinery cost more CPU than the
//! tool itself. This middleware sits in front of rmcp on `/mcp` and answers exactly those
//! requests itself, with the same handler ([`MemoryServer::run_tool_call`]) and the same JSON
//! answer rmcp gives (the tests compare the two byte for byte).
//!
//! A request is answered here only when every check below holds; otherwise it goes to rmcp
//! untouched (the body it already read is handed on), so every error answer, every other
//! method, sessions and older protocol versions stay rmcp's:
//! - `POST` with `Content-Type: application/json` and an `Accept` naming both
//!   `application/json` and `text/event-stream`;
//! - no `Mcp-Session-Id`; `MCP-Protocol-Version: 2026-07-28`, `Mcp-Method: tools/call` and
//!   `Mcp-Name: <the tool>`, each exactly once, and no `Mcp-Param-*` header;
//! - one JSON-RPC 2.0 request (not a batch) whose params hold only `name`, `arguments` (an
//!   object) and `_meta`, the `_meta` carrying the same protocol version and the client's
//!   capabilities (what rmcp requires of a per-request negotiation);
//! - a tool the server has.
//!
//! The guard (token, Host, Origin) and the body limits run before this, as for rmcp.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::model::{
    CallToolResponse, ErrorData, JsonObject, RequestId, ServerJsonRpcMessage, ServerResult,
};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::MemoryServer;

/// The protocol version whose stateless `tools/call` is answered here.
const PROTOCOL_VERSION: &str = "2026-07-28";
const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
const META_CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";

/// The middleware's state.
#[derive(Clone)]
pub(crate) struct DirectCalls {
    server: MemoryServer,
    /// Cancels calls in flight at shutdown (as rmcp's service token does).
    shutdown: CancellationToken,
    /// Calls answered here (`/stats` `direct_tool_calls`).
    answered: Arc<AtomicU64>,
}

impl DirectCalls {
    pub(crate) fn new(server: MemoryServer, shutdown: CancellationToken) -> DirectCalls {
        DirectCalls {
            server,
            shutdown,
            answered: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The counter of calls answered here.
    pub(crate) fn answered(&self) -> Arc<AtomicU64> {
        self.answered.clone()
    }
}

/// A `tools/call` request as this path accepts it (anything else fails to parse and goes to
/// rmcp).
#[derive(Deserialize)]
struct CallRequest<'a> {
    #[serde(borrow)]
    jsonrpc: Cow<'a, str>,
    id: RequestId,
    #[serde(borrow)]
    method: Cow<'a, str>,
    params: CallParams,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CallParams {
    name: String,
    #[serde(default)]
    arguments: Option<JsonObject>,
    #[serde(rename = "_meta")]
    meta: JsonObject,
}

/// The middleware: answers an eligible call, hands everything else to `next` (rmcp).
pub(crate) async fn answer(
    State(state): State<DirectCalls>,
    request: Request,
    next: Next,
) -> Response {
    if !headers_eligible(request.method(), request.headers()) {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    // The body limits middleware already holds the whole body: this only takes it.
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => bytes,
        Err(_) => return StatusCode::BAD_REQUEST.into_response(),
    };
    let Some(call) = eligible_call(&parts.headers, &bytes, &state.server) else {
        return next
            .run(Request::from_parts(parts, Body::from(bytes)))
            .await;
    };
    state.answered.fetch_add(1, Ordering::Relaxed);
    let empty = JsonObject::new();
    let outcome = state
        .server
        .run_tool_call(
            &call.params.name,
            call.params.arguments.unwrap_or_default(),
            Some(&call.params.meta),
            &empty,
            &call.id,
            &state.shutdown,
        )
        .await;
    let (message, status) = match outcome {
        Ok(Some(result)) => (
            ServerJsonRpcMessage::response(
                ServerResult::from(CallToolResponse::Complete(result)),
                call.id,
            ),
            StatusCode::OK,
        ),
        // `eligible_call` checked the name, so only shutdown lands here.
        Ok(None) => (
            ServerJsonRpcMessage::error(
                ErrorData::internal_error("unknown tool", None),
                Some(call.id),
            ),
            StatusCode::INTERNAL_SERVER_ERROR,
        ),
        Err(error) => (
            ServerJsonRpcMessage::error(error, Some(call.id)),
            StatusCode::SERVICE_UNAVAILABLE,
        ),
    };
    match serde_json::to_vec(&message) {
        Ok(body) => (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            Body::from(body),
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// The header checks that need no body: cheap, so everything else passes straight on.
fn headers_eligible(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::POST
        && !headers.contains_key("mcp-session-id")
        && single(headers, "mcp-protocol-version") == Some(PROTOCOL_VERSION)
        && single(headers, "mcp-method") == Some("tools/call")
        && single(headers, "mcp-name").is_some()
        && !headers
            .keys()
            .any(|name| name.as_str().starts_with("mcp-param-"))
        && content_type_is_json(headers)
        && accepts_json_and_sse(headers)
}

/// The request, when the body is one eligible `tools/call` for a tool the server has.
fn eligible_call<'a>(
    headers: &HeaderMap,
    body: &'a [u8],
    server: &MemoryServer,
) -> Option<CallRequest<'a>> {
    let call: CallRequest<'a> = serde_json::from_slice(body).ok()?;
    let meta_version = call.params.meta.get(META_PROTOCOL_VERSION)?.as_str()?;
    let eligible = call.jsonrpc == "2.0"
        && call.method == "tools/call"
        && meta_version == PROTOCOL_VERSION
        && call
            .params
            .meta
            .get(META_CLIENT_CAPABILITIES)
            .is_some_and(serde_json::Value::is_object)
        && single(headers, "mcp-name") == Some(call.params.name.as_str())
        && server.has_tool(&call.params.name);
    eligible.then_some(call)
}

/// The header's value when it is present exactly once and readable.
fn single<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    first.to_str().ok()
}

fn content_type_is_json(headers: &HeaderMap) -> bool {
    single(headers, header::CONTENT_TYPE.as_str())
        .is_some_and(|value| essence(value).eq_ignore_ascii_case("application/json"))
}

/// Both media types named in `Accept` (as rmcp requires of a POST).
fn accepts_json_and_sse(headers: &HeaderMap) -> bool {
    let (mut json, mut sse) = (false, false);
    for value in headers.get_all(header::ACCEPT) {
        let Ok(value) = value.to_str() else {
            return false;
        };
        for item in value.split(',') {
            let item = essence(item);
            json |= item.eq_ignore_ascii_case("application/json");
            sse |= item.eq_ignore_ascii_case("text/event-stream");
        }
    }
    json && sse
}

/// A media type without its parameters.
fn essence(value: &str) -> &str {
    value
        .split_once(';')
        .map_or(value, |(essence, _)| essence)
        .trim()
}

#[cfg(test)]
mod tests;
