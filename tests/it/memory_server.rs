//! The memory MCP server over both transports: every tool, isolation and input rules here;
//! security checks and session cleanup in `sessions`.

mod sessions;

use serde_json::{Value, json};

use crate::support::{
    BOTH, McpFixture, Transport, call, connect, is_error, retrieve_ids, store, text, try_call,
};

#[tokio::test]
async fn every_tool_works_over_both_transports() {
    let fixture = McpFixture::start().await;
    for transport in BOTH {
        let client = connect(&fixture.url(), transport, None).await;
        let tools = client.peer().list_all_tools().await.expect("list tools");
        let mut names: Vec<_> = tools.iter().map(|t| t.name.to_string()).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "delete_memory",
                "get_memory",
                "list_tags",
                "retrieve_memories",
                "store_memory"
            ]
        );
        for tool in &tools {
            let schema = Value::Object(tool.input_schema.as_ref().clone());
            assert_eq!(schema["type"], "object", "{}", tool.name);
            assert!(
                schema["required"]
                    .as_array()
                    .is_some_and(|r| r.contains(&json!("user_id"))),
                "{} must require user_id",
                tool.name
            );
            assert!(tool.description.as_ref().is_some_and(|d| d.len() > 40));
        }

        let user = format!("alice_{transport:?}");
        let stored = call(
            &client,
            "store_memory",
            json!({
                "user_id": user,
                "content": "Q4 planning meeting: ship the rewrite by December",
                "filename": "meeting_summary.txt",
                "description": "Team meeting notes",
                "tags": ["Work", "meeting", "work"],
            }),
        )
        .await;
        assert!(!is_error(&stored), "{}", text(&stored));
        let sentence = text(&stored);
        assert!(
            sentence.starts_with(&format!(
                "Successfully stored 'meeting_summary.txt' for user {user} as "
            )),
            "{sentence}"
        );
        assert!(sentence.ends_with("_meeting_summary.txt"), "{sentence}");
        let structured = stored
            .structured_content
            .clone()
            .expect("structured content");
        let id = structured["id"].as_str().expect("id").to_owned();
        assert_eq!(structured["tags"], json!(["work", "meeting"]));
        assert_eq!(structured["filename"], "meeting_summary.txt");
        assert!(structured["created_at"].is_string());
        assert!(sentence.ends_with(structured["stored_as"].as_str().expect("stored_as")));

        let ids = retrieve_ids(&client, json!({ "user_id": user, "query": "Q4 plan" })).await;
        assert_eq!(ids, vec![id.clone()]);
        let ids = retrieve_ids(&client, json!({ "user_id": user, "tags": "meeting" })).await;
        assert_eq!(ids, vec![id.clone()]);

        let got = call(&client, "get_memory", json!({ "user_id": user, "id": id })).await;
        assert!(!is_error(&got));
        assert_eq!(
            got.structured_content.as_ref().expect("structured")["content"],
            "Q4 planning meeting: ship the rewrite by December"
        );

        let tags = call(&client, "list_tags", json!({ "user_id": user })).await;
        assert_eq!(
            tags.structured_content.expect("structured")["tags"],
            json!([{"tag": "meeting", "count": 1}, {"tag": "work", "count": 1}])
        );

        let deleted = call(
            &client,
            "delete_memory",
            json!({ "user_id": user, "id": id }),
        )
        .await;
        assert!(!is_error(&deleted));
        assert!(text(&deleted).contains(&id));
        let again = call(&client, "get_memory", json!({ "user_id": user, "id": id })).await;
        assert!(is_error(&again));
        client.cancel().await.expect("close client");
    }
}

#[tokio::test]
async fn alice_never_sees_bobs_memories() {
    let fixture = McpFixture::start().await;
    for transport in BOTH {
        let client = connect(&fixture.url(), transport, None).await;
        let bob = format!("bob-{transport:?}");
        let alice = format!("alice-{transport:?}");
        let secret = store(
            &client,
            &bob,
            "bob's secret: the launch code is 4711",
            "secret,bob",
        )
        .await;
        store(&client, &alice, "alice's grocery list", "home").await;

        for query in [
            json!({ "user_id": alice, "query": "secret launch code" }),
            json!({ "user_id": alice, "query": "bob" }),
            json!({ "user_id": alice, "query": "4711" }),
            json!({ "user_id": alice, "query": "* OR secret" }),
            json!({ "user_id": alice, "tags": "secret" }),
            json!({ "user_id": alice, "tags": ["bob", "secret"] }),
            json!({ "user_id": alice, "limit": 100 }),
        ] {
            let ids = retrieve_ids(&client, query.clone()).await;
            assert!(!ids.contains(&secret), "{query} leaked bob's memory");
        }
        let get = call(
            &client,
            "get_memory",
            json!({ "user_id": alice, "id": secret }),
        )
        .await;
        assert!(is_error(&get));
        assert!(!text(&get).contains("4711"));
        let delete = call(
            &client,
            "delete_memory",
            json!({ "user_id": alice, "id": secret }),
        )
        .await;
        assert!(is_error(&delete));
        let tags = call(&client, "list_tags", json!({ "user_id": alice })).await;
        assert!(!text(&tags).contains("secret"));
        // Bob still has it.
        let get = call(
            &client,
            "get_memory",
            json!({ "user_id": bob, "id": secret }),
        )
        .await;
        assert!(!is_error(&get));
        client.cancel().await.expect("close client");
    }
}

/// Every input rule: the call is rejected (or sanitised) with a clear message, and the
/// session keeps working afterwards.
#[tokio::test]
async fn input_rules_table() {
    // Every hostile argument, over both transports (each with a fresh server).
    for transport in BOTH {
        input_rules_over(transport).await;
    }
}

/// One row of [`input_rules_over`]: (tool, arguments, expected error fragment or None).
type Case = (&'static str, Value, Option<&'static str>);
const STORE: &str = "store_memory";
const RETRIEVE: &str = "retrieve_memories";
const GET: &str = "get_memory";

fn fails(tool: &'static str, args: Value, fragment: &'static str) -> Case {
    (tool, args, Some(fragment))
}

fn passes(tool: &'static str, args: Value) -> Case {
    (tool, args, None)
}

/// `extra` with `"user_id": "rules"` added.
fn rules(extra: Value) -> Value {
    let mut args = json!({"user_id": "rules"});
    if let (Some(args), Value::Object(extra)) = (args.as_object_mut(), extra) {
        args.extend(extra);
    }
    args
}

async fn input_rules_over(transport: Transport) {
    let fixture = McpFixture::start_with(|c| c.max_content_bytes = 1000).await;
    let client = connect(&fixture.url(), transport, None).await;
    let id = store(&client, "rules", "a memory for the id tests", "").await;
    let long_tag = "t".repeat(65);
    let many_tags: Vec<String> = (0..40).map(|i| format!("t{i}")).collect();

    // (tool, arguments, expected error fragment or None for success)
    let mut cases: Vec<Case> = Vec::new();
    let bad_users = [
        json!(""),
        json!("../bob"),
        json!("%2e%2e"),
        json!(".hidden"),
        json!("x".repeat(65)),
        json!("émile"),
    ];
    for user in bad_users {
        let args = json!({"user_id": user, "content": "x"});
        cases.push(fails(STORE, args, "invalid user_id"));
    }
    let description = "d".repeat(1025);
    let missing = "0190c2a4-0000-7000-8000-000000000000";
    cases.extend([
        fails(
            STORE,
            json!({"user_id": 42, "content": "x"}),
            "invalid arguments",
        ),
        fails(STORE, json!({"content": "x"}), "user_id"),
        fails(STORE, rules(json!({})), "content"),
        fails(STORE, rules(json!({"content": "   "})), "content is empty"),
        fails(
            STORE,
            rules(json!({"content": "x".repeat(1001)})),
            "maximum is 1000 bytes",
        ),
        passes(STORE, rules(json!({"content": "x".repeat(1000)}))),
        fails(
            STORE,
            rules(json!({"content": "x", "tags": long_tag})),
            "longer than 64",
        ),
        fails(
            STORE,
            rules(json!({"content": "x", "tags": many_tags})),
            "at most 32",
        ),
        fails(
            STORE,
            rules(json!({"content": "x", "tags": 7})),
            "invalid arguments",
        ),
        fails(
            STORE,
            rules(json!({"content": "x", "description": description})),
            "description",
        ),
        fails(
            RETRIEVE,
            rules(json!({"limit": 0})),
            "limit must be between 1 and 100",
        ),
        fails(
            RETRIEVE,
            rules(json!({"limit": 101})),
            "limit must be between 1 and 100",
        ),
        fails(RETRIEVE, rules(json!({"limit": -1})), "invalid arguments"),
        fails(RETRIEVE, rules(json!({"offset": 100_001})), "offset"),
        fails(RETRIEVE, rules(json!({"since": "yesterday"})), "RFC 3339"),
        fails(RETRIEVE, rules(json!({"until": "2024-13-01"})), "RFC 3339"),
        passes(
            RETRIEVE,
            rules(json!({"since": "2024-07-15T00:00:00+02:00"})),
        ),
        passes(
            RETRIEVE,
            rules(json!({"query": "\"unbalanced ((( NEAR * -x"})),
        ),
        fails(
            RETRIEVE,
            rules(json!({"query": "x ".repeat(600)})),
            "longer than 1024",
        ),
        fails(
            GET,
            rules(json!({"id": "../../etc/passwd"})),
            "invalid memory id",
        ),
        fails(
            GET,
            rules(json!({"id": "' OR 1=1 --"})),
            "invalid memory id",
        ),
        fails(GET, rules(json!({"id": missing})), "no memory with id"),
        passes(GET, rules(json!({"id": id}))),
        fails("delete_memory", rules(json!({})), "id"),
        fails("list_tags", json!({"user_id": "a/b"}), "invalid user_id"),
        fails("list_tags", json!({}), "user_id"),
    ]);
    for (tool, args, expected) in cases {
        let result = call(&client, tool, args.clone()).await;
        let message = text(&result);
        match expected {
            Some(fragment) => {
                assert!(
                    is_error(&result),
                    "{tool} {args} should fail, got {message}"
                );
                assert!(
                    message.contains(fragment),
                    "{tool} {args}: {message:?} lacks {fragment:?}"
                );
                // Programs read the cause from the structured copy (the daemon's 404 vs 400).
                let code = result
                    .structured_content
                    .as_ref()
                    .and_then(|s| s["error"]["code"].as_str());
                let expected_code = if fragment == "no memory with id" {
                    "not_found"
                } else {
                    "invalid_argument"
                };
                assert_eq!(code, Some(expected_code), "{tool} {args}");
            }
            None => assert!(!is_error(&result), "{tool} {args} failed: {message}"),
        }
    }
    // Query operators never match everything.
    let ids = retrieve_ids(&client, json!({"user_id": "rules", "query": "*"})).await;
    assert!(ids.is_empty());
    // Unknown tools are protocol errors, and the session survives all of the above.
    assert!(try_call(&client, "drop_table", json!({})).await.is_err());
    let ids = retrieve_ids(
        &client,
        json!({"user_id": "rules", "query": "memory id tests"}),
    )
    .await;
    assert_eq!(ids, vec![id]);
}

#[tokio::test]
async fn filenames_are_sanitised() {
    let fixture = McpFixture::start().await;
    let client = connect(&fixture.url(), Transport::Sse, None).await;
    for (given, expected) in [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\boot.ini", "boot.ini"),
        ("..", "path_traversal_attempt.txt"),
        (".env", "env"),
    ] {
        let result = call(
            &client,
            "store_memory",
            json!({"user_id": "files", "content": "path traversal attempt", "filename": given}),
        )
        .await;
        assert!(!is_error(&result), "{}", text(&result));
        let structured = result.structured_content.expect("structured");
        assert_eq!(structured["filename"], expected, "{given}");
        assert!(
            !structured["stored_as"]
                .as_str()
                .expect("stored_as")
                .contains('/')
        );
    }
}
