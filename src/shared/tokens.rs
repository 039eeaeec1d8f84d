//! The one token estimate: four bytes of text a token, as Azure OpenAI estimates a request
//! on arrival. Used by the LLM rate limits (`daemon/llm/limits.rs`), the history budget
//! (`daemon/conversation`), the offline model's `usage` and the load-test harness's Azure
//! mock (its TPM quota), so all of them count the same way.
//!
//! The unit is bytes of text, not characters: what a caller measures with `str::len`
//! (`ChatMessage::text_len`, `ChatRequest::prompt_text_len`).

/// Bytes of text a token, on average (English text, OpenAI tokenisers).
pub const BYTES_PER_TOKEN: usize = 4;

/// Tokens a message costs beyond its text (role and framing), in the history budget.
pub const MESSAGE_OVERHEAD: usize = 4;

/// Tokens of `bytes` bytes of text.
pub fn of_bytes(bytes: usize) -> u32 {
    u32::try_from(bytes / BYTES_PER_TOKEN).unwrap_or(u32::MAX)
}

/// Tokens a request may use, estimated before it is sent: its prompt text plus
/// `max_tokens` (what a TPM quota counts on arrival).
pub fn of_request(prompt_bytes: usize, max_tokens: Option<u32>) -> u32 {
    of_bytes(prompt_bytes).saturating_add(max_tokens.unwrap_or(0))
}

/// Tokens one history message of `text_bytes` bytes of text costs against the history
/// budget.
pub fn of_message(text_bytes: usize) -> usize {
    text_bytes / BYTES_PER_TOKEN + MESSAGE_OVERHEAD
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_bytes_a_token() {
        assert_eq!(of_bytes(0), 0);
        assert_eq!(of_bytes(7), 1);
        assert_eq!(of_bytes(400), 100);
        assert_eq!(of_request(400, Some(50)), 150);
        assert_eq!(of_request(400, None), 100);
        assert_eq!(of_request(usize::MAX, Some(u32::MAX)), u32::MAX);
        assert_eq!(of_message(100), 29);
    }
}
