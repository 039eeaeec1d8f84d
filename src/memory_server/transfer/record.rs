//! The two interchange forms of a memory, without any storage: a JSONL line ([`Record`]) and
//! a seed-style file (`YYYYMMDD_HHMMSS_<filename>`, optionally with a `description:` /
//! `tags:` header). The daemon's HTTP import/export uses this module too, so it imports
//! nothing of `storage`.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};

/// One memory as a JSONL line: every field the store keeps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Owner.
    pub user_id: String,
    /// The id it had where it was exported (a new one is given on import).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Filename.
    pub filename: String,
    /// The seed's `YYYYmmdd_HHMMSS_filename` (informative; recomputed on import).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_as: Option<String>,
    /// Description ("" when none).
    #[serde(default)]
    pub description: String,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// When it was stored.
    pub created_at: DateTime<Utc>,
    /// Size of the content in bytes (informative).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// The text.
    pub content: String,
}

/// A memory read from a seed-style file.
#[derive(Debug, Clone, PartialEq)]
pub struct SeedFile {
    /// The store time, from the file name.
    pub created_at: DateTime<Utc>,
    /// The filename part of the name.
    pub filename: String,
    /// From the header, "" without one.
    pub description: String,
    /// From the header (comma-separated there).
    pub tags: Vec<String>,
    /// The text.
    pub content: String,
}

/// Why a seed-style file was not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeedError {
    /// The name is not `YYYYMMDD_HHMMSS_<filename>`.
    #[error("name is not YYYYMMDD_HHMMSS_<filename>")]
    Name,
    /// The file is not UTF-8 text.
    #[error("not UTF-8 text")]
    NotText,
    /// Nothing but a header.
    #[error("no text after the header")]
    Empty,
}

/// Splits `YYYYMMDD_HHMMSS_<filename>` into its time (UTC) and filename.
pub fn parse_seed_name(name: &str) -> Result<(DateTime<Utc>, String), SeedError> {
    let stamp = name.get(..15).ok_or(SeedError::Name)?;
    let rest = name.get(15..).ok_or(SeedError::Name)?;
    let filename = rest.strip_prefix('_').ok_or(SeedError::Name)?;
    if filename.is_empty() || !stamp.is_char_boundary(8) || stamp.as_bytes()[8] != b'_' {
        return Err(SeedError::Name);
    }
    if !stamp
        .bytes()
        .enumerate()
        .all(|(i, b)| i == 8 || b.is_ascii_digit())
    {
        return Err(SeedError::Name);
    }
    let time =
        NaiveDateTime::parse_from_str(stamp, "%Y%m%d_%H%M%S").map_err(|_| SeedError::Name)?;
    Ok((time.and_utc(), filename.to_owned()))
}

/// The seed file name of a memory stored at `created_at` (seconds; UTC).
pub fn seed_name(created_at: DateTime<Utc>, filename: &str) -> String {
    format!("{}_{filename}", created_at.format("%Y%m%d_%H%M%S"))
}

/// Reads a seed-style file: its name gives the time and filename; a header of
/// `description:` and `tags:` lines ended by a blank line, when present, gives those; the rest
/// (less one final newline) is the text.
pub fn parse_seed_file(name: &str, bytes: &[u8]) -> Result<SeedFile, SeedError> {
    let (created_at, filename) = parse_seed_name(name)?;
    let text = std::str::from_utf8(bytes).map_err(|_| SeedError::NotText)?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let (description, tags, body) = split_header(text);
    let body = body
        .strip_suffix("\r\n")
        .or_else(|| body.strip_suffix('\n'))
        .unwrap_or(body);
    if body.trim().is_empty() {
        return Err(SeedError::Empty);
    }
    Ok(SeedFile {
        created_at,
        filename,
        description,
        tags,
        content: body.to_owned(),
    })
}

/// `(description, tags, body)`: the header is only taken when every line before the first
/// blank line is a `description:` or `tags:` line.
fn split_header(text: &str) -> (String, Vec<String>, &str) {
    let mut description = String::new();
    let mut tags = Vec::new();
    let mut offset = 0;
    let mut seen = false;
    for line in text.split_inclusive('\n') {
        let bare = line.trim_end_matches(['\n', '\r']);
        offset += line.len();
        if bare.trim().is_empty() {
            if seen {
                return (description, tags, &text[offset..]);
            }
            break;
        }
        let Some((key, value)) = bare.split_once(':') else {
            break;
        };
        match key.trim().to_ascii_lowercase().as_str() {
            "description" => description = value.trim().to_owned(),
            "tags" => {
                tags = value
                    .split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
                    .collect()
            }
            _ => break,
        }
        seen = true;
    }
    (String::new(), Vec::new(), text)
}

/// Writes a memory as a seed-style file body. The header is always written (so a text that
/// itself begins with `description:` reads back unchanged); line breaks in the description
/// become spaces.
pub fn seed_file_body(description: &str, tags: &[String], content: &str) -> String {
    let description = description.replace(['\r', '\n'], " ");
    format!(
        "description: {description}\ntags: {}\n\n{content}\n",
        tags.join(", ")
    )
}

#[cfg(test)]
mod tests;
