//! The memory server's transports and sessions: the token, Host and Origin checks, bad
//! messages, sessions freed or expired, concurrent and replayed stores.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{
    BOTH, McpFixture, Transport, call, connect, eventually, is_error, retrieve_ids, store, text,
    try_connect,
};

/// A raw SSE session on the server at `base`: its byte stream and a parser for it.
async fn open_raw_sse(
    http: &reqwest::Client,
    base: &str,
) -> (
    impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin + use<>,
    memento::shared::sse::SseParser,
) {
    let response = http.get(format!("{base}/sse")).send().await.expect("open");
    (
        response.bytes_stream(),
        memento::shared::sse::SseParser::new(1 << 20),
    )
}

#[tokio::test]
async fn token_is_checked_on_both_transports() {
    let token = "integration-token-1";
    let fixture = McpFixture::start_with(|c| c.token = Some(token.into())).await;
    for transport in BOTH {
        assert!(
            try_connect(&fixture.url(), transport, None).await.is_err(),
            "{transport:?} without token"
        );
        assert!(
            try_connect(&fixture.url(), transport, Some("wrong-token"))
                .await
                .is_err(),
            "{transport:?} with a wrong token"
        );
        let client = connect(&fixture.url(), transport, Some(token)).await;
        store(&client, "tok", "guarded", "").await;
        client.cancel().await.expect("close");
    }
    // The POST side of SSE is checked too, not just the stream.
    let response = reqwest::Client::new()
        .post(format!("{}/messages?session_id=whatever", fixture.url()))
        .body("{}")
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn host_and_origin_are_validated_on_both_transports() {
    let fixture = McpFixture::start().await;
    let http = reqwest::Client::new();
    let initialize = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-03-26", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}
    });
    for path in ["/mcp", "/sse", "/messages?session_id=x"] {
        let url = format!("{}{path}", fixture.url());
        let get = path == "/sse";
        let request = |host: Option<&str>, origin: Option<&str>| {
            let mut request = if get {
                http.get(&url)
            } else {
                http.post(&url).json(&initialize)
            };
            request = request.header("accept", "application/json, text/event-stream");
            if let Some(host) = host {
                request = request.header("host", host);
            }
            if let Some(origin) = origin {
                request = request.header("origin", origin);
            }
            request.send()
        };
        let rebinding = request(Some("evil.example"), None).await.expect("send");
        assert_eq!(rebinding.status(), 403, "{path} with a foreign Host");
        let cross_site = request(None, Some("https://evil.example"))
            .await
            .expect("send");
        assert_eq!(cross_site.status(), 403, "{path} with a foreign Origin");
        let local = request(None, Some("http://localhost:6274"))
            .await
            .expect("send");
        assert_ne!(local.status(), 403, "{path} with a loopback Origin");
    }
}

#[tokio::test]
async fn bad_messages_do_not_close_the_sse_session() {
    use futures::StreamExt;
    let fixture = McpFixture::start().await;
    let http = reqwest::Client::new();
    for (query, status) in [("", 400), ("?session_id=nope", 404)] {
        let response = http
            .post(format!("{}/messages{query}", fixture.url()))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .expect("post");
        assert_eq!(response.status(), status, "{query}");
    }
    // A raw session: read the endpoint, send garbage, then a real initialize on the same
    // session and see its answer arrive on the stream.
    let (mut body, mut parser) = open_raw_sse(&http, &fixture.url()).await;
    let mut next_event = async || loop {
        if let Some(event) = parser_pending(&mut parser, &mut body).await {
            return event;
        }
    };
    let endpoint = next_event().await;
    assert_eq!(endpoint.event, "endpoint");
    let post_url = format!("{}{}", fixture.url(), endpoint.data);
    for garbage in ["", "not json", "{\"jsonrpc\": \"2.0\"}", "[1,2,3]", "\u{0}"] {
        let response = http
            .post(&post_url)
            .header("content-type", "application/json")
            .body(garbage)
            .send()
            .await
            .expect("post");
        assert_eq!(response.status(), 400, "{garbage:?}");
    }
    let response = post_initialize(&http, &post_url, 7, "raw").await;
    assert_eq!(response.status(), 202);
    let answer = next_event().await;
    assert_eq!(answer.event, "message");
    let answer: Value = serde_json::from_str(&answer.data).expect("json");
    assert_eq!(answer["id"], 7);
    assert_eq!(answer["result"]["serverInfo"]["name"], "memento-memory");
    assert_eq!(fixture.server.sse_sessions(), 1);

    async fn parser_pending(
        parser: &mut memento::shared::sse::SseParser,
        body: &mut (impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    ) -> Option<memento::shared::sse::SseEvent> {
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .expect("event within 10 s")
            .expect("stream open")
            .expect("chunk");
        parser.push(&chunk).expect("parse").into_iter().next()
    }
}

#[tokio::test]
async fn sessions_are_freed_when_clients_go_away() {
    let fixture = McpFixture::start().await;
    let mut clients = Vec::new();
    for _ in 0..20 {
        clients.push(connect(&fixture.url(), Transport::Sse, None).await);
        clients.push(connect(&fixture.url(), Transport::Streamable, None).await);
    }
    assert_eq!(fixture.server.sse_sessions(), 20);
    assert_eq!(fixture.server.streamable_sessions().await, 20);
    for client in clients {
        client.cancel().await.expect("close");
    }
    let server = &fixture.server;
    eventually(Duration::from_secs(10), "sse sessions freed", || async {
        server.sse_sessions() == 0
    })
    .await;
    eventually(
        Duration::from_secs(10),
        "streamable sessions freed",
        || async { server.streamable_sessions().await == 0 },
    )
    .await;
}

#[tokio::test]
async fn abandoned_sse_streams_are_freed() {
    let fixture = McpFixture::start().await;
    // Open raw SSE streams and drop them without a word, as a crashed client would.
    for _ in 0..50 {
        let response = reqwest::get(format!("{}/sse", fixture.url()))
            .await
            .expect("open");
        assert_eq!(response.status(), 200);
        drop(response);
    }
    let server = &fixture.server;
    eventually(
        Duration::from_secs(10),
        "abandoned sse sessions freed",
        || async { server.sse_sessions() == 0 },
    )
    .await;
}

#[tokio::test]
async fn concurrent_stores_over_one_session_all_land() {
    let fixture = McpFixture::start().await;
    let client = connect(&fixture.url(), Transport::Streamable, None).await;
    let peer = client.peer().clone();
    let mut tasks = Vec::new();
    for i in 0..100 {
        let peer = peer.clone();
        tasks.push(tokio::spawn(async move {
            let mut params = rmcp::model::CallToolRequestParams::new("store_memory");
            params.arguments = Some(
                json!({"user_id": "many", "content": format!("note {i}")})
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
            );
            peer.call_tool(params).await
        }));
    }
    for task in tasks {
        let result = task.await.expect("join").expect("call");
        assert!(!is_error(&result));
    }
    let ids = retrieve_ids(&client, json!({"user_id": "many", "limit": 100})).await;
    assert_eq!(ids.len(), 100);
}

#[tokio::test]
async fn replayed_stores_with_an_idempotency_key_store_once() {
    let fixture = McpFixture::start().await;
    for transport in BOTH {
        let client = connect(&fixture.url(), transport, None).await;
        let user = format!("idem-{transport:?}");
        let mut ids = Vec::new();
        for _ in 0..3 {
            let mut params = rmcp::model::CallToolRequestParams::new("store_memory");
            params.arguments = json!({"user_id": user, "content": "exactly once"})
                .as_object()
                .cloned();
            let mut meta = serde_json::Map::new();
            meta.insert(
                memento::shared::domain::IDEMPOTENCY_META_KEY.into(),
                json!("turn-42:call-1"),
            );
            params.meta = Some(rmcp::model::RequestMetaObject::from(meta));
            let result = client.peer().call_tool(params).await.expect("call");
            assert!(!is_error(&result), "{}", text(&result));
            ids.push(result.structured_content.expect("structured")["id"].clone());
        }
        assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
        let stored = retrieve_ids(&client, json!({"user_id": user, "query": "exactly once"})).await;
        assert_eq!(stored.len(), 1);
        client.cancel().await.expect("close");
    }
}

/// Issue 11: a legacy SSE session that was initialised and then went quiet is closed after
/// `session_idle_timeout` (its stream ends), while an active one stays.
#[tokio::test]
async fn idle_initialised_sse_sessions_expire_and_active_ones_stay() {
    use futures::StreamExt;
    let idle_timeout = Duration::from_secs(2);
    let fixture = McpFixture::start_with(|c| {
        c.session_idle_timeout = idle_timeout;
        c.sse_keep_alive = Duration::from_millis(200);
    })
    .await;
    let http = reqwest::Client::new();
    // The idle one: a raw session, initialised, then silent (keep-alives still flow).
    let (mut body, mut parser) = open_raw_sse(&http, &fixture.url()).await;
    let mut events = Vec::new();
    while events.is_empty() {
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .expect("endpoint within 10 s")
            .expect("stream open")
            .expect("chunk");
        events.extend(parser.push(&chunk).expect("parse"));
    }
    let post_url = format!("{}{}", fixture.url(), events[0].data);
    let posted = post_initialize(&http, &post_url, 1, "idle").await;
    assert_eq!(posted.status(), 202);
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    // The session's last activity is at or after this instant (the POST below).
    let last_activity = tokio::time::Instant::now();
    let posted = http
        .post(&post_url)
        .json(&initialized)
        .send()
        .await
        .expect("post");
    assert_eq!(posted.status(), 202);

    // The active one: an rmcp client calling a tool every 100 ms.
    let active = connect(&fixture.url(), Transport::Sse, None).await;
    assert_eq!(fixture.server.sse_sessions(), 2);
    let started = tokio::time::Instant::now();
    let drain = async {
        // The idle stream ends (after its answer and keep-alives) once the session expires.
        loop {
            match tokio::time::timeout(Duration::from_secs(30), body.next()).await {
                Ok(Some(Ok(_))) => continue,
                Ok(_) => return last_activity.elapsed(),
                Err(_) => panic!("the idle SSE stream was not closed within 30 s"),
            }
        }
    };
    let ping = async {
        loop {
            let result = call(&active, "list_tags", json!({"user_id": "busy"})).await;
            assert!(!is_error(&result), "{}", text(&result));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let idle_closed_after = tokio::select! {
        elapsed = drain => elapsed,
        () = ping => unreachable!("the ping loop never ends"),
    };
    assert!(
        idle_closed_after >= idle_timeout,
        "closed {idle_closed_after:?} after its last message, before being idle long enough"
    );
    let server = &fixture.server;
    eventually(Duration::from_secs(10), "idle session removed", || async {
        server.sse_sessions() == 1
    })
    .await;
    // Its id is gone: a POST to it is a 404.
    let late = http
        .post(&post_url)
        .json(&initialized)
        .send()
        .await
        .expect("post");
    assert_eq!(late.status(), 404);
    // The active session outlives the idle timeout, and still works, as long as it is used.
    while started.elapsed() < idle_timeout + Duration::from_secs(1) {
        let result = call(&active, "list_tags", json!({"user_id": "busy"})).await;
        assert!(!is_error(&result), "{}", text(&result));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(fixture.server.sse_sessions(), 1);
}

/// POSTs a legacy-SSE `initialize` request (JSON-RPC id `id`, client `name`) to a session's
/// `post_url`; the response (202 when accepted).
async fn post_initialize(
    http: &reqwest::Client,
    post_url: &str,
    id: u64,
    name: &str,
) -> reqwest::Response {
    let initialize = json!({
        "jsonrpc": "2.0", "id": id, "method": "initialize",
        "params": {"protocolVersion": "2024-11-05", "capabilities": {}, "clientInfo": {"name": name, "version": "0"}}
    });
    http.post(post_url)
        .json(&initialize)
        .send()
        .await
        .expect("post initialize")
}
