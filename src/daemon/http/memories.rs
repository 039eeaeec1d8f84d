//! The memory endpoints: list and search, read one, delete one, and the tags in use.
//!
//! `GET /v1/users/{user_id}/memories?query=&tags=&since=&until=&limit=&offset=`,
//! `GET`/`DELETE /v1/users/{user_id}/memories/{id}`, `GET /v1/users/{user_id}/tags`.
//!
//! **Invariant:** like the model, these handlers reach memories only over MCP, through
//! [`McpHandle::call_tool`] (`retrieve_memories`, `get_memory`, `delete_memory`,
//! `list_tags`); the daemon never imports `storage`. The answer is the tool's structured
//! content, unchanged. Every parameter is checked here, before the call, so a bad request is
//! a 400 with a message a person can act on, and a tool error afterwards means the memory
//! server disagreed: its `error.code` (`not_found`, `invalid_argument`) picks the status.

use std::collections::HashMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use rmcp::model::JsonObject;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::error::ApiError;
use super::{Admitted, ApiState};
use crate::daemon::mcp::{Structured, ToolOutput};
use crate::shared::api::memories::{DeletedMemory, MemoryDetail, MemoryList, MemoryQuery, TagList};
use crate::shared::domain::tool;
use crate::shared::domain::{self, MemoryId, SearchTerms, UserId};

/// Page size when `limit` is not given.
pub const DEFAULT_LIMIT: u32 = 20;
/// Largest `limit` (the `retrieve_memories` tool's own maximum).
pub const MAX_LIMIT: u32 = 100;
/// Largest `offset` (the `retrieve_memories` tool's own maximum).
pub const MAX_OFFSET: u32 = 100_000;

/// The query parameters `GET .../memories` accepts; anything else is a 400, so a typo
/// (`?q=`) is reported instead of silently listing everything.
const LIST_PARAMS: [&str; 6] = MemoryQuery::PARAMS;

/// `GET /v1/users/{user_id}/memories`: the tool's `{"memories": [...], "count": n}`, best
/// match first with a `query`, newest first without.
pub async fn list(
    State(state): State<ApiState>,
    Admitted(user): Admitted,
    params: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<axum::Json<MemoryList>, ApiError> {
    let Query(params) = params
        .map_err(|rejection| ApiError::bad_request("invalid_query", rejection.body_text()))?;
    let arguments = list_arguments(&params)?;
    let output = call(&state, &user, tool::RETRIEVE_MEMORIES, arguments).await?;
    Ok(axum::Json(output))
}

/// `GET /v1/users/{user_id}/memories/{id}`: one memory, whole; 404 when the user has none
/// with that id.
pub async fn get_one(
    State(state): State<ApiState>,
    Admitted(user): Admitted,
    Path((_, raw_id)): Path<(String, String)>,
) -> Result<axum::Json<MemoryDetail>, ApiError> {
    by_id(&state, &user, &raw_id, tool::GET_MEMORY).await
}

/// `DELETE /v1/users/{user_id}/memories/{id}`: `{"deleted": true, "id", "filename"}`; 404
/// when the user has none with that id.
pub async fn delete_one(
    State(state): State<ApiState>,
    Admitted(user): Admitted,
    Path((_, raw_id)): Path<(String, String)>,
) -> Result<axum::Json<DeletedMemory>, ApiError> {
    by_id(&state, &user, &raw_id, tool::DELETE_MEMORY).await
}

/// One memory tool on one memory id of the admitted user.
async fn by_id<T: DeserializeOwned>(
    state: &ApiState,
    user: &UserId,
    raw_id: &str,
    tool: &str,
) -> Result<axum::Json<T>, ApiError> {
    let id = parse_id(raw_id)?;
    let output = call(state, user, tool, id_arguments(id)).await?;
    Ok(axum::Json(output))
}

/// `GET /v1/users/{user_id}/tags`: `{"tags": [{"tag", "count"}, ...]}`.
pub async fn tags(
    State(state): State<ApiState>,
    Admitted(user): Admitted,
) -> Result<axum::Json<TagList>, ApiError> {
    let output = call(&state, &user, tool::LIST_TAGS, JsonObject::new()).await?;
    Ok(axum::Json(output))
}

/// Checks the list parameters and turns them into `retrieve_memories` arguments.
fn list_arguments(params: &HashMap<String, String>) -> Result<JsonObject, ApiError> {
    if let Some(unknown) = params.keys().find(|k| !LIST_PARAMS.contains(&k.as_str())) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!(
                "unknown query parameter {unknown:?}; use {}",
                LIST_PARAMS.join(", ")
            ),
        ));
    }
    let present = |name: &str| params.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
    let mut arguments = JsonObject::new();
    if let Some(query) = present("query") {
        SearchTerms::parse(query)
            .map_err(|e| ApiError::bad_request("invalid_query", e.to_string()))?;
        arguments.insert("query".into(), json!(query));
    }
    if let Some(tags) = present("tags") {
        let tags = domain::normalize_tags([tags])
            .map_err(|e| ApiError::bad_request("invalid_tags", e.to_string()))?;
        if !tags.is_empty() {
            arguments.insert("tags".into(), json!(tags));
        }
    }
    for bound in ["since", "until"] {
        if let Some(time) = present(bound) {
            chrono::DateTime::parse_from_rfc3339(time).map_err(|_| {
                ApiError::bad_request(
                    "invalid_query",
                    format!("{bound} must be an RFC 3339 time such as 2024-07-15T14:30:52Z"),
                )
            })?;
            arguments.insert(bound.into(), json!(time));
        }
    }
    let limit = number(present("limit"), "limit", 1, MAX_LIMIT)?.unwrap_or(DEFAULT_LIMIT);
    arguments.insert("limit".into(), json!(limit));
    if let Some(offset) = number(present("offset"), "offset", 0, MAX_OFFSET)? {
        arguments.insert("offset".into(), json!(offset));
    }
    Ok(arguments)
}

/// An optional whole number within `min..=max`.
fn number(raw: Option<&str>, name: &str, min: u32, max: u32) -> Result<Option<u32>, ApiError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    match raw.parse::<u32>() {
        Ok(value) if (min..=max).contains(&value) => Ok(Some(value)),
        _ => Err(ApiError::bad_request(
            "invalid_query",
            format!("{name} must be a whole number from {min} to {max}, got {raw:?}"),
        )),
    }
}

fn parse_id(raw: &str) -> Result<MemoryId, ApiError> {
    MemoryId::parse(raw).map_err(|e| ApiError::bad_request("invalid_memory_id", e.to_string()))
}

fn id_arguments(id: MemoryId) -> JsonObject {
    let mut arguments = JsonObject::new();
    arguments.insert("id".into(), json!(id.to_string()));
    arguments
}

/// Calls one memory tool for `user` and returns its structured content, read as `T`.
async fn call<T: DeserializeOwned>(
    state: &ApiState,
    user: &UserId,
    tool: &str,
    arguments: JsonObject,
) -> Result<T, ApiError> {
    let output = state
        .mcp
        .call_tool(user, tool, arguments, JsonObject::new(), Structured::Keep)
        .await
        .map_err(ApiError::from)?;
    tool_output(tool, output)
}

/// A tool's answer as the endpoint's body (its structured content, read as `T`), or its
/// error as an [`ApiError`].
fn tool_output<T: DeserializeOwned>(tool: &str, output: ToolOutput) -> Result<T, ApiError> {
    if output.is_error {
        let code = output
            .structured
            .as_ref()
            .and_then(|s| s["error"]["code"].as_str());
        let message = output.text.strip_prefix("Error: ").unwrap_or(&output.text);
        return Err(ApiError::from_tool_error(tool, code, message));
    }
    let structured = output.structured.ok_or_else(|| {
        ApiError::from_tool_error(
            tool,
            None,
            "no structured content in the answer; is the memory server Memento's?",
        )
    })?;
    serde_json::from_value(structured).map_err(|error| {
        ApiError::from_tool_error(
            tool,
            None,
            &format!(
                "its answer has an unexpected shape ({error}); is the memory server Memento's?"
            ),
        )
    })
}

#[cfg(test)]
mod tests;
