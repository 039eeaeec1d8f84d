//! The offline model over a whole turn.

use std::collections::HashSet;

use serde_json::{Value, json};

use memento::daemon::llm::offline::{
    self, Intent, MAX_TOOL_ROUNDS, OFFLINE_MODEL_NAME, OfflineModel,
};
use memento::daemon::llm::types::{
    ChatMessage, ChatRequest, ChatResponse, FinishReason, FunctionCall, FunctionDefinition,
    ToolCall, ToolDefinition,
};
use memento::daemon::mcp::USER_ARGUMENT;
use memento::shared::domain::{self};

/// The tools the memory server offers.
pub(crate) const MEMORY_TOOLS: [&str; 5] = memento::shared::domain::tool::ALL;

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
