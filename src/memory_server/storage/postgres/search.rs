//! Search: keyword (tsvector), semantic and hybrid (the per-user vector cache, refreshed
//! from rows written since its last read).

use super::*;

pub(super) type Params = Vec<Box<dyn ToSql + Sync + Send>>;

pub(super) fn refs(params: &Params) -> Vec<&(dyn ToSql + Sync)> {
    params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

pub(super) async fn search(
    store: &PostgresStore,
    client: &deadpool_postgres::Client,
    query: &SearchQuery,
) -> Result<Vec<MemorySummary>, StorageError> {
    let has_query = query.terms.is_some() || query.text.is_some();
    match (&query.vector, query.mode) {
        (Some(vector), super::super::SearchMode::Hybrid | super::super::SearchMode::Semantic)
            if has_query =>
        {
            vector_search(store, client, query, vector).await
        }
        (None, super::super::SearchMode::Semantic) if has_query => Err(vectors::no_provider()),
        _ => keyword_search(client, query).await,
    }
}

/// Appends the query's time and tag filters on the columns of `memories` aliased `m`.
pub(super) fn push_filters(query: &SearchQuery, params: &mut Params, sql: &mut String) {
    if let Some(since) = query.since {
        params.push(Box::new(since));
        sql.push_str(&format!(" AND m.created_at >= ${}", params.len()));
    }
    if let Some(until) = query.until {
        params.push(Box::new(until));
        sql.push_str(&format!(" AND m.created_at < ${}", params.len()));
    }
    if !query.tags.is_empty() {
        params.push(Box::new(query.tags.clone()));
        sql.push_str(&format!(" AND m.tags && ${}::text[]", params.len()));
    }
}

/// The keyword search's statement selecting `columns`, with its parameters (the page's
/// limit and offset last); `None` when the query has no searchable word (it matches
/// nothing: it must not match everything).
pub(super) fn keyword_statement(
    query: &SearchQuery,
    columns: &str,
    limit: i64,
    offset: i64,
) -> Option<(String, Params)> {
    let mut params: Params = vec![Box::new(query.user.as_str().to_owned())];
    let mut sql = format!("SELECT {columns} FROM memories m WHERE m.user_id = $1");
    let ranked = match &query.terms {
        Some(terms) if !terms.is_empty() => {
            params.push(Box::new(terms.terms().join(" or ")));
            sql.push_str(" AND m.search @@ websearch_to_tsquery('english', $2)");
            true
        }
        Some(_) => return None,
        None => false,
    };
    push_filters(query, &mut params, &mut sql);
    if ranked {
        // Weights {D content, C tags, B description, A filename}; normalisation 1 divides
        // by 1 + log(length), as bm25 favours short documents.
        sql.push_str(
            " ORDER BY ts_rank_cd('{0.3, 0.6, 0.6, 1.0}', m.search, \
             websearch_to_tsquery('english', $2), 1) DESC, m.created_at DESC, m.position DESC",
        );
    } else {
        sql.push_str(" ORDER BY m.created_at DESC, m.position DESC");
    }
    params.push(Box::new(limit));
    params.push(Box::new(offset));
    sql.push_str(&format!(
        " LIMIT ${} OFFSET ${}",
        params.len() - 1,
        params.len()
    ));
    Some((sql, params))
}

pub(super) async fn keyword_search(
    client: &deadpool_postgres::Client,
    query: &SearchQuery,
) -> Result<Vec<MemorySummary>, StorageError> {
    let Some((sql, params)) = keyword_statement(
        query,
        SUMMARY_COLUMNS,
        i64::from(query.limit),
        i64::from(query.offset),
    ) else {
        return Ok(Vec::new());
    };
    let statement = client.prepare_cached(&sql).await?;
    let rows = client.query(&statement, &refs(&params)).await?;
    rows.iter().map(summary_from_row).collect()
}

/// Hybrid or semantic search: the user's cached vectors are scanned (approximately, `i8`),
/// the best candidates re-scored exactly from their stored `f32`s with the filters applied,
/// then fused with the keyword ranking (hybrid), as the SQLite engine does.
pub(super) async fn vector_search(
    store: &PostgresStore,
    client: &deadpool_postgres::Client,
    query: &SearchQuery,
    vector: &[f32],
) -> Result<Vec<MemorySummary>, StorageError> {
    let user = query.user.as_str();
    let (candidates, depth) = vectors::search_depths(query);
    let entry = store.inner.vectors.user(user);
    let approx = {
        let mut cache = entry.lock().await;
        refresh(client, user, &mut cache).await?;
        cache.vectors.top(vector, candidates)
    };
    let mut semantic = Vec::with_capacity(approx.len());
    if !approx.is_empty() {
        let mut params: Params = vec![Box::new(user.to_owned()), Box::new(approx.clone())];
        let mut sql = String::from(
            "SELECT v.position, v.vector FROM memory_vectors v \
             JOIN memories m ON m.position = v.position \
             WHERE m.user_id = $1 AND v.position = ANY($2)",
        );
        push_filters(query, &mut params, &mut sql);
        let statement = client.prepare_cached(&sql).await?;
        let rows = client.query(&statement, &refs(&params)).await?;
        for row in &rows {
            let position: i64 = row.try_get(0)?;
            let blob: &[u8] = row.try_get(1)?;
            let stored = vectors::from_blob(blob);
            if stored.len() == vector.len() {
                semantic.push((
                    crate::memory_server::embeddings::bert::dot(&stored, vector),
                    position,
                ));
            }
        }
        if !vectors::is_filtered(query) && rows.len() < approx.len() {
            // Deleted by another process since the cache read them.
            let found: std::collections::HashSet<i64> =
                semantic.iter().map(|(_, position)| *position).collect();
            let mut cache = entry.lock().await;
            for position in approx.iter().filter(|p| !found.contains(p)) {
                cache.vectors.remove(*position);
            }
        }
    }
    semantic.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)));
    semantic.truncate(depth);
    let semantic: Vec<i64> = semantic.into_iter().map(|(_, position)| position).collect();
    let ranked = if query.mode == super::super::SearchMode::Semantic {
        semantic
    } else {
        let keyword = match keyword_statement(query, "m.position", depth as i64, 0) {
            Some((sql, params)) => {
                let statement = client.prepare_cached(&sql).await?;
                client
                    .query(&statement, &refs(&params))
                    .await?
                    .iter()
                    .map(|row| row.try_get::<_, i64>(0))
                    .collect::<Result<Vec<_>, _>>()?
            }
            None => Vec::new(),
        };
        vectors::fuse(&keyword, &semantic, query.semantic_weight)
    };
    let page: Vec<i64> = ranked
        .into_iter()
        .skip(query.offset as usize)
        .take(query.limit as usize)
        .collect();
    if page.is_empty() {
        return Ok(Vec::new());
    }
    let statement = client
        .prepare_cached(&format!(
            "SELECT {SUMMARY_COLUMNS}, position FROM memories \
             WHERE user_id = $1 AND position = ANY($2)"
        ))
        .await?;
    let rows = client.query(&statement, &[&user, &page]).await?;
    let mut by_position = std::collections::HashMap::with_capacity(rows.len());
    for row in &rows {
        by_position.insert(row.try_get::<_, i64>(8)?, summary_from_row(row)?);
    }
    Ok(page
        .iter()
        .filter_map(|position| by_position.remove(position))
        .collect())
}

/// Brings this process's cache of `user`'s vectors up to date (see [`SyncedUser`]): one
/// statement reads the rows written since the cache's horizon and the new horizon.
pub(super) async fn refresh(
    client: &deadpool_postgres::Client,
    user: &str,
    cache: &mut SyncedUser,
) -> Result<(), StorageError> {
    let statement = client
        .prepare_cached(
            "WITH s AS (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS horizon) \
             SELECT s.horizon, v.position, v.vector FROM s LEFT JOIN memory_vectors v \
             ON v.user_id = $1 AND v.wtx >= $2 ORDER BY v.position",
        )
        .await?;
    let since = cache.horizon.unwrap_or(i64::MIN);
    let rows = client.query(&statement, &[&user, &since]).await?;
    let mut horizon = since;
    for row in &rows {
        horizon = row.try_get(0)?;
        let position: Option<i64> = row.try_get(1)?;
        let blob: Option<&[u8]> = row.try_get(2)?;
        if let (Some(position), Some(blob)) = (position, blob) {
            cache.vectors.upsert(position, &vectors::from_blob(blob));
        }
    }
    cache.horizon = Some(horizon);
    Ok(())
}
