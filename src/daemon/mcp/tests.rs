use std::sync::Arc;

use rmcp::model::Tool;
use serde_json::json;

use super::*;

fn tool(name: &str, schema: Value) -> Tool {
    let Value::Object(schema) = schema else {
        panic!("schema must be an object")
    };
    Tool::new(name.to_owned(), "a tool", Arc::new(schema))
}

#[test]
fn user_id_is_hidden_from_the_model() {
    let tools = vec![
        tool(
            "store_memory",
            json!({
                "$schema": "http://json-schema.org/draft-07/schema#",
                "type": "object",
                "properties": {"user_id": {"type": "string"}, "content": {"type": "string"}},
                "required": ["user_id", "content"]
            }),
        ),
        tool(
            "list_tags",
            json!({"type": "object", "properties": {"user_id": {"type": "string"}}, "required": ["user_id"]}),
        ),
        tool("ping", json!({})),
    ];
    let (definitions, binds_user) = convert_tools(&tools);
    assert_eq!(definitions.len(), 3);
    let store = &definitions[0].function.parameters;
    assert_eq!(store["properties"], json!({"content": {"type": "string"}}));
    assert_eq!(store["required"], json!(["content"]));
    assert!(store.get("$schema").is_none());
    let tags = &definitions[1].function.parameters;
    assert!(tags.get("required").is_none());
    assert_eq!(tags["properties"], json!({}));
    let ping = &definitions[2].function.parameters;
    assert_eq!(ping["type"], "object");
    assert_eq!(
        binds_user,
        HashSet::from(["store_memory".to_owned(), "list_tags".to_owned()])
    );
    assert!(
        !serde_json::to_string(&definitions)
            .unwrap()
            .contains("user_id")
    );
}

#[test]
fn reconnect_delays_grow_and_cap() {
    let config = McpClientConfig::default();
    let first = reconnect_delay(&config, 1);
    assert!(first <= config.reconnect_initial);
    let late = reconnect_delay(&config, 30);
    assert!(late <= config.reconnect_max);
}

#[test]
fn user_id_is_hidden_wherever_the_schema_declares_it() {
    // Found by fuzz/convert_tools: a `user_id` declared in a `oneOf`/`allOf` branch, behind a
    // `$ref`, or only in `required` reached the model, and the tool was not bound to the
    // user, so the model's value went to the server unchanged.
    let tools = vec![
        tool(
            "one_of",
            json!({"type": "object", "oneOf": [
                {"properties": {"user_id": {"type": "string"}, "a": {}}, "required": ["user_id", "a"]},
                {"properties": {"b": {}}}
            ]}),
        ),
        tool(
            "all_of",
            json!({"allOf": [{"anyOf": [{"required": ["user_id"]}]}], "then": {"properties": {"user_id": {}}}}),
        ),
        tool(
            "by_ref",
            json!({"$ref": "#/$defs/Args", "$defs": {"Args": {"type": "object", "properties": {"user_id": {"type": "string"}, "q": {}}}}}),
        ),
        tool(
            "required_only",
            json!({"type": "object", "required": ["user_id"]}),
        ),
        tool(
            "cycle",
            json!({"$ref": "#", "allOf": [{"$ref": "#/allOf/0"}]}),
        ),
        tool(
            "nested",
            json!({"properties": {"filter": {"properties": {"user_id": {}}}}}),
        ),
    ];
    let (definitions, binds_user) = convert_tools(&tools);
    assert_eq!(
        binds_user,
        HashSet::from(["one_of", "all_of", "by_ref", "required_only"].map(String::from))
    );
    for definition in &definitions[..4] {
        let parameters = definition.function.parameters.to_string();
        assert!(!parameters.contains("user_id"), "{parameters}");
    }
    assert_eq!(
        definitions[0].function.parameters["oneOf"][0],
        json!({"properties": {"a": {}}, "required": ["a"]})
    );
    assert_eq!(
        definitions[2].function.parameters["$defs"]["Args"]["properties"],
        json!({"q": {}})
    );
    // A `user_id` field inside another argument belongs to that argument.
    assert_eq!(
        definitions[5].function.parameters["properties"]["filter"],
        json!({"properties": {"user_id": {}}})
    );
}
