use super::*;

fn user(raw: &str) -> UserId {
    UserId::parse(raw).unwrap()
}

#[test]
fn uris_name_memories_tags_and_files() {
    let id = MemoryId::new();
    assert_eq!(
        parse_uri(&memory_uri(&user("alice"), id)).unwrap(),
        Target::Memory(user("alice"), id)
    );
    assert_eq!(
        parse_uri("memento://users/bob/tags/Road%20Trip").unwrap(),
        Target::Tag(user("bob"), "road trip".into())
    );
    assert_eq!(
        parse_uri("memento://users/bob/files/books.txt").unwrap(),
        Target::File(user("bob"), "books.txt".into())
    );
}

#[test]
fn bad_uris_are_errors_not_panics() {
    for uri in [
        "test://static-text",
        "memento://users/alice",
        "memento://users/alice/memories",
        "memento://users/alice/memories/not-a-uuid/extra",
        "memento://users/../memories/x",
        "memento://users/alice/other/x",
        "memento://users/alice/files/",
        "memento://users/alice/files/%zz",
        "memento://users/alice/files/%ff",
    ] {
        assert!(parse_uri(uri).is_err(), "{uri} should be rejected");
    }
    assert!(parse_uri("memento://users/al%2Fice/memories/x").is_err());
}

#[test]
fn cursors_carry_the_scope() {
    let scoped = cursor(Some(&user("alice")), 42);
    assert_eq!(
        parse_cursor(&scoped).unwrap(),
        (Some(user("alice")), Some(42))
    );
    let all = cursor(None, 7);
    assert_eq!(parse_cursor(&all).unwrap(), (None, Some(7)));
    for bad in ["", "x/alice", "42", "1/../x"] {
        assert!(parse_cursor(bad).is_err(), "{bad:?} should be rejected");
    }
}

#[test]
fn percent_encoding_round_trips() {
    for raw in ["road trip", "a/b", "100%", "café", "plain-name_1.txt"] {
        assert_eq!(percent_decode(&percent_encode(raw)).as_deref(), Some(raw));
    }
    assert_eq!(percent_encode("a b"), "a%20b");
}

#[test]
fn log_levels_filter_by_severity() {
    let level = LogLevel::default();
    assert!(!level.wants(8), "nothing is sent before setLevel");
    level.set(4);
    assert!(level.wants(4) && level.wants(5));
    assert!(!level.wants(1));
}
