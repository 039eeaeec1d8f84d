//! The LLM client: one per daemon, shared by every conversation.
//!
//! - `actor`: [`LlmHandle`] and the `Llm` actor. It admits each request and spawns a task
//!   for the rest, so users never queue behind each other's calls.
//! - `limits`: the rate limits behind the [`limits::Limits`] trait (governor in this
//!   process; a shared implementation goes beside it).
//! - `provider`: the one edge to async-openai (Azure OpenAI, OpenAI-compatible endpoints)
//!   and the built-in [`offline`] model, with the wire structs of the answers.
//! - `error`, `metrics`: [`LlmError`] and [`LlmMetrics`].
//! - [`types`]: Memento's chat types, the wire format every provider speaks.
//!
//! The `[llm]` section ([`LlmConfig`]) lives with the other sections in `config`.

mod actor;
mod error;
pub mod framing;
pub mod limits;
mod metrics;
pub mod offline;
pub(crate) mod provider;
pub mod pseudonym;
pub mod types;

pub use crate::shared::config::{LlmConfig, Provider};
pub use actor::{Llm, LlmHandle, LlmMsg, LlmState, Shared};
pub use error::LlmError;
pub use limits::estimate_tokens;
pub use metrics::LlmMetrics;

#[cfg(test)]
mod tests;
