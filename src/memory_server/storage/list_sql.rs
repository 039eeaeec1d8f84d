//! The `list` statement, written once for both engines. SQLite and PostgreSQL differ only in
//! their placeholders (`?N` / `$N`) and in the column that orders a user's memories (SQLite's
//! `rowid`, PostgreSQL's `position`).

use super::ListQuery;

/// What differs between the engines.
pub(super) struct Dialect {
    /// `'?'` (SQLite) or `'$'` (PostgreSQL), followed by the parameter's 1-based number.
    pub placeholder: char,
    /// The ordering column of `memories m` (`m.rowid` / `m.position`).
    pub position: &'static str,
    /// The same column as `memory_tags` names it (`memory_rowid` / `position`).
    pub tag_position: &'static str,
    /// A condition that is always true (`1 = 1` / `true`), so each filter can add `AND ...`.
    pub always: &'static str,
}

impl Dialect {
    /// SQLite's.
    pub(super) const SQLITE: Dialect = Dialect {
        placeholder: '?',
        position: "m.rowid",
        tag_position: "memory_rowid",
        always: "1 = 1",
    };
    /// PostgreSQL's.
    pub(super) const POSTGRES: Dialect = Dialect {
        placeholder: '$',
        position: "m.position",
        tag_position: "position",
        always: "true",
    };
}

/// One bound value of the statement.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Param {
    /// A text value.
    Text(String),
    /// An integer value.
    Int(i64),
}

/// The statement and its parameters. Columns: id, filename, stored_as, description, tags,
/// created_at, size_bytes, content (or `''` without `with_content`), position, user_id.
pub(super) fn list_statement(query: &ListQuery, dialect: &Dialect) -> (String, Vec<Param>) {
    let Dialect {
        placeholder: p,
        position,
        tag_position,
        always,
    } = dialect;
    let mut sql = format!(
        "SELECT m.id, m.filename, m.stored_as, m.description, m.tags, m.created_at, \
         m.size_bytes, {}, {position}, m.user_id FROM memories m WHERE {always}",
        if query.with_content {
            "m.content"
        } else {
            "''"
        }
    );
    let mut params = Vec::new();
    let bind = |params: &mut Vec<Param>, value: Param| {
        params.push(value);
        format!("{p}{}", params.len())
    };
    if let Some(user) = &query.user {
        let at = bind(&mut params, Param::Text(user.as_str().to_owned()));
        sql.push_str(&format!(" AND m.user_id = {at}"));
    }
    if let Some(after) = query.after {
        let at = bind(&mut params, Param::Int(after));
        sql.push_str(&format!(" AND {position} < {at}"));
    }
    if let Some(filename) = &query.filename {
        let at = bind(&mut params, Param::Text(filename.clone()));
        sql.push_str(&format!(" AND m.filename = {at}"));
    }
    if let Some(tag) = &query.tag {
        let at = bind(&mut params, Param::Text(tag.clone()));
        // The user is always parameter 1 when there is one.
        let scope = if query.user.is_some() {
            format!(" AND user_id = {p}1")
        } else {
            String::new()
        };
        sql.push_str(&format!(
            " AND {position} IN (SELECT {tag_position} FROM memory_tags WHERE tag = {at}{scope})"
        ));
    }
    let at = bind(&mut params, Param::Int(i64::from(query.limit)));
    sql.push_str(&format!(" ORDER BY {position} DESC LIMIT {at}"));
    (sql, params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::domain::UserId;

    #[test]
    fn every_filter_binds_its_own_numbered_parameter() {
        let query = ListQuery {
            user: Some(UserId::parse("ann").unwrap()),
            after: Some(7),
            filename: Some("plan.md".into()),
            tag: Some("q4".into()),
            limit: 3,
            with_content: false,
        };
        let (sql, params) = list_statement(&query, &Dialect::SQLITE);
        assert!(sql.ends_with(
            "WHERE 1 = 1 AND m.user_id = ?1 AND m.rowid < ?2 AND m.filename = ?3 AND m.rowid IN \
             (SELECT memory_rowid FROM memory_tags WHERE tag = ?4 AND user_id = ?1) \
             ORDER BY m.rowid DESC LIMIT ?5"
        ));
        assert_eq!(
            params,
            [
                Param::Text("ann".into()),
                Param::Int(7),
                Param::Text("plan.md".into()),
                Param::Text("q4".into()),
                Param::Int(3)
            ]
        );
    }

    #[test]
    fn without_a_user_a_tag_is_not_scoped_and_postgres_numbers_with_dollars() {
        let postgres = Dialect::POSTGRES;
        let query = ListQuery {
            user: None,
            after: None,
            filename: None,
            tag: Some("q4".into()),
            limit: 10,
            with_content: true,
        };
        let (sql, params) = list_statement(&query, &postgres);
        assert!(sql.starts_with("SELECT m.id, m.filename, m.stored_as, m.description, m.tags, m.created_at, m.size_bytes, m.content, m.position,"));
        assert!(sql.ends_with(
            "WHERE true AND m.position IN (SELECT position FROM memory_tags WHERE tag = $1) \
             ORDER BY m.position DESC LIMIT $2"
        ));
        assert_eq!(params.len(), 2);
    }
}
