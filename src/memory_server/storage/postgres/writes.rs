//! Inserting a memory: the one-statement insert, its arguments and the import lookup; and
//! the summary row decoding the reads share.

use super::*;

/// Inserts a memory, its tags and its user in one statement; returns its position.
pub(super) const INSERT: &str = "WITH m AS (
        INSERT INTO memories (id, user_id, filename, stored_as, description, tags,
            content, size_bytes, created_at, search)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9,
            setweight(to_tsvector('english', $10), 'A')
            || setweight(to_tsvector('english', $11), 'B')
            || setweight(to_tsvector('english', $12), 'C')
            || setweight(to_tsvector('english', $13), 'D'))
        RETURNING position
    ), t AS (
        INSERT INTO memory_tags (user_id, tag, position)
        SELECT $2, tag, m.position FROM m, unnest($6::text[]) AS tag
        ON CONFLICT DO NOTHING
    ), u AS (
        INSERT INTO users (user_id) VALUES ($2) ON CONFLICT DO NOTHING
    ), v AS (
        INSERT INTO memory_vectors (position, user_id, model, vector)
        SELECT m.position, $2, $14, $15::bytea FROM m WHERE $15::bytea IS NOT NULL
    )
    SELECT position FROM m";

/// The owned values behind [`INSERT`]'s parameters.
pub(super) struct InsertArgs<'a> {
    memory: &'a NewMemory,
    stored: &'a StoredMemory,
    user: &'a str,
    id: String,
    size: i64,
    words: [String; 4],
    model: &'a str,
    vector: Option<Vec<u8>>,
}

impl<'a> InsertArgs<'a> {
    pub(super) fn new(memory: &'a NewMemory, stored: &'a StoredMemory) -> Self {
        InsertArgs {
            memory,
            stored,
            user: memory.user.as_str(),
            id: stored.id.to_string(),
            size: i64::try_from(stored.size_bytes).unwrap_or(i64::MAX),
            words: [
                words(&memory.filename),
                words(&memory.description),
                words(&memory.tags.join(" ")),
                words(&memory.content),
            ],
            model: memory.embedding_model.as_deref().unwrap_or(""),
            vector: memory
                .embedding
                .as_deref()
                .filter(|v| !v.is_empty())
                .map(vectors::to_blob),
        }
    }

    pub(super) fn params(&self) -> [&(dyn ToSql + Sync); 15] {
        [
            &self.id,
            &self.user,
            &self.memory.filename,
            &self.stored.stored_as,
            &self.memory.description,
            &self.memory.tags,
            &self.memory.content,
            &self.size,
            &self.stored.created_at,
            &self.words[0],
            &self.words[1],
            &self.words[2],
            &self.words[3],
            &self.model,
            &self.vector,
        ]
    }
}

/// The memory an import would duplicate: same user, filename and content, stored within the
/// same second as `original` (seed file names carry seconds only).
pub(super) async fn find_imported(
    tx: &deadpool_postgres::Transaction<'_>,
    memory: &NewMemory,
    original: DateTime<Utc>,
) -> Result<Option<StoredMemory>, StorageError> {
    let second =
        super::super::sql::micros_to_datetime(original.timestamp().saturating_mul(1_000_000))?;
    let next = second + chrono::Duration::seconds(1);
    let row = tx
        .query_opt(
            &format!(
                "SELECT {SUMMARY_COLUMNS} FROM memories WHERE user_id = $1 \
                 AND created_at >= $2 AND created_at < $3 AND filename = $4 AND content = $5 \
                 LIMIT 1"
            ),
            &[
                &memory.user.as_str(),
                &second,
                &next,
                &memory.filename,
                &memory.content,
            ],
        )
        .await?;
    Ok(row
        .as_ref()
        .map(summary_from_row)
        .transpose()?
        .map(MemorySummary::replayed))
}

/// Decodes the eight summary columns ([`SUMMARY_COLUMNS`]).
pub(super) fn summary_from_row(row: &Row) -> Result<MemorySummary, StorageError> {
    let id: String = row.try_get(0)?;
    let size: i64 = row.try_get(6)?;
    Ok(MemorySummary {
        meta: MemoryMeta {
            id: MemoryId::parse(&id).map_err(|e| StorageError::Corrupt(e.to_string()))?,
            filename: row.try_get(1)?,
            stored_as: row.try_get(2)?,
            description: row.try_get(3)?,
            tags: row.try_get(4)?,
            created_at: row.try_get(5)?,
            size_bytes: size.max(0) as u64,
        },
        preview: row.try_get(7)?,
    })
}
