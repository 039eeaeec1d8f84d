//! The full-text layout of the SQLite engine: the FTS5 table and its tenant-scoped tokens.
//!
//! Every indexed word is written as `u<user number in hex>q<word>` ([`scoped_text`]), and a
//! query asks for the same scoped terms ([`match_expression`]), so a search only reads the
//! caller's own postings. Public so the fuzz checks (`fuzz/checks`) drive exactly this code.

use crate::shared::domain::{FTS_TOKENIZER, SearchTerms, fts_words};

/// The FTS5 table as the current schema creates it (migration 3 and later). Contentless:
/// the words live only in the index; the text stays in `memories`.
pub const FTS_TABLE: &str = "CREATE VIRTUAL TABLE memories_fts USING fts5 (
    content, description, filename, tags,
    content = '', contentless_delete = 1,
    tokenize = 'porter unicode61 remove_diacritics 2'
);";

/// The FTS prefix of a user's words: `u<user number in hex>q`. Hex digits never include
/// `q`, so the prefix is unambiguous, and it is all letters and digits, so the tokenizer keeps
/// it glued to the word.
pub fn scope_prefix(user_no: i64) -> String {
    format!("u{user_no:x}q")
}

/// Rewrites `text` for the FTS index: each word becomes `<scope prefix><word>`. Words are
/// split with FTS5 unicode61's own character classes (`domain::fts_words`), so each scoped
/// word is exactly one token: no text can make the tokenizer start a new token mid-word
/// (`xⓐu2qsecret` would otherwise plant `u2qsecret` in user 2's scope). Queries use the
/// same split (`SearchTerms`).
pub fn scoped_text(user_no: i64, text: &str) -> String {
    let prefix = scope_prefix(user_no);
    let mut out = String::with_capacity(text.len() + text.len() / 3);
    for word in fts_words(text) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&prefix);
        out.push_str(&word);
    }
    out
}

/// The terms as an FTS5 `MATCH` expression: each term a quoted string written as
/// `<prefix><term>` (quotes inside are impossible since terms are alphanumeric), any term
/// may match, bm25 decides the order. An empty `prefix` gives the unscoped expression.
pub fn match_expression(terms: &SearchTerms, prefix: &str) -> String {
    let mut out = String::new();
    for term in terms.terms() {
        if !out.is_empty() {
            out.push_str(" OR ");
        }
        out.push('"');
        out.push_str(prefix);
        out.push_str(term);
        out.push('"');
    }
    out
}

/// The tokenizer [`FTS_TABLE`] names, checked against the probe's (`domain::fts`).
const _: () = {
    let table = FTS_TABLE.as_bytes();
    let tokenizer = FTS_TOKENIZER.as_bytes();
    // `FTS_TABLE` must spell `tokenize = '<FTS_TOKENIZER>'`: find it at compile time.
    let mut at = 0;
    let mut found = false;
    while at + tokenizer.len() <= table.len() {
        let mut i = 0;
        while i < tokenizer.len() && table[at + i] == tokenizer[i] {
            i += 1;
        }
        if i == tokenizer.len() {
            found = true;
        }
        at += 1;
    }
    assert!(found, "FTS_TABLE does not use FTS_TOKENIZER");
};
