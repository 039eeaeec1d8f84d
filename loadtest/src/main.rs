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
    /// Drive a daemon with simulated users (closed loop, or open loop with --rate) and write
    /// report.json, report.md and report.svg. Without --target it spawns the whole stack
    /// (Azure mock, memento mcp-server, memento serve). Exits 1 when the integrity check
    /// fails (a lost or leaked memory, or turns out of order).
    Run(memento_loadtest::run::RunArgs),
    /// Serve an Azure OpenAI-compatible chat-completions mock (the offline model as its
    /// brain) with latency, quotas and fault injection; GET /stats for its counters.
    MockAzure(MockAzureArgs),
    /// Benchmark the memory MCP server's tools (store_memory, retrieve_memories) over
    /// Streamable HTTP: calls/s and latency at several client counts, optionally at
    /// 1,000,000 preloaded memories.
    McpBench(memento_loadtest::mcp_bench::McpBenchArgs),
}

/// Flags of `mock-azure`.
#[derive(Debug, clap::Args)]
struct MockAzureArgs {
    /// Address to bind.
    #[arg(long, env = "MOCK_AZURE_HOST", default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// Port to bind (0: any free port).
    #[arg(long, env = "MOCK_AZURE_PORT", default_value_t = 8090)]
    port: u16,
    /// The api-key clients must send.
    #[arg(
        long,
        env = "MOCK_AZURE_API_KEY",
        default_value = "mock-key",
        hide_env_values = true
    )]
    api_key: String,
    /// Serve only this deployment (others get 404 DeploymentNotFound); default: any.
    #[arg(long, env = "MOCK_AZURE_DEPLOYMENT")]
    deployment: Option<String>,
    /// Fixed latency of every answer, in milliseconds.
    #[arg(long, env = "MOCK_AZURE_LATENCY_MS", default_value_t = 0)]
    latency_ms: u64,
    /// Extra latency per completion token, in milliseconds.
    #[arg(long, env = "MOCK_AZURE_LATENCY_PER_TOKEN_MS", default_value_t = 0.0)]
    latency_per_token_ms: f64,
    /// Requests-per-minute quota (enforced per 10-second window, as Azure does).
    #[arg(long, env = "MOCK_AZURE_RPM")]
    rpm: Option<u32>,
    /// Tokens-per-minute quota (prompt estimate + max_tokens, counted on arrival).
    #[arg(long, env = "MOCK_AZURE_TPM")]
    tpm: Option<u32>,
    /// Share of requests answered 500 (0.0 to 1.0).
    #[arg(long, env = "MOCK_AZURE_FAIL_RATE", default_value_t = 0.0)]
    fail_rate: f64,
    /// Share answered 503.
    #[arg(long, env = "MOCK_AZURE_FAIL_503_RATE", default_value_t = 0.0)]
    fail_503_rate: f64,
    /// Share of requests that never answer.
    #[arg(long, env = "MOCK_AZURE_HANG_RATE", default_value_t = 0.0)]
    hang_rate: f64,
    /// Share of answers whose tool-call arguments are cut (invalid JSON).
    #[arg(long, env = "MOCK_AZURE_MALFORMED_RATE", default_value_t = 0.0)]
    malformed_rate: f64,
    /// Seed of the fault generator.
    #[arg(long, env = "MOCK_AZURE_SEED", default_value_t = 1)]
    seed: u64,
}

async fn mock_azure(args: MockAzureArgs) -> anyhow::Result<()> {
    for (name, rate) in [
        ("--fail-rate", args.fail_rate),
        ("--fail-503-rate", args.fail_503_rate),
        ("--hang-rate", args.hang_rate),
        ("--malformed-rate", args.malformed_rate),
    ] {
        anyhow::ensure!(
            (0.0..=1.0).contains(&rate),
            "{name} must be between 0 and 1, got {rate}"
        );
    }
    let server =
        memento_loadtest::mock_azure::MockServer::start(memento_loadtest::mock_azure::MockConfig {
            host: args.host,
            port: args.port,
            api_key: args.api_key,
            deployment: args.deployment,
            latency_ms: args.latency_ms,
            latency_per_token_ms: args.latency_per_token_ms,
            rpm: args.rpm,
            tpm: args.tpm,
            fail_rate: args.fail_rate,
            fail_503_rate: args.fail_503_rate,
            hang_rate: args.hang_rate,
            malformed_rate: args.malformed_rate,
            seed: args.seed,
        })
        .await?;
    println!("mock Azure OpenAI listening on {}", server.endpoint());
    println!(
        "  AZURE_OPENAI_ENDPOINT={} (stats: {}/stats)",
        server.endpoint(),
        server.endpoint()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    server.shutdown().await;
    Ok(())
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
        Command::Run(args) => {
            let out = args.out.clone();
            let report = memento_loadtest::run::run(args).await?;
            println!("{}", memento_loadtest::run::markdown(&report));
            println!("reports written to {}", out.display());
            if !report.integrity.ok {
                eprintln!("integrity check FAILED");
                std::process::exit(1);
            }
        }
        Command::MockAzure(args) => mock_azure(args).await?,
        Command::McpBench(args) => {
            memento_loadtest::mcp_bench::run(args).await?;
        }
    }
    Ok(())
}
