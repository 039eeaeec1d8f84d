//! Memento: a multi-user memory assistant daemon.
//!
//! # Layout
//!
//! - [`config`]: the configuration tree and how it is loaded (defaults < file < env < flags).
//! - [`domain`]: validated value types shared by every layer (`UserId`, tags, filenames).
//! - [`edge`]: the HTTP edge both servers share: browser and proxy rules, bearer tokens,
//!   bounded request bodies, the accept loop with its connection limits.
//! - [`storage`]: the memory store trait and its SQLite engine (off the async threads).
//! - [`memory_server`]: the memory MCP server (`memento mcp-server`), Streamable HTTP and
//!   legacy HTTP+SSE.
//! - [`transfer`]: `memento export` / `memento import` (seed layout, JSONL); its `record`
//!   module holds the formats alone, for the daemon's HTTP import/export.
//! - [`llm`]: the shared LLM client actor, its providers and the offline model.
//! - [`retry`]: the one backoff policy.
//! - [`mcp`]: the daemon's MCP connection actor (and the legacy SSE client transport).
//! - [`history`]: the daemon's conversation histories.
//! - [`conversation`]: one actor per user; the tool-calling turn.
//! - [`supervisor`]: spawns, restarts and evicts conversations.
//! - [`http`]: the daemon's HTTP API.
//! - [`daemon`]: `memento serve`, wiring and shutdown order.
//! - [`telemetry`]: logs, OTLP traces, trace-context propagation.
//! - [`metrics`], [`sse`], [`secret_file`]: small shared pieces (the last keeps the
//!   data directory's 0600 secrets: `mcp-token`, `trace-key`).
//! - [`fuzzing`]: the invariant checks behind the cargo-fuzz targets in `fuzz/`.
//! - [`pg`]: PostgreSQL plumbing shared by the PostgreSQL-backed parts: a pool from a URL
//!   and the versioned migration runner (`schema_migrations`).

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod chat;
pub mod config;
pub mod conversation;
pub mod daemon;
pub mod domain;
pub mod edge;
pub mod fuzzing;
pub mod history;
pub mod http;
pub mod limits;
pub mod llm;
pub mod mcp;
pub mod memory_server;
pub mod metrics;
pub mod pg;
pub mod retry;
pub mod secret_file;
pub mod sse;
pub mod storage;
pub mod supervisor;
pub mod telemetry;
pub mod transfer;
