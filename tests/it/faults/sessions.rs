//! Abandoned MCP sessions: a thousand clients per transport that go away mid-session are
//! freed, and the server's memory comes back.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{self, Transport, eventually, session_counts, spawn_mcp_server_with_env};

// A thousand sessions should cost the server, not the test: these clients write HTTP/1.1 by
// hand on a fresh connection each (`Connection: close`, read to EOF), which takes a fraction
// of the CPU of a full HTTP client in a debug build.

/// How long any one read may take.
const READ_WAIT: Duration = Duration::from_secs(20);

/// Sends one request on its own connection and reads the whole response.
async fn raw_request(addr: &str, method_path: &str, headers: &str, body: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "{method_path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{headers}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    tokio::time::timeout(READ_WAIT, stream.read_to_end(&mut response))
        .await
        .expect("a response in time")
        .expect("read");
    String::from_utf8(response).expect("UTF-8 response")
}

/// The status code of a raw response.
fn status_of(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"))
}

/// A header's value in a raw response (names compared case-insensitively).
fn header_of<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    let head = response.split("\r\n\r\n").next().unwrap_or_default();
    head.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// Opens a Streamable HTTP session (initialize + initialized) and abandons it: no DELETE.
/// False when the idle timeout closed the session before the `initialized` notification
/// arrived (404): a very slow client, still an abandoned session.
async fn abandon_streamable(addr: &str) -> bool {
    let accept = "Accept: application/json, text/event-stream\r\n";
    let initialize = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-03-26", "capabilities": {},
                   "clientInfo": {"name": "abandoner", "version": "0"}}
    });
    let response = raw_request(addr, "POST /mcp", accept, &initialize.to_string()).await;
    assert_eq!(status_of(&response), 200, "{response}");
    assert!(response.contains("memento-memory"), "{response}");
    let session = header_of(&response, "mcp-session-id").expect("mcp-session-id");
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let headers = format!("{accept}Mcp-Session-Id: {session}\r\n");
    let response = raw_request(addr, "POST /mcp", &headers, &initialized.to_string()).await;
    match status_of(&response) {
        202 => true,
        404 => false,
        status => panic!("initialized: status {status}: {response}"),
    }
}

/// Opens a legacy SSE session, initialises it, reads the answer, then drops the stream.
async fn abandon_sse(addr: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET /sse HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut received = Vec::new();
    // Reads until `done` holds for what arrived so far.
    let mut read_until = async |received: &mut Vec<u8>, done: &dyn Fn(&str) -> bool| loop {
        if done(&String::from_utf8_lossy(received)) {
            return;
        }
        let read = tokio::time::timeout(READ_WAIT, stream.read_buf(received))
            .await
            .expect("SSE data in time")
            .expect("read");
        assert!(
            read > 0,
            "SSE stream closed: {}",
            String::from_utf8_lossy(received)
        );
    };
    // Each event goes out as one chunk, so the endpoint line arrives whole.
    const ENDPOINT: &str = "data: /messages?session_id=";
    read_until(&mut received, &|text| {
        text.split_once(ENDPOINT)
            .is_some_and(|(_, rest)| rest.contains('\n'))
    })
    .await;
    let text = String::from_utf8_lossy(&received).into_owned();
    assert_eq!(status_of(&text), 200, "{text}");
    let path = text
        .split_once("data: ")
        .and_then(|(_, rest)| rest.lines().next())
        .expect("endpoint")
        .to_owned();
    let initialize = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2024-11-05", "capabilities": {},
                   "clientInfo": {"name": "abandoner", "version": "0"}}
    });
    let response = raw_request(addr, &format!("POST {path}"), "", &initialize.to_string()).await;
    assert_eq!(status_of(&response), 202, "{response}");
    read_until(&mut received, &|text| text.contains("memento-memory")).await;
    // Dropping the stream here closes the connection without a word.
}

/// Sessions opened at once.
const CONCURRENCY: usize = 50;
/// Most abandoned Streamable HTTP sessions allowed to be live (not yet idle-closed) when
/// another batch starts. It caps the server's heap high-water mark whatever the machine's
/// speed, so the warm-up reaches the same mark as the run (see the RSS bound).
const MAX_LIVE: u64 = 250;

/// `count` sessions of `transport`, `CONCURRENCY` at a time; returns how many were fully
/// initialised. Streamable HTTP batches wait until the server has closed enough idle
/// sessions that at most [`MAX_LIVE`] are live.
async fn abandon_many(
    http: &reqwest::Client,
    base: &str,
    transport: Transport,
    count: usize,
) -> usize {
    let addr = base.trim_start_matches("http://");
    let mut initialised = 0;
    for batch in (0..count).collect::<Vec<_>>().chunks(CONCURRENCY) {
        if transport == Transport::Streamable {
            let room = MAX_LIVE - CONCURRENCY as u64;
            eventually(
                Duration::from_secs(30),
                "abandoned Streamable HTTP sessions closed by the idle timeout",
                || async { session_counts(http, base).await.1 <= room },
            )
            .await;
        }
        let sessions = batch.iter().map(|_| async move {
            match transport {
                Transport::Streamable => abandon_streamable(addr).await,
                Transport::Sse => {
                    abandon_sse(addr).await;
                    true
                }
            }
        });
        initialised += futures::future::join_all(sessions)
            .await
            .into_iter()
            .filter(|ok| *ok)
            .count();
    }
    initialised
}

/// 1,000 Streamable HTTP and 1,000 legacy SSE sessions against a `memento mcp-server`
/// process, each initialised and abandoned without DELETE, as crashed clients leave them
/// (the leak seen in rmcp and the python-sdk). Every one is freed (SSE when its stream
/// drops, Streamable HTTP by the idle timeout, 1 s here), and the process's RSS comes back
/// near its warmed-up baseline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_abandoned_sessions_per_transport_are_freed() {
    const SESSIONS: usize = 1000;
    let data = tempfile::tempdir().expect("tempdir");
    // Short, so that the run is quick although at most `MAX_LIVE` abandoned sessions may be
    // live at a time.
    let server = spawn_mcp_server_with_env(
        data.path(),
        &[
            ("MEMENTO_MCP_SERVER__SESSION_IDLE_TIMEOUT", "1s"),
            ("MEMENTO_MCP_SERVER__INSECURE_NO_TOKEN", "true"),
        ],
    );
    let pid = server.child.id();
    let base = server.url.clone();
    let http = reqwest::Client::new();
    let all_freed = || async { session_counts(&http, &base).await == (0, 0) };

    // Warm-up: allocator arenas, thread stacks, connection buffers and caches grow to their
    // working size, and the heap to the high-water mark of `MAX_LIVE` live sessions; the
    // baseline is measured after that.
    abandon_many(&http, &base, Transport::Streamable, MAX_LIVE as usize).await;
    abandon_many(&http, &base, Transport::Sse, 100).await;
    eventually(Duration::from_secs(30), "warm-up sessions freed", all_freed).await;
    let baseline = support::rss_kib(pid);

    let started = Instant::now();
    let sse = abandon_many(&http, &base, Transport::Sse, SESSIONS).await;
    let streamable = abandon_many(&http, &base, Transport::Streamable, SESSIONS).await;
    let opened = started.elapsed();
    let (sse_live, streamable_live) = session_counts(&http, &base).await;
    let rss_opened = support::rss_kib(pid);
    eventually(
        Duration::from_secs(30),
        "abandoned sessions freed",
        all_freed,
    )
    .await;
    let freed = started.elapsed();
    let after = support::rss_kib(pid);
    eprintln!(
        "abandoned sessions: {sse} sse and {streamable} streamable initialised in {opened:?} \
         ({sse_live} and {streamable_live} still live then), all freed after {freed:?}; RSS \
         baseline {baseline} KiB, when all were opened {rss_opened} KiB, after {after} KiB"
    );
    assert_eq!(sse, SESSIONS);
    // A Streamable HTTP session is closed by the idle timeout if the `initialized`
    // notification comes more than 1 s after the answer to `initialize` (a starved client
    // on a loaded machine): still an abandoned session, but most must get that far.
    assert!(streamable >= SESSIONS / 2, "{streamable} initialised");
    // Bound: baseline + 32 MiB. Freed memory goes back to glibc's arenas, not always to the
    // OS, and their fragmentation grows over the first few thousand sessions before it
    // levels off: measured on a loaded 2-core machine, 8-20 MiB over the warmed-up baseline.
    // A leak is far bigger: a live Streamable HTTP session costs about 50 KiB (500 live ones
    // add ~25 MiB), so 2,000 leaked sessions would add ~100 MiB, and even a third of them
    // leaking would cross the bound.
    let bound = baseline + 32 * 1024;
    assert!(
        after <= bound,
        "RSS {after} KiB after the sessions are gone; baseline {baseline} KiB"
    );
}
