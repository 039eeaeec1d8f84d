//! The legacy HTTP+SSE client transport (MCP 2024-11-05), as an rmcp [`Transport`].
//!
//! `connect` opens `GET <url>` as an event stream and waits for the server's `endpoint`
//! event, which names the URL to POST messages to (resolved against the SSE URL, and required
//! to stay on the same origin so a server cannot redirect our messages elsewhere). A reader
//! task turns each `message` event into a JSON-RPC message; when the stream ends,
//! [`Transport::receive`] returns `None` and rmcp ends the session.

use std::borrow::Cow;
use std::time::Duration;

use futures::StreamExt;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{Client, Url};
use rmcp::RoleClient;
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use rmcp::transport::Transport;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::shared::sse::SseParser;

/// Largest event accepted from the server.
pub const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;
/// Messages buffered from the server before the reader waits.
const CHANNEL_CAPACITY: usize = 256;

/// Why the transport failed.
#[derive(Debug, thiserror::Error)]
pub enum SseClientError {
    /// The URL is not usable.
    #[error("invalid MCP SSE URL {0}")]
    Url(String),
    /// HTTP failed.
    #[error("MCP SSE request failed: {0}")]
    Http(#[from] reqwest::Error),
    /// The server answered with an error status.
    #[error("MCP SSE server answered {status}: {body}")]
    Status {
        /// HTTP status.
        status: u16,
        /// First part of the body.
        body: String,
    },
    /// The server broke the protocol.
    #[error("MCP SSE protocol error: {0}")]
    Protocol(String),
    /// The stream is closed.
    #[error("MCP SSE stream closed")]
    Closed,
}

/// A connected legacy SSE session.
pub struct SseClientTransport {
    http: Client,
    endpoint: Url,
    headers: HeaderMap,
    incoming: mpsc::Receiver<ServerJsonRpcMessage>,
    reader: JoinHandle<()>,
}

impl SseClientTransport {
    /// The session id the server put in its `endpoint` URL, if any.
    pub fn session_id(&self) -> Option<&str> {
        self.endpoint.query()?.split('&').find_map(|pair| {
            pair.strip_prefix("session_id=")
                .or_else(|| pair.strip_prefix("sessionId="))
        })
    }
}

impl Drop for SseClientTransport {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Opens the SSE stream at `url` and waits (at most `timeout`) for the `endpoint` event.
pub async fn connect(
    http: Client,
    url: &str,
    token: Option<&str>,
    timeout: Duration,
) -> Result<SseClientTransport, SseClientError> {
    let sse_url = Url::parse(url).map_err(|_| SseClientError::Url(url.to_owned()))?;
    let mut headers = HeaderMap::new();
    if let Some(token) = token {
        let value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| SseClientError::Protocol("token is not a valid header value".into()))?;
        headers.insert(AUTHORIZATION, value);
    }
    let response = tokio::time::timeout(
        timeout,
        http.get(sse_url.clone())
            .headers(headers.clone())
            .header(ACCEPT, "text/event-stream")
            .send(),
    )
    .await
    .map_err(|_| SseClientError::Protocol("timed out connecting".into()))??;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        return Err(SseClientError::Status {
            status: status.as_u16(),
            body: body.chars().take(200).collect(),
        });
    }
    let mut bytes = response.bytes_stream();
    let mut parser = SseParser::new(MAX_EVENT_BYTES);
    let mut early = Vec::new();
    let endpoint = tokio::time::timeout(timeout, async {
        while let Some(chunk) = bytes.next().await {
            for event in parser
                .push(&chunk?)
                .map_err(|e| SseClientError::Protocol(e.to_string()))?
            {
                if event.event == "endpoint" {
                    return Ok(event.data);
                }
                early.push(event);
            }
        }
        Err(SseClientError::Closed)
    })
    .await
    .map_err(|_| SseClientError::Protocol("no endpoint event from the server".into()))??;
    let endpoint = sse_url
        .join(endpoint.trim())
        .map_err(|_| SseClientError::Protocol(format!("bad endpoint {endpoint:?}")))?;
    if endpoint.origin() != sse_url.origin() {
        return Err(SseClientError::Protocol(format!(
            "endpoint {endpoint} is not on the SSE server's origin"
        )));
    }

    let (tx, incoming) = mpsc::channel(CHANNEL_CAPACITY);
    let reader = tokio::spawn(async move {
        for event in early {
            deliver(&tx, &event.event, &event.data).await;
        }
        while let Some(chunk) = bytes.next().await {
            let Ok(chunk) = chunk else { break };
            match parser.push(&chunk) {
                Ok(events) => {
                    for event in events {
                        if !deliver(&tx, &event.event, &event.data).await {
                            return;
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "dropping MCP SSE stream");
                    break;
                }
            }
        }
        tracing::debug!("MCP SSE stream ended");
    });
    Ok(SseClientTransport {
        http,
        endpoint,
        headers,
        incoming,
        reader,
    })
}

/// Forwards one `message` event; false when the transport is gone.
async fn deliver(tx: &mpsc::Sender<ServerJsonRpcMessage>, event: &str, data: &str) -> bool {
    if event != "message" {
        return true;
    }
    match serde_json::from_str::<ServerJsonRpcMessage>(data) {
        Ok(message) => tx.send(message).await.is_ok(),
        Err(error) => {
            tracing::warn!(%error, "ignoring an MCP SSE message that is not JSON-RPC");
            true
        }
    }
}

impl Transport<RoleClient> for SseClientTransport {
    type Error = SseClientError;

    fn name() -> Cow<'static, str> {
        Cow::Borrowed("legacy-sse")
    }

    fn send(
        &mut self,
        item: ClientJsonRpcMessage,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        let request = self
            .http
            .post(self.endpoint.clone())
            .headers(self.headers.clone())
            .header(CONTENT_TYPE, "application/json")
            .json(&item);
        async move {
            let response = request.send().await?;
            let status = response.status();
            if status.is_success() {
                Ok(())
            } else {
                let body = response.text().await.unwrap_or_default();
                Err(SseClientError::Status {
                    status: status.as_u16(),
                    body: body.chars().take(200).collect(),
                })
            }
        }
    }

    fn receive(&mut self) -> impl Future<Output = Option<ServerJsonRpcMessage>> + Send {
        self.incoming.recv()
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        self.reader.abort();
        self.incoming.close();
        Ok(())
    }
}
