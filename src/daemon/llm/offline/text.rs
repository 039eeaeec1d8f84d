//! Text helpers of the offline model: words, case folding, phrase search, slugs and
//! clipping, all char-boundary safe.

use super::*;

/// Words of lower-cased text: letters, digits and apostrophes.
///
/// Not the product's other word split, [`crate::shared::domain::fts_words`], on purpose.
/// That one is the full-text index's (SQLite's `unicode61` tokenizer, mirrored for
/// PostgreSQL): it lower-cases, allocates, asks SQLite which non-ASCII characters are token
/// characters, and splits at every apostrophe ("alice's" -> `alice`, `s`; "don't" -> `don`,
/// `t`). This one reads a person's English to find an intent: it keeps apostrophes inside a
/// word ("what's", "don't", "alice's" stay whole, so the lexicon's "what's" and the
/// possessive stripping in [`super::intent::key_terms`] work), trims them at a word's ends,
/// counts any Unicode letter or digit as a word character, and borrows slices of its input
/// (offsets into the text stay valid). The test `the_offline_word_split_keeps_apostrophes`
/// pins the difference.
pub(super) fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '\'' || c == '’'))
        .map(|w| w.trim_matches(|c: char| c == '\'' || c == '’'))
        .filter(|w| !w.is_empty())
}

/// Lower-cases char by char, keeping a char whose lower case has another UTF-8 length
/// (e.g. `İ`), so byte offsets in the result are offsets in the original too.
pub(super) fn fold_case(text: &str) -> String {
    text.chars()
        .map(|c| {
            let mut lower = c.to_lowercase();
            match (lower.next(), lower.next()) {
                (Some(l), None) if l.len_utf8() == c.len_utf8() => l,
                _ => c,
            }
        })
        .collect()
}

pub(super) fn is_separator(c: char) -> bool {
    c.is_whitespace() || matches!(c, ',' | '.' | '!' | '?' | ';' | ':' | '-' | '—')
}

/// Skips fillers ("hey memento, please") from `from`; returns the new offset.
pub(super) fn skip_fillers(lower: &str, from: usize) -> usize {
    let mut pos = from;
    loop {
        let rest = &lower[pos..];
        let trimmed = rest.trim_start_matches(|c: char| {
            c.is_whitespace() || matches!(c, ',' | '.' | '!' | ';' | '-' | '—')
        });
        pos += rest.len() - trimmed.len();
        match FILLERS.iter().find_map(|f| strip_word(trimmed, f)) {
            // Keep a filler that is the whole message ("hey", "ok"): that is small talk.
            Some(after) if !after.trim_matches(is_separator).is_empty() => {
                pos = lower.len() - after.len();
            }
            _ => return pos,
        }
    }
}

/// `text` without the word or phrase `prefix` at its start, or `None` when it does not
/// start with it as whole words.
pub(super) fn strip_word<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = text.strip_prefix(prefix)?;
    let bounded = prefix.ends_with(|c: char| !c.is_alphanumeric())
        || !rest.starts_with(|c: char| c.is_alphanumeric() || c == '\'' || c == '’');
    bounded.then_some(rest)
}

pub(super) fn strip_any_word<'a>(text: &'a str, prefixes: &[&str]) -> Option<&'a str> {
    prefixes.iter().find_map(|p| strip_word(text, p))
}

pub(super) fn starts_with_any_word(text: &str, prefixes: &[&str]) -> bool {
    strip_any_word(text, prefixes).is_some()
}

pub(super) fn first_word(text: &str) -> &str {
    text.trim_start_matches(is_separator)
        .split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .next()
        .unwrap_or("")
}

/// True when `phrase` occurs in `text` as whole words.
pub(super) fn contains_phrase(text: &str, phrase: &str) -> bool {
    let mut from = 0;
    while let Some(found) = text.get(from..).and_then(|t| t.find(phrase)) {
        let start = from + found;
        let end = start + phrase.len();
        let before_ok = !text[..start].ends_with(|c: char| c.is_alphanumeric());
        let after_ok = !text[end..].starts_with(|c: char| c.is_alphanumeric());
        if before_ok && after_ok {
            return true;
        }
        from = end;
    }
    false
}

/// The first UUID-shaped word (8-4-4-4-12 hex digits), lower-cased.
pub(super) fn find_uuid(text: &str) -> Option<String> {
    text.split(|c: char| !(c.is_ascii_hexdigit() || c == '-'))
        .find(|w| {
            let groups: Vec<usize> = w.split('-').map(str::len).collect();
            groups == [8, 4, 4, 4, 12]
        })
        .map(str::to_ascii_lowercase)
}

/// A filename from the first meaningful words ("my passport expires in May" ->
/// `passport_expires_may.txt`).
pub(super) fn slug(content_lower: &str) -> String {
    let mut name = String::new();
    let mut taken = 0;
    for word in words(content_lower) {
        if STOP_WORDS.contains(&word) {
            continue;
        }
        let clean: String = word.chars().filter(char::is_ascii_alphanumeric).collect();
        if clean.is_empty() || name.len() + clean.len() > 40 {
            continue;
        }
        if !name.is_empty() {
            name.push('_');
        }
        name.push_str(&clean);
        taken += 1;
        if taken == 3 {
            break;
        }
    }
    if name.is_empty() {
        "note.txt".into()
    } else {
        format!("{name}.txt")
    }
}

pub(super) fn capitalize(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// At most `max` characters of `text` on one line, with an ellipsis when cut.
pub(super) fn clip(text: &str, max: usize) -> String {
    let mut out = String::new();
    let mut count = 0;
    let mut cut = false;
    for word in text.split_whitespace() {
        let len = word.chars().count();
        if count + len + usize::from(count > 0) > max {
            if count == 0 {
                out.extend(word.chars().take(max));
            }
            cut = true;
            break;
        }
        if count > 0 {
            out.push(' ');
            count += 1;
        }
        out.push_str(word);
        count += len;
    }
    if cut {
        out.push('…');
    }
    out
}
