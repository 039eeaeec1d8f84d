//! Memento's one integration-test binary: real servers on 127.0.0.1:0, real HTTP and MCP.

mod support;

mod chat;
mod daemon;
mod deploy;
mod durability;
mod faults;
mod jaeger;
mod memory_server;
mod python_interop;
mod seed_interop;
mod tracing;
