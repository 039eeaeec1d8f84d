//! Listing and completion.

use super::*;

pub(super) async fn list(
    client: &deadpool_postgres::Client,
    query: &ListQuery,
) -> Result<Vec<ListedMemory>, StorageError> {
    let (sql, list_params) = list_statement(query, &Dialect::POSTGRES);
    let params: Params = list_params
        .into_iter()
        .map(|param| -> Box<dyn ToSql + Sync + Send> {
            match param {
                Param::Text(text) => Box::new(text),
                Param::Int(int) => Box::new(int),
            }
        })
        .collect();
    let statement = client.prepare_cached(&sql).await?;
    let rows = client.query(&statement, &refs(&params)).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let user: String = row.try_get(9)?;
        out.push(ListedMemory {
            position: row.try_get(8)?,
            user: UserId::parse(&user).map_err(|e| StorageError::Corrupt(e.to_string()))?,
            memory: summary_from_row(row)?.into_memory(),
        });
    }
    Ok(out)
}

pub(super) async fn complete(
    client: &deadpool_postgres::Client,
    query: &CompletionQuery,
) -> Result<Vec<String>, StorageError> {
    // `left(x, length(prefix)) = prefix` rather than LIKE: no wildcard escaping, exact text;
    // COLLATE "C" sorts by code point, as SQLite does.
    let limit = i64::from(query.limit);
    let prefix = query.prefix.as_str();
    let rows = match (query.field, &query.user) {
        (CompletionField::User, _) => {
            let statement = client
                .prepare_cached(
                    "SELECT user_id FROM users WHERE left(user_id, length($1)) = $1 \
                     ORDER BY user_id COLLATE \"C\" LIMIT $2",
                )
                .await?;
            client.query(&statement, &[&prefix, &limit]).await?
        }
        (_, None) => return Ok(Vec::new()),
        (field, Some(user)) => {
            let (sql, prefix) = if field == CompletionField::Tag {
                (
                    "SELECT DISTINCT tag COLLATE \"C\" FROM memory_tags WHERE user_id = $1 \
                     AND left(tag, length($2)) = $2 ORDER BY 1 LIMIT $3",
                    prefix.to_lowercase(),
                )
            } else {
                (
                    "SELECT DISTINCT filename COLLATE \"C\" FROM memories WHERE user_id = $1 \
                     AND left(filename, length($2)) = $2 ORDER BY 1 LIMIT $3",
                    prefix.to_owned(),
                )
            };
            let statement = client.prepare_cached(sql).await?;
            client
                .query(&statement, &[&user.as_str(), &prefix, &limit])
                .await?
        }
    };
    rows.iter()
        .map(|row| Ok(row.try_get::<_, String>(0)?))
        .collect()
}
