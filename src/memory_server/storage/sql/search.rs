//! Search on SQLite: the keyword (FTS5, bm25) query with its filters, and the fused
//! keyword-and-meaning ranking through `storage/vectors.rs`.

use super::*;

pub(in crate::memory_server::storage) fn search(
    conn: &Connection,
    index: &super::vectors::VectorIndex,
    query: &SearchQuery,
) -> Result<Vec<MemorySummary>, StorageError> {
    let has_query = query.terms.is_some() || query.text.is_some();
    match (&query.vector, query.mode) {
        (Some(vector), SearchMode::Hybrid | SearchMode::Semantic) if has_query => {
            // Hybrid ranks in context (`storage::contextual`) where it can, else by
            // reciprocal rank fusion.
            let in_context = if query.mode == SearchMode::Hybrid {
                super::contextual::ranked_rowids(conn, index, query, vector)?
            } else {
                None
            };
            let rowids = match in_context {
                Some(rowids) => rowids,
                None => super::vectors::ranked_rowids(conn, index, query, vector, |depth| {
                    keyword_rowids(conn, query, depth)
                })?,
            };
            summaries_by_rowid(conn, &rowids)
        }
        (None, SearchMode::Semantic) if has_query => Err(super::vectors::no_provider()),
        _ => keyword_search(conn, query),
    }
}

/// The keyword ranking's first `depth` rowids (same filters as the search).
fn keyword_rowids(
    conn: &Connection,
    query: &SearchQuery,
    depth: usize,
) -> Result<Vec<i64>, StorageError> {
    if query.terms.as_ref().is_none_or(|t| t.is_empty()) {
        return Ok(Vec::new());
    }
    let mut deep = query.clone();
    deep.offset = 0;
    deep.limit = u32::try_from(depth).unwrap_or(u32::MAX);
    let Some((sql, args)) = search_sql(conn, &deep, "m.rowid")? else {
        return Ok(Vec::new());
    };
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params_from_iter(args), |row| row.get::<_, i64>(0))?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Summaries of `rowids`, in that order.
fn summaries_by_rowid(
    conn: &Connection,
    rowids: &[i64],
) -> Result<Vec<MemorySummary>, StorageError> {
    let mut stmt = conn.prepare_cached(
        "SELECT m.id, m.filename, m.stored_as, m.description, m.tags, m.created_at, \
         m.size_bytes, substr(m.content, 1, ?1) FROM memories m WHERE m.rowid = ?2",
    )?;
    let mut out = Vec::with_capacity(rowids.len());
    for rowid in rowids {
        if let Some(summary) = stmt
            .query_row((PREVIEW_CHARS as i64, rowid), summary_from_row)
            .optional()?
        {
            out.push(summary?);
        }
    }
    Ok(out)
}

fn keyword_search(
    conn: &Connection,
    query: &SearchQuery,
) -> Result<Vec<MemorySummary>, StorageError> {
    let select = "m.id, m.filename, m.stored_as, m.description, m.tags, m.created_at, \
                  m.size_bytes, substr(m.content, 1, ?1)";
    let Some((sql, args)) = search_sql(conn, query, select)? else {
        return Ok(Vec::new());
    };
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params_from_iter(args), summary_from_row)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(row??);
    }
    Ok(out)
}

/// The keyword search's SQL and arguments, selecting `select` (which may use `?1`, the
/// preview length); `None` when nothing can match.
fn search_sql(
    conn: &Connection,
    query: &SearchQuery,
    select: &str,
) -> Result<Option<(String, Vec<Value>)>, StorageError> {
    let mut sql = String::new();
    let mut args: Vec<Value> = Vec::new();
    let ranked = match &query.terms {
        Some(terms) if !terms.is_empty() => {
            // No number: the user never stored anything.
            let Some(user_no) = user_number(conn, &query.user, false)? else {
                return Ok(None);
            };
            // CROSS JOIN fixes the order: the (small, scoped) full-text hits drive the join.
            sql.push_str(&format!(
                "SELECT {select} \
                 FROM memories_fts CROSS JOIN memories m ON m.rowid = memories_fts.rowid \
                 WHERE memories_fts MATCH ?2 AND m.user_id = ?3"
            ));
            args.push(Value::Integer(PREVIEW_CHARS as i64));
            args.push(Value::Text(match_expression(terms, &scope_prefix(user_no))));
            true
        }
        // A query with no searchable word matches nothing (it must not match everything).
        Some(_) => return Ok(None),
        None => {
            sql.push_str(&format!(
                "SELECT {select} FROM memories m WHERE m.user_id = ?2"
            ));
            args.push(Value::Integer(PREVIEW_CHARS as i64));
            false
        }
    };
    args.push(Value::Text(query.user.as_str().to_owned()));
    push_filters(&mut sql, &mut args, query);
    if ranked {
        // Weights: content 1, description 2, filename 3, tags 2.
        sql.push_str(" ORDER BY bm25(memories_fts, 1.0, 2.0, 3.0, 2.0), m.created_at DESC");
    } else {
        sql.push_str(" ORDER BY m.created_at DESC, m.rowid DESC");
    }
    args.push(Value::Integer(i64::from(query.limit)));
    args.push(Value::Integer(i64::from(query.offset)));
    sql.push_str(&format!(
        " LIMIT ?{} OFFSET ?{}",
        args.len() - 1,
        args.len()
    ));
    Ok(Some((sql, args)))
}

/// Appends the query's time and tag filters on `memories m` to `sql` (each `AND ...`),
/// binding their values after `args`.
pub(in crate::memory_server::storage) fn push_filters(
    sql: &mut String,
    args: &mut Vec<Value>,
    query: &SearchQuery,
) {
    if let Some(since) = query.since {
        args.push(Value::Integer(since.timestamp_micros()));
        sql.push_str(&format!(" AND m.created_at >= ?{}", args.len()));
    }
    if let Some(until) = query.until {
        args.push(Value::Integer(until.timestamp_micros()));
        sql.push_str(&format!(" AND m.created_at < ?{}", args.len()));
    }
    if !query.tags.is_empty() {
        args.push(Value::Text(query.user.as_str().to_owned()));
        let user_arg = args.len();
        let mut placeholders = Vec::new();
        for tag in &query.tags {
            args.push(Value::Text(tag.clone()));
            placeholders.push(format!("?{}", args.len()));
        }
        sql.push_str(&format!(
            " AND m.rowid IN (SELECT memory_rowid FROM memory_tags WHERE user_id = ?{user_arg} \
             AND tag IN ({}))",
            placeholders.join(", ")
        ));
    }
}
