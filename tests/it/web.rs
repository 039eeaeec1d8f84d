//! The web page's side of the daemon: the memory endpoints (`/v1/users/{u}/memories`, `/tags`),
//! the sign-in helpers (`/v1/auth/mode`, `/v1/auth/whoami`) and the page itself at `/` with
//! its security headers. A real daemon on 127.0.0.1:0, real HTTP; memories are stored the way
//! a person stores them, through turns.

use serde_json::Value;

use crate::support::{DaemonFixture, tool_names};

/// `GET`s `path` with an optional bearer token; returns (status, JSON body).
async fn get(fixture: &DaemonFixture, path: &str, token: Option<&str>) -> (u16, Value) {
    send(fixture, reqwest::Method::GET, path, token).await
}

async fn send(
    fixture: &DaemonFixture,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
) -> (u16, Value) {
    let mut request = fixture
        .http
        .request(method, format!("{}{path}", fixture.url));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("send");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Stores `note` through a turn and returns the new memory's id.
async fn store(fixture: &DaemonFixture, user: &str, note: &str) -> String {
    let body = fixture.turn(user, &format!("Remember this: {note}")).await;
    assert_eq!(tool_names(&body), ["store_memory"], "{body}");
    let (status, list) = get(fixture, &format!("/v1/users/{user}/memories?limit=1"), None).await;
    assert_eq!(status, 200, "{list}");
    list["memories"][0]["id"]
        .as_str()
        .expect("the newest memory's id")
        .to_owned()
}

fn previews(list: &Value) -> Vec<String> {
    list["memories"]
        .as_array()
        .expect("memories")
        .iter()
        .map(|m| m["preview"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memories_are_listed_searched_filtered_read_and_deleted_over_http() {
    let fixture = DaemonFixture::start().await;
    let bike = store(&fixture, "alice", "my bike lock code is 4711").await;
    let milk = store(&fixture, "alice", "buy oat milk and coffee on Friday").await;

    // The list: the tool's structured content, newest first.
    let (status, list) = get(&fixture, "/v1/users/alice/memories", None).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["count"], 2);
    assert_eq!(list["memories"][0]["id"], milk.as_str());
    assert_eq!(list["memories"][1]["id"], bike.as_str());

    // Search, paging.
    let (_, found) = get(&fixture, "/v1/users/alice/memories?query=bike+lock", None).await;
    assert_eq!(previews(&found), ["my bike lock code is 4711"]);
    let (_, second) = get(&fixture, "/v1/users/alice/memories?limit=1&offset=1", None).await;
    assert_eq!(second["memories"][0]["id"], bike.as_str());

    // Tags, and the filter by one the bike note alone has.
    let (status, tags) = get(&fixture, "/v1/users/alice/tags", None).await;
    assert_eq!(status, 200, "{tags}");
    let (_, one) = get(&fixture, &format!("/v1/users/alice/memories/{bike}"), None).await;
    let (_, other) = get(&fixture, &format!("/v1/users/alice/memories/{milk}"), None).await;
    let own_tag = one["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .find(|t| !other["tags"].as_array().expect("tags").contains(t))
        .and_then(Value::as_str)
        .expect("the bike note has a tag of its own")
        .to_owned();
    let listed_tags: Vec<&str> = tags["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .filter_map(|t| t["tag"].as_str())
        .collect();
    assert!(listed_tags.contains(&own_tag.as_str()), "{tags}");
    let (_, filtered) = get(
        &fixture,
        &format!("/v1/users/alice/memories?tags={own_tag}"),
        None,
    )
    .await;
    assert_eq!(previews(&filtered), ["my bike lock code is 4711"]);

    // One memory, whole.
    assert_eq!(one["id"], bike.as_str());
    assert_eq!(one["content"], "my bike lock code is 4711");

    // Another user sees none of it, not even by id.
    let (status, bobs) = get(&fixture, "/v1/users/bob/memories", None).await;
    assert_eq!((status, bobs["count"].clone()), (200, Value::from(0)));
    let (status, body) = get(&fixture, &format!("/v1/users/bob/memories/{bike}"), None).await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = send(
        &fixture,
        reqwest::Method::DELETE,
        &format!("/v1/users/bob/memories/{bike}"),
        None,
    )
    .await;
    assert_eq!(status, 404);

    // Delete: then it is gone (404 on read and on a second delete), the other one stays.
    let (status, deleted) = send(
        &fixture,
        reqwest::Method::DELETE,
        &format!("/v1/users/alice/memories/{bike}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted["deleted"], true);
    assert_eq!(deleted["id"], bike.as_str());
    let (status, body) = get(&fixture, &format!("/v1/users/alice/memories/{bike}"), None).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "not_found");
    let (status, _) = send(
        &fixture,
        reqwest::Method::DELETE,
        &format!("/v1/users/alice/memories/{bike}"),
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (_, list) = get(&fixture, "/v1/users/alice/memories", None).await;
    assert_eq!(previews(&list), ["buy oat milk and coffee on Friday"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_memory_requests_are_400s_before_any_tool_call() {
    let fixture = DaemonFixture::start().await;
    let calls_before = fixture.daemon().mcp().metrics().calls.get();
    for (path, code) in [
        ("/v1/users/alice/memories/not-an-id", "invalid_memory_id"),
        (
            "/v1/users/alice/memories/..%2F..%2Fetc",
            "invalid_memory_id",
        ),
        ("/v1/users/alice/memories?limit=0", "invalid_query"),
        ("/v1/users/alice/memories?limit=101", "invalid_query"),
        ("/v1/users/alice/memories?offset=-1", "invalid_query"),
        ("/v1/users/alice/memories?q=bike", "invalid_query"),
        ("/v1/users/alice/memories?since=yesterday", "invalid_query"),
        ("/v1/users/.alice/memories", "invalid_user_id"),
        ("/v1/users/.alice/tags", "invalid_user_id"),
    ] {
        let (status, body) = get(&fixture, path, None).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"]["code"], code, "{path}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    assert_eq!(
        fixture.daemon().mcp().metrics().calls.get(),
        calls_before,
        "no tool was called for a bad request"
    );
    // A well-formed id nobody has is a 404, not a 400.
    let (status, body) = get(
        &fixture,
        "/v1/users/alice/memories/0190a0b0-0000-7000-8000-000000000000",
        None,
    )
    .await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_endpoints_and_sign_in_follow_the_tokens() {
    let fixture = DaemonFixture::start_with(|config| {
        config
            .auth
            .user_tokens
            .insert("alice".into(), "alice-token-0123456789".into());
        config
            .auth
            .user_tokens
            .insert("bob".into(), "bob-token-0123456789".into());
        config
            .auth
            .service_tokens
            .push("service-token-0123456789".into());
    })
    .await;

    let (status, mode) = get(&fixture, "/v1/auth/mode", None).await;
    assert_eq!((status, mode["mode"].as_str()), (200, Some("token")));
    let (status, who) = get(&fixture, "/v1/auth/whoami", Some("alice-token-0123456789")).await;
    assert_eq!(status, 200);
    assert_eq!(who["caller"], "user");
    assert_eq!(who["user_id"], "alice");
    let (_, who) = get(
        &fixture,
        "/v1/auth/whoami",
        Some("service-token-0123456789"),
    )
    .await;
    assert_eq!(who["caller"], "service");
    assert_eq!(get(&fixture, "/v1/auth/whoami", None).await.0, 401);
    assert_eq!(get(&fixture, "/v1/auth/whoami", Some("nope")).await.0, 401);

    for path in ["/v1/users/alice/memories", "/v1/users/alice/tags"] {
        assert_eq!(get(&fixture, path, None).await.0, 401, "{path}");
        assert_eq!(
            get(&fixture, path, Some("bob-token-0123456789")).await.0,
            403,
            "{path}"
        );
        assert_eq!(
            get(&fixture, path, Some("alice-token-0123456789")).await.0,
            200,
            "{path}"
        );
        assert_eq!(
            get(&fixture, path, Some("service-token-0123456789"))
                .await
                .0,
            200,
            "{path}"
        );
    }
    let id = "0190a0b0-0000-7000-8000-000000000000";
    let (status, _) = send(
        &fixture,
        reqwest::Method::DELETE,
        &format!("/v1/users/alice/memories/{id}"),
        Some("bob-token-0123456789"),
    )
    .await;
    assert_eq!(status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_served_with_strict_security_headers() {
    let fixture = DaemonFixture::start().await;
    let (status, mode) = get(&fixture, "/v1/auth/mode", None).await;
    assert_eq!((status, mode["mode"].as_str()), (200, Some("loopback")));
    let (_, who) = get(&fixture, "/v1/auth/whoami", None).await;
    assert_eq!(who["caller"], "local");

    let mut scripts = Vec::new();
    for (path, content_type) in [
        ("/", "text/html; charset=utf-8"),
        ("/assets/app.js", "text/javascript; charset=utf-8"),
        ("/assets/app.css", "text/css; charset=utf-8"),
        ("/assets/icon.svg", "image/svg+xml"),
    ] {
        let response = fixture
            .http
            .get(format!("{}{path}", fixture.url))
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), 200, "{path}");
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert_eq!(header("content-type"), content_type, "{path}");
        let csp = header("content-security-policy");
        for directive in [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
            "object-src 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp:?} lacks {directive}");
        }
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(header("x-frame-options"), "DENY", "{path}");
        scripts.push(response.text().await.expect("body"));
    }
    let html = &scripts[0];
    assert!(html.contains(r#"<script src="/assets/app.js" defer></script>"#));
    // Nothing the CSP would block: no inline script, style or event handler, and nothing
    // from another origin.
    assert_eq!(html.matches("<script").count(), 1, "one script, by src");
    assert!(!html.contains("<style") && !html.contains(" style="));
    assert!(!html.contains(" onclick=") && !html.contains(" onload="));
    for body in &scripts {
        let body = body.replace(r#"xmlns="http://www.w3.org/2000/svg""#, "");
        assert!(!body.contains("http://") && !body.contains("https://"));
    }

    let (status, body) = get(&fixture, "/assets/../Cargo.toml", None).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = get(&fixture, "/assets/nope.js", None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
}
