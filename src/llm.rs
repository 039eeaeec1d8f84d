//! The LLM client actor and its handle (being written).

pub mod offline;
pub mod types;
