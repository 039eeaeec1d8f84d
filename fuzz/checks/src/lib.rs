//! The checks behind the cargo-fuzz targets in `fuzz/`: each takes arbitrary bytes, drives
//! one parser or converter with them, and panics only when an invariant is broken.
//!
//! They live beside the fuzz targets, in this crate (`fuzz/checks`, a member of the root
//! workspace, never a dependency of `memento`), so that plain `cargo test --workspace` (which
//! never runs cargo-fuzz) replays the committed seed corpus `fuzz/seeds/<target>/` through
//! them, including every input a fuzzer ever found (`src/tests.rs`), and so that they compile
//! with the code they check. The cargo-fuzz targets in `fuzz/fuzz_targets/` call them;
//! `fuzz/run.sh` runs the real fuzzers.
//!
//! | check | drives | invariants besides "no panic" |
//! | --- | --- | --- |
//! | [`sse_parser`] | [`SseParser`] and the SSE client's event decoding | any chunking gives the same events and error; events within the cap |
//! | [`messages_body`] | the legacy `/messages` body (a client JSON-RPC message) | a parsed body serialises and parses again |
//! | [`search_terms`] | [`SearchTerms`] and its FTS5 expressions | only quoted terms joined by `OR`; SQLite FTS5 accepts them; a scoped query finds its own user's text and never another's |
//! | [`offline_model`] | [`offline::classify`] and [`OfflineModel::complete`] over a whole turn | tool calls only to offered tools, JSON-object arguments without `user_id`, at most [`MAX_TOOL_ROUNDS`] rounds, deterministic |
//! | [`convert_tools`] | [`mcp::convert_tools`] | no `user_id` declared for the model; a tool that declared one is bound to the user; JSON out |
//!
//! Inputs are bytes; each check documents how it reads them, so that seeds can be written by
//! hand.

use std::cell::RefCell;
use std::collections::HashSet;
use std::sync::Arc;

use rmcp::model::{ClientJsonRpcMessage, JsonObject, ServerJsonRpcMessage, Tool};
use rusqlite::Connection;
use serde_json::{Value, json};

use memento::daemon::llm::offline::{
    self, Intent, MAX_TOOL_ROUNDS, OFFLINE_MODEL_NAME, OfflineModel,
};
use memento::daemon::llm::types::{
    ChatMessage, ChatRequest, ChatResponse, FinishReason, FunctionCall, FunctionDefinition,
    ToolCall, ToolDefinition,
};
use memento::daemon::mcp::{self, USER_ARGUMENT};
use memento::memory_server::storage::fts::{
    FTS_TABLE, match_expression, scope_prefix, scoped_text,
};
use memento::shared::domain::{self, MAX_QUERY_LEN, MAX_QUERY_TERMS, SearchTerms};
use memento::shared::sse::{SseError, SseEvent, SseParser};

// === SSE ===

/// The legacy SSE transport's stream parser, as the MCP SSE client uses it.
///
/// Input: byte 0 picks the event cap (`0..=127`: a cap of 1 to 128 bytes, else 1 MiB),
/// byte 1 seeds how the rest is cut into chunks, the rest is the stream.
///
/// Invariants: feeding the stream whole, byte by byte, or in arbitrary chunks gives the
/// same events and the same error (chunks before a failing one keep their events); no event
/// holds more data than the cap; `event` is never empty; no field holds a line end; the
/// client's decoding of each `message` event as JSON-RPC does not panic.
pub fn sse_parser(data: &[u8]) {
    let (cap_byte, seed, stream) = match data {
        [cap, seed, rest @ ..] => (*cap, *seed, rest),
        _ => (0xff, 0, data),
    };
    let cap = if cap_byte < 0x80 {
        usize::from(cap_byte) + 1
    } else {
        1 << 20
    };
    let (byte_events, byte_error) = sse_in_chunks(cap, stream.chunks(1));
    match SseParser::new(cap).push(stream) {
        Ok(events) => {
            assert_eq!(byte_error, None, "byte by byte failed, whole succeeded");
            assert_eq!(events, byte_events, "whole and byte by byte differ");
        }
        Err(error) => assert_eq!(
            Some(&error),
            byte_error.as_ref(),
            "whole and byte by byte fail differently"
        ),
    }
    let (split_events, split_error) = sse_in_chunks(cap, chunks(stream, seed));
    assert_eq!(
        split_error, byte_error,
        "chunked and byte by byte fail differently"
    );
    if byte_error.is_none() {
        assert_eq!(split_events, byte_events, "chunked and byte by byte differ");
    } else {
        assert!(
            byte_events.starts_with(&split_events),
            "chunked events are not a prefix of the byte-by-byte ones"
        );
    }
    if let Some(SseError::TooLarge(reported)) = byte_error {
        assert_eq!(reported, cap, "TooLarge reports another cap");
    }
    for event in &byte_events {
        assert!(!event.event.is_empty(), "empty event type");
        assert!(
            event.data.len() <= cap,
            "event of {} bytes passed a cap of {cap}",
            event.data.len()
        );
        assert!(!event.data.contains('\r'), "data holds a CR");
        for field in [Some(&event.event), event.id.as_ref()]
            .into_iter()
            .flatten()
        {
            assert!(!field.contains(['\r', '\n']), "a field holds a line end");
        }
        assert!(
            event.id.as_ref().is_none_or(|id| !id.contains('\0')),
            "id holds NUL"
        );
        // What `mcp::sse_client` does with a `message` event.
        if event.event == "message"
            && let Ok(message) = serde_json::from_str::<ServerJsonRpcMessage>(&event.data)
        {
            assert!(
                serde_json::to_string(&message).is_ok(),
                "a parsed server message does not serialise"
            );
        }
    }
}

/// Feeds `chunks` to one parser; the events until the first error, and that error.
fn sse_in_chunks<'a>(
    cap: usize,
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> (Vec<SseEvent>, Option<SseError>) {
    let mut parser = SseParser::new(cap);
    let mut events = Vec::new();
    for chunk in chunks {
        match parser.push(chunk) {
            Ok(more) => events.extend(more),
            Err(error) => return (events, Some(error)),
        }
    }
    (events, None)
}

/// `bytes` cut into chunks of 0 to 16 bytes, the lengths drawn from `seed`.
fn chunks(bytes: &[u8], seed: u8) -> Vec<&[u8]> {
    let mut state = u64::from(seed);
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        state = splitmix64(state);
        let len = usize::try_from(state % 17).unwrap_or(1).min(rest.len());
        let (chunk, tail) = rest.split_at(len);
        out.push(chunk);
        rest = tail;
    }
    out
}

/// The body of a legacy `POST /messages`, parsed as `memory_server::sse` parses it.
///
/// Input: the body. Invariants: a body that parses serialises again, and that text parses
/// too (the same message type travels both ways through rmcp).
pub fn messages_body(data: &[u8]) {
    let Ok(message) = serde_json::from_slice::<ClientJsonRpcMessage>(data) else {
        return;
    };
    let text = match serde_json::to_string(&message) {
        Ok(text) => text,
        Err(error) => panic!("a parsed client message does not serialise: {error}"),
    };
    if let Err(error) = serde_json::from_str::<ClientJsonRpcMessage>(&text) {
        panic!("a client message does not parse after a round trip: {error}\n{text}");
    }
}

// === Full-text queries ===

/// The user numbers whose scopes the search check uses.
const SEARCH_USER: i64 = 1;
const OTHER_USER: i64 = 0x11;

thread_local! {
    /// An FTS5 table like `memories_fts`, made once per thread.
    static FTS: RefCell<Option<Connection>> = const { RefCell::new(None) };
}

/// The full-text query sanitiser.
///
/// Input: the query text (lossy UTF-8). Invariants: only a query over
/// [`MAX_QUERY_LEN`] characters is refused; at most [`MAX_QUERY_TERMS`] distinct, non-empty
/// terms; the FTS5 expressions are exactly the terms, each in double quotes, joined by
/// ` OR ` (no bare `*`, `NEAR`, `-`, column filter or parenthesis), and empty only when there
/// is no term; SQLite FTS5 accepts them (with the storage engine's table and tokenizer);
/// with the same text indexed for two users, the scoped expression finds the searching
/// user's copy and never the other user's.
pub fn search_terms(data: &[u8]) {
    let raw = String::from_utf8_lossy(data);
    let terms = match SearchTerms::parse(&raw) {
        Ok(terms) => terms,
        Err(error) => {
            assert!(
                raw.chars().count() > MAX_QUERY_LEN,
                "a query of {} characters refused: {error}",
                raw.chars().count()
            );
            return;
        }
    };
    assert!(
        raw.chars().count() <= MAX_QUERY_LEN,
        "an over-long query accepted"
    );
    let list = terms.terms();
    assert!(list.len() <= MAX_QUERY_TERMS, "{} terms", list.len());
    assert_eq!(terms.is_empty(), list.is_empty());
    let mut seen = HashSet::new();
    for term in list {
        assert!(!term.is_empty(), "an empty term");
        assert!(seen.insert(term), "term {term:?} twice");
    }
    let prefix = scope_prefix(SEARCH_USER);
    let plain = match_expression(&terms, "");
    let scoped = match_expression(&terms, &prefix);
    assert_or_of_quoted(&plain, "", list);
    assert_or_of_quoted(&scoped, &prefix, list);
    if terms.is_empty() {
        // The storage engine answers "nothing" without running a query.
        return;
    }
    with_fts(|conn| {
        let outcome = fts_check(conn, &raw, &plain, &scoped);
        // Leaves the table empty for the next input, whatever happened.
        let rolled_back = conn.execute_batch("ROLLBACK");
        let (_plain_hits, scoped_hits) = match outcome {
            Ok(hits) => hits,
            Err(error) => panic!("SQLite FTS5 refused {plain:?} or {scoped:?}: {error}"),
        };
        assert!(rolled_back.is_ok(), "rollback failed: {rolled_back:?}");
        // The unscoped expression only has to be valid: indexed words are all scoped.
        assert!(
            scoped_hits.iter().all(|&rowid| rowid == SEARCH_USER),
            "{scoped:?} found another user's text: rows {scoped_hits:?}"
        );
        assert!(
            scoped_hits.contains(&SEARCH_USER),
            "{scoped:?} does not find the text it came from"
        );
    });
}

/// Checks that `expression` is `"<prefix><term>"` for each term, joined by ` OR `.
fn assert_or_of_quoted(expression: &str, prefix: &str, terms: &[String]) {
    if terms.is_empty() {
        assert_eq!(expression, "", "no terms, yet an expression");
        return;
    }
    let parts: Vec<&str> = expression.split(" OR ").collect();
    assert_eq!(
        parts.len(),
        terms.len(),
        "{expression:?} is not {} terms joined by OR",
        terms.len()
    );
    for (part, term) in parts.iter().zip(terms) {
        let inner = part
            .strip_prefix('"')
            .and_then(|p| p.strip_suffix('"'))
            .unwrap_or_else(|| panic!("{part:?} in {expression:?} is not quoted"));
        assert!(!inner.contains('"'), "a quote inside {part:?}");
        assert_eq!(inner, format!("{prefix}{term}"), "in {expression:?}");
    }
}

fn with_fts(check: impl FnOnce(&Connection)) {
    FTS.with(|cell| {
        let mut slot = cell.borrow_mut();
        let conn = slot.get_or_insert_with(|| {
            let conn = match Connection::open_in_memory() {
                Ok(conn) => conn,
                Err(error) => panic!("cannot open an in-memory SQLite database: {error}"),
            };
            // The storage engine's own table definition.
            if let Err(error) = conn.execute_batch(FTS_TABLE) {
                panic!("cannot create the FTS5 table: {error}");
            }
            conn
        });
        check(conn);
    });
}

/// Indexes `raw` for two users in a transaction (the caller rolls it back) and runs both
/// expressions; the matching rowids (= user numbers).
fn fts_check(
    conn: &Connection,
    raw: &str,
    plain: &str,
    scoped: &str,
) -> rusqlite::Result<(Vec<i64>, Vec<i64>)> {
    conn.execute_batch("BEGIN")?;
    for user in [SEARCH_USER, OTHER_USER] {
        let text = scoped_text(user, raw);
        conn.prepare_cached(
            "INSERT INTO memories_fts (rowid, content, description, filename, tags) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(rusqlite::params![user, text, text, text, text])?;
    }
    let hits = |expression: &str| -> rusqlite::Result<Vec<i64>> {
        let mut stmt =
            conn.prepare_cached("SELECT rowid FROM memories_fts WHERE memories_fts MATCH ?1")?;
        let rows = stmt.query_map([expression], |row| row.get(0))?;
        rows.collect()
    };
    Ok((hits(plain)?, hits(scoped)?))
}

// === The offline model ===

/// The tools the memory server offers.
const MEMORY_TOOLS: [&str; 5] = memento::shared::domain::tool::ALL;

/// Tool results the daemon's stand-in answers with when the input gives none.
const CANNED_RESULTS: [&str; 4] = [
    "Error: the arguments are not valid JSON; tell the user what went wrong",
    r#"{"memories":[{"id":"0190c0de-0000-7000-8000-000000000001","filename":"wifi_password.txt","description":"Wifi password","tags":"home,wifi","preview":"the wifi password is hunter2"}]}"#,
    "Successfully stored 'note.txt' for user alice as 20240715_143052_note.txt",
    r#"{"tags":[{"tag":"work","count":2},"home"]}"#,
];

/// The offline model.
///
/// Input (lossy UTF-8) is read three ways:
/// - as a person's message: [`offline::classify`], then a turn with every memory tool;
/// - as a script, one directive a line: `@system`, `@user`, `@assistant` text, `@call NAME
///   ARGS` (consecutive calls form one assistant message), `@tool RESULT` (answers the
///   oldest unanswered call), `@tools a,b` (the tools offered; default all five),
///   `@max_tokens N`, `@result TEXT` (what later calls in the turn get back); other lines
///   continue the previous message (text before any directive is a person's message);
/// - as a JSON [`ChatRequest`], when it is one.
///
/// A turn plays the daemon: every tool call gets a result (the `@result`s in turn, else
/// canned ones, including an invalid-arguments error that makes the model retry) until the
/// model answers in text. Invariants: the answer is an assistant message; tool calls only
/// to offered tools, with distinct ids and JSON-object arguments that never hold
/// `user_id`; no call once the turn has [`MAX_TOOL_ROUNDS`] rounds; finish reason and usage
/// consistent; a text answer within `max_tokens`; the same request gets the same answer.
pub fn offline_model(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    check_intent(&text, &offline::classify(&text));
    let model = OfflineModel::new();
    let plain = ChatRequest {
        messages: vec![
            ChatMessage::System {
                content: "You are Memento.".into(),
            },
            ChatMessage::User {
                content: text.clone().into_owned(),
            },
        ],
        tools: MEMORY_TOOLS
            .iter()
            .map(|name| tool_definition(name))
            .collect(),
        max_tokens: None,
        temperature: None,
        user: None,
    };
    check_turn(&model, plain, &[]);
    let (scripted, results) = script(&text);
    check_turn(&model, scripted, &results);
    if let Ok(request) = serde_json::from_slice::<ChatRequest>(data) {
        let response = model.complete(&request);
        check_response(&model, &request, &response);
    }
}

fn check_intent(message: &str, intent: &Intent) {
    match intent {
        Intent::Store {
            content,
            filename,
            tags,
            ..
        } => {
            assert!(!content.trim().is_empty(), "store of nothing");
            assert!(
                message.contains(content.as_str()),
                "stored content {content:?} is not the person's text"
            );
            assert!(!filename.is_empty(), "store without a filename");
            assert!(
                !tags.is_empty() && tags.len() <= domain::MAX_TAGS,
                "{} tags",
                tags.len()
            );
        }
        Intent::Retrieve { query, .. } | Intent::Delete { query, .. } => {
            assert!(
                query.as_ref().is_none_or(|q| !q.trim().is_empty()),
                "a blank query"
            );
            if let Intent::Delete { id: Some(id), .. } = intent {
                assert_uuid(id);
            }
        }
        Intent::Show { id } => assert_uuid(id),
        Intent::ListTags | Intent::Chat => {}
    }
}

fn assert_uuid(id: &str) {
    assert!(
        id.len() == 36
            && id
                .chars()
                .all(|c| c == '-' || c.is_ascii_digit() || ('a'..='f').contains(&c)),
        "{id:?} is not a lower-case UUID"
    );
}

fn tool_definition(name: &str) -> ToolDefinition {
    ToolDefinition {
        kind: "function".into(),
        function: FunctionDefinition {
            name: name.to_owned(),
            description: Some(format!("the {name} tool")),
            parameters: json!({"type": "object", "properties": {}}),
        },
    }
}

/// Reads the script format described at [`offline_model`].
fn script(text: &str) -> (ChatRequest, Vec<String>) {
    let mut messages: Vec<ChatMessage> = Vec::new();
    let mut tools: Option<Vec<String>> = None;
    let mut max_tokens = None;
    let mut results = Vec::new();
    let mut unanswered: Vec<String> = Vec::new();
    let mut calls = 0usize;
    for line in text.split('\n') {
        let (directive, rest) = match line.strip_prefix('@') {
            Some(tail) => tail.split_once(' ').unwrap_or((tail, "")),
            None => ("", line),
        };
        match directive {
            "system" => messages.push(ChatMessage::System {
                content: rest.to_owned(),
            }),
            "user" => messages.push(ChatMessage::User {
                content: rest.to_owned(),
            }),
            "assistant" => messages.push(ChatMessage::Assistant {
                content: Some(rest.to_owned()),
                tool_calls: Vec::new(),
            }),
            "call" => {
                let (name, arguments) = rest.split_once(' ').unwrap_or((rest, "{}"));
                let call = ToolCall {
                    id: format!("call_{calls}"),
                    kind: "function".into(),
                    function: FunctionCall {
                        name: name.to_owned(),
                        arguments: arguments.to_owned(),
                    },
                };
                calls += 1;
                unanswered.push(call.id.clone());
                match messages.last_mut() {
                    Some(ChatMessage::Assistant {
                        content: None,
                        tool_calls,
                    }) if !tool_calls.is_empty() => tool_calls.push(call),
                    _ => messages.push(ChatMessage::Assistant {
                        content: None,
                        tool_calls: vec![call],
                    }),
                }
            }
            "tool" => {
                let tool_call_id = if unanswered.is_empty() {
                    "call_unknown".to_owned()
                } else {
                    unanswered.remove(0)
                };
                messages.push(ChatMessage::Tool {
                    tool_call_id,
                    content: rest.to_owned(),
                });
            }
            "tools" => {
                tools = Some(
                    rest.split(',')
                        .map(str::trim)
                        .filter(|t| !t.is_empty())
                        .map(str::to_owned)
                        .collect(),
                );
            }
            "max_tokens" => max_tokens = rest.trim().parse().ok(),
            "result" => results.push(rest.to_owned()),
            _ => match messages.last_mut() {
                Some(
                    ChatMessage::System { content }
                    | ChatMessage::User { content }
                    | ChatMessage::Tool { content, .. }
                    | ChatMessage::Assistant {
                        content: Some(content),
                        ..
                    },
                ) => {
                    content.push('\n');
                    content.push_str(line);
                }
                Some(ChatMessage::Assistant {
                    content: None,
                    tool_calls,
                }) => {
                    if let Some(call) = tool_calls.last_mut() {
                        call.function.arguments.push('\n');
                        call.function.arguments.push_str(line);
                    }
                }
                None => messages.push(ChatMessage::User {
                    content: line.to_owned(),
                }),
            },
        }
    }
    let tools = tools.unwrap_or_else(|| MEMORY_TOOLS.iter().map(|&t| t.to_owned()).collect());
    let request = ChatRequest {
        messages,
        tools: tools.iter().map(|name| tool_definition(name)).collect(),
        max_tokens,
        temperature: None,
        user: None,
    };
    (request, results)
}

/// Answers the model's tool calls until it answers in text.
fn check_turn(model: &OfflineModel, mut request: ChatRequest, results: &[String]) {
    let mut next_result = 0usize;
    for _ in 0..=MAX_TOOL_ROUNDS {
        let response = model.complete(&request);
        check_response(model, &request, &response);
        let tool_calls = match &response.message {
            ChatMessage::Assistant { tool_calls, .. } if !tool_calls.is_empty() => {
                tool_calls.clone()
            }
            _ => return,
        };
        request.messages.push(response.message);
        for call in tool_calls {
            let content = if results.is_empty() {
                CANNED_RESULTS[next_result % CANNED_RESULTS.len()].to_owned()
            } else {
                results[next_result % results.len()].clone()
            };
            next_result += 1;
            request.messages.push(ChatMessage::Tool {
                tool_call_id: call.id,
                content,
            });
        }
    }
    panic!("the offline model still calls tools after {MAX_TOOL_ROUNDS} rounds");
}

fn check_response(model: &OfflineModel, request: &ChatRequest, response: &ChatResponse) {
    assert_eq!(response.model, OFFLINE_MODEL_NAME);
    let ChatMessage::Assistant {
        content,
        tool_calls,
    } = &response.message
    else {
        panic!("not an assistant message: {:?}", response.message);
    };
    assert_eq!(
        response.finish_reason == FinishReason::ToolCalls,
        !tool_calls.is_empty(),
        "finish reason {:?} with {} tool calls",
        response.finish_reason,
        tool_calls.len()
    );
    let mut ids = HashSet::new();
    for call in tool_calls {
        assert_eq!(call.kind, "function");
        assert!(ids.insert(&call.id), "tool call id {} twice", call.id);
        assert!(
            request
                .tools
                .iter()
                .any(|t| t.function.name == call.function.name),
            "called {} which was not offered",
            call.function.name
        );
        match serde_json::from_str::<Value>(&call.function.arguments) {
            Ok(Value::Object(arguments)) => assert!(
                !arguments.contains_key(USER_ARGUMENT),
                "the model chose a user: {}",
                call.function.arguments
            ),
            _ => panic!(
                "arguments of {} are not a JSON object: {}",
                call.function.name, call.function.arguments
            ),
        }
    }
    if !tool_calls.is_empty() {
        let turn_start = request
            .messages
            .iter()
            .rposition(|m| matches!(m, ChatMessage::User { .. }))
            .map_or(0, |i| i + 1);
        let rounds = request.messages[turn_start..]
            .iter()
            .filter(|m| matches!(m, ChatMessage::Assistant { tool_calls, .. } if !tool_calls.is_empty()))
            .count();
        assert!(
            rounds < MAX_TOOL_ROUNDS,
            "a tool round after {rounds} rounds in this turn"
        );
    }
    if let (Some(max_tokens), Some(content), true) =
        (request.max_tokens, content, tool_calls.is_empty())
    {
        let max_bytes = usize::try_from(max_tokens)
            .unwrap_or(usize::MAX)
            .saturating_mul(4);
        assert!(
            content.len() <= max_bytes,
            "{} bytes of text for max_tokens {max_tokens}",
            content.len()
        );
    }
    match response.usage {
        Some(usage) => assert_eq!(
            usage.total_tokens,
            usage.prompt_tokens.saturating_add(usage.completion_tokens)
        ),
        None => panic!("no usage"),
    }
    assert_eq!(
        &model.complete(request),
        response,
        "the same request got another answer"
    );
}

// === MCP tools to model functions ===

/// Property names the structured schema generator uses.
const PROPERTY_NAMES: [&str; 6] = ["user_id", "content", "query", "id", "tags", "user"];

/// The conversion of MCP tools into the functions offered to the model.
///
/// Input: JSON when it parses (an array of tools or schemas, or one tool or schema; a tool
/// is an object with `name` and `inputSchema`, anything else an input schema), otherwise
/// bytes that steer a small generator of schemas built from JSON-Schema keywords that
/// matter here (`properties`, `required`, `allOf`/`anyOf`/`oneOf`, `$ref`/`$defs`, ...).
///
/// Invariants: one function per tool, same name and description, a JSON object schema with
/// `type` and `properties`, no `$schema`; no `user_id` argument declared to the model
/// (`user_id` in `properties` or `required`, there or in `allOf`/`anyOf`/`oneOf`/`then`/
/// `else` or a local `$ref`); every tool whose input schema declared one is bound to the
/// user (the daemon then overwrites whatever the model sends); the output serialises to
/// JSON and reads back equal.
pub fn convert_tools(data: &[u8]) {
    let tools = match serde_json::from_slice::<Value>(data) {
        Ok(Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .filter_map(|(i, item)| tool_from_json(i, item))
            .collect(),
        Ok(item) => tool_from_json(0, item).into_iter().collect(),
        Err(_) => generated_tools(data),
    };
    check_conversion(&tools);
}

fn tool_from_json(index: usize, item: Value) -> Option<Tool> {
    if let Ok(tool) = serde_json::from_value::<Tool>(item.clone()) {
        return Some(tool);
    }
    match item {
        Value::Object(schema) => Some(Tool::new(
            format!("tool_{index}"),
            "a tool",
            Arc::new(schema),
        )),
        _ => None,
    }
}

fn check_conversion(tools: &[Tool]) {
    let (definitions, binds_user) = mcp::convert_tools(tools);
    assert_eq!(definitions.len(), tools.len(), "tools lost or added");
    for (tool, definition) in tools.iter().zip(&definitions) {
        let function = &definition.function;
        assert_eq!(definition.kind, "function");
        assert_eq!(function.name, tool.name);
        assert_eq!(function.description.as_deref(), tool.description.as_deref());
        let Value::Object(parameters) = &function.parameters else {
            panic!("parameters of {} are not an object", function.name);
        };
        assert!(parameters.contains_key("type"), "no type: {parameters:?}");
        assert!(
            parameters.contains_key("properties"),
            "no properties: {parameters:?}"
        );
        assert!(!parameters.contains_key("$schema"), "$schema left in");
        assert!(
            !declares_user(&function.parameters),
            "{USER_ARGUMENT} offered to the model by {}: {}",
            function.name,
            function.parameters
        );
        let input = Value::Object(tool.input_schema.as_ref().clone());
        if declares_user(&input) {
            assert!(
                binds_user.contains(function.name.as_str()),
                "{} declared {USER_ARGUMENT} but is not bound to the user: {input}",
                function.name
            );
        }
    }
    for name in &binds_user {
        assert!(
            tools.iter().any(|t| t.name == name.as_str()),
            "{name} bound but not a tool"
        );
    }
    let text = match serde_json::to_string(&definitions) {
        Ok(text) => text,
        Err(error) => panic!("definitions do not serialise: {error}"),
    };
    match serde_json::from_str::<Vec<ToolDefinition>>(&text) {
        Ok(back) => assert_eq!(back, definitions, "definitions change through JSON"),
        Err(error) => panic!("definitions do not read back: {error}\n{text}"),
    }
}

/// True when `schema` declares a `user_id` argument for the arguments object it describes:
/// in `properties` or `required`, itself or in a subschema that applies to the same object
/// as a declaration (`allOf`, `anyOf`, `oneOf`, `then`, `else`, or a local `$ref`). A
/// `user_id` inside another argument's schema (a nested object) is another field.
fn declares_user(schema: &Value) -> bool {
    let mut visited = HashSet::new();
    declares_user_in(schema, schema, &mut visited)
}

fn declares_user_in<'a>(
    schema: &'a Value,
    root: &'a Value,
    visited: &mut HashSet<&'a str>,
) -> bool {
    let Value::Object(map) = schema else {
        return false;
    };
    if map
        .get("properties")
        .and_then(Value::as_object)
        .is_some_and(|p| p.contains_key(USER_ARGUMENT))
    {
        return true;
    }
    if map
        .get("required")
        .and_then(Value::as_array)
        .is_some_and(|r| r.iter().any(|name| name == USER_ARGUMENT))
    {
        return true;
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        if let Some(Value::Array(branches)) = map.get(key)
            && branches
                .iter()
                .any(|branch| declares_user_in(branch, root, visited))
        {
            return true;
        }
    }
    for key in ["then", "else"] {
        if let Some(branch) = map.get(key)
            && declares_user_in(branch, root, visited)
        {
            return true;
        }
    }
    if let Some(Value::String(reference)) = map.get("$ref")
        && let Some(pointer) = reference.strip_prefix('#')
        && visited.insert(reference.as_str())
        && let Some(target) = root.pointer(pointer)
    {
        return declares_user_in(target, root, visited);
    }
    false
}

/// Tools whose schemas are steered by `data` (for input that is not JSON).
fn generated_tools(data: &[u8]) -> Vec<Tool> {
    let mut bytes = Bytes(data);
    let count = 1 + usize::from(bytes.next() % 3);
    (0..count)
        .map(|i| {
            let schema = match generated_schema(&mut bytes, 0) {
                Value::Object(schema) => schema,
                other => {
                    let mut schema = JsonObject::new();
                    schema.insert("not".into(), other);
                    schema
                }
            };
            let name = MEMORY_TOOLS
                .get(usize::from(bytes.next()) % (MEMORY_TOOLS.len() + 1))
                .map_or_else(|| format!("tool_{i}"), |&n| n.to_owned());
            Tool::new(name, "a tool", Arc::new(schema))
        })
        .collect()
}

/// Reads bytes; zeros once they run out.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn next(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&byte, rest)) => {
                self.0 = rest;
                byte
            }
            None => 0,
        }
    }

    fn pick<'s>(&mut self, choices: &[&'s str]) -> &'s str {
        choices[usize::from(self.next()) % choices.len()]
    }
}

fn generated_schema(bytes: &mut Bytes<'_>, depth: usize) -> Value {
    const KEYWORDS: [&str; 16] = [
        "type",
        "properties",
        "required",
        "allOf",
        "anyOf",
        "oneOf",
        "then",
        "else",
        "$ref",
        "$defs",
        "definitions",
        "not",
        "items",
        "additionalProperties",
        "$schema",
        "description",
    ];
    const REFS: [&str; 7] = [
        "#",
        "#/$defs/a",
        "#/$defs/b",
        "#/definitions/a",
        "#/properties/user_id",
        "#/allOf/0",
        "other.json#/a",
    ];
    if depth >= 4 {
        return json!({});
    }
    let first = bytes.next();
    if first == 0xff {
        return Value::Bool(true);
    }
    let mut schema = JsonObject::new();
    for _ in 0..first % 6 {
        let keyword = bytes.pick(&KEYWORDS);
        let value = match keyword {
            "type" => json!(bytes.pick(&["object", "string", "null"])),
            "properties" | "$defs" | "definitions" => {
                let mut map = JsonObject::new();
                for _ in 0..bytes.next() % 4 {
                    let name = if keyword == "properties" {
                        bytes.pick(&PROPERTY_NAMES)
                    } else {
                        bytes.pick(&["a", "b"])
                    };
                    map.insert(name.to_owned(), generated_schema(bytes, depth + 1));
                }
                Value::Object(map)
            }
            "required" => Value::Array(
                (0..bytes.next() % 4)
                    .map(|_| json!(bytes.pick(&PROPERTY_NAMES)))
                    .collect(),
            ),
            "allOf" | "anyOf" | "oneOf" => Value::Array(
                (0..1 + bytes.next() % 3)
                    .map(|_| generated_schema(bytes, depth + 1))
                    .collect(),
            ),
            "$ref" => json!(bytes.pick(&REFS)),
            "$schema" => json!("https://json-schema.org/draft/2020-12/schema"),
            "description" => json!("a description"),
            _ => generated_schema(bytes, depth + 1),
        };
        schema.insert(keyword.to_owned(), value);
    }
    Value::Object(schema)
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests;
