//! Replays the committed seed corpus (hand-written seeds and every input a fuzzer found)
//! through the fuzz checks, plus a few thousand cheap pseudo-random inputs, so the checks and
//! the fixes behind them stay alive in plain `cargo test`.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;

use serde_json::json;

use super::search::{assert_or_of_quoted, with_fts};
use super::tools::declares_user;
use super::*;

type Check = fn(&[u8]);

const TARGETS: [(&str, Check); 5] = [
    ("sse_parser", sse_parser),
    ("messages_body", messages_body),
    ("search_terms", search_terms),
    ("offline_model", offline_model),
    ("convert_tools", convert_tools),
];

fn seeds_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("seeds")
        .join(target)
}

/// Runs every input; on failure names all failing files.
fn replay(target: &str, check: Check, inputs: Vec<(String, Vec<u8>)>) {
    let failures: Vec<String> = inputs
        .iter()
        .filter(|(_, data)| catch_unwind(AssertUnwindSafe(|| check(data))).is_err())
        .map(|(name, _)| name.clone())
        .collect();
    assert!(failures.is_empty(), "{target} fails on {failures:?}");
}

#[test]
fn seed_corpus_passes_every_check() {
    for (target, check) in TARGETS {
        let dir = seeds_dir(target);
        let mut inputs = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir:?}: {e}")) {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            inputs.push((path.display().to_string(), data));
        }
        assert!(inputs.len() >= 3, "{dir:?} has only {} seeds", inputs.len());
        replay(target, check, inputs);
    }
}

#[test]
fn pseudo_random_inputs_pass_every_check() {
    // Bytes drawn from an alphabet that reaches the interesting branches quickly.
    const ALPHABET: &[u8] =
        b"data: event:id\r\n\n :{}[]\"*-()NEAR OR user_id@call tool\xc3\xa9\xff0123456789abcdef";
    for (target, check) in TARGETS {
        let mut state = 0x5eed_u64;
        let inputs = (0..300)
            .map(|n| {
                state = splitmix64(state);
                let len = usize::try_from(state % 200).unwrap();
                let data: Vec<u8> = (0..len)
                    .map(|_| {
                        state = splitmix64(state);
                        ALPHABET[usize::try_from(state % ALPHABET.len() as u64).unwrap()]
                    })
                    .collect();
                (
                    format!("random #{n}: {:?}", String::from_utf8_lossy(&data)),
                    data,
                )
            })
            .collect();
        replay(target, check, inputs);
    }
}

#[test]
fn the_checks_catch_what_they_claim_to() {
    // A quoted OR list passes; a bare operator or an unquoted term does not.
    let terms = vec!["q4".to_owned(), "plan".to_owned()];
    assert_or_of_quoted("\"uq1q4\" OR \"uq1plan\"", "uq1", &terms);
    for bad in [
        "q4 OR plan",
        "\"q4\" NEAR \"plan\"",
        "*",
        "\"q4\" OR \"pl\"an\"",
    ] {
        assert!(
            catch_unwind(|| assert_or_of_quoted(bad, "", &terms)).is_err(),
            "{bad}"
        );
    }
    // `user_id` offered through a branch or a reference is found.
    for schema in [
        json!({"properties": {"user_id": {}}}),
        json!({"required": ["user_id"]}),
        json!({"allOf": [{"properties": {"user_id": {}}}]}),
        json!({"$ref": "#/$defs/a", "$defs": {"a": {"required": ["user_id"]}}}),
    ] {
        assert!(declares_user(&schema), "{schema}");
    }
    for schema in [
        json!({"properties": {"filter": {"properties": {"user_id": {}}}}}),
        json!({"$ref": "#", "not": {"required": ["user_id"]}}),
    ] {
        assert!(!declares_user(&schema), "{schema}");
    }
    // The search check's FTS5 table really rejects a bad expression.
    with_fts(|conn| {
        let mut stmt = conn
            .prepare("SELECT rowid FROM memories_fts WHERE memories_fts MATCH ?1")
            .unwrap();
        // FTS5 reports a syntax error when the statement steps, i.e. on the first row.
        let rows: rusqlite::Result<Vec<i64>> = stmt
            .query_map(["NEAR("], |row| row.get(0))
            .and_then(Iterator::collect);
        assert!(rows.is_err());
    });
}
