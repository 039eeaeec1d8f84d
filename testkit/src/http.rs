//! One way for tests to speak JSON over HTTP and to serve a small axum app: the request and
//! reply chains that every test used to spell out (send, status, read the JSON) live here.

use std::net::SocketAddr;

use serde_json::Value;

/// Sends `request` and reads its JSON reply. Panics (naming the URL) when it cannot be sent
/// or the reply is not JSON.
pub async fn send_json(request: reqwest::RequestBuilder) -> Value {
    let response = request.send().await.unwrap_or_else(|e| panic!("send: {e}"));
    let url = response.url().clone();
    response
        .json()
        .await
        .unwrap_or_else(|e| panic!("{url}: the reply is not JSON: {e}"))
}

/// `GET url`: the JSON body (see [`send_json`]).
pub async fn get_json(http: &reqwest::Client, url: &str) -> Value {
    send_json(http.get(url)).await
}

/// `GET url`: the text body. Panics (naming the URL) when the request fails.
pub async fn get_text(http: &reqwest::Client, url: &str) -> String {
    let response = http
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    response
        .text()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: the body is not text: {e}"))
}

/// `POST url` with a JSON body: the status and the JSON reply (`Null` when the reply is not
/// JSON). Panics when the request cannot be sent.
pub async fn post_json(http: &reqwest::Client, url: &str, body: &Value) -> (u16, Value) {
    let response = http
        .post(url)
        .json(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// One turn at a daemon's API: `POST {base}/v1/users/{user}/messages`; the status and the
/// JSON reply (`Null` when it is not JSON).
pub async fn post_message(
    http: &reqwest::Client,
    base: &str,
    user: &str,
    message: &str,
) -> (u16, Value) {
    let url = format!("{base}/v1/users/{user}/messages");
    post_json(http, &url, &serde_json::json!({ "message": message })).await
}

/// Serves `app` on loopback port 0 in a background task (it runs until the runtime stops);
/// returns the bound address.
pub async fn serve(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("bound address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}
