//! A small, strict parser for `text/event-stream` (server-sent events), used by the legacy
//! MCP SSE client. Incremental: feed it bytes as they arrive, take complete events out.
//!
//! Follows the WHATWG rules that matter here: `\n`, `\r\n` and `\r` line ends; `event`,
//! `data` (several lines joined with `\n`), `id` and `retry` fields; `:` comments; a leading
//! space after the colon is dropped; a blank line dispatches. An event larger than the
//! configured cap is an error rather than unbounded memory.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event` field; `"message"` when absent.
    pub event: String,
    /// The `data` lines joined with `\n`.
    pub data: String,
    /// The last `id` field seen, if any.
    pub id: Option<String>,
    /// The `retry` field in milliseconds, if any.
    pub retry: Option<u64>,
}

/// Why a stream was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    /// An event grew past the cap.
    #[error("server-sent event larger than {0} bytes")]
    TooLarge(usize),
    /// The bytes are not UTF-8.
    #[error("server-sent event is not valid UTF-8")]
    Utf8,
}

/// Incremental parser state.
#[derive(Debug)]
pub struct SseParser {
    max_event_bytes: usize,
    line: Vec<u8>,
    /// A `\r` ended the last line; a following `\n` belongs to it.
    after_cr: bool,
    event: Option<String>,
    data: Option<String>,
    id: Option<String>,
    retry: Option<u64>,
    pending_bytes: usize,
}

impl SseParser {
    /// A parser that rejects events larger than `max_event_bytes`.
    pub fn new(max_event_bytes: usize) -> SseParser {
        SseParser {
            max_event_bytes,
            line: Vec::new(),
            after_cr: false,
            event: None,
            data: None,
            id: None,
            retry: None,
            pending_bytes: 0,
        }
    }

    /// Feeds bytes; returns the events they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, SseError> {
        let mut events = Vec::new();
        for &byte in bytes {
            if self.after_cr {
                self.after_cr = false;
                if byte == b'\n' {
                    continue;
                }
            }
            match byte {
                b'\n' | b'\r' => {
                    self.after_cr = byte == b'\r';
                    let line = std::mem::take(&mut self.line);
                    if let Some(event) = self.line_done(&line)? {
                        events.push(event);
                    }
                }
                _ => {
                    self.line.push(byte);
                    self.pending_bytes += 1;
                    if self.pending_bytes > self.max_event_bytes {
                        return Err(SseError::TooLarge(self.max_event_bytes));
                    }
                }
            }
        }
        Ok(events)
    }

    fn line_done(&mut self, line: &[u8]) -> Result<Option<SseEvent>, SseError> {
        if line.is_empty() {
            return Ok(self.dispatch());
        }
        let line = std::str::from_utf8(line).map_err(|_| SseError::Utf8)?;
        if line.starts_with(':') {
            return Ok(None);
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = Some(value.to_owned()),
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            "id" if !value.contains('\0') => self.id = Some(value.to_owned()),
            "retry" => {
                if let Ok(ms) = value.parse() {
                    self.retry = Some(ms);
                }
            }
            _ => {}
        }
        Ok(None)
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        self.pending_bytes = 0;
        let event = self.event.take();
        let retry = self.retry.take();
        let data = self.data.take()?;
        Some(SseEvent {
            event: event
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| "message".to_owned()),
            data,
            id: self.id.clone(),
            retry,
        })
    }
}

#[cfg(test)]
mod tests;
