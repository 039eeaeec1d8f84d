//! The MCP client side of the daemon.
//!
//! - [`sse_client`]: the legacy HTTP+SSE client transport (MCP 2024-11-05), for servers that
//!   only speak it, such as the seed's Python FastMCP server. rmcp 3 has none.

pub mod sse_client;
