//! Answering a person's message (a tool call or small talk), and building the response
//! message: deterministic tool-call ids, token counts.

use serde_json::{Map, Value, json};

use super::*;
use crate::shared::domain::tool;
pub(super) use crate::shared::splitmix::splitmix64;

pub(super) fn answer(content: &str, offered: &dyn Fn(&str) -> bool, seed: u64) -> ChatMessage {
    let intent = classify(content);
    match call_for(&intent) {
        Some((name, args)) if offered(name) => tool_calls(seed, vec![(name, args)]),
        Some((name, _)) => text(format!(
            "Sorry, I can't {} right now: the memory tool is unavailable.",
            action(name)
        )),
        None => text(small_talk(&intent, content)),
    }
}

/// The tool call that starts serving `intent`, if any.
pub(super) fn call_for(intent: &Intent) -> Option<(&'static str, Value)> {
    match intent {
        Intent::Store {
            content,
            filename,
            description,
            tags,
        } => Some((
            tool::STORE_MEMORY,
            json!({
                "content": content,
                "filename": filename,
                "description": description,
                "tags": tags.join(","),
            }),
        )),
        Intent::Retrieve { query, tags } => {
            let mut args = Map::new();
            if let Some(query) = query {
                args.insert("query".into(), Value::String(query.clone()));
            }
            if !tags.is_empty() {
                args.insert("tags".into(), Value::String(tags.join(",")));
            }
            Some((tool::RETRIEVE_MEMORIES, Value::Object(args)))
        }
        Intent::ListTags => Some((tool::LIST_TAGS, json!({}))),
        Intent::Delete { id: Some(id), .. } => Some((tool::DELETE_MEMORY, json!({ "id": id }))),
        Intent::Delete {
            id: None,
            query: Some(query),
        } => Some((tool::RETRIEVE_MEMORIES, json!({ "query": query }))),
        Intent::Show { id } => Some((tool::GET_MEMORY, json!({ "id": id }))),
        Intent::Delete {
            id: None,
            query: None,
        }
        | Intent::Chat => None,
    }
}

pub(super) fn action(tool: &str) -> &'static str {
    match tool {
        tool::STORE_MEMORY => "store that",
        tool::RETRIEVE_MEMORIES => "search your memories",
        tool::GET_MEMORY => "open that memory",
        tool::DELETE_MEMORY => "delete that memory",
        tool::LIST_TAGS => "list your tags",
        _ => "do that",
    }
}

pub(super) fn small_talk(intent: &Intent, message: &str) -> String {
    let lower = fold_case(message.trim());
    let s = &lower[skip_fillers(&lower, 0)..];
    let has = |w: &str| contains_phrase(&lower, w);
    if matches!(intent, Intent::Delete { .. }) {
        return "What should I forget? Tell me what it was about, or give me its id.".into();
    }
    if starts_with_any_word(s, STORE_VERBS) {
        return "What would you like me to store? Say \"store this: ...\" with the text.".into();
    }
    if lower.is_empty() {
        return "I didn't catch that. Tell me something to remember, or ask what you stored."
            .into();
    }
    if has("thanks") || has("thank you") || has("thx") || has("cheers") {
        return "You're welcome!".into();
    }
    if has("bye") || has("goodbye") || has("good night") || has("see you") {
        return "Goodbye! Your memories will be here when you come back.".into();
    }
    if has("who are you")
        || has("what are you")
        || has("what can you do")
        || has("help")
        || has("how do you work")
    {
        return "I'm Memento. I keep notes for you: tell me \"remember that ...\" and later ask \
                \"what do you remember about ...?\". I can also list your tags, show a memory \
                by its id, or forget something."
            .into();
    }
    if has("how are you") {
        return "I'm doing well, thanks! Anything you'd like me to remember?".into();
    }
    if starts_with_any_word(
        &lower,
        &[
            "hello",
            "hi",
            "hey",
            "good morning",
            "good evening",
            "howdy",
        ],
    ) {
        return GREETING.into();
    }
    "I'm here to remember things for you. Say \"store this: ...\" to keep something, or ask \
     what you stored."
        .into()
}

pub(super) fn text(content: String) -> ChatMessage {
    ChatMessage::Assistant {
        content: Some(content),
        tool_calls: Vec::new(),
    }
}

/// Tool calls with ids derived from the conversation: deterministic, distinct within one
/// response (`splitmix64` is a bijection of `seed + n`).
pub(super) fn tool_calls(seed: u64, calls: Vec<(&'static str, Value)>) -> ChatMessage {
    ChatMessage::Assistant {
        content: None,
        tool_calls: calls
            .into_iter()
            .zip(0u64..)
            .map(|((name, args), n)| ToolCall {
                id: format!("call_{:016x}", splitmix64(seed.wrapping_add(n))),
                kind: "function".into(),
                function: FunctionCall {
                    name: name.to_owned(),
                    arguments: args.to_string(),
                },
            })
            .collect(),
    }
}

/// Tokens of `bytes` bytes of text ([`crate::shared::tokens`], as the daemon counts).
pub(super) fn tokens(bytes: usize) -> u32 {
    crate::shared::tokens::of_bytes(bytes)
}

pub(super) fn estimate_prompt(request: &ChatRequest) -> u32 {
    tokens(request.prompt_text_len())
}

/// FNV-1a over the conversation's roles and texts: deterministic tool-call ids.
pub(super) fn conversation_hash(messages: &[ChatMessage]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for byte in bytes {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        // A separator, so ("ab", "c") and ("a", "bc") differ.
        hash ^= 0xff;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    };
    for message in messages {
        match message {
            ChatMessage::System { content } => {
                feed(b"s");
                feed(content.as_bytes());
            }
            ChatMessage::User { content } => {
                feed(b"u");
                feed(content.as_bytes());
            }
            ChatMessage::Assistant {
                content,
                tool_calls,
            } => {
                feed(b"a");
                feed(content.as_deref().unwrap_or("").as_bytes());
                for call in tool_calls {
                    feed(call.id.as_bytes());
                    feed(call.function.name.as_bytes());
                    feed(call.function.arguments.as_bytes());
                }
            }
            ChatMessage::Tool {
                tool_call_id,
                content,
            } => {
                feed(b"t");
                feed(tool_call_id.as_bytes());
                feed(content.as_bytes());
            }
        }
    }
    hash
}
