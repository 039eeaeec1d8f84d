//! `GET /v1/users/{user_id}/memories/export` and `POST /v1/users/{user_id}/memories/import`:
//! a user's own memories as JSONL, out and in.
//!
//! Like everything in the daemon, these reach memories only over MCP (`McpHandle`): export
//! pages through `retrieve_memories` and fetches each memory whole with `get_memory`; import
//! calls `store_memory` per line with the original time in `_meta` (`io.memento/created-at`),
//! which makes it idempotent. The line format is `transfer::record::Record`, the same as
//! `memento export --format jsonl`; a line's `user_id` is ignored, the path names the owner.
//!
//! The seed layout is a directory tree, so over HTTP only `format=jsonl` is served;
//! `format=seed` is a 400 that points at `memento export --format seed`.

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::error::ApiError;
use super::{Admitted, ApiState};
use crate::daemon::mcp::{McpError, McpHandle, Structured};
use crate::memory_server::transfer::record::Record;
use crate::shared::api::memories::{ImportReport, MemoryDetail, MemoryList, SkippedLine};
use crate::shared::domain::tool;
use crate::shared::domain::{CREATED_AT_META_KEY, UserId};

/// Largest import body.
pub const MAX_IMPORT_BYTES: usize = 16 * 1024 * 1024;
/// Memories per `retrieve_memories` page while exporting (the tool's maximum).
const EXPORT_PAGE: u64 = 100;
/// The tool's largest offset: an HTTP export ends there (the CLI has no such limit).
const MAX_EXPORT_OFFSET: u64 = 100_000;

/// The two routes, with the import's body limit ([`MAX_IMPORT_BYTES`], read within
/// `request_timeout`) in place of the API's usual one.
pub(crate) fn router(request_timeout: std::time::Duration) -> axum::Router<ApiState> {
    let limits = crate::shared::edge::body::BodyLimits {
        max_bytes: MAX_IMPORT_BYTES,
        timeout: request_timeout,
        key: "16 MiB for an import",
    };
    axum::Router::new()
        .route(
            "/v1/users/{user_id}/memories/export",
            axum::routing::get(export),
        )
        .route(
            "/v1/users/{user_id}/memories/import",
            axum::routing::post(import),
        )
        .layer(axum::extract::DefaultBodyLimit::max(MAX_IMPORT_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            limits,
            crate::shared::edge::body::bounded,
        ))
}

/// Query of the export.
#[derive(Debug, Deserialize)]
pub(crate) struct ExportQuery {
    #[serde(default)]
    format: Option<String>,
}

/// `GET /v1/users/{user_id}/memories/export?format=jsonl`: a JSONL stream, newest first.
pub(crate) async fn export(
    State(state): State<ApiState>,
    Admitted(user): Admitted,
    Query(query): Query<ExportQuery>,
) -> Result<Response, ApiError> {
    match query.format.as_deref().unwrap_or("jsonl") {
        "jsonl" => {}
        "seed" => {
            return Err(ApiError::bad_request(
                "unsupported_format",
                "the seed layout is a directory of files: use `memento export --format seed`, \
                 or format=jsonl here",
            ));
        }
        other => {
            return Err(ApiError::bad_request(
                "invalid_format",
                format!("format must be jsonl (or seed, CLI only), got {other:?}"),
            ));
        }
    }
    // Fail before the 200 when the memory server is down.
    let first = list_ids(&state.mcp, &user, 0).await?;
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    // The task ends when the client goes away: its next send fails.
    tokio::spawn(stream_export(state.mcp.clone(), user.clone(), first, tx));
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{}-memories.jsonl\"", user.as_str()),
            ),
        ],
        Body::from_stream(ReceiverStream::new(rx)),
    )
        .into_response())
}

async fn stream_export(
    mcp: McpHandle,
    user: UserId,
    first: Vec<String>,
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    let mut page = first;
    let mut offset = 0u64;
    loop {
        let full = page.len() as u64 == EXPORT_PAGE;
        // A page's memories are fetched a few at a time, written in order.
        let mut lines = futures::stream::iter(page)
            .map(|id| {
                let mcp = mcp.clone();
                let user = user.clone();
                async move { export_line(&mcp, &user, &id).await }
            })
            .buffered(EXPORT_CONCURRENCY);
        while let Some(line) = lines.next().await {
            let line = match line {
                Ok(Some(line)) => line,
                // Deleted meanwhile.
                Ok(None) => continue,
                Err(error) => {
                    // Mid-stream the status is sent: break the body so the client sees a
                    // failed transfer, never a silently short file.
                    tracing::warn!(error = %error.message, user = %user, "export stopped");
                    let _ = tx.send(Err(std::io::Error::other(error.message))).await;
                    return;
                }
            };
            if tx.send(Ok(Bytes::from(line))).await.is_err() {
                return;
            }
        }
        offset += EXPORT_PAGE;
        if !full || offset > MAX_EXPORT_OFFSET {
            return;
        }
        page = match list_ids(&mcp, &user, offset).await {
            Ok(page) => page,
            Err(error) => {
                let _ = tx.send(Err(std::io::Error::other(error.message))).await;
                return;
            }
        };
    }
}

/// One page of the user's memory ids, newest first.
async fn list_ids(mcp: &McpHandle, user: &UserId, offset: u64) -> Result<Vec<String>, ApiError> {
    let mut arguments = serde_json::Map::new();
    arguments.insert("limit".into(), json!(EXPORT_PAGE));
    arguments.insert("offset".into(), json!(offset));
    let output = call(
        mcp,
        user,
        tool::RETRIEVE_MEMORIES,
        arguments,
        serde_json::Map::new(),
    )
    .await?;
    let list: MemoryList =
        serde_json::from_value(output).map_err(|_| bad_answer(tool::RETRIEVE_MEMORIES))?;
    Ok(list
        .memories
        .into_iter()
        .map(|memory| memory.meta.id.to_string())
        .collect())
}

/// A memory as a JSONL line, `None` when it is gone.
async fn export_line(mcp: &McpHandle, user: &UserId, id: &str) -> Result<Option<String>, ApiError> {
    let mut arguments = serde_json::Map::new();
    arguments.insert("id".into(), json!(id));
    let output = mcp
        .call_tool(
            user,
            tool::GET_MEMORY,
            arguments,
            serde_json::Map::new(),
            Structured::Keep,
        )
        .await
        .map_err(mcp_error)?;
    if output.is_error {
        return Ok(None);
    }
    let memory: MemoryDetail = output
        .structured
        .and_then(|structured| serde_json::from_value(structured).ok())
        .ok_or_else(|| bad_answer(tool::GET_MEMORY))?;
    let meta = memory.meta;
    let record = Record {
        user_id: user.as_str().to_owned(),
        id: Some(meta.id.to_string()),
        filename: meta.filename,
        stored_as: Some(meta.stored_as),
        description: meta.description,
        tags: meta.tags,
        created_at: meta.created_at,
        size_bytes: Some(meta.size_bytes),
        content: memory.content,
    };
    let mut line = serde_json::to_string(&record).map_err(|_| bad_answer(tool::GET_MEMORY))?;
    line.push('\n');
    Ok(Some(line))
}

/// `POST /v1/users/{user_id}/memories/import`: a JSONL body (at most [`MAX_IMPORT_BYTES`]);
/// answers `{"imported", "already_present", "skipped": [{"line", "reason"}]}`.
pub(crate) async fn import(
    State(state): State<ApiState>,
    Admitted(user): Admitted,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<ImportReport>, ApiError> {
    let body = body.map_err(|rejection| {
        ApiError::from_body_rejection(rejection, || {
            format!("an import is at most {MAX_IMPORT_BYTES} bytes; split the file")
        })
    })?;
    let mut imported = 0u64;
    let mut already_present = 0u64;
    let mut skipped = Vec::new();
    // Several stores in flight let the memory server commit them together; `buffered` keeps
    // the outcomes in line order.
    let mut lines = Vec::new();
    let mut start = 0;
    for (index, piece) in body.split(|b| *b == b'\n').enumerate() {
        let end = start + piece.len();
        if !piece.iter().all(u8::is_ascii_whitespace) {
            lines.push((index + 1, body.slice(start..end)));
        }
        start = end + 1;
    }
    let mcp = state.mcp.clone();
    let owner = user.clone();
    let mut outcomes = futures::stream::iter(lines)
        .map(move |(line_no, line)| {
            let mcp = mcp.clone();
            let owner = owner.clone();
            async move { import_line(&mcp, &owner, line_no, &line).await }
        })
        .buffered(IMPORT_CONCURRENCY);
    while let Some((line_no, outcome)) = outcomes.next().await {
        match outcome {
            Ok(LineOutcome::Imported) => imported += 1,
            Ok(LineOutcome::AlreadyPresent) => already_present += 1,
            Ok(LineOutcome::Skipped(reason)) => skipped.push(SkippedLine {
                line: line_no,
                reason,
            }),
            Err(mut error) => {
                error.message = format!(
                    "{} (stopped at line {line_no} after {imported} imported; importing again \
                     is safe)",
                    error.message
                );
                return Err(error);
            }
        }
    }
    Ok(axum::Json(ImportReport {
        user_id: user.to_string(),
        imported,
        already_present,
        skipped,
    }))
}

/// `get_memory` calls in flight during an export.
const EXPORT_CONCURRENCY: usize = 8;

/// Stores in flight during an import.
const IMPORT_CONCURRENCY: usize = 16;

enum LineOutcome {
    Imported,
    AlreadyPresent,
    Skipped(String),
}

/// Stores one JSONL line as `user`'s memory.
async fn import_line(
    mcp: &McpHandle,
    user: &UserId,
    line_no: usize,
    line: &[u8],
) -> (usize, Result<LineOutcome, ApiError>) {
    let record: Record = match serde_json::from_slice(line) {
        Ok(record) => record,
        Err(error) => {
            return (
                line_no,
                Ok(LineOutcome::Skipped(format!(
                    "not a memory record: {error}"
                ))),
            );
        }
    };
    let mut arguments = serde_json::Map::new();
    arguments.insert("content".into(), json!(record.content));
    arguments.insert("filename".into(), json!(record.filename));
    arguments.insert("description".into(), json!(record.description));
    arguments.insert("tags".into(), json!(record.tags));
    let mut meta = serde_json::Map::new();
    meta.insert(
        CREATED_AT_META_KEY.into(),
        json!(record.created_at.to_rfc3339()),
    );
    let output = match mcp
        .call_tool(user, tool::STORE_MEMORY, arguments, meta, Structured::Keep)
        .await
    {
        Ok(output) => output,
        Err(error) => return (line_no, Err(mcp_error(error))),
    };
    let replayed = output
        .structured
        .as_ref()
        .and_then(|s| s.get("replayed"))
        .and_then(Value::as_bool)
        == Some(true);
    let outcome = if output.is_error {
        LineOutcome::Skipped(output.text)
    } else if replayed {
        LineOutcome::AlreadyPresent
    } else {
        LineOutcome::Imported
    };
    (line_no, Ok(outcome))
}

/// Calls a tool and returns its structured content; a tool error is a 502.
async fn call(
    mcp: &McpHandle,
    user: &UserId,
    tool: &'static str,
    arguments: serde_json::Map<String, Value>,
    meta: serde_json::Map<String, Value>,
) -> Result<Value, ApiError> {
    let output = mcp
        .call_tool(user, tool, arguments, meta, Structured::Keep)
        .await
        .map_err(mcp_error)?;
    if output.is_error {
        return Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "memory_error",
            output.text,
        ));
    }
    output.structured.ok_or_else(|| bad_answer(tool))
}

fn bad_answer(tool: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "memory_error",
        format!("the memory server's {tool} answer has an unexpected shape"),
    )
}

/// The one MCP error mapping, in `error.rs`.
fn mcp_error(error: McpError) -> ApiError {
    ApiError::from(error)
}
