//! What the mock's tests share: the mock on port 0 and requests to it.

use memento_loadtest::mock_azure::{MockConfig, MockServer};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

pub const DEPLOYMENT: &str = "gpt-4o-mini";
pub const KEY: &str = "mock-key";

pub fn azure_path() -> String {
    format!("/openai/deployments/{DEPLOYMENT}/chat/completions?api-version=2024-10-21")
}

pub async fn start(adjust: impl FnOnce(&mut MockConfig)) -> MockServer {
    let mut config = MockConfig {
        port: 0,
        deployment: Some(DEPLOYMENT.into()),
        ..MockConfig::default()
    };
    adjust(&mut config);
    MockServer::start(config).await.expect("start the mock")
}

pub fn tools() -> Value {
    let names = [
        "store_memory",
        "retrieve_memories",
        "get_memory",
        "delete_memory",
        "list_tags",
    ];
    Value::Array(
        names
            .iter()
            .map(|name| {
                json!({"type": "function", "function": {
                    "name": name,
                    "description": format!("The {name} tool"),
                    "parameters": {"type": "object", "properties": {}},
                }})
            })
            .collect(),
    )
}

pub fn chat(message: &str) -> Value {
    json!({
        "messages": [
            {"role": "system", "content": "You are Memento."},
            {"role": "user", "content": message},
        ],
        "tools": tools(),
    })
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

pub async fn send(
    http: &reqwest::Client,
    server: &MockServer,
    path: &str,
    auth: Option<(&str, &str)>,
    body: &str,
) -> Reply {
    let mut request = http
        .post(format!("{}{path}", server.endpoint()))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some((name, value)) = auth {
        request = request.header(name, value);
    }
    let response = request.send().await.expect("send");
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    Reply {
        status,
        headers,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    }
}

/// [`send`] with the right `api-key`.
/// [`send`] to the dated Azure path with one `header` (name, value) for the key.
pub async fn send_with(
    http: &reqwest::Client,
    server: &MockServer,
    header: (&str, &str),
    body: &str,
) -> Reply {
    send(http, server, &azure_path(), Some(header), body).await
}

pub async fn keyed(http: &reqwest::Client, server: &MockServer, path: &str, body: &str) -> Reply {
    send(http, server, path, Some(("api-key", KEY)), body).await
}

pub async fn azure(http: &reqwest::Client, server: &MockServer, body: &Value) -> Reply {
    send(
        http,
        server,
        &azure_path(),
        Some(("api-key", KEY)),
        &body.to_string(),
    )
    .await
}

pub fn header(reply: &Reply, name: &str) -> Option<u64> {
    reply
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}
