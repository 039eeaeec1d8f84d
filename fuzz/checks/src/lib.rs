//! The checks behind the cargo-fuzz targets in `fuzz/`: each takes arbitrary bytes, drives
//! one parser or converter with them, and panics only when an invariant is broken.
//!
//! They live beside the fuzz targets, in this crate (`fuzz/checks`, a member of the root
//! workspace, never a dependency of `memento`), so that plain `cargo test --workspace` (which
//! never runs cargo-fuzz) replays the committed seed corpus `fuzz/seeds/<target>/` through
//! them, including every input a fuzzer ever found (`src/tests.rs`), and so that they compile
//! with the code they check. The cargo-fuzz targets in `fuzz/fuzz_targets/` call them;
//! `fuzz/run.sh` runs the real fuzzers.
//!
//! | check | drives | invariants besides "no panic" |
//! | --- | --- | --- |
//! | [`sse_parser`] | [`SseParser`](memento::shared::sse::SseParser) and the SSE client's event decoding | any chunking gives the same events and error; events within the cap |
//! | [`messages_body`] | the legacy `/messages` body (a client JSON-RPC message) | a parsed body serialises and parses again |
//! | [`search_terms`] | [`SearchTerms`](memento::shared::domain::SearchTerms) and its FTS5 expressions | only quoted terms joined by `OR`; SQLite FTS5 accepts them; a scoped query finds its own user's text and never another's |
//! | [`offline_model`] | [`offline::classify`](memento::daemon::llm::offline::classify) and [`OfflineModel::complete`](memento::daemon::llm::offline::OfflineModel::complete) over a whole turn | tool calls only to offered tools, JSON-object arguments without `user_id`, at most [`MAX_TOOL_ROUNDS`](memento::daemon::llm::offline::MAX_TOOL_ROUNDS) rounds, deterministic |
//! | [`convert_tools`] | [`mcp::convert_tools`](memento::daemon::mcp::convert_tools) | no `user_id` declared for the model; a tool that declared one is bound to the user; JSON out |
//!
//! Inputs are bytes; each check documents how it reads them, so that seeds can be written by
//! hand.

mod offline_model;
mod search;
mod sse;
mod tools;

pub use offline_model::offline_model;
pub use search::search_terms;
pub use sse::{messages_body, sse_parser};
pub use tools::convert_tools;

use memento::shared::splitmix::splitmix64;

#[cfg(test)]
mod tests;
