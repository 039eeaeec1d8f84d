//! `memento-loadtest`: Memento's bundled load-test harness. Each subcommand is one variant
//! of [`Command`]; the work lives in the library modules.

use clap::{Parser, Subcommand};

/// Load-test Memento without spending a token.
#[derive(Debug, Parser)]
#[command(name = "memento-loadtest", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Benchmark the memory MCP server's tools (store_memory, retrieve_memories) over
    /// Streamable HTTP: calls/s and latency at several client counts, optionally at
    /// 1,000,000 preloaded memories.
    McpBench(memento_loadtest::mcp_bench::McpBenchArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::McpBench(args) => {
            memento_loadtest::mcp_bench::run(args).await?;
        }
    }
    Ok(())
}
