//! Answers to tool results: confirmations, lists, errors and follow-up calls.

use super::*;

#[test]
fn store_results_become_a_confirmation() {
    let stored = after_tool(
        "hey memento, store this meeting summary: ship in Q4",
        "store_memory",
        r#"{"content":"ship in Q4","filename":"meeting_summary.txt","tags":"work,meeting"}"#,
        "Successfully stored 'meeting_summary.txt' for user alice as \
         20240715_143052_meeting_summary.txt",
    );
    assert_eq!(
        reply(&stored),
        "I've stored your meeting summary as 'meeting_summary.txt' (tags: work, meeting)."
    );
    assert_eq!(stored.finish_reason, FinishReason::Stop);

    let plain = after_tool(
        "store this: x",
        "store_memory",
        r#"{"content":"x","filename":"x.txt","tags":"note"}"#,
        "Successfully stored 'x.txt' for user bob as 20240715_143052_x.txt",
    );
    assert_eq!(reply(&plain), "I've stored that as 'x.txt' (tags: note).");
}

#[test]
fn retrieve_results_are_listed_with_previews() {
    let one = after_tool(
        "what did I store about cake?",
        "retrieve_memories",
        r#"{"query":"cake"}"#,
        &format!(
            r#"{{"memories":[{{"id":"{ID}","filename":"recipe.txt","stored_as":"20240715_recipe.txt","description":"Recipe","tags":["cooking","recipe"],"created_at":"2024-07-15T14:30:52Z","preview":"chocolate cake with flour","size_bytes":25}}],"count":1}}"#
        ),
    );
    let text = reply(&one);
    assert!(
        text.starts_with("I found one memory: 'recipe.txt'"),
        "{text}"
    );
    assert!(text.contains("chocolate cake with flour"), "{text}");
    assert!(text.contains("cooking, recipe"), "{text}");
    assert!(text.contains(ID), "{text}");

    let memories: Vec<String> = (0..7)
        .map(|n| {
            format!(r#"{{"id":"id{n}","filename":"n{n}.txt","tags":[],"preview":"note {n}"}}"#)
        })
        .collect();
    let many = after_tool(
        "what did I store?",
        "retrieve_memories",
        "{}",
        &format!(r#"{{"memories":[{}],"count":7}}"#, memories.join(",")),
    );
    let text = reply(&many);
    assert!(text.starts_with("I found 7 memories:"), "{text}");
    assert!(text.contains("'n4.txt': note 4"), "{text}");
    assert!(!text.contains("n5.txt"), "{text}");
    assert!(text.ends_with("…and 2 more."), "{text}");

    let none = after_tool(
        "find unicorns",
        "retrieve_memories",
        r#"{"query":"unicorns"}"#,
        r#"{"memories":[],"count":0}"#,
    );
    assert_eq!(
        reply(&none),
        "I couldn't find anything about \"unicorns\" in your memories."
    );
    let empty = after_tool(
        "what did I store?",
        "retrieve_memories",
        "{}",
        r#"{"memories":[],"count":0}"#,
    );
    assert_eq!(reply(&empty), "You haven't stored anything yet.");
    let tagged = after_tool(
        "show me my notes tagged work",
        "retrieve_memories",
        r#"{"tags":"work"}"#,
        r#"{"memories":[],"count":0}"#,
    );
    assert_eq!(reply(&tagged), "I couldn't find anything tagged work.");

    // Another server's plain text is passed on.
    let plain = after_tool(
        "what did I store?",
        "retrieve_memories",
        "{}",
        "20240715_recipe.txt: cake",
    );
    assert!(reply(&plain).contains("cake"), "{}", reply(&plain));
}

#[test]
fn get_delete_and_tag_results_are_described() {
    let memory = after_tool(
        &format!("show memory {ID}"),
        "get_memory",
        &format!(r#"{{"id":"{ID}"}}"#),
        &format!(
            r#"{{"id":"{ID}","filename":"recipe.txt","stored_as":"20240715_recipe.txt","description":"Recipe","tags":["cooking"],"created_at":"2024-07-15T14:30:52Z","content":"Chocolate cake:\n2 cups flour","size_bytes":28}}"#
        ),
    );
    assert_eq!(
        reply(&memory),
        "'recipe.txt' (tags: cooking; stored 2024-07-15):\nChocolate cake: 2 cups flour"
    );

    let deleted = after_tool(
        &format!("delete memory {ID}"),
        "delete_memory",
        &format!(r#"{{"id":"{ID}"}}"#),
        &format!("Deleted memory {ID} ('wifi.txt')"),
    );
    assert_eq!(reply(&deleted), "Done: I've forgotten 'wifi.txt'.");
    let structured = after_tool(
        &format!("delete memory {ID}"),
        "delete_memory",
        &format!(r#"{{"id":"{ID}"}}"#),
        &format!(r#"{{"deleted":true,"id":"{ID}","filename":"wifi.txt"}}"#),
    );
    assert_eq!(reply(&structured), "Done: I've forgotten 'wifi.txt'.");

    let tags = after_tool(
        "list my tags",
        "list_tags",
        "{}",
        r#"{"tags":[{"tag":"work","count":3},{"tag":"cooking","count":1}]}"#,
    );
    assert_eq!(reply(&tags), "Your tags: work (3), cooking (1).");
    let no_tags = after_tool("list my tags", "list_tags", "{}", r#"{"tags":[]}"#);
    assert_eq!(reply(&no_tags), "You don't have any tags yet.");
}

#[test]
fn errors_are_reported_never_as_success() {
    let cases = [
        (
            "store this: x",
            "store_memory",
            "Error: the memory service is unavailable right now (timed out); tell the person \
             their request could not be done and to try again shortly",
            "Sorry, I couldn't store that: the memory service is unavailable right now (timed out).",
        ),
        (
            "what did I store?",
            "retrieve_memories",
            "Error: query is longer than 1024 characters",
            "Sorry, I couldn't search your memories: query is longer than 1024 characters.",
        ),
        (
            &format!("show memory {ID}"),
            "get_memory",
            "Error: no memory with id 0190c2a4",
            "Sorry, I couldn't open that memory: no memory with id 0190c2a4.",
        ),
        (
            &format!("forget {ID}"),
            "delete_memory",
            "tool unavailable",
            "Sorry, I couldn't delete that memory: tool unavailable.",
        ),
        (
            "list my tags",
            "list_tags",
            "error: boom",
            "Sorry, I couldn't list your tags: boom.",
        ),
        (
            "store this: x",
            "store_memory",
            r#"{"error":{"code":"x","message":"broken"}}"#,
            "Sorry, I couldn't store that",
        ),
        (
            "store this: x",
            "store_memory",
            "",
            "Sorry, I couldn't store that.",
        ),
    ];
    for (message, tool, result, expected) in cases {
        let response = after_tool(message, tool, "{}", result);
        let text = reply(&response);
        assert!(text.starts_with(expected), "{result:?}: {text}");
        assert!(!text.contains("I've stored"), "{text}");
        assert!(!text.contains("Done"), "{text}");
        assert!(calls(&response).is_empty());
    }
}

#[test]
fn forgetting_searches_then_deletes_the_best_match() {
    let found = r#"{"memories":[
        {"id":"a","filename":"router.txt","description":"","tags":["home"],"preview":"the router is in the hall"},
        {"id":"b","filename":"wifi.txt","description":"wifi","tags":["credentials"],"preview":"the wifi password is hunter2"}
    ],"count":2}"#;
    let response = after_tool(
        "forget the wifi password",
        "retrieve_memories",
        r#"{"query":"wifi password"}"#,
        found,
    );
    assert_eq!(response.finish_reason, FinishReason::ToolCalls);
    let calls = calls(&response);
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].0, "delete_memory");
    assert_eq!(calls[0].1, serde_json::json!({"id": "b"}));

    // The whole turn: search, delete, then the confirmation.
    let done = OfflineModel::new().complete(&request(
        vec![
            user("forget the wifi password"),
            assistant_call(
                "call_1",
                "retrieve_memories",
                r#"{"query":"wifi password"}"#,
            ),
            ChatMessage::Tool {
                tool_call_id: "call_1".into(),
                content: found.into(),
            },
            assistant_call("call_2", "delete_memory", r#"{"id":"b"}"#),
            ChatMessage::Tool {
                tool_call_id: "call_2".into(),
                content: "Deleted memory b ('wifi.txt')".into(),
            },
        ],
        ALL_TOOLS,
    ));
    assert_eq!(reply(&done), "Done: I've forgotten 'wifi.txt'.");

    let nothing = after_tool(
        "forget the wifi password",
        "retrieve_memories",
        r#"{"query":"wifi password"}"#,
        r#"{"memories":[{"id":"a","filename":"cake.txt","tags":[],"preview":"flour"}],"count":1}"#,
    );
    assert_eq!(
        reply(&nothing),
        "I couldn't find anything about \"wifi password\" to forget."
    );

    let no_delete_tool = after_tool_with(
        "forget the wifi password",
        "retrieve_memories",
        r#"{"query":"wifi password"}"#,
        found,
        &["retrieve_memories"],
    );
    assert!(reply(&no_delete_tool).contains("unavailable"));
}

#[test]
fn invalid_arguments_are_sent_again_a_bounded_number_of_times() {
    let bad = "Error: the arguments of store_memory are not valid JSON (EOF while parsing); \
               call it again with a JSON object";
    let mut messages = vec![user("store this recipe: cake")];
    for round in 1..=MAX_TOOL_ROUNDS {
        let id = format!("call_{round}");
        messages.push(assistant_call(&id, "store_memory", r#"{"content":"ca"#));
        messages.push(ChatMessage::Tool {
            tool_call_id: id,
            content: bad.into(),
        });
        let response = OfflineModel::new().complete(&request(messages.clone(), ALL_TOOLS));
        if round < MAX_TOOL_ROUNDS {
            let calls = calls(&response);
            assert_eq!(calls[0].0, "store_memory", "round {round}");
            assert_eq!(calls[0].1["content"], "cake");
        } else {
            assert!(calls(&response).is_empty());
            assert!(reply(&response).starts_with("Sorry, I couldn't store that"));
        }
    }
}

/// Issue 13: the daemon's frame carries a call's failure (`is_error`), and the model reads
/// the flag, not the wording: a failure is reported whatever its text says, and a result
/// whose text merely starts with "Error" is not taken for one.
#[test]
fn framed_results_fail_by_their_flag_not_their_wording() {
    use crate::daemon::llm::framing::frame;
    let failed = after_tool(
        &format!("show memory {ID}"),
        "get_memory",
        &format!(r#"{{"id":"{ID}"}}"#),
        &frame(
            "get_memory",
            "no memory with that id",
            "0123456789abcdef",
            true,
        ),
    );
    assert_eq!(
        reply(&failed),
        "Sorry, I couldn't open that memory: no memory with that id."
    );
    let prose = "Errors and warnings: the build log you asked me to keep";
    let unframed = after_tool("what did I store?", "retrieve_memories", "{}", prose);
    assert!(
        reply(&unframed).starts_with("Sorry"),
        "{}",
        reply(&unframed)
    );
    let framed = after_tool(
        "what did I store?",
        "retrieve_memories",
        "{}",
        &frame("retrieve_memories", prose, "0123456789abcdef", false),
    );
    assert!(!reply(&framed).starts_with("Sorry"), "{}", reply(&framed));
}
