use std::collections::HashMap;

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::*;

fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn list_parameters_become_tool_arguments() {
    let arguments = list_arguments(&params(&[
        ("query", " bike lock "),
        ("tags", "Work, travel"),
        ("since", "2024-07-15T00:00:00Z"),
        ("limit", "5"),
        ("offset", "10"),
        ("until", ""),
    ]))
    .unwrap();
    assert_eq!(
        serde_json::Value::Object(arguments),
        json!({
            "query": "bike lock",
            "tags": ["work", "travel"],
            "since": "2024-07-15T00:00:00Z",
            "limit": 5,
            "offset": 10,
        })
    );
    let defaults = list_arguments(&HashMap::new()).unwrap();
    assert_eq!(
        serde_json::Value::Object(defaults),
        json!({ "limit": DEFAULT_LIMIT })
    );
}

#[test]
fn bad_list_parameters_are_400s_that_say_what_to_do() {
    for (pairs, needle) in [
        (
            vec![("limit", "0")],
            "limit must be a whole number from 1 to 100",
        ),
        (vec![("limit", "101")], "limit"),
        (vec![("limit", "-1")], "limit"),
        (vec![("limit", "ten")], "limit"),
        (vec![("offset", "100001")], "offset"),
        (vec![("since", "yesterday")], "RFC 3339"),
        (vec![("q", "bike")], "unknown query parameter \"q\""),
    ] {
        let error = list_arguments(&params(&pairs)).unwrap_err();
        assert_eq!(error.status, StatusCode::BAD_REQUEST, "{pairs:?}");
        assert!(
            error.message.contains(needle),
            "{pairs:?}: {}",
            error.message
        );
    }
    let long_query = "word ".repeat(400);
    let error = list_arguments(&params(&[("query", &long_query)])).unwrap_err();
    assert_eq!(error.code, "invalid_query");
    let long_tag = "t".repeat(100);
    let error = list_arguments(&params(&[("tags", &long_tag)])).unwrap_err();
    assert_eq!(error.code, "invalid_tags");
}

#[test]
fn ids_are_checked_before_any_call() {
    assert!(parse_id("0190a0b0-0000-7000-8000-000000000000").is_ok());
    for bad in ["", "..", "not-an-id", "0190a0b0-0000-7000-8000-00000000000"] {
        let error = parse_id(bad).unwrap_err();
        assert_eq!(error.status, StatusCode::BAD_REQUEST, "{bad:?}");
        assert_eq!(error.code, "invalid_memory_id");
    }
}

fn tool_error(code: Option<&str>) -> ToolOutput {
    ToolOutput {
        text: "Error: no memory with id x for this user".into(),
        structured: code.map(|code| json!({"error": {"code": code, "message": "m"}})),
        is_error: true,
    }
}

#[test]
fn tool_errors_map_to_statuses_by_their_code() {
    let not_found = tool_output::<Value>("get_memory", tool_error(Some("not_found"))).unwrap_err();
    assert_eq!(not_found.status, StatusCode::NOT_FOUND);
    assert_eq!(not_found.message, "no memory with id x for this user");
    let invalid =
        tool_output::<Value>("get_memory", tool_error(Some("invalid_argument"))).unwrap_err();
    assert_eq!(invalid.status, StatusCode::BAD_REQUEST);
    for code in [Some("storage_failure"), None] {
        let failed = tool_output::<Value>("get_memory", tool_error(code)).unwrap_err();
        assert_eq!(failed.status, StatusCode::BAD_GATEWAY, "{code:?}");
        assert!(failed.message.starts_with("get_memory failed"));
    }
    let ok = ToolOutput {
        text: "{}".into(),
        structured: Some(json!({"tags": []})),
        is_error: false,
    };
    assert_eq!(
        tool_output::<TagList>("list_tags", ok).unwrap(),
        TagList { tags: Vec::new() }
    );
    let misshapen = ToolOutput {
        text: "{}".into(),
        structured: Some(json!({"tags": "work"})),
        is_error: false,
    };
    let error = tool_output::<TagList>("list_tags", misshapen).unwrap_err();
    assert_eq!(error.status, StatusCode::BAD_GATEWAY);
    assert!(
        error.message.contains("unexpected shape"),
        "{}",
        error.message
    );
    let unstructured = ToolOutput {
        text: "fine".into(),
        structured: None,
        is_error: false,
    };
    let error = tool_output::<TagList>("list_tags", unstructured).unwrap_err();
    assert_eq!(error.status, StatusCode::BAD_GATEWAY);
}
