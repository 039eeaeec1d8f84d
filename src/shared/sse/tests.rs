use super::*;

fn parse_all(input: &[u8]) -> Vec<SseEvent> {
    SseParser::new(1 << 20).push(input).unwrap()
}

#[test]
fn endpoint_then_message() {
    let events = parse_all(
        b"event: endpoint\ndata: /messages?session_id=abc\n\nevent: message\ndata: {\"a\":1}\n\n",
    );
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].event, "endpoint");
    assert_eq!(events[0].data, "/messages?session_id=abc");
    assert_eq!(events[1].data, "{\"a\":1}");
}

#[test]
fn line_endings_comments_and_multiline_data() {
    let events =
        parse_all(b": keep-alive\r\n\r\ndata:one\rdata: two\r\n\r\nid: 7\nretry: 3000\ndata\n\n");
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].event, "message");
    assert_eq!(events[0].data, "one\ntwo");
    assert_eq!(events[1].data, "");
    assert_eq!(events[1].id.as_deref(), Some("7"));
    assert_eq!(events[1].retry, Some(3000));
}

#[test]
fn split_anywhere_gives_the_same_events() {
    let input: &[u8] = b"event: message\r\ndata: {\"jsonrpc\":\"2.0\"}\r\n\r\ndata: x\n\n";
    let whole = parse_all(input);
    for cut in 0..input.len() {
        let mut parser = SseParser::new(1 << 20);
        let mut events = parser.push(&input[..cut]).unwrap();
        events.extend(parser.push(&input[cut..]).unwrap());
        assert_eq!(events, whole, "cut at {cut}");
    }
}

#[test]
fn oversized_and_invalid_events_are_errors() {
    let mut parser = SseParser::new(16);
    assert_eq!(parser.push(&[b'x'; 17]), Err(SseError::TooLarge(16)));
    let mut parser = SseParser::new(1024);
    assert_eq!(parser.push(b"data: \xff\n\n"), Err(SseError::Utf8));
}
