//! Memento: a multi-user memory assistant daemon.
//!
//! # Layout
//!
//! - [`config`]: the configuration tree and how it is loaded (defaults < file < env < flags).
//! - [`domain`]: validated value types shared by every layer (`UserId`, tags, filenames).
//! - [`storage`]: the memory store trait and its SQLite engine (off the async threads).
//! - [`memory_server`]: the memory MCP server (`memento mcp-server`), Streamable HTTP and
//!   legacy HTTP+SSE.
//! - [`llm`]: the shared LLM client actor, its providers and the offline model.
//! - [`retry`]: the one backoff policy.

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod config;
pub mod domain;
pub mod history;
pub mod llm;
pub mod mcp;
pub mod memory_server;
pub mod metrics;
pub mod retry;
pub mod sse;
pub mod storage;
pub mod telemetry;
