//! The built-in offline model: deterministic rules behind the same chat types as a real LLM,
//! so Memento works end to end without a key (and the Azure mock has a brain).
//!
//! It reads the last message. A person's message is classified (store, retrieve, list tags,
//! delete, show, or small talk) and answered with real OpenAI-format `tool_calls`; tool
//! results are turned into a short answer. It only calls tools offered in the request, never
//! passes a `user_id`, and marks itself through the response's `model` name.

use serde_json::{Value, json};

use super::types::{
    ChatMessage, ChatRequest, ChatResponse, FinishReason, FunctionCall, ToolCall, Usage,
};

/// The model name in every offline response.
pub const OFFLINE_MODEL_NAME: &str = "memento-offline-1";

/// The offline model. Stateless and cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct OfflineModel;

/// What a person's message asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Intent {
    /// Keep `content`.
    Store {
        /// The text to keep.
        content: String,
        /// Suggested filename.
        filename: String,
        /// One-line description.
        description: String,
        /// Tags.
        tags: Vec<String>,
    },
    /// Search (no query: list the newest).
    Retrieve {
        /// Key words.
        query: Option<String>,
        /// Tag filter.
        tag: Option<String>,
    },
    /// List tags.
    ListTags,
    /// Forget something: by id, or by search first.
    Delete {
        /// The memory id, when given.
        id: Option<String>,
        /// What to search for otherwise.
        query: Option<String>,
    },
    /// Show one memory by id.
    Show {
        /// The memory id.
        id: String,
    },
    /// Anything else.
    Chat,
}

const STORE_TRIGGERS: &[&str] = &[
    "store this",
    "store that",
    "store the",
    "store my",
    "store a",
    "store",
    "remember that",
    "remember this",
    "remember",
    "save this",
    "save that",
    "save the",
    "save my",
    "save",
    "note that",
    "note:",
    "note down",
    "make a note",
    "keep this",
    "keep that",
    "keep the",
    "keep my",
    "write down",
    "jot down",
];

const RETRIEVE_TRIGGERS: &[&str] = &[
    "what did i store",
    "what did i save",
    "what have i stored",
    "what have i saved",
    "what did i note",
    "what do you remember",
    "what do you know about",
    "do you remember",
    "search my notes for",
    "search my memories for",
    "search my notes",
    "search for",
    "search",
    "find my",
    "find",
    "look up",
    "show me my",
    "show my",
    "list my memories",
    "list my notes",
    "recall",
    "retrieve",
];

const DELETE_TRIGGERS: &[&str] = &[
    "forget about",
    "forget the",
    "forget my",
    "forget",
    "delete the memory about",
    "delete the memory",
    "delete memory",
    "delete my",
    "delete the",
    "delete",
    "remove the memory about",
    "remove the",
    "remove my",
    "remove",
];

const FILLER: &[&str] = &[
    "hey memento,",
    "hey memento",
    "hi memento,",
    "hi memento",
    "memento,",
    "memento",
    "please",
    "can you",
    "could you",
    "would you",
    "kindly",
];

/// Kinds of things people store, with the filename stem and tags they suggest.
const KINDS: &[(&str, &str, &[&str])] = &[
    ("meeting summary", "meeting_summary", &["work", "meeting"]),
    ("meeting notes", "meeting_notes", &["work", "meeting"]),
    ("meeting", "meeting_notes", &["work", "meeting"]),
    ("recipe", "recipe", &["cooking", "recipe"]),
    ("shopping list", "shopping_list", &["shopping"]),
    ("grocery list", "grocery_list", &["shopping", "groceries"]),
    ("todo list", "todo_list", &["todo"]),
    ("to-do list", "todo_list", &["todo"]),
    ("idea", "idea", &["ideas"]),
    ("password", "password", &["credentials"]),
    ("address", "address", &["contacts"]),
    ("phone number", "phone_number", &["contacts"]),
    ("birthday", "birthday", &["personal", "dates"]),
    ("book", "book", &["books"]),
    ("quote", "quote", &["quotes"]),
    ("plan", "plan", &["planning"]),
    ("note", "note", &["notes"]),
];

const STOP: &[&str] = &[
    "a",
    "an",
    "the",
    "my",
    "me",
    "i",
    "of",
    "about",
    "on",
    "in",
    "for",
    "to",
    "and",
    "or",
    "is",
    "it",
    "that",
    "this",
    "what",
    "did",
    "do",
    "you",
    "any",
    "all",
    "with",
    "stored",
    "saved",
    "store",
    "save",
    "remember",
    "notes",
    "note",
    "memories",
    "memory",
    "please",
    "something",
    "things",
    "anything",
    "have",
    "there",
    "was",
    "were",
    "are",
    "be",
    "from",
    "tagged",
    "your",
    "know",
    "find",
    "search",
    "show",
    "look",
    "up",
    "recall",
    "retrieve",
    "list",
    "some",
];

impl OfflineModel {
    /// A model.
    pub fn new() -> OfflineModel {
        OfflineModel
    }

    /// Answers one request.
    pub fn complete(&self, request: &ChatRequest) -> ChatResponse {
        let offered = |name: &str| request.tools.iter().any(|t| t.function.name == name);
        let seed = conversation_hash(&request.messages);
        let message = match request.messages.last() {
            Some(ChatMessage::Tool { .. }) => self.after_tools(request, &offered, seed),
            Some(ChatMessage::User { content }) => self.answer(content, &offered, seed),
            _ => text("Hello! Tell me something to remember, or ask me what you stored."),
        };
        let finish_reason = match &message {
            ChatMessage::Assistant { tool_calls, .. } if !tool_calls.is_empty() => {
                FinishReason::ToolCalls
            }
            _ => FinishReason::Stop,
        };
        let prompt_tokens = estimate(&request.messages);
        let completion_tokens = estimate(std::slice::from_ref(&message));
        ChatResponse {
            model: OFFLINE_MODEL_NAME.to_owned(),
            message,
            finish_reason,
            usage: Some(Usage {
                prompt_tokens,
                completion_tokens,
                total_tokens: prompt_tokens + completion_tokens,
            }),
            id: Some(format!("offline-{seed:016x}")),
        }
    }

    fn answer(&self, content: &str, offered: &dyn Fn(&str) -> bool, seed: u64) -> ChatMessage {
        let intent = classify(content);
        let call = |name: &str, args: Value| {
            if offered(name) {
                tool_calls(seed, vec![(name.to_owned(), args)])
            } else {
                text("I can't reach the memory store right now, so I can't do that at the moment.")
            }
        };
        match intent {
            Intent::Store {
                content,
                filename,
                description,
                tags,
            } => call(
                "store_memory",
                json!({
                    "content": content,
                    "filename": filename,
                    "description": description,
                    "tags": tags.join(","),
                }),
            ),
            Intent::Retrieve { query, tag } => {
                let mut args = serde_json::Map::new();
                if let Some(query) = query {
                    args.insert("query".into(), Value::String(query));
                }
                if let Some(tag) = tag {
                    args.insert("tags".into(), Value::String(tag));
                }
                call("retrieve_memories", Value::Object(args))
            }
            Intent::ListTags => call("list_tags", json!({})),
            Intent::Delete { id: Some(id), .. } => call("delete_memory", json!({ "id": id })),
            Intent::Delete { id: None, query } => call(
                "retrieve_memories",
                json!({ "query": query.unwrap_or_default() }),
            ),
            Intent::Show { id } => call("get_memory", json!({ "id": id })),
            Intent::Chat => text(&small_talk(content)),
        }
    }

    fn after_tools(
        &self,
        request: &ChatRequest,
        offered: &dyn Fn(&str) -> bool,
        seed: u64,
    ) -> ChatMessage {
        // The tool calls of the last assistant message and their results.
        let mut results: Vec<(String, String)> = Vec::new();
        let mut calls: Vec<ToolCall> = Vec::new();
        for message in request.messages.iter().rev() {
            match message {
                ChatMessage::Tool {
                    tool_call_id,
                    content,
                } => results.push((tool_call_id.clone(), content.clone())),
                ChatMessage::Assistant { tool_calls, .. } => {
                    calls = tool_calls.clone();
                    break;
                }
                _ => break,
            }
        }
        results.reverse();
        let user_text = request
            .messages
            .iter()
            .rev()
            .find_map(|m| match m {
                ChatMessage::User { content } => Some(content.as_str()),
                _ => None,
            })
            .unwrap_or("");
        let wants_delete = matches!(classify(user_text), Intent::Delete { id: None, .. });
        let mut sentences = Vec::new();
        for (id, content) in &results {
            let name = calls
                .iter()
                .find(|c| &c.id == id)
                .map(|c| c.function.name.as_str())
                .unwrap_or("");
            if content.trim_start().starts_with("Error") {
                sentences.push(format!(
                    "Sorry, I couldn't do that: {}",
                    content.trim_start().trim_start_matches("Error:").trim()
                ));
                continue;
            }
            match name {
                "store_memory" => sentences.push(describe_store(content, &calls, id)),
                "retrieve_memories" => {
                    if wants_delete && offered("delete_memory") {
                        if let Some(first) = first_memory_id(content) {
                            return tool_calls(
                                seed,
                                vec![("delete_memory".to_owned(), json!({ "id": first }))],
                            );
                        }
                        sentences.push("I couldn't find anything matching that to forget.".into());
                    } else {
                        sentences.push(describe_memories(content));
                    }
                }
                "get_memory" => sentences.push(describe_memory(content)),
                "delete_memory" => {
                    sentences.push(format!("Done: {}.", content.trim().trim_end_matches('.')))
                }
                "list_tags" => sentences.push(describe_tags(content)),
                _ => sentences.push(format!("Here is what I found: {}", clip(content, 400))),
            }
        }
        if sentences.is_empty() {
            sentences.push("Done.".into());
        }
        text(&sentences.join(" "))
    }
}

/// Classifies a person's message.
pub fn classify(message: &str) -> Intent {
    let original = message.trim();
    let mut lower = original.to_lowercase();
    let mut start = 0usize;
    // Drop polite openings ("Hey memento, please ...").
    loop {
        let rest = lower[start..].trim_start();
        let skipped = lower.len() - rest.len();
        match FILLER.iter().find(|f| rest.starts_with(*f)) {
            Some(f) => start = skipped + f.len(),
            None => {
                start = skipped;
                break;
            }
        }
    }
    lower = lower[start..].to_owned();
    // The original text (case kept) from the same point, when lower-casing kept byte offsets.
    let body = original
        .get(start..)
        .filter(|b| b.len() == lower.len())
        .unwrap_or(lower.as_str());

    if let Some(id) = find_uuid(&lower) {
        if starts_with_any(&lower, DELETE_TRIGGERS) {
            return Intent::Delete {
                id: Some(id),
                query: None,
            };
        }
        if starts_with_any(&lower, &["show", "open", "get", "read", "display"]) {
            return Intent::Show { id };
        }
    }
    if lower.contains("tags")
        && (lower.contains("list")
            || lower.contains("what tags")
            || lower.contains("which tags")
            || lower.contains("my tags"))
    {
        return Intent::ListTags;
    }
    if let Some(trigger) = RETRIEVE_TRIGGERS.iter().find(|t| lower.starts_with(*t)) {
        let rest = &lower[trigger.len()..];
        let tag = rest
            .split("tagged")
            .nth(1)
            .map(|t| {
                t.trim()
                    .trim_matches(|c: char| !c.is_alphanumeric())
                    .to_owned()
            })
            .filter(|t| !t.is_empty());
        return Intent::Retrieve {
            query: key_terms(rest),
            tag,
        };
    }
    if lower.ends_with('?')
        && (lower.starts_with("what")
            || lower.starts_with("where")
            || lower.starts_with("when")
            || lower.starts_with("which"))
        && (lower.contains("store")
            || lower.contains("save")
            || lower.contains("remember")
            || lower.contains("note"))
    {
        let rest = lower.split(" about ").nth(1).unwrap_or(&lower);
        return Intent::Retrieve {
            query: key_terms(rest),
            tag: None,
        };
    }
    if let Some(trigger) = DELETE_TRIGGERS.iter().find(|t| lower.starts_with(*t)) {
        return Intent::Delete {
            id: None,
            query: key_terms(&lower[trigger.len()..]),
        };
    }
    if let Some(trigger) = STORE_TRIGGERS.iter().find(|t| lower.starts_with(*t)) {
        let after = body.get(trigger.len()..).unwrap_or("");
        let (head, content) = match after.find(':') {
            Some(colon) => (&after[..colon], after[colon + 1..].trim()),
            None => ("", after.trim()),
        };
        let content = content.trim().trim_start_matches(['-', '—']).trim();
        if content.is_empty() {
            return Intent::Chat;
        }
        let head_lower = head.to_lowercase();
        let kind = KINDS
            .iter()
            .find(|(kind, _, _)| head_lower.contains(kind))
            .or_else(|| {
                KINDS
                    .iter()
                    .find(|(kind, _, _)| content.to_lowercase().starts_with(kind))
            });
        let (filename, mut tags) = match kind {
            Some((_, stem, tags)) => (
                format!("{stem}.txt"),
                tags.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
            ),
            None => (slug(content), Vec::new()),
        };
        for word in topical_words(content).into_iter().take(3) {
            if !tags.contains(&word) && tags.len() < 5 {
                tags.push(word);
            }
        }
        let description = match kind {
            Some((kind, _, _)) => format!("A {kind}: {}", clip(content, 60)),
            None => clip(content, 80),
        };
        return Intent::Store {
            content: content.to_owned(),
            filename,
            description,
            tags,
        };
    }
    Intent::Chat
}

fn starts_with_any(text: &str, prefixes: &[&str]) -> bool {
    prefixes.iter().any(|p| text.starts_with(p))
}

fn find_uuid(text: &str) -> Option<String> {
    text.split(|c: char| !(c.is_ascii_hexdigit() || c == '-'))
        .find(|w| w.len() == 36 && w.matches('-').count() == 4)
        .map(str::to_owned)
}

/// The meaningful words of a query, or `None` when there are none.
fn key_terms(text: &str) -> Option<String> {
    let words: Vec<&str> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty() && !STOP.contains(w) && *w != "tagged")
        .collect();
    (!words.is_empty()).then(|| words.join(" "))
}

fn topical_words(content: &str) -> Vec<String> {
    let mut words: Vec<String> = content
        .split(|c: char| !c.is_alphabetic())
        .filter(|w| w.chars().count() >= 5)
        .map(str::to_lowercase)
        .filter(|w| !STOP.contains(&w.as_str()))
        .collect();
    let mut seen = std::collections::HashSet::new();
    words.retain(|w| seen.insert(w.clone()));
    words
}

fn slug(text: &str) -> String {
    let words: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .take(4)
        .map(str::to_lowercase)
        .collect();
    if words.is_empty() {
        "note.txt".into()
    } else {
        format!("{}.txt", words.join("_"))
    }
}

fn clip(text: &str, max: usize) -> String {
    let text = text.trim();
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let cut: String = text.chars().take(max).collect();
        format!("{}…", cut.trim_end())
    }
}

fn small_talk(message: &str) -> String {
    let lower = message.to_lowercase();
    if lower.contains("thank") {
        "You're welcome!".into()
    } else if lower.starts_with("hi") || lower.starts_with("hello") || lower.starts_with("hey") {
        "Hello! I can remember things for you: say \"store this: ...\", or ask \"what did I store about ...?\"".into()
    } else if lower.contains("who are you")
        || lower.contains("what can you do")
        || lower.contains("help")
    {
        "I'm Memento. I keep notes for you: tell me \"remember that ...\" and later ask \"what do you remember about ...?\". I can also list your tags or forget something.".into()
    } else {
        "I'm here to remember things for you. Say \"store this: ...\" to keep something, or ask what you stored.".into()
    }
}

fn text(content: &str) -> ChatMessage {
    ChatMessage::Assistant {
        content: Some(content.to_owned()),
        tool_calls: Vec::new(),
    }
}

fn tool_calls(seed: u64, calls: Vec<(String, Value)>) -> ChatMessage {
    ChatMessage::Assistant {
        content: None,
        tool_calls: calls
            .into_iter()
            .enumerate()
            .map(|(n, (name, args))| ToolCall {
                id: format!("call_{:016x}", seed.wrapping_add(n as u64)),
                kind: "function".into(),
                function: FunctionCall {
                    name,
                    arguments: args.to_string(),
                },
            })
            .collect(),
    }
}

fn describe_store(result: &str, calls: &[ToolCall], id: &str) -> String {
    let tags = calls
        .iter()
        .find(|c| c.id == id)
        .and_then(|c| serde_json::from_str::<Value>(&c.function.arguments).ok())
        .and_then(|v| v["tags"].as_str().map(str::to_owned))
        .filter(|t| !t.is_empty());
    // "Successfully stored 'x.txt' for user alice as 2024..._x.txt"
    let filename = result
        .split('\'')
        .nth(1)
        .filter(|_| result.starts_with("Successfully stored"));
    match (filename, tags) {
        (Some(filename), Some(tags)) => format!(
            "I've stored it as '{filename}' (tags: {}).",
            tags.split(',').collect::<Vec<_>>().join(", ")
        ),
        (Some(filename), None) => format!("I've stored it as '{filename}'."),
        _ => format!("Stored. {}", clip(result, 200)),
    }
}

fn first_memory_id(result: &str) -> Option<String> {
    serde_json::from_str::<Value>(result).ok().and_then(|v| {
        v["memories"]
            .as_array()
            .and_then(|m| m.first())
            .and_then(|m| m["id"].as_str().map(str::to_owned))
    })
}

fn describe_memories(result: &str) -> String {
    let Ok(value) = serde_json::from_str::<Value>(result) else {
        // Another server's plain-text answer: pass it on.
        let trimmed = result.trim();
        return if trimmed.is_empty() || trimmed.to_lowercase().starts_with("no ") {
            "I couldn't find anything like that in your memories.".into()
        } else {
            format!("Here's what I found: {}", clip(trimmed, 600))
        };
    };
    let memories = value["memories"].as_array().cloned().unwrap_or_default();
    if memories.is_empty() {
        return "I couldn't find anything like that in your memories.".into();
    }
    let items: Vec<String> = memories
        .iter()
        .take(5)
        .map(|m| {
            let name = m["filename"].as_str().unwrap_or("a note");
            let preview = m["preview"]
                .as_str()
                .or_else(|| m["content"].as_str())
                .unwrap_or("");
            format!("'{name}': {}", clip(preview, 160))
        })
        .collect();
    let more = if memories.len() > 5 {
        format!(" (and {} more)", memories.len() - 5)
    } else {
        String::new()
    };
    format!(
        "I found {} memor{}{more}: {}",
        memories.len(),
        if memories.len() == 1 { "y" } else { "ies" },
        items.join("; ")
    )
}

fn describe_memory(result: &str) -> String {
    match serde_json::from_str::<Value>(result) {
        Ok(m) => format!(
            "'{}': {}",
            m["filename"].as_str().unwrap_or("memory"),
            clip(m["content"].as_str().unwrap_or(""), 1000)
        ),
        Err(_) => clip(result, 1000),
    }
}

fn describe_tags(result: &str) -> String {
    let tags = serde_json::from_str::<Value>(result)
        .ok()
        .and_then(|v| v["tags"].as_array().cloned())
        .unwrap_or_default();
    if tags.is_empty() {
        return "You don't have any tags yet.".into();
    }
    let list: Vec<String> = tags
        .iter()
        .map(|t| format!("{} ({})", t["tag"].as_str().unwrap_or("?"), t["count"]))
        .collect();
    format!("Your tags: {}.", list.join(", "))
}

fn estimate(messages: &[ChatMessage]) -> u32 {
    let chars: usize = messages
        .iter()
        .map(|m| match m {
            ChatMessage::System { content }
            | ChatMessage::User { content }
            | ChatMessage::Tool { content, .. } => content.len(),
            ChatMessage::Assistant {
                content,
                tool_calls,
            } => {
                content.as_ref().map_or(0, String::len)
                    + tool_calls
                        .iter()
                        .map(|c| c.function.arguments.len() + c.function.name.len())
                        .sum::<usize>()
            }
        })
        .sum();
    u32::try_from(chars / 4 + 1).unwrap_or(u32::MAX)
}

/// FNV-1a over the conversation: deterministic tool-call ids.
fn conversation_hash(messages: &[ChatMessage]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for message in messages {
        if let Ok(bytes) = serde_json::to_vec(message) {
            for byte in bytes {
                hash ^= u64::from(byte);
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
        }
    }
    hash
}

#[cfg(test)]
mod tests;
