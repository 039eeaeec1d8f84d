//! Answering tool results: reading the last round's results (the memory server's JSON or
//! prose) into a short answer, or the next call (a delete after a search, a retry after
//! invalid arguments).

use serde_json::{Value, json};

use super::*;
use crate::shared::domain::tool;

/// One tool call of the current turn and its result, if it came back.
pub(super) struct Step<'a> {
    name: &'a str,
    arguments: &'a str,
    result: &'a str,
    /// The call failed: the frame's flag (`framing::read`) when the result is framed, as
    /// the daemon frames every result; otherwise what the text itself says.
    failed: bool,
}

pub(super) fn after_tools(
    messages: &[ChatMessage],
    offered: &dyn Fn(&str) -> bool,
    seed: u64,
) -> ChatMessage {
    // The current turn: everything after the person's last message, in tool rounds.
    let turn_start = messages
        .iter()
        .rposition(|m| matches!(m, ChatMessage::User { .. }))
        .map_or(0, |i| i + 1);
    let user_text = turn_start
        .checked_sub(1)
        .and_then(|i| match messages.get(i) {
            Some(ChatMessage::User { content }) => Some(content.as_str()),
            _ => None,
        })
        .unwrap_or("");
    let mut rounds: Vec<Vec<Step<'_>>> = Vec::new();
    let mut calls: &[ToolCall] = &[];
    for message in &messages[turn_start..] {
        match message {
            ChatMessage::Assistant { tool_calls, .. } if !tool_calls.is_empty() => {
                calls = tool_calls;
                rounds.push(Vec::new());
            }
            ChatMessage::Tool {
                tool_call_id,
                content,
            } => {
                let index = rounds.last().map_or(0, Vec::len);
                let call = calls
                    .iter()
                    .find(|c| c.id == *tool_call_id)
                    .or_else(|| calls.get(index));
                let result = crate::daemon::llm::framing::read(content);
                let step = Step {
                    name: call.map_or("", |c| c.function.name.as_str()),
                    arguments: call.map_or("", |c| c.function.arguments.as_str()),
                    result: result.text,
                    failed: result
                        .is_error
                        .unwrap_or_else(|| reads_as_error(result.text)),
                };
                match rounds.last_mut() {
                    Some(round) => round.push(step),
                    None => rounds.push(vec![step]),
                }
            }
            _ => {}
        }
    }
    let intent = classify(user_text);
    let Some(last) = rounds.last() else {
        return text("Done.".into());
    };
    let may_call = rounds.len() < MAX_TOOL_ROUNDS;

    // A call the daemon could not parse is issued again, rebuilt from the request.
    if may_call {
        let retries: Vec<(&'static str, Value)> = last
            .iter()
            .filter(|s| s.failed && mentions_bad_arguments(s.result))
            .filter_map(|s| rebuild_call(s.name, &intent, &rounds))
            .collect();
        if !retries.is_empty() && retries.iter().all(|(name, _)| offered(name)) {
            return tool_calls(seed, retries);
        }
    }

    // Forgetting by description: the search is done, delete the best match.
    if let Intent::Delete {
        id: None,
        query: Some(query),
    } = &intent
        && let Some(search) = last
            .iter()
            .find(|s| s.name == tool::RETRIEVE_MEMORIES && !s.failed)
    {
        return match best_match(search.result, query) {
            Some((id, _)) if may_call && offered(tool::DELETE_MEMORY) => {
                tool_calls(seed, vec![(tool::DELETE_MEMORY, json!({ "id": id }))])
            }
            Some((_, filename)) if !offered(tool::DELETE_MEMORY) => text(format!(
                "I found '{filename}', but I can't delete it right now: the memory tool is \
                 unavailable."
            )),
            Some((_, filename)) => text(format!(
                "I found '{filename}', but I couldn't delete it in this turn. Ask me again to \
                 forget it."
            )),
            None => text(format!(
                "I couldn't find anything about \"{query}\" to forget."
            )),
        };
    }

    let sentences: Vec<String> = last.iter().map(describe).collect();
    if sentences.is_empty() {
        text("Done.".into())
    } else {
        text(sentences.join("\n"))
    }
}

/// The arguments for `tool` again, for the request in `intent`.
pub(super) fn rebuild_call(
    tool: &str,
    intent: &Intent,
    rounds: &[Vec<Step<'_>>],
) -> Option<(&'static str, Value)> {
    if let Some((name, args)) = call_for(intent)
        && name == tool
    {
        return Some((name, args));
    }
    // The delete step of forgetting by description: pick the match again.
    if tool == tool::DELETE_MEMORY
        && let Intent::Delete {
            query: Some(query), ..
        } = intent
    {
        let (id, _) = rounds
            .iter()
            .flatten()
            .rev()
            .filter(|s| s.name == tool::RETRIEVE_MEMORIES && !s.failed)
            .find_map(|s| best_match(s.result, query))?;
        return Some((tool::DELETE_MEMORY, json!({ "id": id })));
    }
    None
}

/// True when an unframed tool result (one not from Memento's daemon, which flags failures
/// in the frame) reads as a failure rather than data.
pub(super) fn reads_as_error(result: &str) -> bool {
    let trimmed = result.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        return serde_json::from_str::<Value>(trimmed)
            .ok()
            .is_some_and(|v| v.get("error").is_some_and(|e| !e.is_null()));
    }
    let head: String = trimmed.chars().take(200).collect::<String>().to_lowercase();
    trimmed.is_empty()
        || head.starts_with("error")
        || head.starts_with("failed")
        || head.contains("tool unavailable")
        || head.starts_with("unknown tool")
        || head.starts_with("cannot ")
        || head.starts_with("could not ")
}

pub(super) fn mentions_bad_arguments(result: &str) -> bool {
    let lower = result.to_lowercase();
    lower.contains("not valid json") || lower.contains("invalid json")
}

/// The memory in a `retrieve_memories` result that best matches `query`: the most query
/// words in its filename, description, tags and preview, the search's order breaking
/// ties. `None` when no memory shares a word with the query.
pub(super) fn best_match(result: &str, query: &str) -> Option<(String, String)> {
    let value: Value = serde_json::from_str(result).ok()?;
    let terms: Vec<&str> = query.split_whitespace().collect();
    let mut best: Option<(usize, String, String)> = None;
    for memory in value.get("memories")?.as_array()? {
        let Some(id) = memory.get("id").and_then(Value::as_str) else {
            continue;
        };
        let mut haystack = String::new();
        for field in ["filename", "description", "preview", "content"] {
            if let Some(s) = memory.get(field).and_then(Value::as_str) {
                haystack.push_str(s);
                haystack.push(' ');
            }
        }
        haystack.push_str(&tags_of(memory.get("tags")).join(" "));
        let haystack = fold_case(&haystack).replace('_', " ");
        let score = terms
            .iter()
            .filter(|t| contains_phrase(&haystack, t))
            .count();
        if score > 0 && best.as_ref().is_none_or(|(s, ..)| score > *s) {
            let filename = memory
                .get("filename")
                .and_then(Value::as_str)
                .unwrap_or("that memory")
                .to_owned();
            best = Some((score, id.to_owned(), filename));
        }
    }
    best.map(|(_, id, filename)| (id, filename))
}

/// One sentence (or a short list) about one tool result.
pub(super) fn describe(step: &Step<'_>) -> String {
    if step.failed {
        return describe_error(step);
    }
    match step.name {
        tool::STORE_MEMORY => describe_store(step),
        tool::RETRIEVE_MEMORIES => describe_memories(step),
        tool::GET_MEMORY => describe_memory(step.result),
        tool::DELETE_MEMORY => describe_delete(step.result),
        tool::LIST_TAGS => describe_tags(step.result),
        "" => format!("Here's what I got back: {}", clip(step.result, 500)),
        name => format!("Here's what {name} returned: {}", clip(step.result, 500)),
    }
}

pub(super) fn describe_error(step: &Step<'_>) -> String {
    let trimmed = step.result.trim();
    let reason = match trimmed.get(..5) {
        Some(word) if word.eq_ignore_ascii_case("error") => {
            trimmed[5..].trim_start_matches(|c: char| c == ':' || c == '-' || c.is_whitespace())
        }
        _ => trimmed,
    };
    // The daemon's hints to the model are not for the person.
    let reason = reason.split("; tell the").next().unwrap_or(reason);
    let reason = clip(reason.trim().trim_end_matches('.'), 300);
    if reason.is_empty() {
        format!("Sorry, I couldn't {}.", action(step.name))
    } else {
        format!("Sorry, I couldn't {}: {reason}.", action(step.name))
    }
}

pub(super) fn describe_store(step: &Step<'_>) -> String {
    let args: Value = serde_json::from_str(step.arguments).unwrap_or(Value::Null);
    // "Successfully stored 'x.txt' for user alice as 20240715_143052_x.txt"
    let result = step.result.trim();
    let filename = result
        .strip_prefix("Successfully stored '")
        .and_then(|rest| rest.split_once('\''))
        .map(|(name, _)| name.to_owned())
        .or_else(|| {
            serde_json::from_str::<Value>(result)
                .ok()
                .and_then(|v| v.get("filename").and_then(Value::as_str).map(str::to_owned))
        })
        .or_else(|| {
            args.get("filename")
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
    let stem = filename
        .as_deref()
        .map(|f| f.rsplit_once('.').map_or(f, |(stem, _)| stem))
        .unwrap_or("");
    let what = KINDS
        .iter()
        .find(|(_, kind_stem, ..)| *kind_stem == stem)
        .map_or_else(
            || "that".to_owned(),
            |(_, _, label, _)| format!("your {label}"),
        );
    let tags = tags_of(args.get("tags"));
    let tags = if tags.is_empty() {
        String::new()
    } else {
        format!(" (tags: {})", tags.join(", "))
    };
    match filename {
        Some(filename) => format!("I've stored {what} as '{filename}'{tags}."),
        None => format!("I've stored {what}{tags}."),
    }
}

pub(super) fn describe_memories(step: &Step<'_>) -> String {
    let args: Value = serde_json::from_str(step.arguments).unwrap_or(Value::Null);
    let query = args
        .get("query")
        .and_then(Value::as_str)
        .filter(|q| !q.trim().is_empty());
    let tags = tags_of(args.get("tags"));
    let nothing = match (query, tags.is_empty()) {
        (Some(query), _) => format!("I couldn't find anything about \"{query}\" in your memories."),
        (None, false) => format!("I couldn't find anything tagged {}.", tags.join(", ")),
        (None, true) => "You haven't stored anything yet.".to_owned(),
    };
    let Ok(value) = serde_json::from_str::<Value>(step.result) else {
        // Another server's plain-text answer: pass it on.
        let trimmed = step.result.trim();
        let lower = trimmed.to_lowercase();
        return if lower.starts_with("no ") || lower.starts_with("nothing") {
            nothing
        } else {
            format!("Here's what I found: {}", clip(trimmed, 600))
        };
    };
    let memories = value
        .get("memories")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if memories.is_empty() {
        return nothing;
    }
    let shown = 5;
    let lines: Vec<String> = memories.iter().take(shown).map(memory_line).collect();
    let count = memories.len();
    let mut out = if count == 1 {
        format!("I found one memory: {}", lines.join(""))
    } else {
        format!("I found {count} memories:\n- {}", lines.join("\n- "))
    };
    if count > shown {
        out.push_str(&format!("\n…and {} more.", count - shown));
    }
    out
}

pub(super) fn memory_line(memory: &Value) -> String {
    let name = memory
        .get("filename")
        .and_then(Value::as_str)
        .unwrap_or("a note");
    let preview = memory
        .get("preview")
        .or_else(|| memory.get("content"))
        .or_else(|| memory.get("description"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let tags = tags_of(memory.get("tags"));
    let mut line = format!("'{name}': {}", clip(preview, 160));
    if !tags.is_empty() {
        line.push_str(&format!(" (tags: {})", tags.join(", ")));
    }
    if let Some(id) = memory.get("id").and_then(Value::as_str) {
        line.push_str(&format!(" [id {id}]"));
    }
    line
}

pub(super) fn describe_memory(result: &str) -> String {
    let Ok(memory) = serde_json::from_str::<Value>(result) else {
        return clip(result, 2000);
    };
    let name = memory
        .get("filename")
        .and_then(Value::as_str)
        .unwrap_or("memory");
    let mut about = Vec::new();
    let tags = tags_of(memory.get("tags"));
    if !tags.is_empty() {
        about.push(format!("tags: {}", tags.join(", ")));
    }
    if let Some(date) = memory
        .get("created_at")
        .and_then(Value::as_str)
        .and_then(|c| c.get(..10))
    {
        about.push(format!("stored {date}"));
    }
    let about = if about.is_empty() {
        String::new()
    } else {
        format!(" ({})", about.join("; "))
    };
    let content = memory
        .get("content")
        .and_then(Value::as_str)
        .unwrap_or_default();
    format!("'{name}'{about}:\n{}", clip(content, 2000))
}

pub(super) fn describe_delete(result: &str) -> String {
    // "Deleted memory <id> ('x.txt')"
    let trimmed = result.trim();
    let filename = match serde_json::from_str::<Value>(trimmed) {
        Ok(value) => value
            .get("filename")
            .and_then(Value::as_str)
            .map(str::to_owned),
        Err(_) => trimmed
            .strip_prefix("Deleted")
            .and_then(|rest| rest.split_once("('"))
            .and_then(|(_, rest)| rest.split_once("')"))
            .map(|(filename, _)| filename.to_owned()),
    };
    match filename {
        Some(filename) => format!("Done: I've forgotten '{filename}'."),
        None => format!("Done: {}.", clip(trimmed.trim_end_matches('.'), 300)),
    }
}

pub(super) fn describe_tags(result: &str) -> String {
    let value: Value = serde_json::from_str(result).unwrap_or(Value::Null);
    let tags = value
        .get("tags")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if tags.is_empty() {
        return "You don't have any tags yet.".into();
    }
    let list: Vec<String> = tags
        .iter()
        .take(30)
        .map(|t| match t {
            Value::String(name) => name.clone(),
            _ => {
                let name = t.get("tag").and_then(Value::as_str).unwrap_or("?");
                match t.get("count").and_then(Value::as_u64) {
                    Some(count) => format!("{name} ({count})"),
                    None => name.to_owned(),
                }
            }
        })
        .collect();
    let more = if tags.len() > 30 {
        format!(" and {} more", tags.len() - 30)
    } else {
        String::new()
    };
    format!("Your tags: {}{more}.", list.join(", "))
}

/// Tags as a list, from a comma-separated string or a JSON array.
pub(super) fn tags_of(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::String(s)) => s
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}
