//! The daemon's HTTP API bodies, shared by the server (`daemon/http.rs`) and its clients
//! (`memento chat`, the load-test harness), so both sides agree by type, not by string keys.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `POST /v1/users/{user_id}/messages` request body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageRequest {
    /// What the user says.
    pub message: String,
}

/// One tool call of a turn, as answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// Tool name.
    pub name: String,
    /// Arguments as the model gave them (without `user_id`).
    #[serde(default)]
    pub arguments: Value,
    /// The tool's result text (or the error the model saw).
    #[serde(default)]
    pub result: String,
    /// The call failed.
    #[serde(default)]
    pub is_error: bool,
}

/// Where a turn's time went, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    /// The whole turn inside the conversation actor.
    pub turn_ms: f64,
    /// In the LLM provider's calls.
    pub llm_ms: f64,
    /// In tool rounds (wall time).
    pub tools_ms: f64,
}

/// `POST /v1/users/{user_id}/messages` answer (and the streamed `done` event's data).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageResponse {
    /// The assistant's answer.
    pub reply: String,
    /// Every tool call, in order.
    #[serde(default)]
    pub tool_calls: Vec<ToolCall>,
    /// The turn's trace id.
    #[serde(default)]
    pub trace_id: String,
    /// Where the turn's time went.
    #[serde(default)]
    pub timings: Timings,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_response_round_trips_in_the_documented_shape() {
        let body = serde_json::json!({
            "reply": "ok",
            "tool_calls": [{"name": "store_memory", "arguments": {"content": "x"},
                            "result": "stored", "is_error": false}],
            "trace_id": "abc",
            "timings": {"turn_ms": 3.0, "llm_ms": 1.0, "tools_ms": 1.5},
        });
        let parsed: MessageResponse = serde_json::from_value(body.clone()).expect("parse");
        assert_eq!(parsed.tool_calls[0].name, "store_memory");
        assert_eq!(parsed.timings.tools_ms, 1.5);
        assert_eq!(serde_json::to_value(&parsed).expect("serialize"), body);
        let request: MessageRequest = serde_json::from_str(r#"{"message":"hi"}"#).expect("request");
        assert_eq!(request.message, "hi");
    }
}
