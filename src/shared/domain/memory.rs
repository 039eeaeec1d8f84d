//! What the memory server says about a stored memory, besides its text: one definition for
//! the server's views (`memory_server::storage`) and the daemon's API bodies
//! (`shared::api::memories`), which carry the same JSON.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::MemoryId;

/// A memory's id and metadata. Every view of a memory holds it flattened (the same JSON
/// fields).
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

/// A memory without its whole content (a search hit, a listed memory): its metadata and
/// the start of its content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemorySummary {
    /// Id and metadata.
    #[serde(flatten)]
    pub meta: MemoryMeta,
    /// The first `PREVIEW_CHARS` (300) characters of the content.
    pub preview: String,
}
