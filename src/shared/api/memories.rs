//! The memory endpoints' bodies: `GET /v1/users/{user_id}/memories`, `GET`/`DELETE
//! /v1/users/{user_id}/memories/{id}`, `GET /v1/users/{user_id}/tags` and `POST
//! /v1/users/{user_id}/memories/import`.
//!
//! The daemon answers these with the memory tools' structured content (`retrieve_memories`,
//! `get_memory`, `delete_memory`, `list_tags`), read into these types on the way, so an
//! answer of another shape is the daemon's 502, never a client's surprise.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::shared::domain::MemoryId;

/// The query parameters of `GET .../memories` (all optional; see [`MemoryQuery::PARAMS`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryQuery {
    /// Full-text search; best match first. Without it, newest first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Comma-separated tags: memories with any of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<String>,
    /// Stored at or after (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Stored before (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// Page size, 1 to 100 (default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Memories to skip, up to 100,000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u32>,
}

impl MemoryQuery {
    /// The parameter names: the daemon refuses any other (a typo such as `?q=` is reported,
    /// not silently ignored).
    pub const PARAMS: [&'static str; 6] = ["query", "tags", "since", "until", "limit", "offset"];
}

/// `GET .../memories` answer: `{"memories": [...], "count": n}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryList {
    /// This page's memories.
    pub memories: Vec<MemorySummary>,
    /// How many are on this page.
    pub count: usize,
}

/// What every memory body says about a memory, besides its text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryMeta {
    /// Its id.
    pub id: MemoryId,
    /// Its sanitised filename.
    pub filename: String,
    /// The seed's `YYYYmmdd_HHMMSS_filename` name.
    pub stored_as: String,
    /// Description ("" when none).
    pub description: String,
    /// Tags.
    pub tags: Vec<String>,
    /// When it was stored (UTC).
    pub created_at: DateTime<Utc>,
    /// Size of the whole content in bytes.
    pub size_bytes: u64,
}

/// A listed memory: its metadata and the start of its content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemorySummary {
    /// The memory.
    #[serde(flatten)]
    pub meta: MemoryMeta,
    /// The first 300 characters of the content.
    pub preview: String,
}

/// `GET .../memories/{id}` answer: one memory, whole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryDetail {
    /// The memory.
    #[serde(flatten)]
    pub meta: MemoryMeta,
    /// The content.
    pub content: String,
}

/// `DELETE .../memories/{id}` answer: `{"deleted": true, "id", "filename"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeletedMemory {
    /// Always true.
    pub deleted: bool,
    /// The deleted memory's id.
    pub id: MemoryId,
    /// Its filename.
    pub filename: String,
}

/// `GET .../tags` answer: `{"tags": [{"tag", "count"}, ...]}`, most used first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagList {
    /// The user's tags.
    pub tags: Vec<TagCount>,
}

/// A tag and how many of the user's memories carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagCount {
    /// The tag.
    pub tag: String,
    /// Memories with it.
    pub count: u64,
}

/// `POST .../memories/import` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportReport {
    /// Whose memories.
    pub user_id: String,
    /// Lines stored as new memories.
    pub imported: u64,
    /// Lines the user already had (same filename, content and time): importing again is
    /// safe.
    pub already_present: u64,
    /// Lines not imported, and why.
    pub skipped: Vec<SkippedLine>,
}

/// An import line that was not imported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedLine {
    /// 1-based line number.
    pub line: usize,
    /// Why.
    pub reason: String,
}
