//! Listing and completion.

use super::*;

pub(super) async fn list(
    client: &deadpool_postgres::Client,
    query: &ListQuery,
) -> Result<Vec<ListedMemory>, StorageError> {
    let dialect = Dialect {
        placeholder: '$',
        position: "m.position",
        tag_position: "position",
        always: "true",
    };
    let (sql, list_params) = list_statement(query, &dialect);
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
    field: CompletionField,
    user: Option<&UserId>,
    prefix: &str,
    limit: u32,
) -> Result<Vec<String>, StorageError> {
    // `left(x, length(prefix)) = prefix` rather than LIKE: no wildcard escaping, exact text;
    // COLLATE "C" sorts by code point, as SQLite does.
    let limit = i64::from(limit);
    let rows = match (field, user) {
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
        (CompletionField::Tag, Some(user)) => {
            let statement = client
                .prepare_cached(
                    "SELECT DISTINCT tag COLLATE \"C\" FROM memory_tags WHERE user_id = $1 \
                     AND left(tag, length($2)) = $2 ORDER BY 1 LIMIT $3",
                )
                .await?;
            client
                .query(
                    &statement,
                    &[&user.as_str(), &prefix.to_lowercase(), &limit],
                )
                .await?
        }
        (CompletionField::Filename, Some(user)) => {
            let statement = client
                .prepare_cached(
                    "SELECT DISTINCT filename COLLATE \"C\" FROM memories WHERE user_id = $1 \
                     AND left(filename, length($2)) = $2 ORDER BY 1 LIMIT $3",
                )
                .await?;
            client
                .query(&statement, &[&user.as_str(), &prefix, &limit])
                .await?
        }
    };
    rows.iter()
        .map(|row| Ok(row.try_get::<_, String>(0)?))
        .collect()
}
