//! The integrity check: every marker found for its user through the MCP server, never for
//! another user, and every sampled user's history in the order it was sent.

use super::*;

/// The integrity check's outcome.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Integrity {
    /// Memories not checked because their delete turn failed (timeout or error): the
    /// harness cannot know whether the delete happened before the failure.
    #[serde(default)]
    pub uncertain: u64,
    /// Nothing lost, nothing leaked, order kept.
    pub ok: bool,
    /// Memories checked.
    pub checked: u64,
    /// Stored memories not found for their user.
    pub lost: u64,
    /// Memories found for another user.
    pub leaked: u64,
    /// Users whose history order did not match what they sent.
    pub out_of_order: u64,
    /// Why it was not run, when it was not.
    pub skipped: Option<String>,
}

/// Every marker found for its user through the MCP server; never for another user; every
/// sampled user's history in the order it was sent.
pub(crate) async fn check_integrity(
    stack: &Stack,
    logs: &[Mutex<UserLog>],
    http: &reqwest::Client,
    base: &str,
) -> anyhow::Result<Integrity> {
    use rmcp::ServiceExt;
    use rmcp::transport::StreamableHttpClientTransport;
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
    let config = StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", stack.mcp_url))
        .auth_header(stack.mcp_token.clone());
    let client = ()
        .serve(StreamableHttpClientTransport::with_client(
            reqwest::Client::new(),
            config,
        ))
        .await?;
    let peer = client.peer().clone();
    let find = |user: String, marker: String| {
        let peer = peer.clone();
        async move {
            let mut params = rmcp::model::CallToolRequestParams::new(tools::RETRIEVE_MEMORIES);
            params.arguments = json!({"user_id": user, "query": marker, "limit": 5})
                .as_object()
                .cloned();
            let result = peer.call_tool(params).await.ok()?;
            let list: memento::shared::api::memories::MemoryList =
                serde_json::from_value(result.structured_content?).ok()?;
            Some(list.count as u64)
        }
    };
    let mut integrity = Integrity {
        uncertain: logs
            .iter()
            .filter_map(|log| log.lock().ok().map(|l| l.uncertain))
            .sum(),
        ..Integrity::default()
    };
    let users: Vec<(usize, Vec<String>, Vec<String>)> = logs
        .iter()
        .enumerate()
        .filter_map(|(i, log)| {
            log.lock()
                .ok()
                .map(|l| (i, l.markers.clone(), l.sent.clone()))
        })
        .collect();
    // Users are named lt-<run>-<index>; the run id is inside every marker.
    let run_id = users
        .iter()
        .flat_map(|(_, m, _)| m.iter())
        .next()
        .and_then(|m| m.strip_prefix("mk").map(|r| r[..8.min(r.len())].to_owned()));
    let Some(run_id) = run_id else {
        integrity.ok = true;
        integrity.skipped = Some("no memory was stored".into());
        return Ok(integrity);
    };
    let name = |i: usize| format!("lt-{run_id}-{i:05}");
    let count = users.len();
    let jobs: Vec<(String, String, Option<String>)> = users
        .iter()
        .flat_map(|(i, markers, _)| {
            let other = (count > 1).then(|| name((*i + 1) % count));
            markers
                .iter()
                .map(move |m| (name(*i), m.clone(), other.clone()))
        })
        .collect();
    use futures::StreamExt;
    let results: Vec<(Option<u64>, Option<u64>)> = futures::stream::iter(jobs)
        .map(|(own, marker, other)| {
            let find = &find;
            async move {
                let mine = find(own, marker.clone()).await;
                let theirs = match other {
                    Some(other) => find(other, marker).await,
                    None => Some(0),
                };
                (mine, theirs)
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    for (own, other) in results {
        integrity.checked += 1;
        if own.unwrap_or(0) == 0 {
            integrity.lost += 1;
        }
        if other.unwrap_or(0) > 0 {
            integrity.leaked += 1;
        }
    }
    // Per-user order: the history's user messages are what the user sent, in order.
    for (i, _, sent) in users.iter().take(50) {
        if sent.is_empty() {
            continue;
        }
        let mut request = http.get(format!("{base}/v1/users/{}/history", name(*i)));
        if let Some(token) = &stack.service_token {
            request = request.bearer_auth(token);
        }
        let history: memento::shared::api::History = request.send().await?.json().await?;
        let seen: Vec<String> = history
            .messages
            .into_iter()
            .filter(|m| m.role == "user")
            .filter_map(|m| m.content)
            .collect();
        // The history is bounded: compare the tail.
        let tail = &sent[sent.len().saturating_sub(seen.len())..];
        if seen.as_slice() != tail {
            integrity.out_of_order += 1;
        }
    }
    let _ = client.cancel().await;
    integrity.ok = integrity.lost == 0 && integrity.leaked == 0 && integrity.out_of_order == 0;
    Ok(integrity)
}
