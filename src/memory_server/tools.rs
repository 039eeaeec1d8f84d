//! The five memory tools: argument types (with the JSON Schemas the model sees), validation,
//! and the calls into storage. Transport-independent.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use rmcp::model::{CallToolResult, ContentBlock, JsonObject, Tool};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::memory_server::storage::{
    MemoryStore, NewMemory, SearchMode, SearchQuery, StorageError,
};
use crate::shared::domain::tool;
use crate::shared::domain::{
    self, MAX_DESCRIPTION_LEN, MemoryId, SearchTerms, UserId, ValidationError, filename_from_text,
    sanitize_filename,
};

/// Default page size of `retrieve_memories`.
pub(crate) const DEFAULT_LIMIT: u32 = 10;
/// Largest page size of `retrieve_memories`.
pub(crate) const MAX_LIMIT: u32 = 100;
/// Largest `offset` of `retrieve_memories`.
pub(crate) const MAX_OFFSET: u32 = 100_000;

/// Why a tool call failed; every variant becomes an `isError: true` result with a message a
/// person (or model) can act on. The session is never closed for it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ToolError {
    /// The arguments do not match the tool's schema.
    #[error("invalid arguments for {tool}: {message}")]
    Arguments {
        /// The tool.
        tool: &'static str,
        /// Serde's explanation.
        message: String,
    },
    /// An argument breaks an input rule.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// Nothing with that id for this user.
    #[error("no memory with id {0} for this user")]
    NotFound(MemoryId),
    /// Storage failed (or is busy: then the message says to retry).
    #[error("{}", storage_message(.0))]
    Storage(#[from] StorageError),
}

fn storage_message(error: &StorageError) -> String {
    match error {
        StorageError::Busy | StorageError::KeyReused { .. } | StorageError::Semantic(_) => {
            error.to_string()
        }
        other => format!("storage failure: {other}"),
    }
}

/// `tags` as a comma-separated string or a list of strings.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub(crate) enum TagsArg {
    /// `"work, meeting"`.
    Text(String),
    /// `["work", "meeting"]`.
    List(Vec<String>),
}

impl TagsArg {
    fn normalize(&self) -> Result<Vec<String>, ValidationError> {
        match self {
            TagsArg::Text(text) => domain::normalize_tags([text.as_str()]),
            TagsArg::List(list) => domain::normalize_tags(list.iter().map(String::as_str)),
        }
    }
}

/// Arguments of `store_memory`.
#[derive(Debug, Deserialize, JsonSchema)]
pub(crate) struct StoreArgs {
    /// The user whose memory this is.
    pub(crate) user_id: String,
    /// The text to remember, verbatim (notes, a recipe, a meeting summary...).
    pub(crate) content: String,
    /// A short file name for it, such as "meeting_summary.txt". Optional: derived from the
    /// content when missing.
    #[serde(default)]
    pub(crate) filename: Option<String>,
    /// One line saying what this is, to help find it later. Optional.
    #[serde(default)]
    pub(crate) description: Option<String>,
    /// Topic tags: a comma-separated string ("work,meeting") or a list. Optional.
    #[serde(default)]
    pub(crate) tags: Option<TagsArg>,
}

/// Arguments of `retrieve_memories`.
#[derive(Debug, Deserialize, JsonSchema)]
pub(crate) struct RetrieveArgs {
    /// The user whose memories to search.
    pub(crate) user_id: String,
    /// Words to search for in content, description, filename and tags (plain words; best
    /// match first). Omit to list the newest memories.
    #[serde(default)]
    pub(crate) query: Option<String>,
    /// Only memories with any of these tags: a comma-separated string or a list.
    #[serde(default)]
    pub(crate) tags: Option<TagsArg>,
    /// Only memories stored at or after this time (RFC 3339, e.g. "2024-07-15T00:00:00Z").
    #[serde(default)]
    pub(crate) since: Option<String>,
    /// Only memories stored before this time (RFC 3339).
    #[serde(default)]
    pub(crate) until: Option<String>,
    /// How many to return (1 to 100, default 10).
    #[serde(default)]
    pub(crate) limit: Option<u32>,
    /// How many matches to skip, for paging (default 0).
    #[serde(default)]
    pub(crate) offset: Option<u32>,
    /// How to rank a query: "hybrid" (default: by meaning and key words together; key words
    /// only when the server has no embeddings), "keyword" (key words only) or "semantic"
    /// (meaning only: finds notes that use other words than the query).
    #[serde(default)]
    pub(crate) mode: Option<String>,
}

/// Arguments of `get_memory` and `delete_memory`.
#[derive(Debug, Deserialize, JsonSchema)]
pub(crate) struct IdArgs {
    /// The user who owns the memory.
    pub(crate) user_id: String,
    /// The memory's `id`, exactly as returned by store_memory or retrieve_memories.
    pub(crate) id: String,
}

/// Arguments of `list_tags`.
#[derive(Debug, Deserialize, JsonSchema)]
pub(crate) struct UserArgs {
    /// The user whose tags to list.
    pub(crate) user_id: String,
}

/// The tool list, built once at start-up.
pub(crate) fn tool_list() -> Vec<Tool> {
    vec![
        tool::<StoreArgs>(
            tool::STORE_MEMORY,
            "Store something the user wants remembered (a note, recipe, meeting summary, \
             idea...). Use when the user says things like \"store this\", \"remember that\", \
             \"save\", \"note:\". Put the text to keep, verbatim, in `content`; add a short \
             `filename`, a one-line `description` and a few topic `tags` when you can.",
        ),
        tool::<RetrieveArgs>(
            tool::RETRIEVE_MEMORIES,
            "Search the user's stored memories. Use when the user asks what they stored, what \
             you remember about something, or to find or search their notes. Pass key words in \
             `query` (best match first), or omit it to list the newest memories; filter by \
             `tags` or by time with `since`/`until`. Results carry each memory's `id` and a \
             preview of its content. Queries match by meaning as well as by key words \
             (`mode`: hybrid, the default; keyword; semantic).",
        ),
        tool::<IdArgs>(
            tool::GET_MEMORY,
            "Fetch one stored memory whole, by the `id` that store_memory or retrieve_memories \
             returned. Use when a preview is not enough.",
        ),
        tool::<IdArgs>(
            tool::DELETE_MEMORY,
            "Delete one stored memory by its `id` (find the id with retrieve_memories first). \
             Use only when the user clearly asks to forget or delete something.",
        ),
        tool::<UserArgs>(
            tool::LIST_TAGS,
            "List the tags on the user's memories, with how many memories carry each.",
        ),
    ]
}

fn tool<T: JsonSchema>(name: &'static str, description: &'static str) -> Tool {
    let schema = schemars::SchemaGenerator::new(schemars::generate::SchemaSettings::draft07())
        .into_root_schema_for::<T>();
    let mut object: JsonObject = match serde_json::to_value(schema) {
        Ok(Value::Object(object)) => object,
        _ => JsonObject::new(),
    };
    // Clients (and models) need neither the title nor the meta-schema URL.
    object.remove("title");
    object.remove("$schema");
    Tool::new(name, description, Arc::new(object))
}

/// Input limits the tool layer enforces.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Largest content, bytes.
    pub(crate) max_content_bytes: usize,
}

pub(crate) use crate::shared::domain::{CREATED_AT_META_KEY, IDEMPOTENCY_META_KEY};
/// Longest idempotency key accepted.
const MAX_IDEMPOTENCY_KEY_LEN: usize = 200;

/// Runs one tool call. `None` is for unknown tools only (a JSON-RPC error); everything else
/// is a result, `isError` when it failed.
pub(crate) async fn call(
    store: &dyn MemoryStore,
    limits: Limits,
    name: &str,
    arguments: JsonObject,
    meta: &StoreMeta,
) -> Option<CallToolResult> {
    // Each tool's arguments are parsed into its typed struct here, the one place that
    // turns a JSON object into arguments (and a bad one into `ToolError::Arguments`).
    let result = match name {
        tool::STORE_MEMORY => {
            typed(tool::STORE_MEMORY, arguments, |args| {
                store_memory(store, limits, args, meta)
            })
            .await
        }
        tool::RETRIEVE_MEMORIES => {
            typed(tool::RETRIEVE_MEMORIES, arguments, |args| {
                retrieve_memories(store, args)
            })
            .await
        }
        tool::GET_MEMORY => {
            typed(tool::GET_MEMORY, arguments, |args| get_memory(store, args)).await
        }
        tool::DELETE_MEMORY => {
            typed(tool::DELETE_MEMORY, arguments, |args| {
                delete_memory(store, args)
            })
            .await
        }
        tool::LIST_TAGS => typed(tool::LIST_TAGS, arguments, |args| list_tags(store, args)).await,
        _ => return None,
    };
    Some(result.unwrap_or_else(|error| {
        // The text is for the model and people; the structured copy lets programs (the
        // daemon's memory endpoints) tell "not found" from "bad argument" without parsing it.
        let message = error.to_string();
        let mut result =
            CallToolResult::error(vec![ContentBlock::text(format!("Error: {message}"))]);
        result.structured_content =
            Some(json!({ "error": { "code": error.code(), "message": message } }));
        result
    }))
}

impl ToolError {
    /// A stable, machine-readable name for the cause, sent in the error result's structured
    /// content as `error.code`.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            ToolError::Arguments { .. } | ToolError::Invalid(_) => "invalid_argument",
            ToolError::NotFound(_) => "not_found",
            ToolError::Storage(_) => "storage_failure",
        }
    }
}

/// What a tool answers: a result, or the error that becomes an `isError` result.
type ToolResult = Result<CallToolResult, ToolError>;

fn parse<T: for<'de> Deserialize<'de>>(
    tool: &'static str,
    arguments: JsonObject,
) -> Result<T, ToolError> {
    serde_json::from_value(Value::Object(arguments)).map_err(|e| ToolError::Arguments {
        tool,
        message: e.to_string(),
    })
}

/// The tool's arguments parsed into `A`, then `handler` on them.
async fn typed<A, F>(
    tool: &'static str,
    arguments: JsonObject,
    handler: impl FnOnce(A) -> F,
) -> ToolResult
where
    A: for<'de> Deserialize<'de>,
    F: std::future::Future<Output = ToolResult>,
{
    handler(parse(tool, arguments)?).await
}

fn structured(text: String, value: Value) -> CallToolResult {
    let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
    result.structured_content = Some(value);
    result
}

/// The JSON text block mirrors the structured content, as the MCP spec recommends for
/// clients that only read text.
fn json_result(value: Value) -> CallToolResult {
    structured(value.to_string(), value)
}

pub(crate) fn parse_time(
    field: &str,
    raw: Option<&str>,
) -> Result<Option<DateTime<Utc>>, ValidationError> {
    raw.filter(|s| !s.trim().is_empty())
        .map(|s| {
            DateTime::parse_from_rfc3339(s.trim())
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| {
                    ValidationError::Argument(format!(
                        "{field} must be an RFC 3339 timestamp such as 2024-07-15T14:30:52Z, \
                         got {s:?}"
                    ))
                })
        })
        .transpose()
}

/// What a `store_memory` call carries in its request `_meta` besides the arguments.
#[derive(Debug, Clone, Default)]
pub(crate) struct StoreMeta {
    /// [`IDEMPOTENCY_META_KEY`]: a repeat answers the first result.
    pub(crate) idempotency_key: Option<String>,
    /// [`CREATED_AT_META_KEY`]: an import's original store time (RFC 3339).
    pub(crate) created_at: Option<String>,
}

impl StoreMeta {
    /// Reads the keys from `first`, then from `then` for those `first` lacks (a request's
    /// own `_meta`, then what the transport put in the request context), without merging
    /// the maps.
    pub(crate) fn from_layers(first: Option<&JsonObject>, then: &JsonObject) -> StoreMeta {
        let text = |key: &str| {
            first
                .and_then(|meta| meta.get(key))
                .or_else(|| then.get(key))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        StoreMeta {
            idempotency_key: text(IDEMPOTENCY_META_KEY),
            created_at: text(CREATED_AT_META_KEY),
        }
    }
}

/// Validates and normalises a memory to store, exactly as `store_memory` does; the importer
/// uses it too, so an imported memory obeys the same rules as a stored one.
pub(crate) fn prepare_store(
    args: StoreArgs,
    limits: Limits,
    created_at: Option<DateTime<Utc>>,
) -> Result<NewMemory, ToolError> {
    let user = UserId::parse(&args.user_id)?;
    if args.content.trim().is_empty() {
        return Err(ValidationError::Argument("content is empty: nothing to store".into()).into());
    }
    if args.content.len() > limits.max_content_bytes {
        return Err(ValidationError::Argument(format!(
            "content is {} bytes; the maximum is {} bytes",
            args.content.len(),
            limits.max_content_bytes
        ))
        .into());
    }
    let description = args.description.unwrap_or_default().trim().to_owned();
    if description.chars().count() > MAX_DESCRIPTION_LEN {
        return Err(ValidationError::Argument(format!(
            "description is longer than {MAX_DESCRIPTION_LEN} characters"
        ))
        .into());
    }
    let tags = args
        .tags
        .as_ref()
        .map(TagsArg::normalize)
        .transpose()?
        .unwrap_or_default();
    let filename = args
        .filename
        .as_deref()
        .and_then(sanitize_filename)
        .unwrap_or_else(|| {
            filename_from_text(if description.is_empty() {
                &args.content
            } else {
                &description
            })
        });
    Ok(NewMemory {
        user,
        content: args.content,
        filename,
        description,
        tags,
        idempotency_key: None,
        created_at,
        embedding: None,
        embedding_model: None,
    })
}

async fn store_memory(
    store: &dyn MemoryStore,
    limits: Limits,
    args: StoreArgs,
    meta: &StoreMeta,
) -> ToolResult {
    if let Some(key) = meta.idempotency_key.as_deref()
        && (key.is_empty()
            || key.len() > MAX_IDEMPOTENCY_KEY_LEN
            || key.chars().any(char::is_control))
    {
        return Err(ValidationError::Argument(format!(
            "_meta.{IDEMPOTENCY_META_KEY} must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} printable characters"
        ))
        .into());
    }
    let created_at = parse_time(
        &format!("_meta.{CREATED_AT_META_KEY}"),
        meta.created_at.as_deref(),
    )?;
    let mut new_memory = prepare_store(args, limits, created_at)?;
    new_memory.idempotency_key = meta.idempotency_key.clone();
    let user = new_memory.user.clone();
    let memory = store.store(new_memory).await?;
    let text = format!(
        "Successfully stored '{}' for user {} as {}",
        memory.filename, user, memory.stored_as
    );
    Ok(structured(
        text,
        json!({
            "id": memory.id,
            "filename": memory.filename,
            "stored_as": memory.stored_as,
            "created_at": memory.created_at,
            "tags": memory.tags,
            "size_bytes": memory.size_bytes,
            "replayed": memory.replayed,
        }),
    ))
}

async fn retrieve_memories(store: &dyn MemoryStore, args: RetrieveArgs) -> ToolResult {
    let user = UserId::parse(&args.user_id)?;
    let limit = args.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ValidationError::Argument(format!(
            "limit must be between 1 and {MAX_LIMIT}, got {limit}"
        ))
        .into());
    }
    let offset = args.offset.unwrap_or(0);
    if offset > MAX_OFFSET {
        return Err(
            ValidationError::Argument(format!("offset must be at most {MAX_OFFSET}")).into(),
        );
    }
    let terms = args
        .query
        .as_deref()
        .filter(|q| !q.trim().is_empty())
        .map(SearchTerms::parse)
        .transpose()?;
    let since = parse_time("since", args.since.as_deref())?;
    let until = parse_time("until", args.until.as_deref())?;
    let tags = args
        .tags
        .as_ref()
        .map(TagsArg::normalize)
        .transpose()?
        .unwrap_or_default();
    let mode = match args.mode.as_deref().filter(|m| !m.trim().is_empty()) {
        None => SearchMode::default(),
        Some(raw) => SearchMode::parse(raw).ok_or_else(|| {
            ValidationError::Argument(format!(
                "mode must be \"hybrid\", \"keyword\" or \"semantic\", got {raw:?}"
            ))
        })?,
    };
    let text = terms
        .as_ref()
        .and(args.query.as_deref())
        .map(|q| q.trim().to_owned());
    let memories = store
        .search(SearchQuery {
            user,
            terms,
            tags,
            since,
            until,
            limit,
            offset,
            text,
            mode,
            vector: None,
            semantic_weight: 1.0,
            ranking: Default::default(),
        })
        .await?;
    Ok(json_result(
        json!({ "memories": memories, "count": memories.len() }),
    ))
}

async fn get_memory(store: &dyn MemoryStore, args: IdArgs) -> ToolResult {
    let user = UserId::parse(&args.user_id)?;
    let id = MemoryId::parse(&args.id)?;
    let memory = store.get(user, id).await?.ok_or(ToolError::NotFound(id))?;
    Ok(json_result(json!(memory)))
}

async fn delete_memory(store: &dyn MemoryStore, args: IdArgs) -> ToolResult {
    let user = UserId::parse(&args.user_id)?;
    let id = MemoryId::parse(&args.id)?;
    let deleted = store
        .delete(user, id)
        .await?
        .ok_or(ToolError::NotFound(id))?;
    Ok(structured(
        format!("Deleted memory {} ('{}')", deleted.id, deleted.filename),
        json!({ "deleted": true, "id": deleted.id, "filename": deleted.filename }),
    ))
}

async fn list_tags(store: &dyn MemoryStore, args: UserArgs) -> ToolResult {
    let user = UserId::parse(&args.user_id)?;
    let tags = store.list_tags(user).await?;
    Ok(json_result(json!({ "tags": tags })))
}

#[cfg(test)]
mod tests;
