//! The SQL of [`SqliteStore`](super::SqliteStore): tenant-scoped full-text indexing, the
//! insert with its idempotency and import checks, listing, completion and the row
//! conversions; search is in `sql/search.rs`. Everything here runs on the storage threads,
//! on a connection they own.

use super::fts::{match_expression, scope_prefix, scoped_text};
use super::list_sql::{Dialect, Param, list_statement};
use super::*;

mod search;
pub(super) use search::{push_filters, search};

/// The user's number, creating it when `create` (writer only).
pub(super) fn user_number(
    conn: &Connection,
    user: &UserId,
    create: bool,
) -> Result<Option<i64>, StorageError> {
    if create {
        conn.prepare_cached("INSERT OR IGNORE INTO users (user_id) VALUES (?1)")?
            .execute([user.as_str()])?;
    }
    Ok(conn
        .prepare_cached("SELECT user_no FROM users WHERE user_id = ?1")?
        .query_row([user.as_str()], |row| row.get(0))
        .optional()?)
}

/// Indexes one memory row.
pub(super) fn index_memory(
    conn: &Connection,
    rowid: i64,
    user_no: i64,
    content: &str,
    description: &str,
    filename: &str,
    tags: &str,
) -> Result<(), StorageError> {
    conn.prepare_cached(
        "INSERT INTO memories_fts (rowid, content, description, filename, tags) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(rusqlite::params![
        rowid,
        scoped_text(user_no, content),
        scoped_text(user_no, description),
        scoped_text(user_no, filename),
        scoped_text(user_no, tags),
    ])?;
    Ok(())
}

/// Rebuilds the whole full-text index from `memories` (used by migrations).
pub(crate) fn reindex_all(conn: &Connection) -> Result<(), StorageError> {
    conn.execute_batch(
        "INSERT OR IGNORE INTO users (user_id) SELECT DISTINCT user_id FROM memories;",
    )?;
    let mut stmt = conn.prepare(
        "SELECT m.rowid, u.user_no, m.content, m.description, m.filename, m.tags \
         FROM memories m JOIN users u ON u.user_id = m.user_id",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let tags: String = row.get(5)?;
        index_memory(
            conn,
            row.get(0)?,
            row.get(1)?,
            &row.get::<_, String>(2)?,
            &row.get::<_, String>(3)?,
            &row.get::<_, String>(4)?,
            &tags.replace(',', " "),
        )?;
    }
    Ok(())
}

/// SHA-256 (hex) of a store's canonical arguments: the validated, normalised fields, each
/// length-prefixed so no two different argument sets encode alike. Kept with an idempotency
/// key, so a replay can be told from a different store that reuses the key.
pub(crate) fn arguments_digest(memory: &NewMemory) -> String {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    let mut field = |bytes: &[u8]| {
        context.update(&(bytes.len() as u64).to_le_bytes());
        context.update(bytes);
    };
    field(b"store_memory/v1");
    field(memory.user.as_str().as_bytes());
    field(memory.content.as_bytes());
    field(memory.filename.as_bytes());
    field(memory.description.as_bytes());
    field(&(memory.tags.len() as u64).to_le_bytes());
    for tag in &memory.tags {
        field(tag.as_bytes());
    }
    let digest = context.finish();
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Inserts (or replays) a memory; the rowid is returned when a new row got a vector, for
/// the vector cache.
pub(super) fn insert_memory(
    conn: &Connection,
    memory: &NewMemory,
    window: std::time::Duration,
) -> Result<(StoredMemory, Option<i64>), StorageError> {
    let now_micros = Utc::now().timestamp_micros();
    let digest = memory
        .idempotency_key
        .as_ref()
        .map(|_| arguments_digest(memory));
    if let (Some(key), Some(digest)) = (&memory.idempotency_key, &digest) {
        let horizon = now_micros - i64::try_from(window.as_micros()).unwrap_or(i64::MAX);
        let previous: Option<(String, String)> = conn
            .prepare_cached(
                "SELECT result, arguments FROM idempotency \
                 WHERE user_id = ?1 AND key = ?2 AND created_at >= ?3",
            )?
            .query_row((memory.user.as_str(), key, horizon), |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .optional()?;
        if let Some((previous, previous_digest)) = previous {
            // "" is a key stored before digests were kept: a replay, as it was then.
            if !previous_digest.is_empty() && previous_digest != *digest {
                return Err(StorageError::KeyReused { key: key.clone() });
            }
            let mut stored: StoredMemory = serde_json::from_str(&previous)
                .map_err(|e| StorageError::Corrupt(format!("idempotency record: {e}")))?;
            stored.replayed = true;
            return Ok((stored, None));
        }
    }
    if let Some(original) = memory.created_at
        && let Some(existing) = find_imported(conn, memory, original)?
    {
        return Ok((existing, None));
    }
    let id = MemoryId::new();
    let created_at = memory.created_at.unwrap_or_else(Utc::now);
    let created_micros = created_at.timestamp_micros();
    // Round-trip through micros so the returned value equals what a later read returns.
    let created_at = micros_to_datetime(created_micros)?;
    let stored_as = format!("{}_{}", created_at.format("%Y%m%d_%H%M%S"), memory.filename);
    let tags_text = memory.tags.join(",");
    let size_bytes = memory.content.len() as u64;
    conn.prepare_cached(
        "INSERT INTO memories (id, user_id, filename, stored_as, description, tags, content, \
         size_bytes, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(rusqlite::params![
        id.to_string(),
        memory.user.as_str(),
        memory.filename,
        stored_as,
        memory.description,
        tags_text,
        memory.content,
        size_bytes as i64,
        created_micros,
    ])?;
    let rowid = conn.last_insert_rowid();
    {
        let mut tag_stmt = conn.prepare_cached(
            "INSERT OR IGNORE INTO memory_tags (user_id, tag, memory_rowid) VALUES (?1, ?2, ?3)",
        )?;
        for tag in &memory.tags {
            tag_stmt.execute((memory.user.as_str(), tag, rowid))?;
        }
    }
    let user_no = user_number(conn, &memory.user, true)?
        .ok_or_else(|| StorageError::Corrupt("user number missing after insert".into()))?;
    index_memory(
        conn,
        rowid,
        user_no,
        &memory.content,
        &memory.description,
        &memory.filename,
        &memory.tags.join(" "),
    )?;
    let vector_rowid = match &memory.embedding {
        Some(vector) if !vector.is_empty() => {
            conn.prepare_cached(
                "INSERT OR REPLACE INTO memory_vectors (memory_rowid, user_id, model, vector) \
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(rusqlite::params![
                rowid,
                memory.user.as_str(),
                memory.embedding_model.as_deref().unwrap_or(""),
                super::vectors::to_blob(vector),
            ])?;
            Some(rowid)
        }
        _ => None,
    };
    let stored = StoredMemory {
        meta: MemoryMeta {
            id,
            filename: memory.filename.clone(),
            stored_as,
            description: memory.description.clone(),
            tags: memory.tags.clone(),
            created_at,
            size_bytes,
        },
        replayed: false,
    };
    if let (Some(key), Some(digest)) = (&memory.idempotency_key, &digest) {
        let result = serde_json::to_string(&stored)
            .map_err(|e| StorageError::Corrupt(format!("idempotency record: {e}")))?;
        conn.prepare_cached(
            "INSERT OR REPLACE INTO idempotency (user_id, key, result, created_at, arguments) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute((memory.user.as_str(), key, result, now_micros, digest))?;
    }
    Ok((stored, vector_rowid))
}

/// Memories without a vector of `model`, oldest first, and how many there are.
pub(super) fn vector_tasks(
    conn: &Connection,
    model: &str,
    limit: u32,
) -> Result<(Vec<VectorTask>, u64), StorageError> {
    const MISSING: &str = "FROM memories m LEFT JOIN memory_vectors v ON v.memory_rowid = m.rowid \
                           WHERE v.memory_rowid IS NULL OR v.model <> ?1";
    let remaining: i64 = conn
        .prepare_cached(&format!("SELECT count(*) {MISSING}"))?
        .query_row([model], |row| row.get(0))?;
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT m.id, m.user_id, m.content, m.description, m.tags {MISSING} \
         ORDER BY m.rowid LIMIT ?2"
    ))?;
    let rows = stmt.query_map(rusqlite::params![model, i64::from(limit)], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
            row.get::<_, String>(3)?,
            row.get::<_, String>(4)?,
        ))
    })?;
    let mut tasks = Vec::new();
    for row in rows {
        let (id, user, content, description, tags) = row?;
        tasks.push(VectorTask {
            id: MemoryId::parse(&id).map_err(|e| StorageError::Corrupt(e.to_string()))?,
            user: UserId::parse(&user).map_err(|e| StorageError::Corrupt(e.to_string()))?,
            content,
            description,
            tags: split_tags(&tags),
        });
    }
    Ok((tasks, remaining.max(0) as u64))
}

/// Stores vectors by memory id; returns `(user, rowid, index in vectors)` of each written.
pub(super) fn put_vectors(
    conn: &Connection,
    model: &str,
    vectors: &[(MemoryId, Vec<f32>)],
) -> Result<Vec<(String, i64, usize)>, StorageError> {
    let mut written = Vec::new();
    for (i, (id, vector)) in vectors.iter().enumerate() {
        let found: Option<(i64, String)> = conn
            .prepare_cached("SELECT rowid, user_id FROM memories WHERE id = ?1")?
            .query_row([id.to_string()], |row| Ok((row.get(0)?, row.get(1)?)))
            .optional()?;
        let Some((rowid, user)) = found else {
            continue;
        };
        conn.prepare_cached(
            "INSERT OR REPLACE INTO memory_vectors (memory_rowid, user_id, model, vector) \
             VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(rusqlite::params![
            rowid,
            user,
            model,
            super::vectors::to_blob(vector)
        ])?;
        written.push((user, rowid, i));
    }
    Ok(written)
}

/// The memory an import would duplicate: same user, filename and content, stored within the
/// same second as `original` (seed file names carry seconds only).
pub(super) fn find_imported(
    conn: &Connection,
    memory: &NewMemory,
    original: DateTime<Utc>,
) -> Result<Option<StoredMemory>, StorageError> {
    let second = original.timestamp().saturating_mul(1_000_000);
    let found = conn
        .prepare_cached(
            "SELECT id, filename, stored_as, description, tags, created_at, size_bytes, '' \
             FROM memories WHERE user_id = ?1 AND created_at >= ?2 AND created_at < ?3 \
             AND filename = ?4 AND content = ?5 LIMIT 1",
        )?
        .query_row(
            rusqlite::params![
                memory.user.as_str(),
                second,
                second.saturating_add(1_000_000),
                memory.filename,
                memory.content,
            ],
            summary_from_row,
        )
        .optional()?;
    found
        .transpose()
        .map(|found| found.map(MemorySummary::replayed))
}

pub(super) fn list(
    conn: &Connection,
    query: &ListQuery,
) -> Result<Vec<ListedMemory>, StorageError> {
    let (sql, params) = list_statement(query, &Dialect::SQLITE);
    let args = params.into_iter().map(|param| match param {
        Param::Text(text) => Value::Text(text),
        Param::Int(int) => Value::Integer(int),
    });
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params_from_iter(args), |row| {
        let position: i64 = row.get(8)?;
        let user: String = row.get(9)?;
        Ok((summary_from_row(row)?, position, user))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (summary, position, user) = row?;
        out.push(ListedMemory {
            position,
            user: UserId::parse(&user).map_err(|e| StorageError::Corrupt(e.to_string()))?,
            memory: summary?.into_memory(),
        });
    }
    Ok(out)
}

pub(super) fn complete(
    conn: &Connection,
    query: &CompletionQuery,
) -> Result<Vec<String>, StorageError> {
    let CompletionQuery {
        field,
        ref user,
        ref prefix,
        limit,
    } = *query;
    // `substr(x, 1, n) = prefix` rather than LIKE: no wildcard escaping, exact bytes.
    let (sql, prefix) = match field {
        CompletionField::User => (
            "SELECT user_id FROM users WHERE substr(user_id, 1, length(?2)) = ?2 \
             ORDER BY user_id LIMIT ?3",
            prefix.to_owned(),
        ),
        CompletionField::Tag => (
            "SELECT DISTINCT tag FROM memory_tags WHERE user_id = ?1 \
             AND substr(tag, 1, length(?2)) = ?2 ORDER BY tag LIMIT ?3",
            prefix.to_lowercase(),
        ),
        CompletionField::Filename => (
            "SELECT DISTINCT filename FROM memories WHERE user_id = ?1 \
             AND substr(filename, 1, length(?2)) = ?2 ORDER BY filename LIMIT ?3",
            prefix.to_owned(),
        ),
    };
    if field != CompletionField::User && user.is_none() {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(
        rusqlite::params![user.as_ref().map(UserId::as_str), prefix, i64::from(limit)],
        |row| row.get::<_, String>(0),
    )?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Decodes the first eight columns (id, filename, stored_as, description, tags, created_at,
/// size_bytes, preview). The outer `Result` is SQLite's, the inner one decoding's.
pub(super) fn summary_from_row(
    row: &rusqlite::Row<'_>,
) -> rusqlite::Result<Result<MemorySummary, StorageError>> {
    let id: String = row.get(0)?;
    let tags: String = row.get(4)?;
    let created: i64 = row.get(5)?;
    let size: i64 = row.get(6)?;
    let filename: String = row.get(1)?;
    let stored_as: String = row.get(2)?;
    let description: String = row.get(3)?;
    let preview: String = row.get(7)?;
    Ok((|| {
        Ok(MemorySummary {
            meta: MemoryMeta {
                id: MemoryId::parse(&id).map_err(|e| StorageError::Corrupt(e.to_string()))?,
                filename,
                stored_as,
                description,
                tags: split_tags(&tags),
                created_at: micros_to_datetime(created)?,
                size_bytes: size.max(0) as u64,
            },
            preview,
        })
    })())
}

pub(super) fn split_tags(text: &str) -> Vec<String> {
    text.split(',')
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

pub(super) fn micros_to_datetime(micros: i64) -> Result<DateTime<Utc>, StorageError> {
    Utc.timestamp_micros(micros)
        .single()
        .ok_or_else(|| StorageError::Corrupt(format!("timestamp {micros} out of range")))
}

impl MemorySummary {
    /// Turns a row whose `preview` holds the whole content into a [`Memory`].
    pub(super) fn into_memory(self) -> Memory {
        Memory {
            meta: self.meta,
            content: self.preview,
        }
    }

    /// What a store answers when it found this memory already stored (an import's
    /// duplicate): nothing new was stored.
    pub(super) fn replayed(self) -> StoredMemory {
        StoredMemory {
            meta: self.meta,
            replayed: true,
        }
    }
}
