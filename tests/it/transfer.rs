//! `memento export` / `memento import` through the real binary, and what a server then sees.

use std::path::Path;
use std::process::Command;

use rmcp::model::{ReadResourceRequestParams, ResourceContents};
use serde_json::{Value, json};

use crate::support::{Transport, call, connect, repo_root, spawn_mcp_server, text};

/// Runs `memento ARGS`; returns stdout, panicking with stderr on failure.
fn memento(args: &[&str], data_dir: &Path) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_memento"))
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run memento");
    assert!(
        output.status.success(),
        "memento {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 stdout")
}

/// The JSONL export of a data directory, without ids, sorted.
fn jsonl_without_ids(data_dir: &Path, out: &Path) -> Vec<Value> {
    memento(
        &[
            "export",
            "--format",
            "jsonl",
            "--to",
            out.to_str().expect("path"),
        ],
        data_dir,
    );
    let text = std::fs::read_to_string(out.join("memories.jsonl")).expect("memories.jsonl");
    let mut lines: Vec<Value> = text
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).expect("json line");
            v.as_object_mut().expect("object").remove("id");
            v
        })
        .collect();
    lines.sort_by_key(|v| v.to_string());
    lines
}

#[tokio::test]
async fn the_seed_sample_imports_once_and_round_trips_through_both_formats() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sample = repo_root().join("tests/fixtures/seed-sample");
    let first_store = dir.path().join("first");
    let out = memento(
        &["import", "--from", sample.to_str().expect("path")],
        &first_store,
    );
    assert!(
        out.starts_with("imported 4, already present 0, skipped 1"),
        "{out}"
    );
    assert!(
        out.contains("README.md: neither a user folder nor a .jsonl file"),
        "{out}"
    );
    let again = memento(
        &["import", "--from", sample.to_str().expect("path")],
        &first_store,
    );
    assert!(
        again.starts_with("imported 0, already present 4, skipped 1"),
        "{again}"
    );

    let original = jsonl_without_ids(&first_store, &dir.path().join("export1"));
    assert_eq!(original.len(), 4);
    let dentist = original
        .iter()
        .find(|m| m["filename"] == "dentist.txt")
        .expect("dentist");
    assert_eq!(dentist["user_id"], "bob");
    assert_eq!(dentist["created_at"], "2024-08-01T12:00:00Z");
    assert_eq!(dentist["description"], "Dentist appointment");
    assert_eq!(dentist["tags"], json!(["health", "appointments"]));
    assert_eq!(
        dentist["content"],
        "Dentist on 3 September at 10:30, Dr. Okafor, bring the insurance card."
    );
    let cake = original
        .iter()
        .find(|m| m["filename"] == "recipe.txt")
        .expect("recipe");
    assert_eq!(cake["user_id"], "alice");
    assert_eq!(cake["description"], "");

    // JSONL round trip into an empty store.
    let jsonl_store = dir.path().join("from-jsonl");
    let imported = memento(
        &[
            "import",
            "--from",
            dir.path()
                .join("export1/memories.jsonl")
                .to_str()
                .expect("path"),
        ],
        &jsonl_store,
    );
    assert!(
        imported.starts_with("imported 4, already present 0, skipped 0"),
        "{imported}"
    );
    assert_eq!(
        jsonl_without_ids(&jsonl_store, &dir.path().join("export2")),
        original
    );

    // Seed round trip into an empty store.
    let seed_out = dir.path().join("seed-out");
    memento(
        &["export", "--to", seed_out.to_str().expect("path")],
        &first_store,
    );
    let seed_store = dir.path().join("from-seed");
    let imported = memento(
        &["import", "--from", seed_out.to_str().expect("path")],
        &seed_store,
    );
    assert!(
        imported.starts_with("imported 4, already present 0, skipped 0"),
        "{imported}"
    );
    assert_eq!(
        jsonl_without_ids(&seed_store, &dir.path().join("export3")),
        original
    );

    // A server on the imported store serves the memories, as tools and as resources.
    let server = spawn_mcp_server(&seed_store);
    let client = connect(&server.url, Transport::Streamable, server.token.as_deref()).await;
    let found = call(
        &client,
        "retrieve_memories",
        json!({"user_id": "bob", "query": "dentist"}),
    )
    .await;
    let memories = found.structured_content.clone().expect("structured")["memories"].clone();
    assert_eq!(
        memories[0]["stored_as"],
        "20240801_120000_dentist.txt",
        "{}",
        text(&found)
    );
    let id = memories[0]["id"].as_str().expect("id");
    let read = client
        .peer()
        .read_resource(ReadResourceRequestParams::new(format!(
            "memento://users/bob/memories/{id}"
        )))
        .await
        .expect("read");
    match &read.contents[0] {
        ResourceContents::TextResourceContents { text, .. } => {
            assert!(text.starts_with("Dentist on 3 September"), "{text}")
        }
        other => panic!("unexpected {other:?}"),
    }
}

/// The HTTP import/export of a user's own memories: JSONL in, JSONL out, idempotent,
/// authorised like every user route, size-limited.
#[tokio::test]
async fn http_import_and_export_round_trip_for_the_tokens_own_user() {
    let fixture = crate::support::DaemonFixture::start_with(|config| {
        config
            .auth
            .user_tokens
            .insert("alice".into(), "alice-secret-token".into());
    })
    .await;
    let http = &fixture.http;
    let url = |user: &str, what: &str| format!("{}/v1/users/{user}/memories/{what}", fixture.url);
    let body = [
        json!({"user_id": "someone-else", "filename": "recipe.txt", "description": "Cake",
               "tags": ["cooking"], "created_at": "2024-07-16T09:15:00.123456Z",
               "content": "Lemon cake: 200 g flour"}),
        json!({"user_id": "x", "filename": "plan.txt", "created_at": "2024-07-15T14:30:52Z",
               "content": "Q4 plan\nsecond line"}),
    ]
    .iter()
    .map(Value::to_string)
    .chain(["not json".to_owned(), String::new()])
    .chain([json!({"filename": "empty.txt", "user_id": "x", "created_at": "2024-07-15T14:30:52Z", "content": "  "}).to_string()])
    .collect::<Vec<_>>()
    .join("\n");

    let import = |token: &'static str, user: &'static str, body: String| {
        http.post(url(user, "import"))
            .bearer_auth(token)
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
    };
    let response = import("alice-secret-token", "alice", body.clone())
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let summary: Value = response.json().await.expect("json");
    assert_eq!(summary["imported"], 2, "{summary}");
    assert_eq!(summary["already_present"], 0);
    let skipped = summary["skipped"].as_array().expect("skipped");
    assert_eq!(skipped.len(), 2, "{summary}");
    assert_eq!(skipped[0]["line"], 3);
    assert_eq!(skipped[1]["line"], 5);
    assert!(
        skipped[1]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("content is empty"))
    );

    let again: Value = import("alice-secret-token", "alice", body.clone())
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(
        (again["imported"].clone(), again["already_present"].clone()),
        (json!(0), json!(2))
    );

    // Alice's token cannot act for bob, in either direction.
    let denied = import("alice-secret-token", "bob", body.clone())
        .await
        .expect("send");
    assert_eq!(denied.status(), 403);
    let denied = http
        .get(url("bob", "export"))
        .bearer_auth("alice-secret-token")
        .send()
        .await
        .expect("send");
    assert_eq!(denied.status(), 403);
    let anonymous = http.get(url("alice", "export")).send().await.expect("send");
    assert_eq!(anonymous.status(), 401);

    let exported = http
        .get(url("alice", "export?format=jsonl"))
        .bearer_auth("alice-secret-token")
        .send()
        .await
        .expect("send");
    assert_eq!(exported.status(), 200);
    let text = exported.text().await.expect("body");
    let mut lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    lines.sort_by_key(|l| l["filename"].to_string());
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0]["filename"], "plan.txt");
    assert_eq!(lines[0]["content"], "Q4 plan\nsecond line");
    assert_eq!(lines[0]["created_at"], "2024-07-15T14:30:52Z");
    assert_eq!(lines[0]["user_id"], "alice");
    assert_eq!(lines[1]["created_at"], "2024-07-16T09:15:00.123456Z");
    assert_eq!(lines[1]["tags"], json!(["cooking"]));
    assert_eq!(lines[1]["description"], "Cake");

    let seed = http
        .get(url("alice", "export?format=seed"))
        .bearer_auth("alice-secret-token")
        .send()
        .await
        .expect("send");
    assert_eq!(seed.status(), 400);

    // Above the API's usual body limit (256 KiB), within the import's.
    let big =
        json!({"user_id": "alice", "filename": "big.txt", "created_at": "2024-01-01T00:00:00Z",
                     "content": "y".repeat(300 * 1024)})
        .to_string();
    let response = import("alice-secret-token", "alice", big)
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let summary: Value = response.json().await.expect("json");
    assert_eq!(summary["imported"], 1, "{summary}");

    let huge = "x".repeat(memento::daemon::http::transfer::MAX_IMPORT_BYTES + 1);
    let too_large = import("alice-secret-token", "alice", huge)
        .await
        .expect("send");
    assert_eq!(too_large.status(), 413);
}
