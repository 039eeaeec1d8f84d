//! Memento's one integration-test binary: real servers on 127.0.0.1:0, real HTTP and MCP.

mod support;

mod chat;
mod daemon;
mod deploy;
mod durability;
mod embeddings;
mod faults;
mod jaeger;
mod limits;
mod mcp_json;
mod mcp_resources;
mod memory_server;
mod multi_daemon;
mod openai;
mod postgres;
mod python_interop;
mod security;
mod seed_interop;
mod tracing;
mod transfer;
mod web;
