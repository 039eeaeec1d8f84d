use serde_json::Value;

use super::*;
use crate::llm::types::{FunctionDefinition, ToolDefinition};

fn tools() -> Vec<ToolDefinition> {
    [
        "store_memory",
        "retrieve_memories",
        "get_memory",
        "delete_memory",
        "list_tags",
    ]
    .iter()
    .map(|name| ToolDefinition {
        kind: "function".into(),
        function: FunctionDefinition {
            name: (*name).into(),
            description: None,
            parameters: serde_json::json!({"type": "object"}),
        },
    })
    .collect()
}

fn ask(message: &str) -> ChatResponse {
    OfflineModel::new().complete(&ChatRequest {
        messages: vec![
            ChatMessage::System {
                content: "sys".into(),
            },
            ChatMessage::User {
                content: message.into(),
            },
        ],
        tools: tools(),
        max_tokens: None,
        temperature: None,
        user: None,
    })
}

fn first_call(response: &ChatResponse) -> Option<(String, Value)> {
    match &response.message {
        ChatMessage::Assistant { tool_calls, .. } => tool_calls.first().map(|c| {
            (
                c.function.name.clone(),
                serde_json::from_str(&c.function.arguments).expect("valid JSON arguments"),
            )
        }),
        _ => None,
    }
}

/// (phrase, expected tool or "" for none, a key argument and a fragment it must contain)
const PHRASES: &[(&str, &str, &str, &str)] = &[
    (
        "store this: meeting at 3pm with Dana",
        "store_memory",
        "content",
        "meeting at 3pm",
    ),
    (
        "Hey memento, store this meeting summary: we agreed to ship in Q4",
        "store_memory",
        "filename",
        "meeting_summary",
    ),
    (
        "Store this recipe: chocolate cake with 2 cups flour",
        "store_memory",
        "tags",
        "recipe",
    ),
    (
        "remember that my passport expires in May",
        "store_memory",
        "content",
        "passport expires",
    ),
    (
        "Remember that Bob's birthday is on June 3",
        "store_memory",
        "content",
        "June 3",
    ),
    (
        "save this: the wifi password is hunter2",
        "store_memory",
        "content",
        "hunter2",
    ),
    (
        "Save my shopping list: eggs, milk, bread",
        "store_memory",
        "filename",
        "shopping_list",
    ),
    (
        "note: call the plumber tomorrow",
        "store_memory",
        "content",
        "plumber",
    ),
    (
        "Note: the car is parked on level 3",
        "store_memory",
        "content",
        "level 3",
    ),
    (
        "keep this recipe: pancakes with blueberries",
        "store_memory",
        "tags",
        "cooking",
    ),
    (
        "please remember the garage code is 4821",
        "store_memory",
        "content",
        "4821",
    ),
    (
        "memento, save the idea: an app for plant watering",
        "store_memory",
        "content",
        "plant watering",
    ),
    (
        "jot down: dentist on Friday",
        "store_memory",
        "content",
        "dentist",
    ),
    (
        "write down that the meeting moved to 10am",
        "store_memory",
        "content",
        "10am",
    ),
    (
        "can you remember that Anna likes tulips",
        "store_memory",
        "content",
        "tulips",
    ),
    (
        "store my grocery list: apples and pears",
        "store_memory",
        "filename",
        "grocery_list",
    ),
    ("what did I store?", "retrieve_memories", "", ""),
    (
        "What did I store about the Q4 plan?",
        "retrieve_memories",
        "query",
        "q4 plan",
    ),
    (
        "what did I save about passports",
        "retrieve_memories",
        "query",
        "passports",
    ),
    (
        "what do you remember about chocolate cake?",
        "retrieve_memories",
        "query",
        "chocolate cake",
    ),
    (
        "What do you remember about Bob's birthday?",
        "retrieve_memories",
        "query",
        "birthday",
    ),
    ("find my recipes", "retrieve_memories", "query", "recipes"),
    (
        "find the wifi password",
        "retrieve_memories",
        "query",
        "wifi password",
    ),
    (
        "search my notes for plumber",
        "retrieve_memories",
        "query",
        "plumber",
    ),
    (
        "search for dentist",
        "retrieve_memories",
        "query",
        "dentist",
    ),
    (
        "show me my recipes",
        "retrieve_memories",
        "query",
        "recipes",
    ),
    (
        "look up the garage code",
        "retrieve_memories",
        "query",
        "garage code",
    ),
    (
        "do you remember the car park level?",
        "retrieve_memories",
        "query",
        "car park level",
    ),
    (
        "recall my meeting notes",
        "retrieve_memories",
        "query",
        "meeting",
    ),
    (
        "show me my notes tagged work",
        "retrieve_memories",
        "tags",
        "work",
    ),
    ("list my tags", "list_tags", "", ""),
    ("what tags do I have?", "list_tags", "", ""),
    ("which tags are on my memories", "list_tags", "", ""),
    (
        "forget the wifi password",
        "retrieve_memories",
        "query",
        "wifi password",
    ),
    (
        "delete the memory about the plumber",
        "retrieve_memories",
        "query",
        "plumber",
    ),
    (
        "remove my shopping list",
        "retrieve_memories",
        "query",
        "shopping",
    ),
    (
        "delete memory 0190c2a4-7b1e-7000-8000-00000000abcd",
        "delete_memory",
        "id",
        "0190c2a4-7b1e-7000-8000-00000000abcd",
    ),
    (
        "forget 0190c2a4-7b1e-7000-8000-00000000abcd",
        "delete_memory",
        "id",
        "0190c2a4",
    ),
    (
        "show memory 0190c2a4-7b1e-7000-8000-00000000abcd",
        "get_memory",
        "id",
        "0190c2a4",
    ),
    (
        "open 0190c2a4-7b1e-7000-8000-00000000abcd",
        "get_memory",
        "id",
        "0190c2a4",
    ),
    ("hello!", "", "", ""),
    ("thanks a lot", "", "", ""),
    ("what can you do?", "", "", ""),
    ("how is the weather today", "", "", ""),
];

#[test]
fn phrasings_map_to_the_right_tool() {
    assert!(PHRASES.len() >= 40);
    for (phrase, tool, key, fragment) in PHRASES {
        let response = ask(phrase);
        assert_eq!(response.model, OFFLINE_MODEL_NAME);
        let call = first_call(&response);
        if tool.is_empty() {
            assert!(
                call.is_none(),
                "{phrase:?} should not call a tool: {call:?}"
            );
            assert_eq!(response.finish_reason, FinishReason::Stop);
            continue;
        }
        let (name, args) = call.unwrap_or_else(|| panic!("{phrase:?} called no tool"));
        assert_eq!(&name, tool, "{phrase:?}");
        assert_eq!(response.finish_reason, FinishReason::ToolCalls);
        assert!(args.get("user_id").is_none(), "{phrase:?} passed a user_id");
        if !key.is_empty() {
            let value = args[*key].as_str().unwrap_or_default().to_lowercase();
            assert!(
                value.contains(&fragment.to_lowercase()),
                "{phrase:?}: {key}={value:?}"
            );
        }
    }
}

fn after_tool(user: &str, tool: &str, args: &str, result: &str) -> ChatResponse {
    OfflineModel::new().complete(&ChatRequest {
        messages: vec![
            ChatMessage::User {
                content: user.into(),
            },
            ChatMessage::Assistant {
                content: None,
                tool_calls: vec![ToolCall {
                    id: "call_1".into(),
                    kind: "function".into(),
                    function: FunctionCall {
                        name: tool.into(),
                        arguments: args.into(),
                    },
                }],
            },
            ChatMessage::Tool {
                tool_call_id: "call_1".into(),
                content: result.into(),
            },
        ],
        tools: tools(),
        max_tokens: None,
        temperature: None,
        user: None,
    })
}

fn reply(response: &ChatResponse) -> String {
    match &response.message {
        ChatMessage::Assistant { content, .. } => content.clone().unwrap_or_default(),
        _ => String::new(),
    }
}

#[test]
fn answers_are_written_from_tool_results() {
    let stored = after_tool(
        "store this recipe: cake",
        "store_memory",
        r#"{"content":"cake","tags":"cooking,recipe"}"#,
        "Successfully stored 'recipe.txt' for user alice as 20240715_143052_recipe.txt",
    );
    assert_eq!(
        reply(&stored),
        "I've stored it as 'recipe.txt' (tags: cooking, recipe)."
    );

    let found = after_tool(
        "what did I store about cake?",
        "retrieve_memories",
        r#"{"query":"cake"}"#,
        r#"{"memories":[{"id":"x","filename":"recipe.txt","preview":"chocolate cake with flour","tags":["recipe"]}],"count":1}"#,
    );
    assert!(
        reply(&found).contains("chocolate cake with flour"),
        "{}",
        reply(&found)
    );

    let none = after_tool(
        "find unicorns",
        "retrieve_memories",
        r#"{"query":"unicorns"}"#,
        r#"{"memories":[],"count":0}"#,
    );
    assert!(reply(&none).contains("couldn't find"));

    let tags = after_tool(
        "list my tags",
        "list_tags",
        "{}",
        r#"{"tags":[{"tag":"work","count":3}]}"#,
    );
    assert_eq!(reply(&tags), "Your tags: work (3).");

    let failed = after_tool(
        "store this: x",
        "store_memory",
        "{}",
        "Error: the memory service is unavailable right now",
    );
    assert!(
        reply(&failed).starts_with("Sorry, I couldn't do that"),
        "{}",
        reply(&failed)
    );
    assert!(!reply(&failed).contains("stored it"));

    let plain = after_tool(
        "what did I store?",
        "retrieve_memories",
        "{}",
        "20240715_recipe.txt: cake",
    );
    assert!(reply(&plain).contains("cake"));
}

#[test]
fn forgetting_searches_then_deletes_the_best_match() {
    let response = after_tool(
        "forget the wifi password",
        "retrieve_memories",
        r#"{"query":"wifi password"}"#,
        r#"{"memories":[{"id":"0190c2a4-7b1e-7000-8000-00000000abcd","filename":"wifi.txt","preview":"hunter2"}],"count":1}"#,
    );
    let (name, args) = first_call(&response).expect("a delete call");
    assert_eq!(name, "delete_memory");
    assert_eq!(args["id"], "0190c2a4-7b1e-7000-8000-00000000abcd");
}

#[test]
fn no_tools_offered_means_no_tool_calls() {
    let response = OfflineModel::new().complete(&ChatRequest {
        messages: vec![ChatMessage::User {
            content: "store this: x".into(),
        }],
        tools: Vec::new(),
        max_tokens: None,
        temperature: None,
        user: None,
    });
    assert!(first_call(&response).is_none());
}

#[test]
fn garbage_never_panics() {
    let model = OfflineModel::new();
    for input in [
        "",
        " ",
        ":",
        "store",
        "store this:",
        "İstanbul İİİ: store",
        "forget",
        "🧠🧠 save: 🧠",
        &"x".repeat(100_000),
        "\u{0}\u{1}",
        "SAVE THIS: ÄÖÜ ß",
    ] {
        let _ = model.complete(&ChatRequest {
            messages: vec![ChatMessage::User {
                content: input.into(),
            }],
            tools: tools(),
            max_tokens: None,
            temperature: None,
            user: None,
        });
    }
    let _ = model.complete(&ChatRequest {
        messages: Vec::new(),
        tools: tools(),
        max_tokens: None,
        temperature: None,
        user: None,
    });
}
