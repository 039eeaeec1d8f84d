//! Words for the full-text index, split exactly where SQLite's FTS5 `unicode61` tokenizer
//! splits them.
//!
//! The storage engine indexes each word as `u<user number>q<word>` (tenant-scoped tokens).
//! That is only safe if FTS5 sees each such word as one token: a character that Memento
//! kept inside a word but the tokenizer treats as a separator would cut `u1qxⓐu2qsecret`
//! into `u1qx` and `u2qsecret`, planting a token in user 2's scope. Unicode classes differ
//! between Rust (`char::is_alphanumeric` includes symbols such as `ⓐ`, and follows a newer
//! Unicode) and the tables compiled into SQLite, so the classes are not guessed: each
//! non-ASCII character is classified once by the bundled SQLite itself (an in-memory FTS5
//! table with the index's tokenizer), and cached for the life of the process.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use rusqlite::Connection;

/// The tokenizer of `memories_fts` (see `storage::migrations`).
pub const FTS_TOKENIZER: &str = "porter unicode61 remove_diacritics 2";

/// Code points (`char::MAX` + 1).
const CODE_POINTS: usize = 0x11_0000;

/// What is known: `known` bit set once classified, `token` bit set for token characters.
struct Classes {
    known: Box<[AtomicU64]>,
    token: Box<[AtomicU64]>,
    /// The probe table; `None` when SQLite could not create it (then every non-ASCII
    /// character is a separator: safe, if coarse).
    probe: Mutex<Option<Connection>>,
}

static CLASSES: OnceLock<Classes> = OnceLock::new();

fn classes() -> &'static Classes {
    CLASSES.get_or_init(|| {
        let words = CODE_POINTS / 64;
        let bits = || (0..words).map(|_| AtomicU64::new(0)).collect();
        let probe = Connection::open_in_memory()
            .and_then(|conn| {
                conn.execute_batch(&format!(
                    "CREATE VIRTUAL TABLE probe USING fts5 (t, tokenize = '{FTS_TOKENIZER}')"
                ))?;
                Ok(conn)
            })
            .map_err(|error| {
                tracing::error!(%error, "cannot create the FTS5 probe table; non-ASCII text will not be searchable");
            })
            .ok();
        Classes {
            known: bits(),
            token: bits(),
            probe: Mutex::new(probe),
        }
    })
}

/// Whether FTS5 (with [`FTS_TOKENIZER`]) keeps `c` inside a word that has begun: a token
/// character, or a diacritic it folds away. Everything else separates words.
pub fn is_token_char(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphanumeric();
    }
    let classes = classes();
    let index = c as usize;
    let (word, bit) = (index / 64, 1u64 << (index % 64));
    if classes.known[word].load(Ordering::Acquire) & bit != 0 {
        return classes.token[word].load(Ordering::Acquire) & bit != 0;
    }
    let token = probe(classes, c);
    if token {
        classes.token[word].fetch_or(bit, Ordering::AcqRel);
    }
    classes.known[word].fetch_or(bit, Ordering::AcqRel);
    token
}

/// Asks SQLite: is `x<c>y` one token, or are `x` and `y` two?
fn probe(classes: &Classes, c: char) -> bool {
    let guard = classes.probe.lock().unwrap_or_else(|e| e.into_inner());
    let Some(conn) = guard.as_ref() else {
        return false;
    };
    let outcome = (|| -> rusqlite::Result<bool> {
        conn.execute("DELETE FROM probe", [])?;
        conn.execute("INSERT INTO probe (t) VALUES (?1)", [format!("x{c}y")])?;
        let alone: i64 = conn.query_row(
            "SELECT count(*) FROM probe WHERE probe MATCH 'x'",
            [],
            |row| row.get(0),
        )?;
        Ok(alone == 0)
    })();
    outcome.unwrap_or_else(|error| {
        tracing::warn!(%error, character = %c.escape_unicode(), "FTS5 probe failed; treating the character as a separator");
        false
    })
}

/// The words of `text` for the full-text index and for queries: lower-cased first (so a
/// lower-casing that yields several characters is split like the rest), then cut at every
/// character [`is_token_char`] rejects. Every character of every word is one FTS5 keeps
/// inside a token, so a word written after an ASCII prefix is exactly one FTS5 token.
pub fn fts_words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !is_token_char(c))
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}
