//! `memento-loadtest`: Memento's bundled load-test harness. Each subcommand is one variant
//! of [`Command`]; the work lives in the library modules.

use std::io::Write as _;

use clap::{Parser, Subcommand};

/// jemalloc, as in `memento`: the harness and the mock allocate per request too.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
    /// Find the highest open-loop rate (Poisson arrivals) whose p99 daemon overhead stays
    /// under --p99-overhead-ms: steps the rate up by --factor from --start-rate, each step
    /// --duration long (default 10 s) with fresh users on one stack, then bisects. Writes
    /// capacity.json and capacity.md (every step, with its CPU per turn) into --out.
    Capacity(memento_loadtest::capacity::CapacityArgs),
    /// Serve an Azure OpenAI-compatible chat-completions mock (the offline model as its
    /// brain) with latency, quotas and fault injection; GET /stats for its counters.
    MockAzure(MockAzureArgs),
    /// Benchmark the memory MCP server's tools (store_memory, retrieve_memories) over
    /// Streamable HTTP: calls/s and latency at several client counts, optionally at
    /// 1,000,000 preloaded memories.
    McpBench(memento_loadtest::mcp_bench::McpBenchArgs),
    /// Measure the daemon's memory per idle conversation actor: spawn the stack, warm up,
    /// add --users users with one small-talk turn each, and divide the RSS growth by the
    /// growth in live actors. Writes idle.json into --out.
    IdleActors(memento_loadtest::idle::IdleArgs),
    /// Retrieval quality on LoCoMo-format conversations: store each dialog turn as one
    /// memory (one user per file, the session date as created_at), ask every category 1-4
    /// question through retrieve_memories in each --mode, and write recall.json (hit@5,
    /// hit@10, recall@10, per category, retrieve latency) into --out. Spawns
    /// `memento mcp-server` (with local embeddings from --model-dir) unless --target is given.
    Recall(memento_loadtest::recall::RecallArgs),
}

/// Flags of `mock-azure`. Every flag can also come from its `MOCK_AZURE_*` variable.
#[derive(Debug, clap::Args)]
struct MockAzureArgs {
    /// Address to bind; the default keeps the mock on this machine.
    #[arg(long, env = "MOCK_AZURE_HOST", default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// Port to bind (0 picks a free one; the address is printed).
    #[arg(long, env = "MOCK_AZURE_PORT", default_value_t = 8090)]
    port: u16,
    /// The key clients must send in `api-key` (or `Authorization: Bearer`).
    #[arg(
        long,
        env = "MOCK_AZURE_API_KEY",
        default_value = "mock-key",
        hide_env_values = true
    )]
    api_key: String,
    /// Serve only this deployment (others get 404 DeploymentNotFound); default: any name.
    #[arg(long, env = "MOCK_AZURE_DEPLOYMENT")]
    deployment: Option<String>,
    /// Fixed latency of every answer in milliseconds (time to first chunk when streaming).
    #[arg(long, env = "MOCK_AZURE_LATENCY_MS", default_value_t = 0)]
    latency_ms: u64,
    /// Extra latency per completion token in milliseconds (spread over the chunks when
    /// streaming).
    #[arg(long, env = "MOCK_AZURE_LATENCY_PER_TOKEN_MS", default_value_t = 0.0)]
    latency_per_token_ms: f64,
    /// Requests-per-minute quota, enforced as Azure does: rpm/6 requests per 10-second
    /// window, then 429 with retry-after until the window turns.
    #[arg(long, env = "MOCK_AZURE_RPM")]
    rpm: Option<u32>,
    /// Tokens-per-minute quota: a per-minute running count of estimated tokens (prompt
    /// characters / 4 + max_tokens, counted on arrival), then 429.
    #[arg(long, env = "MOCK_AZURE_TPM")]
    tpm: Option<u32>,
    /// Share of requests answered 500 server_error (0.0 to 1.0).
    #[arg(long, env = "MOCK_AZURE_FAIL_RATE", default_value_t = 0.0)]
    fail_rate: f64,
    /// Share of requests answered 503 ServiceUnavailable (0.0 to 1.0).
    #[arg(long, env = "MOCK_AZURE_FAIL_503_RATE", default_value_t = 0.0)]
    fail_503_rate: f64,
    /// Share of requests never answered until the client gives up (0.0 to 1.0; with the
    /// 500 and 503 rates at most 1 in all).
    #[arg(long, env = "MOCK_AZURE_HANG_RATE", default_value_t = 0.0)]
    hang_rate: f64,
    /// Share of tool-call answers whose arguments are cut in half: invalid JSON (0.0 to 1.0).
    #[arg(long, env = "MOCK_AZURE_MALFORMED_RATE", default_value_t = 0.0)]
    malformed_rate: f64,
    /// Seed of the fault generator: the same seed gives the same faults for the same
    /// sequence of requests.
    #[arg(long, env = "MOCK_AZURE_SEED", default_value_t = 1)]
    seed: u64,
    /// Once listening, write {"pid", "http_addr", "url"} as one JSON object to PATH
    /// (atomically), for whoever started the mock on port 0.
    #[arg(long, value_name = "PATH")]
    ready_file: Option<std::path::PathBuf>,
}

async fn mock_azure(args: MockAzureArgs) -> anyhow::Result<()> {
    use memento_loadtest::mock_azure::{MockConfig, MockServer};

    let config = MockConfig {
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
    };
    if let Err(problem) = config.validate() {
        anyhow::bail!("invalid mock settings: {problem}");
    }
    let deployment = config.deployment.clone();
    let server = MockServer::start(config)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}:{}: {e}", args.host, args.port))?;
    let endpoint = server.endpoint();
    // Written without println!, which panics when whoever started us closed the pipe.
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "mock Azure OpenAI listening on {endpoint}");
    let _ = writeln!(
        stdout,
        "  AZURE_OPENAI_ENDPOINT={endpoint} AZURE_OPENAI_DEPLOYMENT={} (OpenAI-compatible: \
         {endpoint}/v1; stats: {endpoint}/stats)",
        deployment.as_deref().unwrap_or("<any>")
    );
    let _ = stdout.flush();
    drop(stdout);
    if let Some(path) = &args.ready_file {
        let ready = memento::shared::ready_file::Ready::this_process(server.addr());
        if let Err(error) = memento::shared::ready_file::write(path, &ready) {
            server.shutdown().await;
            return Err(error.into());
        }
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result?,
        _ = term.recv() => {}
    }
    server.shutdown().await;
    let _ = writeln!(std::io::stderr(), "mock Azure OpenAI stopped");
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
            if report.rate_limit.as_ref().is_some_and(|r| !r.ok) {
                eprintln!("rate-limit check FAILED");
                std::process::exit(1);
            }
        }
        Command::Capacity(args) => {
            let out = args.run.out.clone();
            let report = memento_loadtest::capacity::run(args).await?;
            println!("{}", memento_loadtest::capacity::markdown(&report));
            println!("reports written to {}", out.display());
        }
        Command::MockAzure(args) => mock_azure(args).await?,
        Command::IdleActors(args) => {
            let out = args.out.clone();
            let report = memento_loadtest::idle::run(args).await?;
            println!(
                "{} idle actors added ({} -> {}); daemon RSS {:.1} -> {:.1} MiB; {:.0} bytes per idle actor (created in {:.1} s)",
                report.actors_after - report.actors_before,
                report.actors_before,
                report.actors_after,
                report.rss_before_mib,
                report.rss_after_mib,
                report.bytes_per_idle_actor,
                report.create_s
            );
            if let (Some(rss), Some(bytes), Some(actors)) = (
                report.rss_released_mib,
                report.bytes_per_released_actor,
                report.actors_released,
            ) {
                println!(
                    "after the idle sweep: {actors} live actors, daemon RSS {rss:.1} MiB, {bytes:.0} bytes per idle user"
                );
            }
            if let (Some(back), Some(live)) = (&report.returning_turn_ms, &report.live_turn_ms) {
                println!(
                    "returning user's first turn p50 / p99 {:.2} / {:.2} ms; next turn on the live actor {:.2} / {:.2} ms",
                    back.p50, back.p99, live.p50, live.p99
                );
            }
            println!("written to {}", out.join("idle.json").display());
        }
        Command::Recall(args) => {
            memento_loadtest::recall::run(args).await?;
        }
        Command::McpBench(args) => {
            memento_loadtest::mcp_bench::run(args).await?;
        }
    }
    Ok(())
}
