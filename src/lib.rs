//! Memento: a multi-user memory assistant daemon.
//!
//! # Layout
//!
//! Two servers and what they share, one folder each:
//!
//! - [`shared`]: configuration, validated value types, the HTTP edge both servers use,
//!   telemetry, metrics, the retry policy, PostgreSQL plumbing.
//! - [`memory_server`]: `memento mcp-server`, the memory MCP server (Streamable HTTP and
//!   legacy HTTP+SSE), with what only it touches: [`memory_server::storage`] (the
//!   `MemoryStore` trait, SQLite and PostgreSQL), [`memory_server::embeddings`] (vectors for
//!   search by meaning) and [`memory_server::transfer`] (`memento export` / `import`).
//! - [`daemon`]: `memento serve`: the LLM and MCP client actors, the per-user conversation
//!   actors and their supervisor, histories, rate limits and the HTTP API.
//!
//! `memento chat`, the terminal client of the daemon's API, is not here: it lives in the
//! binary (`src/cli/chat.rs`), with the terminal crates (rustyline; indicatif draws the
//! binary's progress bars). Both are optional dependencies behind the default feature `cli`,
//! which the binary requires: a user of this library with `default-features = false`
//! compiles neither.
//!
//! Read in that order: the daemon reaches memories only over MCP, never through
//! `memory_server::storage` (an embedded server is started, not called).

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod daemon;
pub mod memory_server;
pub mod shared;
