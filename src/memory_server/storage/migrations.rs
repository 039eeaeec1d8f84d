//! Versioned schema migrations, tracked in `PRAGMA user_version`.
//!
//! Each entry of [`MIGRATIONS`] moves the schema from version `i` to `i + 1` and runs in one
//! transaction with the version bump, so a crash mid-migration leaves the old version intact.
//! Never edit a released migration: append a new one.

use rusqlite::Connection;

use super::StorageError;

/// One schema step: SQL, or Rust for steps that need the engine's own code (reindexing).
enum Migration {
    Sql(&'static str),
    Rust(fn(&Connection) -> Result<(), StorageError>),
}

/// Migration `i` upgrades from version `i` to `i + 1`.
const MIGRATIONS: &[Migration] = &[
    // 1: memories, their tags, and the full-text index.
    Migration::Sql(
        "CREATE TABLE memories (
        rowid INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        user_id TEXT NOT NULL,
        filename TEXT NOT NULL,
        stored_as TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        tags TEXT NOT NULL DEFAULT '',
        content TEXT NOT NULL,
        size_bytes INTEGER NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE INDEX memories_by_user_time ON memories (user_id, created_at);
    CREATE TABLE memory_tags (
        user_id TEXT NOT NULL,
        tag TEXT NOT NULL,
        memory_rowid INTEGER NOT NULL REFERENCES memories (rowid) ON DELETE CASCADE,
        PRIMARY KEY (user_id, tag, memory_rowid)
    ) WITHOUT ROWID;
    CREATE INDEX memory_tags_by_memory ON memory_tags (memory_rowid);
    CREATE VIRTUAL TABLE memories_fts USING fts5 (
        content, description, filename, tags, owner,
        content = '', contentless_delete = 1,
        tokenize = 'porter unicode61 remove_diacritics 2'
    );",
    ),
    // 2: idempotency keys of stores (exactly-once across retries and replays).
    Migration::Sql(
        "CREATE TABLE idempotency (
        user_id TEXT NOT NULL,
        key TEXT NOT NULL,
        result TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (user_id, key)
    ) WITHOUT ROWID;
    CREATE INDEX idempotency_by_time ON idempotency (created_at);",
    ),
    // 3: tenant-scoped full-text tokens: a number per user, and the index rebuilt with
    // `u<number>q<word>` tokens (no more `owner` column).
    Migration::Rust(|conn| {
        conn.execute_batch(
            "CREATE TABLE users (user_no INTEGER PRIMARY KEY, user_id TEXT NOT NULL UNIQUE);
             DROP TABLE memories_fts;",
        )?;
        conn.execute_batch(super::fts::FTS_TABLE)?;
        super::reindex_all(conn)
    }),
    // 4: the SHA-256 of a store's canonical arguments kept with its idempotency key, so a
    // key reused for other arguments is refused instead of replayed. '' for older keys.
    Migration::Sql("ALTER TABLE idempotency ADD COLUMN arguments TEXT NOT NULL DEFAULT '';"),
    // 5: words split with the tokenizer's own character classes (issue 11: no text may plant
    // a token in another user's scope): the index is rebuilt with the new split.
    Migration::Rust(|conn| {
        conn.execute_batch("INSERT INTO memories_fts (memories_fts) VALUES ('delete-all');")?;
        super::reindex_all(conn)
    }),
    // 6: a vector per memory (issue 15, search by meaning): little-endian f32s, the owner
    // beside it for per-user scans, the model that made it (reindexing replaces other
    // models' vectors). Memories stored before it get theirs from `memento reindex
    // --embeddings`.
    Migration::Sql(
        "CREATE TABLE memory_vectors (
        memory_rowid INTEGER PRIMARY KEY REFERENCES memories (rowid) ON DELETE CASCADE,
        user_id TEXT NOT NULL,
        model TEXT NOT NULL,
        vector BLOB NOT NULL
    );
    CREATE INDEX memory_vectors_by_user ON memory_vectors (user_id);",
    ),
];

/// Brings the schema up to date.
pub(super) fn run(conn: &Connection) -> Result<(), StorageError> {
    let supported = MIGRATIONS.len() as i64;
    let found: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if found > supported {
        return Err(StorageError::SchemaTooNew { found, supported });
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(found.max(0) as usize) {
        let next = index as i64 + 1;
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let applied = match migration {
            Migration::Sql(sql) => conn.execute_batch(sql).map_err(StorageError::from),
            Migration::Rust(step) => step(conn),
        }
        .and_then(|()| {
            conn.execute_batch(&format!("PRAGMA user_version = {next}; COMMIT;"))
                .map_err(StorageError::from)
        });
        if let Err(error) = applied {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(error);
        }
        tracing::info!(version = next, "database schema migrated");
    }
    Ok(())
}
