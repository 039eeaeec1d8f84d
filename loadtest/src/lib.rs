//! Memento load-test harness and Azure OpenAI mock (library part).
pub mod capacity;
pub mod idle;
pub mod mcp_bench;
pub mod mock_azure;
pub mod otlp;
pub mod recall;
pub mod run;
