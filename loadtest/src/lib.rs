//! Memento load-test harness and Azure OpenAI mock (library part).
pub mod capacity;
pub mod idle;
pub mod mcp_bench;
/// The Azure OpenAI mock lives in the dev-only testkit, where the tests use it too.
pub use testkit::mock_azure;
pub mod otlp;
pub mod recall;
pub mod run;
mod servers;
