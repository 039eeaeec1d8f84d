//! The memory MCP server (being written).
