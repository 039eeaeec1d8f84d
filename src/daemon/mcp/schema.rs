//! MCP tool schemas as the model sees them: OpenAI function definitions without the
//! `user_id` argument the daemon fills in.

use std::collections::HashSet;

use rmcp::model::{JsonObject, Tool};
use serde_json::Value;

use super::USER_ARGUMENT;
use crate::daemon::llm::types::{FunctionDefinition, ToolDefinition};

/// Turns MCP tools into OpenAI function definitions, generically: the tool's JSON Schema
/// becomes the function's parameters, minus the `user_id` argument the daemon fills in.
/// Returns the definitions and the names of the tools that take `user_id`.
pub fn convert_tools(tools: &[Tool]) -> (Vec<ToolDefinition>, HashSet<String>) {
    let mut binds_user = HashSet::new();
    let definitions = tools
        .iter()
        .map(|tool| {
            let mut schema = tool.input_schema.as_ref().clone();
            if hide_user_argument(&mut schema) {
                binds_user.insert(tool.name.to_string());
            }
            if !schema.contains_key("type") {
                schema.insert("type".into(), Value::String("object".into()));
            }
            if !schema.contains_key("properties") {
                schema.insert("properties".into(), Value::Object(JsonObject::new()));
            }
            schema.remove("$schema");
            ToolDefinition {
                kind: "function".into(),
                function: FunctionDefinition {
                    name: tool.name.to_string(),
                    description: tool.description.as_ref().map(|d| d.to_string()),
                    parameters: Value::Object(schema),
                },
            }
        })
        .collect();
    (definitions, binds_user)
}

/// Removes the `user_id` argument from an input schema wherever it is declared for the
/// arguments object: `properties` and `required` of the schema itself and of the subschemas
/// that apply to that same object (`allOf`, `anyOf`, `oneOf`, `then`, `else`, and local
/// `$ref` targets, as schemars writes flattened and tagged types). True when there was one:
/// the tool then takes the authenticated user. (A `user_id` inside another argument's
/// schema is a field of that argument and stays.)
fn hide_user_argument(schema: &mut JsonObject) -> bool {
    let mut root = Value::Object(std::mem::take(schema));
    // JSON pointers of the subschemas still to clean; each visited once (`$ref` cycles).
    let mut pending = vec![String::new()];
    let mut seen = HashSet::new();
    let mut found = false;
    while let Some(pointer) = pending.pop() {
        if !seen.insert(pointer.clone()) {
            continue;
        }
        let Some(Value::Object(node)) = root.pointer_mut(&pointer) else {
            continue;
        };
        if let Some(properties) = node.get_mut("properties").and_then(Value::as_object_mut) {
            found |= properties.remove(USER_ARGUMENT).is_some();
        }
        if let Some(required) = node.get_mut("required").and_then(Value::as_array_mut) {
            let before = required.len();
            required.retain(|r| r != USER_ARGUMENT);
            found |= required.len() != before;
            if required.is_empty() {
                node.remove("required");
            }
        }
        for key in ["allOf", "anyOf", "oneOf"] {
            if let Some(Value::Array(branches)) = node.get(key) {
                pending.extend((0..branches.len()).map(|i| format!("{pointer}/{key}/{i}")));
            }
        }
        for key in ["then", "else"] {
            if node.contains_key(key) {
                pending.push(format!("{pointer}/{key}"));
            }
        }
        if let Some(target) = node
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix('#'))
        {
            pending.push(target.to_owned());
        }
    }
    if let Value::Object(cleaned) = root {
        *schema = cleaned;
    }
    found
}
