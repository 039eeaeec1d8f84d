//! The PostgreSQL memory store end to end (`storage.backend = "postgres"`): real
//! `memento mcp-server` processes and a real daemon on the test PostgreSQL
//! (`MEMENTO_TEST_POSTGRES_URL`, started by tests/run.sh through tests/services/postgres.sh),
//! each test in a schema of its own.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

use testkit::services::postgres_url;

use crate::support::{
    DaemonFixture, Transport, connect, create_schema, eventually, pg_client, retrieve_ids,
    spawn_mcp_server_with_env, store, with_search_path,
};

/// A fresh schema, and the URL whose connections use it (`options=-c search_path=...`),
/// with a password added: the server trusts loopback, and the test checks it never leaks.
async fn schema_url(base: &str, password: &str) -> (String, String) {
    let schema = create_schema(base, "e2e").await;
    let with_password = match base.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((user, host)) if !user.contains(':') => {
                format!("{scheme}://{user}:{password}@{host}")
            }
            _ => base.to_owned(),
        },
        None => base.to_owned(),
    };
    (with_search_path(&with_password, &schema), schema)
}

async fn count_rows(base: &str, schema: &str, user: &str) -> i64 {
    pg_client(base)
        .await
        .query_one(
            &format!("SELECT count(*) FROM {schema}.memories WHERE user_id = $1"),
            &[&user],
        )
        .await
        .expect("count")
        .get(0)
}

async fn drop_schema(base: &str, schema: &str) {
    let client = pg_client(base).await;
    let _ = client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await;
}

/// Two `memento mcp-server` processes on one PostgreSQL: a memory stored through one is
/// found through the other, and neither opens a SQLite file.
#[tokio::test]
async fn two_mcp_servers_share_one_postgres() {
    let Some(base) = postgres_url() else { return };
    let (url, schema) = schema_url(&base, "pw-never-logged").await;
    let env = [
        ("MEMENTO_STORAGE__BACKEND", "postgres"),
        ("MEMENTO_STORAGE__POSTGRES_URL", url.as_str()),
    ];
    let dir_a = tempfile::tempdir().expect("tempdir");
    let dir_b = tempfile::tempdir().expect("tempdir");
    let server_a = spawn_mcp_server_with_env(dir_a.path(), &env);
    let server_b = spawn_mcp_server_with_env(dir_b.path(), &env);
    let client_a = connect(
        &server_a.url,
        Transport::Streamable,
        server_a.token.as_deref(),
    )
    .await;
    let client_b = connect(&server_b.url, Transport::Sse, server_b.token.as_deref()).await;

    let id = store(
        &client_a,
        "alice",
        "the boiler service is booked for March",
        "home",
    )
    .await;
    // Acknowledged means committed: visible at once through the other server.
    let ids = retrieve_ids(&client_b, json!({ "user_id": "alice", "query": "boiler" })).await;
    assert_eq!(ids, vec![id.clone()]);
    let ids = retrieve_ids(&client_b, json!({ "user_id": "bob", "query": "boiler" })).await;
    assert!(ids.is_empty(), "bob sees alice's memory");
    assert_eq!(count_rows(&base, &schema, "alice").await, 1);

    // Replays of one idempotency key through both servers store once.
    let mut ids = Vec::new();
    for client in [&client_a, &client_b, &client_a] {
        let mut params = rmcp::model::CallToolRequestParams::new("store_memory");
        params.arguments = json!({"user_id": "carol", "content": "water the plants"})
            .as_object()
            .cloned();
        let mut meta = serde_json::Map::new();
        meta.insert(
            memento::shared::domain::IDEMPOTENCY_META_KEY.into(),
            json!("turn-7:call-0"),
        );
        params.meta = Some(rmcp::model::RequestMetaObject::from(meta));
        let result = client.peer().call_tool(params).await.expect("call");
        assert!(!crate::support::is_error(&result));
        ids.push(result.structured_content.expect("structured")["id"].clone());
    }
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    assert_eq!(count_rows(&base, &schema, "carol").await, 1);

    for dir in [&dir_a, &dir_b] {
        assert!(
            !dir.path().join("memento.db").exists(),
            "the PostgreSQL backend opened SQLite"
        );
    }
    client_a.cancel().await.ok();
    client_b.cancel().await.ok();
    drop(server_a);
    drop(server_b);
    drop_schema(&base, &schema).await;
}

/// A PostgreSQL that cannot be reached stops `memento mcp-server` at start with a clear
/// error that does not show the password.
#[tokio::test]
async fn an_unreachable_postgres_fails_at_start_without_leaking_the_password() {
    let port = crate::support::free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let output = Command::new(env!("CARGO_BIN_EXE_memento"))
        .args(["mcp-server", "--port", "0", "--data-dir"])
        .arg(dir.path())
        .env("MEMENTO_STORAGE__BACKEND", "postgres")
        .env(
            "MEMENTO_STORAGE__POSTGRES_URL",
            format!("postgresql://memento:s3cret-pw@127.0.0.1:{port}/memento?connect_timeout=2"),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run memento mcp-server");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stderr.contains("PostgreSQL"), "{stderr}");
    assert!(
        !stderr.contains("s3cret-pw") && !stdout.contains("s3cret-pw"),
        "{stderr}"
    );
}

/// `backend = "postgres"` without a URL is a configuration error (exit 64), not a silent
/// fallback to SQLite.
#[tokio::test]
async fn postgres_without_a_url_is_a_usage_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = Command::new(env!("CARGO_BIN_EXE_memento"))
        .args(["mcp-server", "--port", "0", "--data-dir"])
        .arg(dir.path())
        .env("MEMENTO_STORAGE__BACKEND", "postgres")
        .output()
        .expect("run memento mcp-server");
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("storage.postgres_url"), "{stderr}");
}

/// `memento serve` with the embedded memory server stores on PostgreSQL too.
#[tokio::test]
async fn the_daemons_embedded_memory_server_uses_postgres() {
    let Some(base) = postgres_url() else { return };
    let (url, schema) = schema_url(&base, "pw").await;
    let fixture = DaemonFixture::start_with(|config| {
        config.storage.backend = memento::shared::config::StorageBackend::Postgres;
        config.storage.postgres_url = memento::shared::config::SecretUrl::new(url.clone());
    })
    .await;
    fixture
        .turn("dora", "remember that the spare key is under the blue pot")
        .await;
    eventually(Duration::from_secs(10), "the memory in PostgreSQL", || {
        let base = base.clone();
        let schema = schema.clone();
        async move { count_rows(&base, &schema, "dora").await == 1 }
    })
    .await;
    assert!(!fixture.dir.path().join("memento.db").exists());
    fixture.stop().await;
    drop_schema(&base, &schema).await;
}
