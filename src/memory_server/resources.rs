//! MCP resources, completion and logging of the memory server: everything besides tools.
//!
//! Each memory is a resource, `memento://users/{user_id}/memories/{id}` (text/plain, the
//! memory's text). Two more templates address memories by what people remember of them:
//! `memento://users/{user_id}/tags/{tag}` (a text listing of the memories with that tag) and
//! `memento://users/{user_id}/files/{filename}` (the newest memory with that filename).
//! Path segments are percent-encoded (RFC 3986) when they hold other than unreserved
//! characters.
//!
//! **Scoping `resources/list`.** The server's token acts for every user, so a plain
//! `resources/list` lists every user's memories; a client that acts for one user sends
//! `_meta: {"io.memento/user-id": "alice"}` in the request params. Pages hold
//! [`PAGE_SIZE`] memories, newest stored first; the cursor is opaque and carries the scope,
//! so later pages need no `_meta`.
//!
//! `completion/complete` completes the `user_id`, `tag` and `filename` arguments of these
//! templates (tags and filenames of the user named in `context.arguments.user_id`).
//! The server exposes no prompts, so a prompt reference completes to nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use rmcp::model::{
    CompleteRequestParams, CompleteResult, CompletionInfo, ErrorData, JsonObject,
    ListResourceTemplatesResult, ListResourcesResult, PaginatedRequestParams, ReadResourceResult,
    Reference, Resource, ResourceContents, ResourceTemplate,
};
use serde_json::Value;

use crate::memory_server::storage::{
    CompletionField, CompletionQuery, ListQuery, ListedMemory, Memory, MemoryStore,
};
use crate::shared::domain::{MemoryId, UserId, normalize_tags};

/// The `_meta` key of `resources/list` naming the one user to list.
pub const USER_META_KEY: &str = "io.memento/user-id";
/// Memories per `resources/list` page.
pub const PAGE_SIZE: u32 = 50;
/// Most memories a tag resource lists.
const TAG_LISTING_LIMIT: u32 = 100;
/// Most values a completion returns (the MCP maximum).
const COMPLETION_LIMIT: u32 = 100;

/// The template of one memory.
pub const MEMORY_TEMPLATE: &str = "memento://users/{user_id}/memories/{id}";
/// The template of a tag's listing.
pub const TAG_TEMPLATE: &str = "memento://users/{user_id}/tags/{tag}";
/// The template of the newest memory with a filename.
pub const FILE_TEMPLATE: &str = "memento://users/{user_id}/files/{filename}";

const URI_PREFIX: &str = "memento://users/";
const TEXT: &str = "text/plain";

/// The URI of one memory.
pub fn memory_uri(user: &UserId, id: MemoryId) -> String {
    format!("{URI_PREFIX}{}/memories/{id}", user.as_str())
}

/// The resource templates.
pub(crate) fn templates() -> ListResourceTemplatesResult {
    ListResourceTemplatesResult::with_all_items(vec![
        ResourceTemplate::new(MEMORY_TEMPLATE, "memory")
            .with_title("A stored memory")
            .with_description("One memory's text, by user and id.")
            .with_mime_type(TEXT),
        ResourceTemplate::new(TAG_TEMPLATE, "memories-by-tag")
            .with_title("Memories with a tag")
            .with_description(
                "A listing of the user's memories carrying the tag, newest first: one line \
                 per memory with its URI, stored name and description.",
            )
            .with_mime_type(TEXT),
        ResourceTemplate::new(FILE_TEMPLATE, "memory-by-filename")
            .with_title("A memory by file name")
            .with_description("The text of the user's newest memory with that filename.")
            .with_mime_type(TEXT),
    ])
}

/// `resources/list`: one page, scoped by `_meta` or by the cursor.
pub(crate) async fn list(
    store: &dyn MemoryStore,
    request: Option<PaginatedRequestParams>,
    context_meta: &JsonObject,
) -> Result<ListResourcesResult, ErrorData> {
    let request = request.unwrap_or_default();
    let (user, after) = match request.cursor.as_deref() {
        Some(cursor) => parse_cursor(cursor)?,
        None => {
            let raw = request
                .meta
                .as_ref()
                .and_then(|m| m.0.0.get(USER_META_KEY))
                .or_else(|| context_meta.get(USER_META_KEY));
            let user = match raw {
                None | Some(Value::Null) => None,
                Some(Value::String(raw)) => Some(parse_user(raw)?),
                Some(_) => {
                    return Err(ErrorData::invalid_params(
                        format!("_meta.{USER_META_KEY} must be a user id string"),
                        None,
                    ));
                }
            };
            (user, None)
        }
    };
    let page = store
        .list(ListQuery {
            user: user.clone(),
            after,
            limit: PAGE_SIZE + 1,
            ..ListQuery::default()
        })
        .await
        .map_err(storage_error)?;
    let more = page.len() > PAGE_SIZE as usize;
    let page = &page[..page.len().min(PAGE_SIZE as usize)];
    let mut result =
        ListResourcesResult::with_all_items(page.iter().map(resource).collect::<Vec<_>>());
    if more && let Some(last) = page.last() {
        result.next_cursor = Some(cursor(user.as_ref(), last.position));
    }
    Ok(result)
}

fn resource(listed: &ListedMemory) -> Resource {
    let memory = &listed.memory;
    let title = if memory.description.is_empty() {
        memory.filename.clone()
    } else {
        memory.description.clone()
    };
    Resource::new(
        memory_uri(&listed.user, memory.id),
        memory.stored_as.clone(),
    )
    .with_title(title)
    .with_mime_type(TEXT)
    .with_size(memory.size_bytes)
}

/// The cursor: `<position>/<user id or nothing>` (user ids never hold `/`).
fn cursor(user: Option<&UserId>, position: i64) -> String {
    format!("{position}/{}", user.map(UserId::as_str).unwrap_or(""))
}

fn parse_cursor(raw: &str) -> Result<(Option<UserId>, Option<i64>), ErrorData> {
    let invalid = || ErrorData::invalid_params("invalid cursor: pass back nextCursor as is", None);
    let (position, user) = raw.split_once('/').ok_or_else(invalid)?;
    let position: i64 = position.parse().map_err(|_| invalid())?;
    let user = if user.is_empty() {
        None
    } else {
        Some(UserId::parse(user).map_err(|_| invalid())?)
    };
    Ok((user, Some(position)))
}

/// What a URI names.
#[derive(Debug, Clone, PartialEq)]
enum Target {
    Memory(UserId, MemoryId),
    Tag(UserId, String),
    File(UserId, String),
}

fn parse_uri(uri: &str) -> Result<Target, ErrorData> {
    let not_found = || {
        ErrorData::resource_not_found(
            format!(
                "no resource {uri:?}: this server serves {MEMORY_TEMPLATE}, {TAG_TEMPLATE} and \
                 {FILE_TEMPLATE}"
            ),
            None,
        )
    };
    let rest = uri.strip_prefix(URI_PREFIX).ok_or_else(not_found)?;
    let mut parts = rest.split('/');
    let (Some(user), Some(kind), Some(value), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(not_found());
    };
    let user = parse_user(&percent_decode(user).ok_or_else(not_found)?)?;
    let value = percent_decode(value).ok_or_else(not_found)?;
    match kind {
        "memories" => {
            let id = MemoryId::parse(&value)
                .map_err(|e| ErrorData::invalid_params(e.to_string(), None))?;
            Ok(Target::Memory(user, id))
        }
        "tags" => {
            let tag = normalize_tags([value.as_str()])
                .map_err(|e| ErrorData::invalid_params(e.to_string(), None))?
                .into_iter()
                .next()
                .ok_or_else(not_found)?;
            Ok(Target::Tag(user, tag))
        }
        "files" if !value.is_empty() => Ok(Target::File(user, value)),
        _ => Err(not_found()),
    }
}

/// `resources/read`.
pub(crate) async fn read(
    store: &dyn MemoryStore,
    uri: &str,
) -> Result<ReadResourceResult, ErrorData> {
    let target = parse_uri(uri)?;
    let missing = || ErrorData::resource_not_found(format!("no resource {uri:?}"), None);
    let text = match target {
        Target::Memory(user, id) => {
            store
                .get(user, id)
                .await
                .map_err(storage_error)?
                .ok_or_else(missing)?
                .content
        }
        Target::File(user, filename) => {
            let page = store
                .list(ListQuery {
                    user: Some(user),
                    filename: Some(filename),
                    limit: 1,
                    with_content: true,
                    ..ListQuery::default()
                })
                .await
                .map_err(storage_error)?;
            page.into_iter().next().ok_or_else(missing)?.memory.content
        }
        Target::Tag(user, tag) => {
            let page = store
                .list(ListQuery {
                    user: Some(user),
                    tag: Some(tag),
                    limit: TAG_LISTING_LIMIT,
                    ..ListQuery::default()
                })
                .await
                .map_err(storage_error)?;
            if page.is_empty() {
                return Err(missing());
            }
            page.iter()
                .map(|listed| listing_line(&listed.user, &listed.memory))
                .collect::<Vec<_>>()
                .join("\n")
        }
    };
    Ok(ReadResourceResult::new(vec![
        ResourceContents::text(text, uri).with_mime_type(TEXT),
    ]))
}

fn listing_line(user: &UserId, memory: &Memory) -> String {
    let mut line = format!("{} {}", memory_uri(user, memory.id), memory.stored_as);
    if !memory.description.is_empty() {
        line.push_str(" - ");
        line.push_str(&memory.description);
    }
    line
}

/// `completion/complete`.
pub(crate) async fn complete(
    store: &dyn MemoryStore,
    request: CompleteRequestParams,
) -> Result<CompleteResult, ErrorData> {
    let empty = || Ok(CompleteResult::new(CompletionInfo::default()));
    let Reference::Resource(reference) = &request.r#ref else {
        // No prompts here: nothing to complete.
        return empty();
    };
    if ![MEMORY_TEMPLATE, TAG_TEMPLATE, FILE_TEMPLATE].contains(&reference.uri.as_str()) {
        return empty();
    }
    let field = match (reference.uri.as_str(), request.argument.name.as_str()) {
        (_, "user_id") => CompletionField::User,
        (TAG_TEMPLATE, "tag") => CompletionField::Tag,
        (FILE_TEMPLATE, "filename") => CompletionField::Filename,
        _ => return empty(),
    };
    let user = request
        .context
        .as_ref()
        .and_then(|c| c.get_argument("user_id"))
        .and_then(|raw| UserId::parse(raw).ok());
    if field != CompletionField::User && user.is_none() {
        return empty();
    }
    let mut values = store
        .complete(CompletionQuery {
            field,
            user,
            prefix: request.argument.value.clone(),
            limit: COMPLETION_LIMIT + 1,
        })
        .await
        .map_err(storage_error)?;
    let more = values.len() > COMPLETION_LIMIT as usize;
    values.truncate(COMPLETION_LIMIT as usize);
    let info = CompletionInfo::with_pagination(values, None, more)
        .map_err(|e| ErrorData::internal_error(e, None))?;
    Ok(CompleteResult::new(info))
}

fn parse_user(raw: &str) -> Result<UserId, ErrorData> {
    UserId::parse(raw).map_err(|e| ErrorData::invalid_params(e.to_string(), None))
}

fn storage_error(error: crate::memory_server::storage::StorageError) -> ErrorData {
    tracing::error!(%error, "storage failed under an MCP resource request");
    ErrorData::internal_error(format!("storage failure: {error}"), None)
}

/// Decodes `%XX` escapes; `None` for a broken escape or bytes that are not UTF-8.
fn percent_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = raw.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Encodes everything but RFC 3986 unreserved characters, for tag and filename segments.
pub fn percent_encode(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for byte in raw.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

// === Logging ===

/// A session's `logging/setLevel`: the least severe level it wants as `notifications/message`
/// (none until it asks). One per session.
#[derive(Debug, Clone, Default)]
pub(crate) struct LogLevel(Arc<AtomicU8>);

/// Severity ranks of the MCP levels, debug = 1 .. emergency = 8; 0 = off.
#[allow(deprecated)]
pub(crate) fn rank(level: rmcp::model::LoggingLevel) -> u8 {
    use rmcp::model::LoggingLevel as L;
    match level {
        L::Debug => 1,
        L::Info => 2,
        L::Notice => 3,
        L::Warning => 4,
        L::Error => 5,
        L::Critical => 6,
        L::Alert => 7,
        L::Emergency => 8,
    }
}

impl LogLevel {
    /// Sets the threshold.
    pub(crate) fn set(&self, rank: u8) {
        self.0.store(rank, Ordering::Relaxed);
    }

    /// True when a message of `rank` should be sent.
    pub(crate) fn wants(&self, rank: u8) -> bool {
        let threshold = self.0.load(Ordering::Relaxed);
        threshold != 0 && rank >= threshold
    }
}

#[cfg(test)]
mod tests;
