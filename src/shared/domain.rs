//! Validated value types shared by every layer: user ids, memory ids, tags, filenames and
//! full-text queries.
//!
//! Everything here is pure (no I/O), except that `fts` asks an in-memory SQLite once per
//! distinct non-ASCII character how the FTS5 tokenizer classifies it. Each type can only be
//! built through a constructor that enforces the input rules of `shared/interfaces.md`, so a
//! value that reaches storage or an actor is valid by construction.

use std::fmt;

use serde::{Deserialize, Serialize};

mod fts;
mod memory;
pub mod tool;
pub use fts::{FTS_TOKENIZER, fts_words, is_token_char};
pub use memory::{MemoryMeta, MemorySummary};

/// Longest accepted user id, in bytes (all accepted characters are ASCII).
pub const MAX_USER_ID_LEN: usize = 64;
/// Longest stored filename, in bytes.
pub const MAX_FILENAME_LEN: usize = 128;
/// Longest single tag, in characters.
pub const MAX_TAG_LEN: usize = 64;
/// Most tags on one memory.
pub const MAX_TAGS: usize = 32;
/// Longest description, in characters.
pub const MAX_DESCRIPTION_LEN: usize = 1024;
/// Longest query text, in characters (longer queries are an error, not truncated).
pub const MAX_QUERY_LEN: usize = 1024;
/// Most search terms kept from one query.
pub const MAX_QUERY_TERMS: usize = 32;

/// The request `_meta` key carrying a tool call's idempotency key. The daemon builds it as
/// `<turn id>:<round>:<index of the call in the round>`, never from the provider's call id
/// (a model may send empty or repeated ids). The memory server answers a repeat with the same
/// arguments with the first result, and a reuse with other arguments with a tool error.
pub const IDEMPOTENCY_META_KEY: &str = "io.memento/idempotency-key";

/// The request `_meta` key of `store_memory` carrying an import's original store time
/// (RFC 3339). With it the memory keeps that time, and a memory already stored with the same
/// filename, content and second is answered instead of stored again (import idempotency).
pub const CREATED_AT_META_KEY: &str = "io.memento/created-at";

/// Why a value was rejected. Messages are written for a person (or a model) to act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// The user id breaks the `user_id` rule.
    #[error(
        "invalid user_id {0:?}: use 1 to 64 characters of A-Z a-z 0-9 . _ - not starting with '.'"
    )]
    UserId(String),
    /// The memory id is not an id Memento issued.
    #[error(
        "invalid memory id {0:?}: pass an `id` exactly as returned by store_memory or retrieve_memories"
    )]
    MemoryId(String),
    /// A tag is too long or there are too many.
    #[error("{0}")]
    Tags(String),
    /// Some other argument is out of range.
    #[error("{0}")]
    Argument(String),
}

// === UserId ===

/// A validated user id: 1 to 64 characters of `A-Z a-z 0-9 . _ -`, not starting with `.`.
///
/// The rule keeps ids safe in paths, URLs, logs and SQL, and makes `..` impossible.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct UserId(String);

impl UserId {
    /// Validates `raw` against the `user_id` rule.
    pub fn parse(raw: &str) -> Result<UserId, ValidationError> {
        let valid_len = !raw.is_empty() && raw.len() <= MAX_USER_ID_LEN;
        let valid_chars = raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if valid_len && valid_chars && !raw.starts_with('.') {
            Ok(UserId(raw.to_owned()))
        } else {
            Err(ValidationError::UserId(truncate_for_message(raw)))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for UserId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        UserId::parse(&raw).map_err(serde::de::Error::custom)
    }
}

// === MemoryId ===

/// A memory's id: a UUID (version 7, so ids sort by creation time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemoryId(uuid::Uuid);

impl MemoryId {
    /// A fresh, time-ordered id.
    pub fn new() -> MemoryId {
        MemoryId(uuid::Uuid::now_v7())
    }

    /// Parses an id given by a client.
    pub fn parse(raw: &str) -> Result<MemoryId, ValidationError> {
        uuid::Uuid::try_parse(raw.trim())
            .map(MemoryId)
            .map_err(|_| ValidationError::MemoryId(truncate_for_message(raw)))
    }
}

impl Default for MemoryId {
    fn default() -> Self {
        MemoryId::new()
    }
}

impl fmt::Display for MemoryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl<'de> Deserialize<'de> for MemoryId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        MemoryId::parse(&raw).map_err(serde::de::Error::custom)
    }
}

impl Serialize for MemoryId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

// === Tags ===

/// Normalises tags: trims, lower-cases, collapses inner whitespace, drops empties and
/// duplicates (first occurrence wins, order kept). Each input string may itself be a
/// comma-separated list.
pub fn normalize_tags<'a>(
    raw: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<String>, ValidationError> {
    let mut tags: Vec<String> = Vec::new();
    for piece in raw.into_iter().flat_map(|s| s.split(',')) {
        let tag = piece
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase();
        let tag: String = tag.chars().filter(|c| !c.is_control()).collect();
        if tag.is_empty() || tags.contains(&tag) {
            continue;
        }
        if tag.chars().count() > MAX_TAG_LEN {
            return Err(ValidationError::Tags(format!(
                "tag {:?} is longer than {MAX_TAG_LEN} characters",
                truncate_for_message(&tag)
            )));
        }
        tags.push(tag);
    }
    if tags.len() > MAX_TAGS {
        return Err(ValidationError::Tags(format!(
            "{} tags given; at most {MAX_TAGS} are allowed",
            tags.len()
        )));
    }
    Ok(tags)
}

// === Filenames ===

/// Makes a client-supplied filename safe to show and store: keeps only its last path
/// component, drops control characters and characters that are special in file systems,
/// strips leading dots (no hidden files, no `..`), and caps the length at
/// [`MAX_FILENAME_LEN`] bytes, keeping the extension. Returns `None` when nothing usable is
/// left, so the caller can derive a name instead.
pub fn sanitize_filename(raw: &str) -> Option<String> {
    let last = raw.rsplit(['/', '\\']).next().unwrap_or(raw);
    let mut name: String = last
        .chars()
        .filter(|c| !c.is_control())
        .map(|c| match c {
            ':' | '*' | '?' | '"' | '<' | '>' | '|' => '_',
            c if c.is_whitespace() => '_',
            c => c,
        })
        .collect();
    while name.contains("..") {
        name = name.replace("..", ".");
    }
    name = name
        .trim_start_matches(['.', '_'])
        .trim_end_matches(['.', '_'])
        .to_owned();
    if name.is_empty() {
        return None;
    }
    if name.len() > MAX_FILENAME_LEN {
        name = truncate_keeping_extension(&name, MAX_FILENAME_LEN);
    }
    Some(name)
}

/// Derives a filename such as `chocolate_cake_with_2.txt` from the first words of `text`.
pub fn filename_from_text(text: &str) -> String {
    let slug: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .take(5)
        .map(str::to_lowercase)
        .collect();
    let mut stem = slug.join("_");
    if stem.is_empty() {
        stem = "memory".to_owned();
    }
    truncate_keeping_extension(&format!("{stem}.txt"), MAX_FILENAME_LEN)
}

fn truncate_keeping_extension(name: &str, max: usize) -> String {
    let (stem, ext) = match name.rfind('.') {
        Some(dot) if dot > 0 && name.len() - dot <= 16 => (&name[..dot], &name[dot..]),
        _ => (name, ""),
    };
    let budget = max.saturating_sub(ext.len());
    let mut end = budget.min(stem.len());
    while !stem.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{}", &stem[..end], ext)
}

// === Full-text queries ===

/// Words that carry no meaning in a memory search ("what did I store about the Q4 plan"):
/// articles, prepositions, pronouns, auxiliaries and question words ("when did she go to
/// the support group?" searches `go`, `support`, `group`). Measured on LoCoMo's questions:
/// dropping the question words, auxiliaries and pronouns lifts keyword hit@10 from 0.649 to
/// 0.686 (BENCHMARKS.md, issue 15).
const STOP_WORDS: &[&str] = &[
    "a", "about", "all", "an", "and", "any", "are", "as", "at", "be", "been", "being", "by", "can",
    "could", "did", "do", "does", "for", "from", "had", "has", "have", "he", "her", "hers", "him",
    "his", "how", "i", "in", "is", "it", "its", "me", "might", "my", "of", "on", "or", "our",
    "she", "should", "store", "stored", "that", "the", "their", "them", "there", "they", "this",
    "to", "was", "we", "were", "what", "when", "where", "which", "who", "whom", "whose", "why",
    "will", "with", "would", "you", "your",
];

/// A full-text query reduced to plain search terms. The raw text never reaches the FTS
/// engine: only the tokenizer's token characters survive (ASCII letters and digits, and the
/// non-ASCII characters FTS5 keeps in a token), each term is quoted, so operators (`NEAR`,
/// `*`, `-`, quotes, parentheses, column filters) are impossible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchTerms(Vec<String>);

impl SearchTerms {
    /// Extracts search terms from `raw`. Stop words are dropped unless nothing else is left.
    pub fn parse(raw: &str) -> Result<SearchTerms, ValidationError> {
        if raw.chars().count() > MAX_QUERY_LEN {
            return Err(ValidationError::Argument(format!(
                "query is longer than {MAX_QUERY_LEN} characters; use a few key words"
            )));
        }
        // Split as the FTS5 tokenizer splits (see `fts`), so each term is one token.
        let words: Vec<String> = fts_words(raw);
        let meaningful: Vec<String> = words
            .iter()
            .filter(|w| !STOP_WORDS.contains(&w.as_str()))
            .cloned()
            .collect();
        let mut terms = if meaningful.is_empty() {
            words
        } else {
            meaningful
        };
        let mut seen = std::collections::HashSet::new();
        terms.retain(|t| seen.insert(t.clone()));
        terms.truncate(MAX_QUERY_TERMS);
        Ok(SearchTerms(terms))
    }

    /// True when the query had no searchable word at all (e.g. `"*"` or `"()"`).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The terms, lower-cased.
    pub fn terms(&self) -> &[String] {
        &self.0
    }
}

/// Shortens hostile input before it is echoed in an error message.
fn truncate_for_message(raw: &str) -> String {
    const MAX: usize = 80;
    if raw.chars().count() <= MAX {
        raw.to_owned()
    } else {
        let cut: String = raw.chars().take(MAX).collect();
        format!("{cut}...")
    }
}

#[cfg(test)]
mod tests;
