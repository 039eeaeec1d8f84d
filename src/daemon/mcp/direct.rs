//! Tool calls as one plain JSON-RPC POST each, answered with `application/json`.
//!
//! MCP 2026-07-28 serves a request statelessly when its `_meta` carries the protocol version
//! and the client's capabilities (SEP-2567/2575), and the Streamable HTTP transport lets the
//! server answer a POST with one JSON body instead of an SSE stream. This caller
//! - builds the URL, the bearer token, `MCP-Protocol-Version` and the `_meta` lifecycle keys
//!   once, per session;
//! - writes the request body once (no intermediate `Value`), adding only `Mcp-Name` per call
//!   (SEP-2243 standard headers);
//! - parses the JSON answer straight into a [`ToolOutput`] (text blocks, structured content,
//!   `isError`), ignoring the content kinds the daemon does not use;
//! - still reads an SSE answer when a server streams anyway (any MCP server must keep working
//!   with `--mcp-url`): it takes the response event with the request's id and skips the
//!   notifications before it.
//!
//! The session the actor holds (rmcp client: `initialize`, `tools/list`,
//! `notifications/tools/list_changed`) stays; [`DirectCaller::probe`] decides at connect
//! whether the server serves stateless requests, and the calls fall back to the session
//! when it does not.

use std::sync::atomic::{AtomicU64, Ordering};

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use rmcp::model::JsonObject;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ToolOutput;
use crate::shared::sse::SseParser;

/// The MCP revision whose requests are served statelessly.
pub const PROTOCOL_VERSION: &str = "2026-07-28";
/// The largest answer read (JSON body or SSE stream up to the response).
const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

const MCP_PROTOCOL_VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");
const MCP_METHOD: HeaderName = HeaderName::from_static("mcp-method");
const MCP_NAME: HeaderName = HeaderName::from_static("mcp-name");

/// How the server answered a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerFormat {
    /// One `application/json` body.
    Json,
    /// An SSE stream holding the response event.
    EventStream,
}

/// Why a direct call failed.
#[derive(Debug, thiserror::Error)]
pub enum DirectError {
    /// No answer (connection refused or broken, unexpected status, unreadable body): the
    /// server or the connection is in trouble.
    #[error("{0}")]
    Transport(String),
    /// The server answered with a JSON-RPC error.
    #[error("{0}")]
    Rejected(String),
}

/// Sends tool calls as stateless JSON-RPC POSTs to one Streamable HTTP endpoint.
pub struct DirectCaller {
    http: reqwest::Client,
    url: reqwest::Url,
    /// Content type, accept, protocol version, `Mcp-Method: tools/call`, token.
    headers: HeaderMap,
    /// The lifecycle keys of `_meta` (protocol version, capabilities, client info).
    lifecycle: JsonObject,
    next_id: AtomicU64,
}

impl DirectCaller {
    /// A caller for `url` (the `/mcp` endpoint), sending `token` as a bearer token.
    pub fn new(
        http: reqwest::Client,
        url: &str,
        token: Option<&str>,
    ) -> Result<DirectCaller, DirectError> {
        let url = reqwest::Url::parse(url)
            .map_err(|e| DirectError::Transport(format!("bad MCP URL {url:?}: {e}")))?;
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(
            ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream"),
        );
        headers.insert(
            MCP_PROTOCOL_VERSION,
            HeaderValue::from_static(PROTOCOL_VERSION),
        );
        headers.insert(MCP_METHOD, HeaderValue::from_static("tools/call"));
        if let Some(token) = token {
            let mut value = HeaderValue::try_from(format!("Bearer {token}")).map_err(|_| {
                DirectError::Transport("the MCP token is not a valid header".into())
            })?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let mut lifecycle = JsonObject::new();
        lifecycle.insert(
            "io.modelcontextprotocol/protocolVersion".into(),
            Value::String(PROTOCOL_VERSION.into()),
        );
        lifecycle.insert(
            "io.modelcontextprotocol/clientCapabilities".into(),
            Value::Object(JsonObject::new()),
        );
        lifecycle.insert(
            "io.modelcontextprotocol/clientInfo".into(),
            serde_json::json!({ "name": "memento", "version": env!("CARGO_PKG_VERSION") }),
        );
        Ok(DirectCaller {
            http,
            url,
            headers,
            lifecycle,
            next_id: AtomicU64::new(1),
        })
    }

    /// True when the server serves a stateless `tools/list` (so it speaks 2026-07-28); the
    /// answer may be JSON or an event stream.
    pub async fn probe(&self) -> Result<(), DirectError> {
        let mut headers = self.headers.clone();
        headers.insert(MCP_METHOD, HeaderValue::from_static("tools/list"));
        let params = Params {
            name: None,
            arguments: None,
            meta: Meta {
                lifecycle: &self.lifecycle,
                extra: &JsonObject::new(),
            },
        };
        self.post::<IgnoredAny>("tools/list", headers, &params)
            .await
            .map(|_| ())
    }

    /// Calls tool `name` with `arguments`; `meta` (idempotency key, trace context) goes into
    /// `_meta` beside the lifecycle keys.
    pub async fn call_tool(
        &self,
        name: &str,
        arguments: &JsonObject,
        meta: &JsonObject,
        structured: super::Structured,
    ) -> Result<(ToolOutput, AnswerFormat), DirectError> {
        let mut headers = self.headers.clone();
        headers.insert(MCP_NAME, header_name_value(name)?);
        let params = Params {
            name: Some(name),
            arguments: Some(arguments),
            meta: Meta {
                lifecycle: &self.lifecycle,
                extra: meta,
            },
        };
        let (result, format) = match structured {
            super::Structured::Keep => {
                self.post::<CallResult<Value>>("tools/call", headers, &params)
                    .await?
            }
            // Skipped by the parser: no tree of the memories is built.
            super::Structured::Skip => {
                let (result, format) = self
                    .post::<CallResult<IgnoredAny>>("tools/call", headers, &params)
                    .await?;
                (result.without_structured(), format)
            }
        };
        let text = super::joined_text(result.content.iter().filter_map(|b| b.text.as_deref()));
        Ok((
            ToolOutput {
                text,
                structured: result.structured_content,
                is_error: result.is_error == Some(true),
            },
            format,
        ))
    }

    async fn post<T: DeserializeOwned>(
        &self,
        method: &'static str,
        headers: HeaderMap,
        params: &Params<'_>,
    ) -> Result<(T, AnswerFormat), DirectError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = serde_json::to_vec(&Request {
            jsonrpc: "2.0",
            id,
            method,
            params,
        })
        .map_err(|e| DirectError::Transport(format!("cannot write the request: {e}")))?;
        let mut response = self
            .http
            .post(self.url.clone())
            .headers(headers)
            .body(body)
            .send()
            .await
            .map_err(|e| DirectError::Transport(format!("no answer: {}", error_chain(&e))))?;
        let status = response.status();
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        if status.is_success() && content_type.starts_with("text/event-stream") {
            let envelope = read_event_stream::<T>(&mut response, id).await?;
            return envelope
                .into_result()
                .map(|r| (r, AnswerFormat::EventStream));
        }
        let body = read_limited(&mut response).await?;
        if content_type.starts_with("application/json")
            && let Ok(envelope) = serde_json::from_slice::<Envelope<T>>(&body)
            && (envelope.result.is_some() || envelope.error.is_some())
        {
            // A JSON-RPC error may come with 200 or with a 4xx (e.g. bad params).
            return envelope.into_result().map(|r| (r, AnswerFormat::Json));
        }
        let preview = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        Err(DirectError::Transport(format!(
            "HTTP {status} ({content_type}): {preview}"
        )))
    }
}

/// True when `name` can go in the `Mcp-Name` header as is (plain visible ASCII, no
/// surrounding blanks, not the Base64 sentinel). Other names are called over the session.
pub fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with([' ', '\t'])
        && !name.ends_with([' ', '\t'])
        && name.bytes().all(|b| (0x20..=0x7e).contains(&b))
        && !name.starts_with("=?base64?")
}

fn header_name_value(name: &str) -> Result<HeaderValue, DirectError> {
    if !plain_name(name) {
        return Err(DirectError::Rejected(format!(
            "tool name {name:?} cannot be sent in a header"
        )));
    }
    HeaderValue::try_from(name).map_err(|_| {
        DirectError::Rejected(format!("tool name {name:?} cannot be sent in a header"))
    })
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

async fn read_limited(response: &mut reqwest::Response) -> Result<Vec<u8>, DirectError> {
    let mut body = Vec::with_capacity(
        response
            .content_length()
            .map_or(1024, |n| n as usize)
            .min(MAX_ANSWER_BYTES),
    );
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| DirectError::Transport(format!("answer broken: {}", error_chain(&e))))?
    {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(DirectError::Transport(format!(
                "answer larger than {MAX_ANSWER_BYTES} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Reads SSE events until the response to request `id` (skipping notifications, priming
/// events and other messages).
async fn read_event_stream<T: DeserializeOwned>(
    response: &mut reqwest::Response,
    id: u64,
) -> Result<Envelope<T>, DirectError> {
    let mut parser = SseParser::new(MAX_ANSWER_BYTES);
    loop {
        let Some(chunk) = response.chunk().await.map_err(|e| {
            DirectError::Transport(format!("event stream broken: {}", error_chain(&e)))
        })?
        else {
            return Err(DirectError::Transport(
                "the event stream ended without an answer".into(),
            ));
        };
        let events = parser
            .push(&chunk)
            .map_err(|e| DirectError::Transport(format!("bad event stream: {e}")))?;
        for event in events {
            if event.data.is_empty() || !(event.event.is_empty() || event.event == "message") {
                continue;
            }
            if let Ok(envelope) = serde_json::from_str::<Envelope<T>>(&event.data)
                && envelope.id.as_ref().and_then(Value::as_u64) == Some(id)
                && (envelope.result.is_some() || envelope.error.is_some())
            {
                return Ok(envelope);
            }
        }
    }
}

#[derive(Serialize)]
struct Request<'a> {
    jsonrpc: &'static str,
    id: u64,
    method: &'static str,
    params: &'a Params<'a>,
}

#[derive(Serialize)]
struct Params<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    arguments: Option<&'a JsonObject>,
    #[serde(rename = "_meta")]
    meta: Meta<'a>,
}

#[derive(Serialize)]
struct Meta<'a> {
    #[serde(flatten)]
    lifecycle: &'a JsonObject,
    #[serde(flatten)]
    extra: &'a JsonObject,
}

#[derive(Deserialize)]
struct Envelope<T> {
    #[serde(default)]
    id: Option<Value>,
    #[serde(default = "none")]
    result: Option<T>,
    #[serde(default)]
    error: Option<RpcError>,
}

fn none<T>() -> Option<T> {
    None
}

impl<T> Envelope<T> {
    fn into_result(self) -> Result<T, DirectError> {
        match (self.result, self.error) {
            (Some(result), _) => Ok(result),
            (None, Some(error)) => Err(DirectError::Rejected(error.message)),
            (None, None) => Err(DirectError::Transport(
                "a JSON-RPC answer with neither result nor error".into(),
            )),
        }
    }
}

#[derive(Deserialize)]
struct RpcError {
    message: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CallResult<S> {
    #[serde(default)]
    content: Vec<Block>,
    #[serde(default = "none")]
    structured_content: Option<S>,
    #[serde(default)]
    is_error: Option<bool>,
}

impl CallResult<IgnoredAny> {
    fn without_structured(self) -> CallResult<Value> {
        CallResult {
            content: self.content,
            structured_content: None,
            is_error: self.is_error,
        }
    }
}

/// A content block; only text blocks have a top-level `text`.
#[derive(Deserialize)]
struct Block {
    #[serde(default)]
    text: Option<String>,
}

#[cfg(test)]
mod tests;
