//! MCP resources, completion and logging of the memory server, over both transports.

use std::collections::HashSet;

use rmcp::model::{
    ArgumentInfo, CompleteRequestParams, CompletionContext, PaginatedRequestParams,
    ReadResourceRequestParams, Reference, RequestMetaObject, ResourceContents,
};
use serde_json::{Value, json};

use crate::support::{BOTH, Client, McpFixture, call, connect, is_error, text, try_call_peer};

async fn store_full(
    client: &Client,
    user: &str,
    content: &str,
    filename: &str,
    tags: &str,
) -> String {
    let stored = call(
        client,
        "store_memory",
        json!({"user_id": user, "content": content, "filename": filename, "tags": tags}),
    )
    .await;
    assert!(!is_error(&stored), "{}", text(&stored));
    stored.structured_content.expect("structured")["id"]
        .as_str()
        .expect("id")
        .to_owned()
}

fn scoped(user: &str) -> Option<PaginatedRequestParams> {
    let mut params = PaginatedRequestParams::default();
    let mut meta = serde_json::Map::new();
    meta.insert("io.memento/user-id".into(), Value::String(user.into()));
    params.meta = Some(RequestMetaObject::from(meta));
    Some(params)
}

async fn read_text(client: &Client, uri: &str) -> Result<(String, Option<String>), String> {
    let result = client
        .peer()
        .read_resource(ReadResourceRequestParams::new(uri))
        .await
        .map_err(|e| e.to_string())?;
    match result.contents.into_iter().next() {
        Some(ResourceContents::TextResourceContents {
            text,
            mime_type,
            uri: got,
            ..
        }) => {
            assert_eq!(got, uri);
            Ok((text, mime_type))
        }
        other => Err(format!("unexpected contents {other:?}")),
    }
}

async fn complete(
    client: &Client,
    template: &str,
    argument: &str,
    value: &str,
    user: &str,
) -> Vec<String> {
    let mut args = std::collections::HashMap::new();
    args.insert("user_id".to_owned(), user.to_owned());
    let request = CompleteRequestParams::new(
        Reference::for_resource(template),
        ArgumentInfo::new(argument, value),
    )
    .with_context(CompletionContext::with_arguments(args));
    client
        .peer()
        .complete(request)
        .await
        .expect("complete")
        .completion
        .values
}

#[tokio::test]
async fn memories_are_resources_listed_per_user_read_and_completed() {
    let fixture = McpFixture::start().await;
    for transport in BOTH {
        let client = connect(&fixture.url(), transport, None).await;
        let alice = format!("alice_{transport:?}");
        let bob = format!("bob_{transport:?}");
        let recipe = store_full(
            &client,
            &alice,
            "Lemon cake: 200 g flour",
            "recipe.txt",
            "cooking, family",
        )
        .await;
        let plan = store_full(&client, &alice, "Q4 plan: ship it", "q4 plan.txt", "work").await;
        let secret = store_full(&client, &bob, "Bob's secret", "secret.txt", "work").await;

        let listed = client
            .peer()
            .list_resources(scoped(&alice))
            .await
            .expect("list");
        let uris: HashSet<String> = listed.resources.iter().map(|r| r.uri.clone()).collect();
        let expected: HashSet<String> = [&recipe, &plan]
            .iter()
            .map(|id| format!("memento://users/{alice}/memories/{id}"))
            .collect();
        assert_eq!(
            uris, expected,
            "alice sees her two memories and nothing of bob's"
        );
        assert!(listed.next_cursor.is_none());
        for resource in &listed.resources {
            assert_eq!(resource.mime_type.as_deref(), Some("text/plain"));
            assert!(resource.name.ends_with(".txt"), "{}", resource.name);
        }
        let everyone = client.peer().list_all_resources().await.expect("list all");
        assert!(
            everyone.iter().any(|r| r.uri.ends_with(&secret)),
            "unscoped lists every user"
        );

        let uri = format!("memento://users/{alice}/memories/{recipe}");
        let (body, mime) = read_text(&client, &uri).await.expect("read");
        assert_eq!(body, "Lemon cake: 200 g flour");
        assert_eq!(mime.as_deref(), Some("text/plain"));
        // Bob's id under Alice's name is not found: ids never cross users.
        let crossed = format!("memento://users/{alice}/memories/{secret}");
        assert!(read_text(&client, &crossed).await.is_err());
        assert!(read_text(&client, "test://static-text").await.is_err());

        let (by_file, _) = read_text(
            &client,
            &format!("memento://users/{alice}/files/q4_plan.txt"),
        )
        .await
        .expect("read by filename");
        assert_eq!(by_file, "Q4 plan: ship it");
        let (listing, _) = read_text(&client, &format!("memento://users/{alice}/tags/cooking"))
            .await
            .expect("read tag listing");
        assert!(
            listing.contains(&recipe) && !listing.contains(&plan),
            "{listing}"
        );

        let templates = client
            .peer()
            .list_all_resource_templates()
            .await
            .expect("templates");
        let names: Vec<_> = templates.iter().map(|t| t.uri_template.as_str()).collect();
        assert!(
            names.contains(&"memento://users/{user_id}/memories/{id}"),
            "{names:?}"
        );

        let tags = complete(
            &client,
            "memento://users/{user_id}/tags/{tag}",
            "tag",
            "c",
            &alice,
        )
        .await;
        assert_eq!(tags, ["cooking"]);
        let files = complete(
            &client,
            "memento://users/{user_id}/files/{filename}",
            "filename",
            "",
            &alice,
        )
        .await;
        assert_eq!(files, ["q4_plan.txt", "recipe.txt"]);
        let bobs = complete(
            &client,
            "memento://users/{user_id}/files/{filename}",
            "filename",
            "",
            &bob,
        )
        .await;
        assert_eq!(
            bobs,
            ["secret.txt"],
            "completion is scoped to the named user"
        );
        let users = complete(
            &client,
            "memento://users/{user_id}/memories/{id}",
            "user_id",
            "alice_",
            &alice,
        )
        .await;
        assert!(users.contains(&alice), "{users:?}");
        assert!(!users.contains(&bob));

        #[allow(deprecated)]
        client
            .peer()
            .set_level(rmcp::model::SetLevelRequestParams::new(
                rmcp::model::LoggingLevel::Info,
            ))
            .await
            .expect("logging/setLevel");
    }
}

#[tokio::test]
async fn resources_list_pages_with_a_cursor() {
    let fixture = McpFixture::start().await;
    let client = connect(&fixture.url(), BOTH[0], None).await;
    let total = memento::memory_server::resources::PAGE_SIZE as usize + 7;
    let mut stored = HashSet::new();
    for n in 0..total {
        stored.insert(store_full(&client, "pager", &format!("note number {n}"), "n.txt", "").await);
    }
    store_full(&client, "other", "not mine", "x.txt", "").await;
    let mut seen = HashSet::new();
    let mut params = scoped("pager");
    let mut pages = 0;
    loop {
        let page = client
            .peer()
            .list_resources(params.clone())
            .await
            .expect("page");
        pages += 1;
        for resource in page.resources {
            let id = resource.uri.rsplit('/').next().expect("id").to_owned();
            assert!(seen.insert(id), "no memory twice");
        }
        match page.next_cursor {
            // The cursor alone carries the scope.
            Some(cursor) => {
                params = Some(PaginatedRequestParams::default().with_cursor(Some(cursor)))
            }
            None => break,
        }
    }
    assert_eq!(pages, 2);
    assert_eq!(seen, stored);
    let bad = client
        .peer()
        .list_resources(Some(
            PaginatedRequestParams::default().with_cursor(Some("nonsense".into())),
        ))
        .await;
    assert!(bad.is_err(), "a forged cursor is invalid params");
}

/// Collects the server's `notifications/message`.
#[derive(Clone, Default)]
struct LogSink(std::sync::Arc<std::sync::Mutex<Vec<Value>>>);

#[allow(deprecated)]
impl rmcp::ClientHandler for LogSink {
    async fn on_logging_message(
        &self,
        params: rmcp::model::LoggingMessageNotificationParam,
        _context: rmcp::service::NotificationContext<rmcp::RoleClient>,
    ) {
        let level = serde_json::to_value(params.level).unwrap_or(Value::Null);
        if let Ok(mut seen) = self.0.lock() {
            seen.push(json!({"level": level, "data": params.data}));
        }
    }
}

#[tokio::test]
#[allow(deprecated)]
async fn set_level_filters_the_log_notifications_of_tool_calls() {
    use rmcp::ServiceExt;
    use rmcp::model::{LoggingLevel, SetLevelRequestParams};
    use rmcp::transport::StreamableHttpClientTransport;

    let fixture = McpFixture::start().await;
    let sink = LogSink::default();
    let transport = StreamableHttpClientTransport::from_uri(format!("{}/mcp", fixture.url()));
    let client = sink.clone().serve(transport).await.expect("connect");
    let seen = || sink.0.lock().map(|s| s.clone()).unwrap_or_default();
    let store_args = json!({"user_id": "logger", "content": "a note"});

    // Nothing before setLevel.
    try_call_peer(client.peer(), "store_memory", store_args.clone())
        .await
        .expect("call");
    assert!(seen().is_empty(), "{:?}", seen());

    // At warning: a failed call is reported, a successful one is not.
    client
        .set_level(SetLevelRequestParams::new(LoggingLevel::Warning))
        .await
        .expect("setLevel");
    let failed = try_call_peer(
        client.peer(),
        "get_memory",
        json!({"user_id": "logger", "id": "nope"}),
    )
    .await
    .expect("call");
    assert_eq!(failed.is_error, Some(true));
    try_call_peer(client.peer(), "store_memory", store_args.clone())
        .await
        .expect("call");
    crate::support::eventually(
        std::time::Duration::from_secs(10),
        "the warning",
        || async { !seen().is_empty() },
    )
    .await;

    // At debug: every call.
    client
        .set_level(SetLevelRequestParams::new(LoggingLevel::Debug))
        .await
        .expect("setLevel");
    client
        .call_tool(
            rmcp::model::CallToolRequestParams::new("list_tags").with_arguments(
                json!({"user_id": "logger"})
                    .as_object()
                    .cloned()
                    .expect("object"),
            ),
        )
        .await
        .expect("call");
    crate::support::eventually(
        std::time::Duration::from_secs(10),
        "the debug message",
        || async { seen().len() >= 2 },
    )
    .await;
    let messages = seen();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert_eq!(messages[0]["level"], "warning");
    assert_eq!(messages[0]["data"]["tool"], "get_memory");
    assert_eq!(messages[0]["data"]["is_error"], true);
    assert_eq!(messages[1]["level"], "debug");
    assert_eq!(messages[1]["data"]["tool"], "list_tags");
    client.cancel().await.expect("close");
}
