//! PostgreSQL plumbing shared by every PostgreSQL-backed part (the memory store, and the
//! daemon's histories): a connection pool from a URL, and a versioned migration runner.
//!
//! The API is three items:
//!
//! - [`connect`] builds a [`Pool`] (deadpool-postgres over tokio-postgres, plain TCP) from a
//!   `postgresql://` URL or a `key=value` connection string, optionally with every
//!   connection's `search_path` set to one schema (tests give each test its own schema).
//! - [`migrate`] brings one component's tables up to date: the [`Migration`]s of a component
//!   (`"memories"`, `"histories"`, ...) are applied in version order, each in its own
//!   transaction, recorded in the `schema_migrations` table. Every transaction first takes
//!   `pg_advisory_xact_lock`, so N daemons starting at once apply each step exactly once
//!   (the others wait, then see it recorded and skip it).
//! - [`redact`] turns a URL into text safe to log (the password replaced by `***`). A URL
//!   may carry a password: nothing here logs or returns it.

use std::time::Duration;

pub use deadpool_postgres::Pool;
use deadpool_postgres::{Manager, ManagerConfig, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

/// A PostgreSQL failure. Messages never contain the URL's password.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The URL could not be parsed (the message shows it with its password redacted).
    #[error("invalid PostgreSQL URL {url}: {message}")]
    Url {
        /// The URL, redacted.
        url: String,
        /// Why.
        message: String,
    },
    /// The pool could not be built.
    #[error("cannot build the PostgreSQL pool: {0}")]
    Pool(String),
    /// No connection could be had from the pool (server down, pool exhausted).
    #[error("cannot get a PostgreSQL connection: {0}")]
    Connect(String),
    /// A statement failed.
    #[error("PostgreSQL error: {}", describe(.0))]
    Db(#[from] tokio_postgres::Error),
    /// The database was migrated by a newer Memento.
    #[error(
        "PostgreSQL schema of {component} is at version {found}, newer than this build \
         supports ({supported})"
    )]
    SchemaTooNew {
        /// The component (`schema_migrations.component`).
        component: String,
        /// Version found in the database.
        found: i64,
        /// Newest version this build knows.
        supported: i64,
    },
}

impl From<deadpool_postgres::PoolError> for PgError {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        match error {
            deadpool_postgres::PoolError::Backend(error) => PgError::Db(error),
            other => PgError::Connect(other.to_string()),
        }
    }
}

/// tokio-postgres's error with the server's message (its `Display` alone says "db error").
pub fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => db.to_string(),
        None => match std::error::Error::source(error) {
            Some(source) => format!("{error}: {source}"),
            None => error.to_string(),
        },
    }
}

/// One schema step of a component. Versions start at 1 and grow by 1; never edit a released
/// step: append a new one.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Its version (1, 2, ...).
    pub version: i64,
    /// A short name, recorded with it.
    pub name: &'static str,
    /// The SQL, one or more statements, run in one transaction.
    pub sql: &'static str,
}

/// Pool settings.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// Most connections.
    pub max_connections: usize,
    /// Every connection's `search_path` (created when missing by [`connect`]); `None`
    /// keeps the server's (normally `public`).
    pub schema: Option<String>,
    /// How long a caller waits for a free connection, and for a new one to open.
    pub timeout: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            max_connections: 16,
            schema: None,
            timeout: Duration::from_secs(10),
        }
    }
}

/// Builds a pool for `url` and checks it by opening one connection (so a wrong URL or a
/// server that is down fails at start, not at the first call).
pub async fn connect(url: &str, options: &PoolOptions) -> Result<Pool, PgError> {
    let mut config: tokio_postgres::Config = url.parse().map_err(|e| PgError::Url {
        url: redact(url),
        message: format!("{e}"),
    })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(options.timeout);
    }
    if let Some(schema) = &options.schema {
        if !valid_identifier(schema) {
            return Err(PgError::Url {
                url: redact(url),
                message: format!("invalid schema name {schema:?} (letters, digits, _)"),
            });
        }
        // Create it with a plain connection first: the pool's connections use it at once.
        let (client, connection) = config.connect(NoTls).await?;
        let task = tokio::spawn(connection);
        let created = client
            .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
            .await;
        drop(client);
        let _ = task.await;
        if let Err(error) = created {
            // Two pools creating the same schema at once: the loser sees a duplicate.
            if error.code() != Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
                return Err(error.into());
            }
        }
        config.options(format!("-c search_path={schema}"));
    }
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(options.max_connections.max(1))
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(options.timeout))
        .create_timeout(Some(options.timeout))
        .build()
        .map_err(|e| PgError::Pool(e.to_string()))?;
    drop(pool.get().await?);
    Ok(pool)
}

/// True for a plain lower-case SQL identifier (what [`PoolOptions::schema`] accepts).
fn valid_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit()
}

/// The `pg_advisory_xact_lock` key of the migration runner ("memento" in ASCII).
const MIGRATION_LOCK: i64 = 0x6d656d656e746f;

/// Applies `component`'s pending migrations in version order, each in one transaction under
/// the advisory lock, and records them in `schema_migrations`. Safe to run from N processes
/// at once. Fails with [`PgError::SchemaTooNew`] when the database knows a later version of
/// the component than `migrations` does.
pub async fn migrate(
    pool: &Pool,
    component: &str,
    migrations: &[Migration],
) -> Result<(), PgError> {
    let supported = migrations.iter().map(|m| m.version).max().unwrap_or(0);
    let mut client = pool.get().await?;
    {
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        // Under the lock: concurrent CREATE TABLE IF NOT EXISTS can otherwise collide.
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                component TEXT NOT NULL,
                version BIGINT NOT NULL,
                name TEXT NOT NULL,
                applied_at TIMESTAMPTZ NOT NULL DEFAULT now(),
                PRIMARY KEY (component, version)
            )",
        )
        .await?;
        let found: Option<i64> = tx
            .query_one(
                "SELECT max(version) FROM schema_migrations WHERE component = $1",
                &[&component],
            )
            .await?
            .get(0);
        tx.commit().await?;
        if let Some(found) = found
            && found > supported
        {
            return Err(PgError::SchemaTooNew {
                component: component.to_owned(),
                found,
                supported,
            });
        }
    }
    let mut ordered: Vec<&Migration> = migrations.iter().collect();
    ordered.sort_by_key(|m| m.version);
    for migration in ordered {
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        let done = tx
            .query_opt(
                "SELECT 1 FROM schema_migrations WHERE component = $1 AND version = $2",
                &[&component, &migration.version],
            )
            .await?
            .is_some();
        if done {
            tx.commit().await?;
            continue;
        }
        tx.batch_execute(migration.sql).await?;
        tx.execute(
            "INSERT INTO schema_migrations (component, version, name) VALUES ($1, $2, $3)",
            &[&component, &migration.version, &migration.name],
        )
        .await?;
        tx.commit().await?;
        tracing::info!(
            component,
            version = migration.version,
            name = migration.name,
            "PostgreSQL schema migrated"
        );
    }
    Ok(())
}

/// `url` with its password replaced by `***`, for logs and error messages. Handles
/// `postgresql://user:password@host/db` URLs (and `password=` in their query) and
/// `key=value` connection strings.
pub fn redact(url: &str) -> String {
    let mut out = match url.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
            let (authority, tail) = rest.split_at(authority_end);
            let authority = match authority.rsplit_once('@') {
                Some((userinfo, host)) => match userinfo.split_once(':') {
                    Some((user, _password)) => format!("{user}:***@{host}"),
                    None => format!("{userinfo}@{host}"),
                },
                None => authority.to_owned(),
            };
            format!("{scheme}://{authority}{tail}")
        }
        None => url.to_owned(),
    };
    // `password=...` as a query parameter or a key=value pair.
    let mut search_from = 0;
    while let Some(found) = out[search_from..].find("password=") {
        let start = search_from + found + "password=".len();
        let end = out[start..]
            .find(['&', ' '])
            .map_or(out.len(), |offset| start + offset);
        out.replace_range(start..end, "***");
        search_from = start + 3;
    }
    out
}

#[cfg(test)]
pub(crate) mod tests;
