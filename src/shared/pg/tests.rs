use super::*;

#[test]
fn redact_hides_passwords_in_every_form() {
    assert_eq!(
        redact("postgresql://memento:s3cret@db.example:5432/memento?sslmode=disable"),
        "postgresql://memento:***@db.example:5432/memento?sslmode=disable"
    );
    assert_eq!(
        redact("postgres://memento@127.0.0.1:5432/memento"),
        "postgres://memento@127.0.0.1:5432/memento"
    );
    assert_eq!(
        redact("postgres://u:p%40ss@h/db?password=other&application_name=x"),
        "postgres://u:***@h/db?password=***&application_name=x"
    );
    assert_eq!(
        redact("host=localhost user=memento password=hunter2 dbname=memento"),
        "host=localhost user=memento password=*** dbname=memento"
    );
    // A password holding '@' and ':'.
    let redacted = redact("postgresql://u:a:b@c@h/db");
    assert!(!redacted.contains("a:b@c"), "{redacted}");
}

#[tokio::test]
async fn a_bad_url_is_an_error_without_its_password() {
    let error = connect(
        "postgresql://u:topsecret@h:notaport/db",
        &PoolOptions::default(),
    )
    .await
    .unwrap_err();
    let text = error.to_string();
    assert!(!text.contains("topsecret"), "{text}");
    assert!(matches!(error, PgError::Url { .. }), "{error:?}");
}

#[test]
fn schema_names_are_plain_identifiers() {
    assert!(valid_identifier("t_abc123"));
    assert!(!valid_identifier("1abc"));
    assert!(!valid_identifier("a;drop"));
    assert!(!valid_identifier("A"));
    assert!(!valid_identifier(""));
}

/// The URL of the test PostgreSQL (tests/services/postgres.sh), or `None` to skip; under
/// `MEMENTO_REQUIRE_SERVICES=1` (tests/run.sh) a missing URL fails the test.
pub(crate) fn test_url() -> Option<String> {
    testkit::services::postgres_url()
}

/// A fresh schema name for one test.
pub(crate) fn test_schema(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

const STEPS: &[Migration] = &[
    Migration {
        version: 1,
        name: "counter",
        sql: "CREATE TABLE counter (n BIGINT NOT NULL); INSERT INTO counter VALUES (0);",
    },
    Migration {
        version: 2,
        name: "bump",
        sql: "UPDATE counter SET n = n + 1;",
    },
];

#[tokio::test]
async fn concurrent_migrations_apply_each_step_once() {
    let Some(url) = test_url() else { return };
    let options = PoolOptions {
        max_connections: 2,
        schema: Some(test_schema("pgmig")),
        ..PoolOptions::default()
    };
    let pool = connect(&url, &options).await.unwrap();
    let mut runs = Vec::new();
    for _ in 0..6 {
        let pool = connect(&url, &options).await.unwrap();
        runs.push(tokio::spawn(
            async move { migrate(&pool, "test", STEPS).await },
        ));
    }
    for run in runs {
        run.await.unwrap().unwrap();
    }
    let client = pool.get().await.unwrap();
    let n: i64 = client
        .query_one("SELECT n FROM counter", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "step 2 ran once");
    let versions: Vec<i64> = client
        .query(
            "SELECT version FROM schema_migrations WHERE component = 'test' ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(versions, vec![1, 2]);

    // A build that knows only step 1 refuses the newer schema.
    let error = migrate(&pool, "test", &STEPS[..1]).await.unwrap_err();
    assert!(
        matches!(
            error,
            PgError::SchemaTooNew {
                found: 2,
                supported: 1,
                ..
            }
        ),
        "{error:?}"
    );
    // Other components are independent.
    migrate(&pool, "other", &[]).await.unwrap();
}
