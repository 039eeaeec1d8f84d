//! SSE: the legacy transport's stream parser and the `/messages` body.

use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};

use memento::shared::sse::{SseError, SseEvent, SseParser};

use super::*;

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
