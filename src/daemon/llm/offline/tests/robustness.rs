//! Determinism, `max_tokens`, garbage input and case folding.

use super::*;

#[test]
fn answers_are_deterministic_with_distinct_call_ids() {
    let a = ask("store this: tea");
    let b = ask("store this: tea");
    assert_eq!(a, b);
    let c = ask("store this: coffee");
    let id = |r: &ChatResponse| match &r.message {
        ChatMessage::Assistant { tool_calls, .. } => tool_calls[0].id.clone(),
        _ => String::new(),
    };
    assert!(id(&a).starts_with("call_"));
    assert_ne!(id(&a), id(&c));
    let usage = a.usage.expect("usage");
    assert!(usage.prompt_tokens > 0 && usage.completion_tokens > 0);
    assert_eq!(
        usage.total_tokens,
        usage.prompt_tokens + usage.completion_tokens
    );

    // Two retries in one response get two ids.
    let message = tool_calls(
        42,
        vec![
            ("list_tags", serde_json::json!({})),
            ("list_tags", serde_json::json!({})),
        ],
    );
    match message {
        ChatMessage::Assistant { tool_calls, .. } => {
            assert_ne!(tool_calls[0].id, tool_calls[1].id)
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn long_text_answers_stop_at_max_tokens() {
    let memory = format!(
        r#"{{"id":"{ID}","filename":"long.txt","tags":[],"content":"{}"}}"#,
        "word ".repeat(500)
    );
    let mut req = request(
        vec![
            user(&format!("show memory {ID}")),
            assistant_call("call_1", "get_memory", "{}"),
            ChatMessage::Tool {
                tool_call_id: "call_1".into(),
                content: memory,
            },
        ],
        ALL_TOOLS,
    );
    req.max_tokens = Some(10);
    let response = OfflineModel::new().complete(&req);
    assert_eq!(response.finish_reason, FinishReason::Length);
    assert!(reply(&response).len() <= 40);
}

/// A small deterministic generator for garbage input.
fn garbage(seed: &mut u64, len: usize) -> String {
    const PIECES: &[&str] = &[
        "store",
        "save",
        "remember",
        "forget",
        "delete",
        "find",
        "tags",
        "tagged",
        ":",
        "?",
        " ",
        "this",
        "that",
        "İ",
        "ß",
        "🧠",
        "\u{0}",
        "\u{202e}",
        "é",
        "'s",
        "-",
        "0190c2a4",
        "-7b1e-7000-8000-",
        "00000000abcd",
        "\n",
        "about",
        "what did i store",
        ",",
        "ǅ",
        "ﬃ",
    ];
    let mut out = String::new();
    for _ in 0..len {
        *seed = splitmix64(*seed);
        out.push_str(PIECES[(*seed % PIECES.len() as u64) as usize]);
    }
    out
}

#[test]
fn garbage_never_panics_and_never_passes_a_user_id() {
    let model = OfflineModel::new();
    let mut inputs: Vec<String> = [
        "",
        " ",
        ":",
        "?",
        "store",
        "store this:",
        "İstanbul İİİ: store",
        "store İİİ: İİ",
        "forget",
        "🧠🧠 save: 🧠",
        "\u{0}\u{1}",
        "SAVE THIS: ÄÖÜ ß",
        "tagged",
        "show me everything tagged",
        "remember that ::::",
        "0190c2a4-7b1e-7000-8000-00000000abcd-0190c2a4-7b1e-7000-8000-00000000abcd",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    inputs.push("x".repeat(200_000));
    inputs.push(format!("store this: {}", "ünïcödé ".repeat(20_000)));
    let mut seed = 7;
    for n in 0..2_000 {
        inputs.push(garbage(&mut seed, n % 24));
    }
    for input in &inputs {
        let response = model.complete(&request(vec![user(input)], ALL_TOOLS));
        for (_, args) in calls(&response) {
            assert!(args.is_object(), "{input:?}");
            assert!(args.get("user_id").is_none(), "{input:?}");
        }
        // The same garbage as a tool result, after each tool.
        for tool in ALL_TOOLS.iter().chain(&["unknown"]) {
            let response = after_tool("forget the wifi", tool, input, input);
            for (_, args) in calls(&response) {
                assert!(args.get("user_id").is_none(), "{input:?}");
            }
        }
    }
    // Odd conversations.
    for messages in [
        Vec::new(),
        vec![ChatMessage::System {
            content: "sys".into(),
        }],
        vec![ChatMessage::Tool {
            tool_call_id: "nope".into(),
            content: "{}".into(),
        }],
        vec![user("hi"), assistant_call("c", "store_memory", "{")],
        vec![
            assistant_call("c", "", ""),
            ChatMessage::Tool {
                tool_call_id: "other".into(),
                content: "Error".into(),
            },
        ],
    ] {
        let response = model.complete(&request(messages, ALL_TOOLS));
        assert_eq!(response.model, OFFLINE_MODEL_NAME);
    }
}

#[test]
fn case_folding_keeps_byte_offsets() {
    for text in ["İstanbul", "STRASSE ß", "ǅemal", "Ωmega", "🧠 BRAIN", "K"] {
        assert_eq!(fold_case(text).len(), text.len(), "{text}");
    }
    assert_eq!(fold_case("Hello WORLD"), "hello world");
}

/// The offline model's word split differs from the full-text index's on purpose (see
/// `text::words`): apostrophes stay inside words, and nothing is allocated.
#[test]
fn the_offline_word_split_keeps_apostrophes() {
    let text = "what's alice’s plan? don't 'quote' café";
    let offline: Vec<&str> = crate::daemon::llm::offline::text::words(text).collect();
    assert_eq!(
        offline,
        ["what's", "alice’s", "plan", "don't", "quote", "café"]
    );
    let index = crate::shared::domain::fts_words(text);
    assert_eq!(
        index,
        [
            "what", "s", "alice", "s", "plan", "don", "t", "quote", "café"
        ]
    );
}
