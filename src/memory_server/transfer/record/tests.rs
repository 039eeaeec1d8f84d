use chrono::TimeZone;

use super::*;

#[test]
fn reads_both_seed_forms() {
    let plain = parse_seed_file(
        "20240715_143052_meeting_summary.txt",
        b"Q4 planning meeting: we ship the rewrite in Q4.\n",
    )
    .unwrap();
    assert_eq!(
        plain.created_at,
        Utc.with_ymd_and_hms(2024, 7, 15, 14, 30, 52).unwrap()
    );
    assert_eq!(plain.filename, "meeting_summary.txt");
    assert_eq!(
        plain.content,
        "Q4 planning meeting: we ship the rewrite in Q4."
    );
    assert!(plain.description.is_empty() && plain.tags.is_empty());

    let with_header = parse_seed_file(
        "20240801_120000_dentist.txt",
        b"description: Dentist appointment\ntags: health, appointments\n\nDentist on 3 September.\n",
    )
    .unwrap();
    assert_eq!(with_header.description, "Dentist appointment");
    assert_eq!(with_header.tags, ["health", "appointments"]);
    assert_eq!(with_header.content, "Dentist on 3 September.");
}

#[test]
fn a_text_that_looks_like_a_header_survives_a_round_trip() {
    let content = "description: not a header\n\nreally the text";
    let body = seed_file_body("", &[], content);
    let read = parse_seed_file("20240101_000000_x.txt", body.as_bytes()).unwrap();
    assert_eq!(read.content, content);
    assert!(read.description.is_empty());
    let tags = vec!["a".to_owned(), "b c".to_owned()];
    let body = seed_file_body("Two\nlines", &tags, "text\n");
    let read = parse_seed_file("20240101_000000_x.txt", body.as_bytes()).unwrap();
    assert_eq!(read.content, "text\n");
    assert_eq!(read.description, "Two lines");
    assert_eq!(read.tags, tags);
}

#[test]
fn bad_names_and_bodies_are_reasons_not_panics() {
    for name in [
        "README.md",
        "2024071_143052_x.txt",
        "20240715-143052_x.txt",
        "20240715_143052_",
        "20241315_143052_x.txt",
        "20240715_146052_x.txt",
        "2024071é_143052_x.txt",
        "",
    ] {
        assert_eq!(parse_seed_name(name), Err(SeedError::Name), "{name:?}");
    }
    assert_eq!(
        parse_seed_file("20240715_143052_x.txt", &[0xff, 0xfe]),
        Err(SeedError::NotText)
    );
    assert_eq!(
        parse_seed_file("20240715_143052_x.txt", b"description: d\n\n\n"),
        Err(SeedError::Empty)
    );
}

#[test]
fn seed_names_round_trip() {
    let at = Utc.with_ymd_and_hms(2024, 8, 2, 18, 30, 45).unwrap();
    let name = seed_name(at, "books.txt");
    assert_eq!(name, "20240802_183045_books.txt");
    assert_eq!(
        parse_seed_name(&name).unwrap(),
        (at, "books.txt".to_owned())
    );
}
