//! Vectors written after the fact: what `memento reindex --embeddings` asks for and writes.

use super::*;

/// Memories without a vector of `model`, oldest first, and how many there are.
pub(super) async fn vector_tasks(
    client: &deadpool_postgres::Client,
    model: &str,
    limit: u32,
) -> Result<(Vec<super::super::VectorTask>, u64), StorageError> {
    const MISSING: &str = "FROM memories m LEFT JOIN memory_vectors v ON v.position = m.position \
                           WHERE v.position IS NULL OR v.model <> $1";
    let count = client
        .prepare_cached(&format!("SELECT count(*) {MISSING}"))
        .await?;
    let remaining: i64 = client.query_one(&count, &[&model]).await?.try_get(0)?;
    let statement = client
        .prepare_cached(&format!(
            "SELECT m.id, m.user_id, m.content, m.description, m.tags {MISSING} \
             ORDER BY m.position LIMIT $2"
        ))
        .await?;
    let rows = client
        .query(&statement, &[&model, &i64::from(limit)])
        .await?;
    let mut tasks = Vec::with_capacity(rows.len());
    for row in &rows {
        let id: String = row.try_get(0)?;
        let user: String = row.try_get(1)?;
        tasks.push(super::super::VectorTask {
            id: MemoryId::parse(&id).map_err(|e| StorageError::Corrupt(e.to_string()))?,
            user: UserId::parse(&user).map_err(|e| StorageError::Corrupt(e.to_string()))?,
            content: row.try_get(2)?,
            description: row.try_get(3)?,
            tags: row.try_get(4)?,
        });
    }
    Ok((tasks, remaining.max(0) as u64))
}

/// Stores vectors by memory id (replacing older ones) in one statement; returns how many
/// memories got one (deleted ones are skipped).
pub(super) async fn put_vectors(
    client: &deadpool_postgres::Client,
    model: &str,
    batch: &[(MemoryId, Vec<f32>)],
) -> Result<u64, StorageError> {
    let ids: Vec<String> = batch.iter().map(|(id, _)| id.to_string()).collect();
    let blobs: Vec<Vec<u8>> = batch.iter().map(|(_, v)| vectors::to_blob(v)).collect();
    let statement = client
        .prepare_cached(
            "INSERT INTO memory_vectors (position, user_id, model, vector) \
             SELECT m.position, m.user_id, $1, x.vector \
             FROM unnest($2::text[], $3::bytea[]) AS x (id, vector) \
             JOIN memories m ON m.id = x.id \
             ON CONFLICT (position) DO UPDATE SET model = EXCLUDED.model, \
             vector = EXCLUDED.vector, wtx = EXCLUDED.wtx",
        )
        .await?;
    Ok(client.execute(&statement, &[&model, &ids, &blobs]).await?)
}
