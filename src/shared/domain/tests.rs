use super::*;

#[test]
fn user_id_rule() {
    let cases: &[(&str, bool)] = &[
        ("alice", true),
        ("Bob_2.dev-x", true),
        ("a", true),
        (&"x".repeat(64), true),
        (&"x".repeat(65), false),
        ("", false),
        (".hidden", false),
        ("..", false),
        ("../bob", false),
        ("%2e%2e", false),
        ("al ice", false),
        ("alice/bob", false),
        ("al\\ice", false),
        ("émile", false),
        ("bob\0", false),
        ("a.b", true),
    ];
    for (raw, ok) in cases {
        assert_eq!(UserId::parse(raw).is_ok(), *ok, "user id {raw:?}");
    }
}

#[test]
fn user_id_deserialize_validates() {
    assert!(serde_json::from_str::<UserId>("\"alice\"").is_ok());
    assert!(serde_json::from_str::<UserId>("\"../bob\"").is_err());
}

#[test]
fn memory_id_round_trip_and_rejects_garbage() {
    let id = MemoryId::new();
    assert_eq!(MemoryId::parse(&id.to_string()), Ok(id));
    for bad in ["", "1", "../x", "0199-zzzz", "' OR 1=1 --"] {
        assert!(MemoryId::parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn tags_are_trimmed_lowercased_deduplicated() {
    let tags = normalize_tags([" Work, meeting ,WORK,, Q4  Plan ", "meeting"]).unwrap();
    assert_eq!(tags, vec!["work", "meeting", "q4 plan"]);
    assert!(normalize_tags(["", " , "]).unwrap().is_empty());
}

#[test]
fn tags_limits() {
    let long = "x".repeat(MAX_TAG_LEN + 1);
    assert!(normalize_tags([long.as_str()]).is_err());
    let many: Vec<String> = (0..=MAX_TAGS).map(|i| format!("t{i}")).collect();
    assert!(normalize_tags(many.iter().map(String::as_str)).is_err());
}

#[test]
fn filenames_are_sanitised() {
    let cases: &[(&str, Option<&str>)] = &[
        ("meeting_summary.txt", Some("meeting_summary.txt")),
        ("../../etc/passwd", Some("passwd")),
        ("..\\..\\windows\\system.ini", Some("system.ini")),
        ("..", None),
        ("/", None),
        (".bashrc", Some("bashrc")),
        ("a..b.txt", Some("a.b.txt")),
        ("my notes: Q4?.md", Some("my_notes__Q4_.md")),
        ("bad\u{0}\u{7}name.txt", Some("badname.txt")),
        ("", None),
    ];
    for (raw, want) in cases {
        assert_eq!(sanitize_filename(raw).as_deref(), *want, "{raw:?}");
    }
}

#[test]
fn long_filenames_keep_their_extension() {
    let raw = format!("{}.txt", "é".repeat(200));
    let name = sanitize_filename(&raw).unwrap();
    assert!(name.len() <= MAX_FILENAME_LEN);
    assert!(name.ends_with(".txt"));
}

#[test]
fn filename_from_text_slugs_first_words() {
    assert_eq!(
        filename_from_text("Chocolate cake with 2 cups flour and more"),
        "chocolate_cake_with_2_cups.txt"
    );
    assert_eq!(filename_from_text("!!!"), "memory.txt");
}

#[test]
fn hostile_queries_become_plain_terms() {
    let cases: &[(&str, &[&str])] = &[
        ("Q4 plan", &["q4", "plan"]),
        ("what did I store about the Q4 plan?", &["q4", "plan"]),
        ("\"unbalanced", &["unbalanced"]),
        ("a* NEAR(b c) -d", &["near", "b", "c", "d"]),
        ("((()", &[]),
        ("*", &[]),
        ("content:secret", &["content", "secret"]),
        ("the", &["the"]),
        ("café OR 1=1", &["café", "1"]),
    ];
    for (raw, want) in cases {
        let terms = SearchTerms::parse(raw).unwrap();
        assert_eq!(terms.terms(), *want, "{raw:?}");
    }
    assert!(SearchTerms::parse(&"x ".repeat(MAX_QUERY_LEN)).is_err());
}

/// Issue 11: the word split follows SQLite's unicode61 classes, not Rust's.
#[test]
fn fts_character_classes_are_sqlites() {
    // U+30000 is outside SQLite's tables: category 0, which unicode61 keeps in tokens.
    for c in [
        'a',
        'Z',
        '7',
        'é',
        'ß',
        '日',
        'я',
        '\u{0301}',
        '\u{E000}',
        '\u{30000}',
    ] {
        assert!(
            is_token_char(c),
            "{} is a token character",
            c.escape_unicode()
        );
    }
    // `ⓐ` is alphabetic for Rust (Other_Alphabetic) but a symbol (So), a separator, for
    // SQLite; the others are spaces, joiners and punctuation everywhere.
    for c in [
        ' ', '-', '_', '"', '*', 'ⓐ', 'Ⓐ', '\u{2028}', '\u{00A0}', '\u{200D}',
    ] {
        assert!(!is_token_char(c), "{} is a separator", c.escape_unicode());
    }
    assert!(
        'ⓐ'.is_alphanumeric(),
        "the case that made Rust's split unsafe"
    );
    assert_eq!(
        fts_words("Xⓐu2qSecret café-au-lait"),
        ["x", "u2qsecret", "café", "au", "lait"]
    );
    assert_eq!(
        SearchTerms::parse("xⓐsecret").unwrap().terms(),
        ["x", "secret"]
    );
}
