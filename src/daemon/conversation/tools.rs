//! One tool call of a turn: the model's arguments checked, the call made over MCP, and
//! every failure turned into a tool error the model reads (`is_error`, never a failed turn).

use serde_json::Value;
use tokio::sync::mpsc;

use super::{ConversationArgs, ToolCallRecord, TurnEvent};
use crate::daemon::llm::types::ToolCall;
use crate::daemon::mcp::{McpError, Structured};

/// Runs one tool call and turns every failure into a result the model can read.
pub(super) async fn run_tool(
    args: &ConversationArgs,
    call: &ToolCall,
    idempotency_key: String,
    events: Option<&mpsc::UnboundedSender<TurnEvent>>,
) -> ToolCallRecord {
    let name = call.function.name.clone();
    let parsed = serde_json::from_str::<Value>(&call.function.arguments).map(|mut value| {
        // A `user_id` from the model is never used (mcp.rs binds the caller), so it is not
        // reported as if it had been either.
        if let Value::Object(object) = &mut value {
            object.remove(crate::daemon::mcp::USER_ARGUMENT);
        }
        value
    });
    let arguments = match &parsed {
        Ok(value) => value.clone(),
        Err(_) => Value::String(call.function.arguments.clone()),
    };
    if let Some(events) = events {
        let _ = events.send(TurnEvent::ToolCall {
            id: call.id.clone(),
            name: name.clone(),
            arguments: arguments.clone(),
        });
    }
    let (result, is_error) = match parsed {
        Err(error) => (
            format!(
                "Error: the arguments of {name} are not valid JSON ({error}); call it again \
                 with a JSON object"
            ),
            true,
        ),
        Ok(Value::Object(object)) => {
            let mut meta = serde_json::Map::new();
            meta.insert(
                crate::shared::domain::IDEMPOTENCY_META_KEY.into(),
                Value::String(idempotency_key),
            );
            match args
                .mcp
                .call_tool(&args.user, &name, object, meta, Structured::Skip)
                .await
            {
                // The MCP result's `isError` travels as the record's flag (and the frame's),
                // the text as the server wrote it.
                Ok(output) => (output.text, output.is_error),
                Err(McpError::UnknownTool(tool)) => {
                    let available: Vec<String> = args
                        .mcp
                        .tools()
                        .iter()
                        .map(|t| t.function.name.clone())
                        .collect();
                    (
                        format!(
                            "Error: there is no tool named {tool:?}; available tools: {}",
                            available.join(", ")
                        ),
                        true,
                    )
                }
                Err(
                    error @ (McpError::Unavailable(_) | McpError::Timeout(_) | McpError::Closed),
                ) => (
                    format!(
                        "Error: the memory service is unavailable right now ({error}); tell the \
                         person their request could not be done and to try again shortly"
                    ),
                    true,
                ),
                Err(error) => (format!("Error: {error}"), true),
            }
        }
        Ok(_) => (
            format!("Error: the arguments of {name} must be a JSON object"),
            true,
        ),
    };
    let record = ToolCallRecord {
        id: call.id.clone(),
        name,
        arguments,
        result,
        is_error,
    };
    if let Some(events) = events {
        let _ = events.send(TurnEvent::ToolResult(record.clone()));
    }
    record
}

/// The answer to a delete beyond the turn's cap: a tool error, and nothing deleted.
pub(super) fn refused_delete(
    call: &ToolCall,
    max_deletes: usize,
    events: Option<&mpsc::UnboundedSender<TurnEvent>>,
) -> ToolCallRecord {
    let arguments = serde_json::from_str::<Value>(&call.function.arguments)
        .unwrap_or_else(|_| Value::String(call.function.arguments.clone()));
    if let Some(events) = events {
        let _ = events.send(TurnEvent::ToolCall {
            id: call.id.clone(),
            name: call.function.name.clone(),
            arguments: arguments.clone(),
        });
    }
    let record = ToolCallRecord {
        id: call.id.clone(),
        name: call.function.name.clone(),
        arguments,
        result: format!(
            "Error: not deleted: at most {max_deletes} memories can be deleted in one message. \
             Tell the person which ones were deleted and ask them to confirm the rest in a new \
             message."
        ),
        is_error: true,
    };
    if let Some(events) = events {
        let _ = events.send(TurnEvent::ToolResult(record.clone()));
    }
    record
}
