//! Full-text queries: the sanitiser and its FTS5 expressions.

use std::cell::RefCell;
use std::collections::HashSet;

use rusqlite::Connection;

use memento::memory_server::storage::fts::{
    FTS_TABLE, match_expression, scope_prefix, scoped_text,
};
use memento::shared::domain::{MAX_QUERY_LEN, MAX_QUERY_TERMS, SearchTerms};

/// The user numbers whose scopes the search check uses.
const SEARCH_USER: i64 = 1;
const OTHER_USER: i64 = 0x11;

thread_local! {
    /// An FTS5 table like `memories_fts`, made once per thread.
    static FTS: RefCell<Option<Connection>> = const { RefCell::new(None) };
}

/// The full-text query sanitiser.
///
/// Input: the query text (lossy UTF-8). Invariants: only a query over
/// [`MAX_QUERY_LEN`] characters is refused; at most [`MAX_QUERY_TERMS`] distinct, non-empty
/// terms; the FTS5 expressions are exactly the terms, each in double quotes, joined by
/// ` OR ` (no bare `*`, `NEAR`, `-`, column filter or parenthesis), and empty only when there
/// is no term; SQLite FTS5 accepts them (with the storage engine's table and tokenizer);
/// with the same text indexed for two users, the scoped expression finds the searching
/// user's copy and never the other user's.
pub fn search_terms(data: &[u8]) {
    let raw = String::from_utf8_lossy(data);
    let terms = match SearchTerms::parse(&raw) {
        Ok(terms) => terms,
        Err(error) => {
            assert!(
                raw.chars().count() > MAX_QUERY_LEN,
                "a query of {} characters refused: {error}",
                raw.chars().count()
            );
            return;
        }
    };
    assert!(
        raw.chars().count() <= MAX_QUERY_LEN,
        "an over-long query accepted"
    );
    let list = terms.terms();
    assert!(list.len() <= MAX_QUERY_TERMS, "{} terms", list.len());
    assert_eq!(terms.is_empty(), list.is_empty());
    let mut seen = HashSet::new();
    for term in list {
        assert!(!term.is_empty(), "an empty term");
        assert!(seen.insert(term), "term {term:?} twice");
    }
    let prefix = scope_prefix(SEARCH_USER);
    let plain = match_expression(&terms, "");
    let scoped = match_expression(&terms, &prefix);
    assert_or_of_quoted(&plain, "", list);
    assert_or_of_quoted(&scoped, &prefix, list);
    if terms.is_empty() {
        // The storage engine answers "nothing" without running a query.
        return;
    }
    with_fts(|conn| {
        let outcome = fts_check(conn, &raw, &plain, &scoped);
        // Leaves the table empty for the next input, whatever happened.
        let rolled_back = conn.execute_batch("ROLLBACK");
        let (_plain_hits, scoped_hits) = match outcome {
            Ok(hits) => hits,
            Err(error) => panic!("SQLite FTS5 refused {plain:?} or {scoped:?}: {error}"),
        };
        assert!(rolled_back.is_ok(), "rollback failed: {rolled_back:?}");
        // The unscoped expression only has to be valid: indexed words are all scoped.
        assert!(
            scoped_hits.iter().all(|&rowid| rowid == SEARCH_USER),
            "{scoped:?} found another user's text: rows {scoped_hits:?}"
        );
        assert!(
            scoped_hits.contains(&SEARCH_USER),
            "{scoped:?} does not find the text it came from"
        );
    });
}

/// Checks that `expression` is `"<prefix><term>"` for each term, joined by ` OR `.
pub(crate) fn assert_or_of_quoted(expression: &str, prefix: &str, terms: &[String]) {
    if terms.is_empty() {
        assert_eq!(expression, "", "no terms, yet an expression");
        return;
    }
    let parts: Vec<&str> = expression.split(" OR ").collect();
    assert_eq!(
        parts.len(),
        terms.len(),
        "{expression:?} is not {} terms joined by OR",
        terms.len()
    );
    for (part, term) in parts.iter().zip(terms) {
        let inner = part
            .strip_prefix('"')
            .and_then(|p| p.strip_suffix('"'))
            .unwrap_or_else(|| panic!("{part:?} in {expression:?} is not quoted"));
        assert!(!inner.contains('"'), "a quote inside {part:?}");
        assert_eq!(inner, format!("{prefix}{term}"), "in {expression:?}");
    }
}

pub(crate) fn with_fts(check: impl FnOnce(&Connection)) {
    FTS.with(|cell| {
        let mut slot = cell.borrow_mut();
        let conn = slot.get_or_insert_with(|| {
            let conn = match Connection::open_in_memory() {
                Ok(conn) => conn,
                Err(error) => panic!("cannot open an in-memory SQLite database: {error}"),
            };
            // The storage engine's own table definition.
            if let Err(error) = conn.execute_batch(FTS_TABLE) {
                panic!("cannot create the FTS5 table: {error}");
            }
            conn
        });
        check(conn);
    });
}

/// Indexes `raw` for two users in a transaction (the caller rolls it back) and runs both
/// expressions; the matching rowids (= user numbers).
fn fts_check(
    conn: &Connection,
    raw: &str,
    plain: &str,
    scoped: &str,
) -> rusqlite::Result<(Vec<i64>, Vec<i64>)> {
    conn.execute_batch("BEGIN")?;
    for user in [SEARCH_USER, OTHER_USER] {
        let text = scoped_text(user, raw);
        conn.prepare_cached(
            "INSERT INTO memories_fts (rowid, content, description, filename, tags) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(rusqlite::params![user, text, text, text, text])?;
    }
    let hits = |expression: &str| -> rusqlite::Result<Vec<i64>> {
        let mut stmt =
            conn.prepare_cached("SELECT rowid FROM memories_fts WHERE memories_fts MATCH ?1")?;
        let rows = stmt.query_map([expression], |row| row.get(0))?;
        rows.collect()
    };
    Ok((hits(plain)?, hits(scoped)?))
}
