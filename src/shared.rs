//! What the daemon and the memory server share: configuration, validated value types, the
//! HTTP edge, telemetry, metrics, the retry policy and small plumbing.
//!
//! - [`config`]: the configuration tree and how it is loaded (defaults < file < env < flags).
//! - [`domain`]: validated value types shared by every layer (`UserId`, tags, filenames).
//! - [`edge`]: the HTTP edge both servers share: browser and proxy rules, bearer tokens,
//!   bounded request bodies, the accept loop with its connection limits.
//! - [`telemetry`]: logs, OTLP traces, trace-context propagation.
//! - [`retry`]: the one backoff policy (the only user of the `backoff` crate).
//! - [`pg`]: PostgreSQL plumbing for the PostgreSQL-backed parts of both sides (memory store,
//!   histories): a pool from a URL and the versioned migration runner.
//! - [`tokens`]: the one token estimate (four bytes a token) every token count uses.
//! - [`metrics`], [`sse`], [`secret_file`]: small pieces (the last keeps the data
//!   directory's 0600 secrets: `mcp-token`, `trace-key`).
//! - [`ready_file`]: the `--ready-file` object servers write once they listen.
//! - [`group_commit`]: the batching SQLite writer thread (memory store and history).
//! - [`splitmix`]: the deterministic 64-bit mixer (offline model, test mock, fuzz checks).

pub mod api;
pub mod config;
pub mod domain;
pub mod edge;
pub mod group_commit;
pub mod metrics;
pub mod pg;
pub mod ready_file;
pub mod retry;
pub mod secret_file;
pub mod splitmix;
pub mod sse;
pub mod telemetry;
pub mod tokens;
