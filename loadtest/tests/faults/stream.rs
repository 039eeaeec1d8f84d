//! Streams: reassembling tool calls by index, and a stream cut mid-way.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use testkit::http::send_json;

use super::support::*;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::StreamExt;
use serde_json::{Value, json};
use testkit::eventually;

// --- 1e: streams ---
//
// Memento never asks the LLM for a stream (`WireRequest::stream` is always false in
// src/daemon/llm/), so there is no daemon-side stream to cut. What a streaming client must do
// is checked at the mock level: reassembling tool calls by `index`, a stream that stops
// before `finish_reason` and `[DONE]` is reported as cut, never used as a complete answer.

/// A tool call reassembled from stream deltas.
#[derive(Debug, Default, Clone, PartialEq)]
struct StreamedCall {
    id: String,
    name: String,
    arguments: String,
}

/// Why a stream could not be used.
#[derive(Debug, PartialEq)]
enum StreamError {
    /// The stream ended before `finish_reason` or `[DONE]`; what arrived is kept.
    Cut {
        calls: BTreeMap<u64, StreamedCall>,
        finish_reason: Option<String>,
        done: bool,
    },
    /// A chunk was not JSON or a delta had no `index`.
    Garbled(String),
}

/// Reassembles a chat-completions SSE stream by tool-call `index`.
#[derive(Debug, Default)]
struct Reassembler {
    buffer: String,
    calls: BTreeMap<u64, StreamedCall>,
    finish_reason: Option<String>,
    done: bool,
    argument_fragments: usize,
}

impl Reassembler {
    /// Feeds bytes; returns the complete `data:` payloads seen in them.
    fn feed(&mut self, bytes: &[u8]) -> Result<usize, StreamError> {
        self.buffer.push_str(&String::from_utf8_lossy(bytes));
        let mut events = 0;
        while let Some(end) = self.buffer.find("\n\n") {
            let event: String = self.buffer.drain(..end + 2).collect();
            let Some(data) = event.trim().strip_prefix("data: ") else {
                continue;
            };
            events += 1;
            if data == "[DONE]" {
                self.done = true;
                continue;
            }
            let chunk: Value =
                serde_json::from_str(data).map_err(|e| StreamError::Garbled(e.to_string()))?;
            for choice in chunk["choices"].as_array().into_iter().flatten() {
                for part in choice["delta"]["tool_calls"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    let index = part["index"]
                        .as_u64()
                        .ok_or_else(|| StreamError::Garbled(format!("no index: {part}")))?;
                    let call = self.calls.entry(index).or_default();
                    if let Some(id) = part["id"].as_str() {
                        call.id = id.into();
                    }
                    if let Some(name) = part["function"]["name"].as_str() {
                        call.name = name.into();
                    }
                    if let Some(args) = part["function"]["arguments"].as_str()
                        && !args.is_empty()
                    {
                        call.arguments.push_str(args);
                        self.argument_fragments += 1;
                    }
                }
                if let Some(reason) = choice["finish_reason"].as_str() {
                    self.finish_reason = Some(reason.into());
                }
            }
        }
        Ok(events)
    }

    /// The calls, if the stream was complete.
    fn finish(self) -> Result<Vec<StreamedCall>, StreamError> {
        if self.done && self.finish_reason.is_some() {
            Ok(self.calls.into_values().collect())
        } else {
            Err(StreamError::Cut {
                calls: self.calls,
                finish_reason: self.finish_reason,
                done: self.done,
            })
        }
    }
}

/// A proxy in front of the mock that ends each streamed answer cleanly (a well-formed
/// HTTP response, no transport error) after `keep_fragments` tool-call argument
/// fragments: a stream cut mid-way by an intermediary.
async fn cutting_proxy(upstream: String, keep_fragments: usize) -> SocketAddr {
    #[derive(Clone)]
    struct Proxy {
        upstream: String,
        keep: usize,
        http: reqwest::Client,
    }
    async fn forward(
        State(proxy): State<Proxy>,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
        let mut request = proxy.http.post(format!("{}{uri}", proxy.upstream));
        for name in ["api-key", "content-type", "authorization"] {
            if let Some(value) = headers.get(name) {
                request = request.header(name, value.clone());
            }
        }
        let upstream = match request.body(body).send().await {
            Ok(response) => response,
            Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
        };
        let status = upstream.status().as_u16();
        // Forwards whole events, one at a time, and stops after the `keep`-th fragment.
        struct Cut {
            upstream: futures::stream::BoxStream<'static, reqwest::Result<Bytes>>,
            buffer: String,
            events: std::collections::VecDeque<String>,
            seen: Reassembler,
            keep: usize,
            over: bool,
        }
        let state = Cut {
            upstream: upstream.bytes_stream().boxed(),
            buffer: String::new(),
            events: Default::default(),
            seen: Reassembler::default(),
            keep: proxy.keep,
            over: false,
        };
        let body = futures::stream::unfold(state, |mut cut| async move {
            loop {
                if cut.over {
                    return None;
                }
                if let Some(event) = cut.events.pop_front() {
                    cut.seen.feed(event.as_bytes()).ok()?;
                    cut.over = cut.seen.argument_fragments >= cut.keep;
                    return Some((
                        Ok::<Bytes, std::convert::Infallible>(Bytes::from(event)),
                        cut,
                    ));
                }
                let bytes = cut.upstream.next().await?.ok()?;
                cut.buffer.push_str(&String::from_utf8_lossy(&bytes));
                while let Some(end) = cut.buffer.find("\n\n") {
                    let event: String = cut.buffer.drain(..end + 2).collect();
                    cut.events.push_back(event);
                }
            }
        });
        Response::builder()
            .status(status)
            .header("content-type", "text/event-stream")
            .body(Body::from_stream(body))
            .unwrap_or_else(|e| (StatusCode::BAD_GATEWAY, e.to_string()).into_response())
    }
    let proxy = Proxy {
        upstream,
        keep: keep_fragments,
        http: reqwest::Client::new(),
    };
    let app = Router::new()
        .route("/{*path}", post(forward))
        .with_state(proxy);
    testkit::http::serve(app).await
}

async fn stream_through(http: &reqwest::Client, base: &str, body: &Value) -> Reassembler {
    let response = http
        .post(format!(
            "{base}/openai/deployments/{DEPLOYMENT}/chat/completions?api-version=2024-10-21"
        ))
        .header("api-key", "mock-key")
        .json(body)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let mut reassembler = Reassembler::default();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("a cleanly ended body");
        reassembler.feed(&chunk).expect("well-formed chunks");
    }
    reassembler
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_mid_way_is_detected_when_reassembling_by_index() {
    bounded(async {
        // Chunks spread over time, so the cut comes while the mock is still sending.
        let server = mock(|c| c.latency_per_token_ms = 5.0).await;
        let http = reqwest::Client::new();
        let store = json!({
            "type": "function",
            "function": {
                "name": "store_memory",
                "parameters": {"type": "object", "properties": {"content": {"type": "string"}}},
            },
        });
        let mut request = json!({
            "messages": [{
                "role": "user",
                "content": "remember that the wifi password is hunter2 and the router is \
                            in the hall next to the coat rack",
            }],
            "tools": [store],
        });
        let whole: Value = send_json(
            http.post(format!(
                "{}/openai/deployments/{DEPLOYMENT}/chat/completions?api-version=2024-10-21",
                server.endpoint()
            ))
            .header("api-key", "mock-key")
            .json(&request),
        )
        .await;
        let expected = &whole["choices"][0]["message"]["tool_calls"][0];
        request["stream"] = json!(true);

        // Whole stream: reassembled by index into the same call.
        let complete = stream_through(&http, &server.endpoint(), &request)
            .await
            .finish()
            .expect("a complete stream");
        assert_eq!(complete.len(), 1);
        assert_eq!(complete[0].id, expected["id"].as_str().unwrap_or_default());
        assert_eq!(complete[0].name, "store_memory");
        assert_eq!(
            complete[0].arguments,
            expected["function"]["arguments"]
                .as_str()
                .unwrap_or_default()
        );

        // Cut after two argument fragments: the HTTP response ends cleanly, but there is no
        // finish_reason and no [DONE], and the partial arguments are not JSON.
        let proxy = cutting_proxy(server.endpoint(), 2).await;
        let cut = stream_through(&http, &format!("http://{proxy}"), &request).await;
        assert_eq!(cut.argument_fragments, 2);
        match cut.finish() {
            Err(StreamError::Cut {
                calls,
                finish_reason,
                done,
            }) => {
                assert_eq!((finish_reason, done), (None, false));
                assert_eq!(calls.len(), 1);
                let partial = &calls[&0];
                assert_eq!(partial.name, "store_memory");
                assert!(
                    complete[0].arguments.starts_with(&partial.arguments)
                        && partial.arguments.len() < complete[0].arguments.len(),
                    "{partial:?}"
                );
                assert!(serde_json::from_str::<Value>(&partial.arguments).is_err());
            }
            other => panic!("a cut stream was taken as complete: {other:?}"),
        }
        // The mock saw its second stream abandoned mid-way.
        eventually(Duration::from_secs(5), "the cut stream abandoned", || {
            let stats = server.stats();
            async move { stats.in_flight == 0 && stats.abandoned == 1 }
        })
        .await;
        assert_eq!(server.stats().streamed, 2);
    })
    .await;
}
