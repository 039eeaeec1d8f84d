//! MCP tools to model functions.

use std::collections::HashSet;
use std::sync::Arc;

use rmcp::model::{JsonObject, Tool};
use serde_json::{Value, json};

use memento::daemon::llm::types::ToolDefinition;
use memento::daemon::mcp::{self, USER_ARGUMENT};

use super::offline_model::MEMORY_TOOLS;

/// Property names the structured schema generator uses.
const PROPERTY_NAMES: [&str; 6] = ["user_id", "content", "query", "id", "tags", "user"];

/// The conversion of MCP tools into the functions offered to the model.
///
/// Input: JSON when it parses (an array of tools or schemas, or one tool or schema; a tool
/// is an object with `name` and `inputSchema`, anything else an input schema), otherwise
/// bytes that steer a small generator of schemas built from JSON-Schema keywords that
/// matter here (`properties`, `required`, `allOf`/`anyOf`/`oneOf`, `$ref`/`$defs`, ...).
///
/// Invariants: one function per tool, same name and description, a JSON object schema with
/// `type` and `properties`, no `$schema`; no `user_id` argument declared to the model
/// (`user_id` in `properties` or `required`, there or in `allOf`/`anyOf`/`oneOf`/`then`/
/// `else` or a local `$ref`); every tool whose input schema declared one is bound to the
/// user (the daemon then overwrites whatever the model sends); the output serialises to
/// JSON and reads back equal.
pub fn convert_tools(data: &[u8]) {
    let tools = match serde_json::from_slice::<Value>(data) {
        Ok(Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .filter_map(|(i, item)| tool_from_json(i, item))
            .collect(),
        Ok(item) => tool_from_json(0, item).into_iter().collect(),
        Err(_) => generated_tools(data),
    };
    check_conversion(&tools);
}

fn tool_from_json(index: usize, item: Value) -> Option<Tool> {
    if let Ok(tool) = serde_json::from_value::<Tool>(item.clone()) {
        return Some(tool);
    }
    match item {
        Value::Object(schema) => Some(Tool::new(
            format!("tool_{index}"),
            "a tool",
            Arc::new(schema),
        )),
        _ => None,
    }
}

fn check_conversion(tools: &[Tool]) {
    let (definitions, binds_user) = mcp::convert_tools(tools);
    assert_eq!(definitions.len(), tools.len(), "tools lost or added");
    for (tool, definition) in tools.iter().zip(&definitions) {
        let function = &definition.function;
        assert_eq!(definition.kind, "function");
        assert_eq!(function.name, tool.name);
        assert_eq!(function.description.as_deref(), tool.description.as_deref());
        let Value::Object(parameters) = &function.parameters else {
            panic!("parameters of {} are not an object", function.name);
        };
        assert!(parameters.contains_key("type"), "no type: {parameters:?}");
        assert!(
            parameters.contains_key("properties"),
            "no properties: {parameters:?}"
        );
        assert!(!parameters.contains_key("$schema"), "$schema left in");
        assert!(
            !declares_user(&function.parameters),
            "{USER_ARGUMENT} offered to the model by {}: {}",
            function.name,
            function.parameters
        );
        let input = Value::Object(tool.input_schema.as_ref().clone());
        if declares_user(&input) {
            assert!(
                binds_user.contains(function.name.as_str()),
                "{} declared {USER_ARGUMENT} but is not bound to the user: {input}",
                function.name
            );
        }
    }
    for name in &binds_user {
        assert!(
            tools.iter().any(|t| t.name == name.as_str()),
            "{name} bound but not a tool"
        );
    }
    let text = match serde_json::to_string(&definitions) {
        Ok(text) => text,
        Err(error) => panic!("definitions do not serialise: {error}"),
    };
    match serde_json::from_str::<Vec<ToolDefinition>>(&text) {
        Ok(back) => assert_eq!(back, definitions, "definitions change through JSON"),
        Err(error) => panic!("definitions do not read back: {error}\n{text}"),
    }
}

/// True when `schema` declares a `user_id` argument for the arguments object it describes:
/// in `properties` or `required`, itself or in a subschema that applies to the same object
/// as a declaration (`allOf`, `anyOf`, `oneOf`, `then`, `else`, or a local `$ref`). A
/// `user_id` inside another argument's schema (a nested object) is another field.
pub(crate) fn declares_user(schema: &Value) -> bool {
    let mut visited = HashSet::new();
    declares_user_in(schema, schema, &mut visited)
}

pub(crate) fn declares_user_in<'a>(
    schema: &'a Value,
    root: &'a Value,
    visited: &mut HashSet<&'a str>,
) -> bool {
    let Value::Object(map) = schema else {
        return false;
    };
    if map
        .get("properties")
        .and_then(Value::as_object)
        .is_some_and(|p| p.contains_key(USER_ARGUMENT))
    {
        return true;
    }
    if map
        .get("required")
        .and_then(Value::as_array)
        .is_some_and(|r| r.iter().any(|name| name == USER_ARGUMENT))
    {
        return true;
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        if let Some(Value::Array(branches)) = map.get(key)
            && branches
                .iter()
                .any(|branch| declares_user_in(branch, root, visited))
        {
            return true;
        }
    }
    for key in ["then", "else"] {
        if let Some(branch) = map.get(key)
            && declares_user_in(branch, root, visited)
        {
            return true;
        }
    }
    if let Some(Value::String(reference)) = map.get("$ref")
        && let Some(pointer) = reference.strip_prefix('#')
        && visited.insert(reference.as_str())
        && let Some(target) = root.pointer(pointer)
    {
        return declares_user_in(target, root, visited);
    }
    false
}

/// Tools whose schemas are steered by `data` (for input that is not JSON).
fn generated_tools(data: &[u8]) -> Vec<Tool> {
    let mut bytes = Bytes(data);
    let count = 1 + usize::from(bytes.next() % 3);
    (0..count)
        .map(|i| {
            let schema = match generated_schema(&mut bytes, 0) {
                Value::Object(schema) => schema,
                other => {
                    let mut schema = JsonObject::new();
                    schema.insert("not".into(), other);
                    schema
                }
            };
            let name = MEMORY_TOOLS
                .get(usize::from(bytes.next()) % (MEMORY_TOOLS.len() + 1))
                .map_or_else(|| format!("tool_{i}"), |&n| n.to_owned());
            Tool::new(name, "a tool", Arc::new(schema))
        })
        .collect()
}

/// Reads bytes; zeros once they run out.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn next(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&byte, rest)) => {
                self.0 = rest;
                byte
            }
            None => 0,
        }
    }

    fn pick<'s>(&mut self, choices: &[&'s str]) -> &'s str {
        choices[usize::from(self.next()) % choices.len()]
    }
}

fn generated_schema(bytes: &mut Bytes<'_>, depth: usize) -> Value {
    const KEYWORDS: [&str; 16] = [
        "type",
        "properties",
        "required",
        "allOf",
        "anyOf",
        "oneOf",
        "then",
        "else",
        "$ref",
        "$defs",
        "definitions",
        "not",
        "items",
        "additionalProperties",
        "$schema",
        "description",
    ];
    const REFS: [&str; 7] = [
        "#",
        "#/$defs/a",
        "#/$defs/b",
        "#/definitions/a",
        "#/properties/user_id",
        "#/allOf/0",
        "other.json#/a",
    ];
    if depth >= 4 {
        return json!({});
    }
    let first = bytes.next();
    if first == 0xff {
        return Value::Bool(true);
    }
    let mut schema = JsonObject::new();
    for _ in 0..first % 6 {
        let keyword = bytes.pick(&KEYWORDS);
        let value = match keyword {
            "type" => json!(bytes.pick(&["object", "string", "null"])),
            "properties" | "$defs" | "definitions" => {
                let mut map = JsonObject::new();
                for _ in 0..bytes.next() % 4 {
                    let name = if keyword == "properties" {
                        bytes.pick(&PROPERTY_NAMES)
                    } else {
                        bytes.pick(&["a", "b"])
                    };
                    map.insert(name.to_owned(), generated_schema(bytes, depth + 1));
                }
                Value::Object(map)
            }
            "required" => Value::Array(
                (0..bytes.next() % 4)
                    .map(|_| json!(bytes.pick(&PROPERTY_NAMES)))
                    .collect(),
            ),
            "allOf" | "anyOf" | "oneOf" => Value::Array(
                (0..1 + bytes.next() % 3)
                    .map(|_| generated_schema(bytes, depth + 1))
                    .collect(),
            ),
            "$ref" => json!(bytes.pick(&REFS)),
            "$schema" => json!("https://json-schema.org/draft/2020-12/schema"),
            "description" => json!("a description"),
            _ => generated_schema(bytes, depth + 1),
        };
        schema.insert(keyword.to_owned(), value);
    }
    Value::Object(schema)
}
