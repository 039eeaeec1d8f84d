use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use memento::daemon::llm::types::{
    ChatMessage, ChatResponse, FinishReason, FunctionCall, ToolCall, Usage,
};
use serde_json::{Value, json};

use super::quota::{Admission, Quota};
use super::wire::{self, Flavor, Limit};
use super::*;

// === Quotas ===

#[test]
fn rpm_is_a_sixth_per_ten_second_window() {
    let start = Instant::now();
    let mut quota = Quota::new(Some(60), None, start);
    for n in 1..=10 {
        match quota.admit(start + Duration::from_millis(n * 10), 0) {
            Admission::Admitted {
                remaining_requests,
                remaining_tokens,
                admitted_in_window,
            } => {
                assert_eq!(remaining_requests, Some(10 - n));
                assert_eq!(remaining_tokens, None);
                assert_eq!(admitted_in_window, n);
            }
            other => panic!("request {n}: {other:?}"),
        }
    }
    match quota.admit(start + Duration::from_millis(2_500), 0) {
        Admission::Throttled {
            limit,
            retry_after,
            remaining_requests,
            ..
        } => {
            assert_eq!(limit, Limit::Requests);
            assert_eq!(retry_after, Duration::from_millis(7_500));
            assert_eq!(remaining_requests, Some(0));
        }
        other => panic!("{other:?}"),
    }
    // The next window (aligned to the start, not to the last request) admits again.
    assert!(matches!(
        quota.admit(start + Duration::from_millis(10_000), 0),
        Admission::Admitted {
            admitted_in_window: 1,
            ..
        }
    ));
    // Windows stay aligned after idle time: 35 s is 5 s into the fourth window.
    let mut quota = Quota::new(Some(6), None, start);
    assert!(matches!(
        quota.admit(start + Duration::from_secs(35), 0),
        Admission::Admitted { .. }
    ));
    match quota.admit(start + Duration::from_secs(36), 0) {
        Admission::Throttled { retry_after, .. } => {
            assert_eq!(retry_after, Duration::from_secs(4))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn tpm_counts_estimates_per_minute() {
    let start = Instant::now();
    let mut quota = Quota::new(None, Some(1_000), start);
    assert!(matches!(
        quota.admit(start, 600),
        Admission::Admitted {
            remaining_tokens: Some(400),
            remaining_requests: None,
            ..
        }
    ));
    match quota.admit(start + Duration::from_secs(20), 500) {
        Admission::Throttled {
            limit,
            retry_after,
            remaining_tokens,
            ..
        } => {
            assert_eq!(limit, Limit::Tokens);
            assert_eq!(retry_after, Duration::from_secs(40));
            assert_eq!(remaining_tokens, Some(400));
        }
        other => panic!("{other:?}"),
    }
    // A refused request is not counted: a smaller one still fits.
    assert!(matches!(
        quota.admit(start + Duration::from_secs(21), 400),
        Admission::Admitted {
            remaining_tokens: Some(0),
            ..
        }
    ));
    assert!(matches!(
        quota.admit(start + Duration::from_secs(60), 1_000),
        Admission::Admitted { .. }
    ));
}

#[test]
fn tiny_rpm_still_admits_one_per_window() {
    let start = Instant::now();
    let mut quota = Quota::new(Some(1), None, start);
    assert!(matches!(quota.admit(start, 0), Admission::Admitted { .. }));
    assert!(matches!(quota.admit(start, 0), Admission::Throttled { .. }));
}

// === Reading requests ===

#[test]
fn requests_are_read_leniently() {
    let body = json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "developer", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "store this:"}, {"type": "text", "text": "tea"}], "name": "al"},
            {"role": "assistant", "content": null, "tool_calls": null, "refusal": null},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "list_tags", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "{\"tags\":[]}"}]},
        ],
        "tools": [{"type": "function", "function": {"name": "list_tags"}}],
        "tool_choice": "auto",
        "parallel_tool_calls": true,
        "stream": true,
        "stream_options": {"include_usage": true},
        "user": "u1",
        "n": 1,
        "seed": 3,
        "temperature": 0.2,
        "top_p": 1,
        "max_completion_tokens": 99,
        "max_tokens": 5,
        "response_format": {"type": "text"},
    });
    let parsed = wire::parse_request(body.to_string().as_bytes()).expect("parses");
    assert_eq!(parsed.model.as_deref(), Some("gpt-4o-mini"));
    assert!(parsed.stream && parsed.include_usage);
    assert_eq!(parsed.request.max_tokens, Some(99));
    assert_eq!(parsed.request.tools[0].function.name, "list_tags");
    assert_eq!(
        parsed.request.messages[0],
        ChatMessage::System {
            content: "be brief".into()
        }
    );
    assert_eq!(
        parsed.request.messages[1],
        ChatMessage::User {
            content: "store this:\ntea".into()
        }
    );
    assert_eq!(parsed.request.messages.len(), 5);
}

#[test]
fn bad_bodies_name_the_problem() {
    let cases: &[(&str, Option<&str>, &str)] = &[
        ("{not json", None, "could not parse the JSON body"),
        ("{}", Some("messages"), "'messages' is a required property"),
        (r#"{"messages": []}"#, Some("messages"), "too short"),
        (
            r#"{"messages": "hi"}"#,
            Some("messages"),
            "must be an array",
        ),
        (
            r#"{"messages": [{"role": "wizard", "content": "x"}]}"#,
            Some("messages"),
            "messages[0]",
        ),
        (
            r#"{"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}"#,
            Some("tools"),
            "tools[0]",
        ),
    ];
    for (body, param, fragment) in cases {
        let error = wire::parse_request(body.as_bytes()).expect_err(body);
        assert_eq!(error.param, *param, "{body}");
        assert!(
            error.message.contains(fragment),
            "{body}: {}",
            error.message
        );
        let shaped = wire::bad_request(
            &Flavor::AzureDated {
                api_version: "2024-10-21".into(),
            },
            &error,
        );
        for key in ["code", "message", "param", "type"] {
            assert!(shaped["error"].get(key).is_some(), "{key} in {shaped}");
        }
    }
}

#[test]
fn token_estimate_is_prompt_over_four_plus_max_tokens() {
    let parsed = wire::parse_request(
        json!({"messages": [{"role": "user", "content": "x".repeat(400)}], "max_tokens": 50})
            .to_string()
            .as_bytes(),
    )
    .expect("parses");
    assert_eq!(wire::estimate_tokens(&parsed.request), 150);
}

#[test]
fn api_versions_are_dated() {
    for ok in ["2024-10-21", "2025-04-01-preview", "2023-05-15"] {
        assert!(wire::plausible_api_version(ok), "{ok}");
    }
    for bad in [
        "",
        "latest",
        "2024-10",
        "2024/10/21",
        "v1",
        "2024-10-21-beta",
    ] {
        assert!(!wire::plausible_api_version(bad), "{bad}");
    }
}

// === Writing answers ===

fn call(id: &str, name: &str, arguments: &str) -> ToolCall {
    ToolCall {
        id: id.into(),
        kind: "function".into(),
        function: FunctionCall {
            name: name.into(),
            arguments: arguments.into(),
        },
    }
}

fn answer_with(content: Option<&str>, tool_calls: Vec<ToolCall>) -> ChatResponse {
    ChatResponse {
        model: "m".into(),
        finish_reason: if tool_calls.is_empty() {
            FinishReason::Stop
        } else {
            FinishReason::ToolCalls
        },
        message: ChatMessage::Assistant {
            content: content.map(str::to_owned),
            tool_calls,
        },
        usage: Some(Usage {
            prompt_tokens: 10,
            completion_tokens: 5,
            total_tokens: 15,
        }),
        id: None,
        provider_time: std::time::Duration::ZERO,
    }
}

fn meta(flavor: Flavor) -> wire::Meta {
    wire::Meta {
        id: completion_id(1, 0),
        created: 1_700_000_000,
        model: "gpt-4o-mini".into(),
        flavor,
    }
}

fn azure() -> Flavor {
    Flavor::AzureDated {
        api_version: "2024-10-21".into(),
    }
}

/// Reassembles chunks by `index`, as a correct client does.
fn reassemble(chunks: &[wire::Chunk]) -> (String, BTreeMap<u64, (String, String, String)>, Value) {
    let mut content = String::new();
    let mut calls: BTreeMap<u64, (String, String, String)> = BTreeMap::new();
    let mut finish = Value::Null;
    for chunk in chunks {
        let value: Value = serde_json::from_str(&chunk.data).expect("chunk JSON");
        for choice in value["choices"].as_array().into_iter().flatten() {
            if let Some(text) = choice["delta"]["content"].as_str() {
                content.push_str(text);
            }
            for fragment in choice["delta"]["tool_calls"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let index = fragment["index"].as_u64().expect("index on every fragment");
                let entry = calls.entry(index).or_default();
                if let Some(id) = fragment["id"].as_str() {
                    entry.0 = id.to_owned();
                }
                if let Some(name) = fragment["function"]["name"].as_str() {
                    entry.1 = name.to_owned();
                }
                if let Some(args) = fragment["function"]["arguments"].as_str() {
                    entry.2.push_str(args);
                }
            }
            if !choice["finish_reason"].is_null() {
                finish = choice["finish_reason"].clone();
            }
        }
    }
    (content, calls, finish)
}

#[test]
fn streamed_tool_calls_reassemble_by_index() {
    let long_args = json!({"content": "ünïcödé ".repeat(10), "tags": "a,b"}).to_string();
    let answer = answer_with(
        None,
        vec![
            call("call_a", "store_memory", &long_args),
            call("call_b", "list_tags", "{}"),
            call("call_c", "retrieve_memories", r#"{"query":"cake"}"#),
        ],
    );
    let chunks = wire::chunks(&meta(azure()), &answer, true);
    // Azure opens with the prompt filter results and no choices.
    let first: Value = serde_json::from_str(&chunks[0].data).expect("json");
    assert_eq!(first["choices"], json!([]));
    assert!(first["prompt_filter_results"].is_array());
    let second: Value = serde_json::from_str(&chunks[1].data).expect("json");
    assert_eq!(second["object"], "chat.completion.chunk");
    assert_eq!(second["choices"][0]["delta"]["role"], "assistant");
    // Arguments come in several fragments, each naming its call by index only.
    let fragments = chunks
        .iter()
        .filter(|c| c.data.contains("\"arguments\"") && !c.data.contains("\"name\""))
        .count();
    assert!(fragments > 3, "{fragments}");
    let (content, calls, finish) = reassemble(&chunks);
    assert!(content.is_empty());
    assert_eq!(finish, "tool_calls");
    assert_eq!(calls.len(), 3);
    assert_eq!(
        calls[&0],
        ("call_a".into(), "store_memory".into(), long_args.clone())
    );
    assert_eq!(
        calls[&1],
        ("call_b".into(), "list_tags".into(), "{}".into())
    );
    assert_eq!(calls[&2].2, r#"{"query":"cake"}"#);
    // The usage chunk is last, with no choices.
    let last: Value = serde_json::from_str(&chunks[chunks.len() - 1].data).expect("json");
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["total_tokens"], 15);
}

#[test]
fn streamed_text_reassembles_and_openai_streams_have_no_azure_fields() {
    let text = "I've stored your recipe as 'recipe.txt' (tags: cooking, recipe).";
    let answer = answer_with(Some(text), Vec::new());
    let chunks = wire::chunks(&meta(Flavor::OpenAi), &answer, false);
    let (content, calls, finish) = reassemble(&chunks);
    assert_eq!(content, text);
    assert!(calls.is_empty());
    assert_eq!(finish, "stop");
    assert!(chunks.len() > 4);
    for chunk in &chunks {
        assert!(!chunk.data.contains("filter_results"), "{}", chunk.data);
        assert!(!chunk.data.contains("usage"), "{}", chunk.data);
    }
    assert!(chunks.iter().map(|c| c.tokens).sum::<u32>() > 0);
}

#[test]
fn completions_have_the_openai_shape() {
    let answer = answer_with(None, vec![call("call_a", "list_tags", "{}")]);
    let body = wire::completion(&meta(azure()), &answer);
    assert!(
        body["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("chatcmpl-"))
    );
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "gpt-4o-mini");
    assert_eq!(body["choices"][0]["index"], 0);
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    let message = &body["choices"][0]["message"];
    assert_eq!(message["role"], "assistant");
    assert!(message["content"].is_null());
    assert_eq!(message["tool_calls"][0]["type"], "function");
    assert_eq!(message["tool_calls"][0]["function"]["name"], "list_tags");
    assert_eq!(body["usage"]["prompt_tokens"], 10);
    assert!(body["prompt_filter_results"].is_array());
    assert!(body["choices"][0]["content_filter_results"].is_object());
    let openai = wire::completion(&meta(Flavor::OpenAi), &answer);
    assert!(openai.get("prompt_filter_results").is_none());
}

#[test]
fn cut_arguments_are_invalid_json_on_a_char_boundary() {
    for args in [r#"{"content":"ééééééé"}"#, r#"{"a":1}"#, "{}"] {
        let mut cut = args.to_owned();
        wire::cut_arguments(&mut cut);
        assert!(serde_json::from_str::<Value>(&cut).is_err(), "{cut}");
        assert!(args.starts_with(&cut));
    }
}

#[test]
fn error_bodies_follow_azure() {
    let unauthorized = wire::unauthorized(&azure());
    assert_eq!(unauthorized["error"]["code"], "401");
    assert!(
        unauthorized["error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Access denied due to invalid subscription key"))
    );
    assert_eq!(
        wire::deployment_not_found()["error"]["code"],
        "DeploymentNotFound"
    );
    let throttled = wire::rate_limited(&azure(), Limit::Tokens, 7);
    let message = throttled["error"]["message"].as_str().unwrap_or_default();
    assert!(message.starts_with(
        "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version \
         2024-10-21 have exceeded token rate limit"
    ));
    assert!(message.contains("Please retry after 7 seconds."));
    assert_eq!(throttled["error"]["code"], "429");
    let server = wire::server_error();
    assert_eq!(server["error"]["type"], "server_error");
    assert!(server["error"]["code"].is_null() && server["error"]["param"].is_null());
    assert_eq!(
        wire::rate_limited(&Flavor::OpenAi, Limit::Requests, 1)["error"]["code"],
        "rate_limit_exceeded"
    );
}

// === Configuration and faults ===

#[test]
fn configurations_are_checked() {
    assert_eq!(MockConfig::default().validate(), Ok(()));
    for config in [
        MockConfig {
            fail_rate: 1.5,
            ..MockConfig::default()
        },
        MockConfig {
            malformed_rate: -0.1,
            ..MockConfig::default()
        },
        MockConfig {
            hang_rate: 0.5,
            fail_rate: 0.4,
            fail_503_rate: 0.2,
            ..MockConfig::default()
        },
        MockConfig {
            latency_per_token_ms: f64::NAN,
            ..MockConfig::default()
        },
        MockConfig {
            rpm: Some(0),
            ..MockConfig::default()
        },
    ] {
        assert!(config.validate().is_err(), "{config:?}");
    }
}

#[test]
fn completion_ids_are_distinct() {
    let ids: std::collections::HashSet<String> = (0..10_000).map(|n| completion_id(1, n)).collect();
    assert_eq!(ids.len(), 10_000);
    assert!(ids.iter().all(|id| id.len() == "chatcmpl-".len() + 29));
}
