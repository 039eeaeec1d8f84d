//! The `memento` binary: parse the command line, load the configuration, start logging and
//! run one subcommand. No logic lives here.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use tokio_util::sync::CancellationToken;

use memento::shared::config::{self, Config, ProcessEnv};
use memento::shared::ready_file::{self, Ready};

mod cli;
mod signal;

use cli::{Cli, Command, CommonArgs};

/// jemalloc instead of glibc's malloc: the daemon allocates and frees many small buffers per
/// turn (JSON, HTTP, history), and jemalloc's thread caches make that cheaper (15 % less
/// daemon CPU per turn, BENCHMARKS.md) and give freed memory back to the system.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's built-in options (`malloc_conf`, read once at its start; `_RJEM_MALLOC_CONF`
/// in the environment still overrides them). `background_thread:true` (one thread): it
/// returns freed pages to the system after their decay time (10 s) even while the daemon is
/// idle. Without it, purging happens only inside later allocations, so the memory of
/// conversations stopped for idleness stayed resident: 8.8 KB per idle user instead of 775
/// bytes (BENCHMARKS.md, "RSS per idle conversation").
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: Option<&'static u8> =
    Some(&b"background_thread:true,max_background_threads:1\0"[0]);

/// `EX_USAGE`: invalid command line or configuration.
const EXIT_USAGE: u8 = 64;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Chat(args) = cli.command {
        return run_chat(args);
    }
    let config = match load_config(&cli) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("memento: {error:#}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let runtime = match runtime(None) {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let service = match &cli.command {
        Command::Serve(_) | Command::Chat(_) => "memento",
        Command::McpServer(_) => "memento-mcp-server",
        Command::Export(_) | Command::Import(_) | Command::Reindex(_) => "memento-transfer",
        Command::Embeddings(_) => "memento-embeddings",
    };
    // The OTLP exporter (when configured) must be built inside the runtime.
    let telemetry = match runtime.block_on(async { memento::shared::telemetry::init(service) }) {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("memento: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let export_stats = telemetry.exporting().then(|| telemetry.stats());
    let result = runtime.block_on(run(cli, config, export_stats));
    // Flush spans off the async threads, after the runtime's work is done.
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("memento: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Defaults < file < environment < flags, then validation, all before any port is bound.
fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let common = match &cli.command {
        Command::Serve(args) => &args.common,
        Command::McpServer(args) => &args.common,
        Command::Export(args) => &args.common,
        Command::Import(args) => &args.common,
        Command::Reindex(args) => &args.common,
        Command::Chat(_) | Command::Embeddings(_) => return Ok(Config::default()),
    };
    let mut config = config::load(common.config.as_deref(), &ProcessEnv)?;
    apply_common(&mut config, common);
    match &cli.command {
        Command::Serve(args) => {
            if let Some(host) = args.host {
                config.server.host = host;
            }
            if let Some(port) = args.port {
                config.server.port = port;
            }
            if let Some(url) = args.mcp_url.clone().filter(|u| !u.is_empty()) {
                config.mcp.url = Some(url);
            }
            if let Some(transport) = args.mcp_transport {
                config.mcp.transport = transport;
            }
            if let Some(port) = args.mcp_port {
                config.mcp.embedded_port = port;
            }
        }
        Command::Chat(_)
        | Command::Export(_)
        | Command::Import(_)
        | Command::Reindex(_)
        | Command::Embeddings(_) => {}
        Command::McpServer(args) => {
            let server = &mut config.mcp_server;
            if let Some(host) = args.host {
                server.host = host;
            }
            if let Some(port) = args.port {
                server.port = port;
            }
            if let Some(token) = args.token.clone().filter(|t| !t.is_empty()) {
                server.token = Some(token);
            }
            server.insecure |= args.insecure;
            server.insecure_no_token |= args.insecure_no_token;
            server
                .allowed_hosts
                .extend(args.allowed_hosts.iter().cloned());
        }
    }
    provide_mcp_token(&mut config, &cli.command)?;
    config.validate()?;
    Ok(config)
}

/// The memory server's token when none is configured: `mcp-server` generates (or reuses)
/// `DATA_DIR/mcp-token`; `serve` pointed at a loopback server reads that file if present.
fn provide_mcp_token(config: &mut Config, command: &Command) -> anyhow::Result<()> {
    use memento::memory_server::token_file;
    let data_dir = config.storage.data_dir.clone();
    match command {
        Command::McpServer(_) => {
            if config.mcp_server.token.is_none() && !config.mcp_server.insecure_no_token {
                let (token, created) = token_file::load_or_create(&data_dir)?;
                config.mcp_server.token = Some(token);
                let path = token_file::path(&data_dir);
                if created {
                    eprintln!("memento: generated the MCP token into {}", path.display());
                }
                eprintln!(
                    "memento: MCP token from {} (clients send it as Authorization: Bearer; it \
                     acts for every user: guard it like a database password)",
                    path.display()
                );
            }
        }
        Command::Serve(_) => {
            let local = config.mcp.url.as_deref().is_some_and(is_loopback_url);
            if local
                && config.mcp.token.is_none()
                && let Some(token) = token_file::read(&data_dir)?
            {
                tracing::info!(file = %token_file::path(&data_dir).display(), "MCP token read from the data directory");
                config.mcp.token = Some(token);
            }
        }
        // Export, import and reindex open the store directly: no MCP, no token.
        Command::Chat(_)
        | Command::Export(_)
        | Command::Import(_)
        | Command::Reindex(_)
        | Command::Embeddings(_) => {}
    }
    Ok(())
}

fn is_loopback_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or(url);
    let authority = rest.split('/').next().unwrap_or("");
    let host = memento::shared::edge::guard::host_name(authority);
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn apply_common(config: &mut Config, common: &CommonArgs) {
    if let Some(dir) = &common.data_dir {
        config.storage.data_dir = dir.clone();
    }
}

async fn run(
    cli: Cli,
    config: Config,
    export_stats: Option<Arc<memento::shared::telemetry::ExportStats>>,
) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let serving = Serving {
                export_stats,
                ready_file: args.ready_file,
            };
            run_daemon(config, serving).await
        }
        Command::Chat(_) => Ok(()),
        Command::McpServer(args) => {
            let serving = Serving {
                export_stats,
                ready_file: args.ready_file,
            };
            run_mcp_server(config, serving).await
        }
        Command::Export(args) => run_export(config, args).await,
        Command::Import(args) => run_import(config, args).await,
        Command::Reindex(args) => run_reindex(config, args).await,
        Command::Embeddings(args) => run_embeddings(args).await,
    }
}

async fn run_reindex(config: Config, args: cli::ReindexArgs) -> anyhow::Result<()> {
    let Some(embedder) =
        memento::memory_server::embeddings::build(&config.embeddings, &config.llm)?
    else {
        anyhow::bail!(
            "reindex --embeddings needs an embeddings provider: set [embeddings] provider \
             (\"local\" with model_dir, \"azure\" or \"openai\") in the config file or \
             MEMENTO_EMBEDDINGS__PROVIDER"
        );
    };
    let store = open_store(&config).await?;
    let summary = Bar::around("embedding", async |bar: &Bar| {
        memento::memory_server::embeddings::reindex(
            store.as_ref(),
            embedder.as_ref(),
            args.batch,
            |done, total| {
                bar.0.set_length(total);
                bar.0.set_position(done);
            },
        )
        .await
    })
    .await?;
    println!(
        "embedded {} memories with {}; every memory now has a vector of this model",
        summary.embedded,
        embedder.model_id()
    );
    Ok(())
}

async fn run_embeddings(args: cli::EmbeddingsArgs) -> anyhow::Result<()> {
    match args.command {
        cli::EmbeddingsCommand::Distill { from, out, threads } => {
            let threads = threads.map(usize::from).unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(usize::from)
                    .unwrap_or(1)
            });
            let (from_dir, out_dir) = (from.clone(), out.clone());
            let summary = Bar::around("distilling", async |bar: &Bar| {
                let progress = bar.0.clone();
                tokio::task::spawn_blocking(move || {
                    memento::memory_server::embeddings::static_model::distill(
                        &from_dir,
                        &out_dir,
                        threads,
                        |done, total| {
                            progress.set_length(total as u64);
                            progress.set_position(done as u64);
                        },
                    )
                })
                .await
            })
            .await??;
            println!(
                "wrote a static model of {} tokens x {} dimensions to {}; set [embeddings] \
                 provider = \"local\" and model_dir = {:?}",
                summary.tokens,
                summary.dimensions,
                out.display(),
                out.display().to_string()
            );
            Ok(())
        }
    }
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
struct Bar(indicatif::ProgressBar);

impl Bar {
    fn new(what: &str) -> Bar {
        let bar = indicatif::ProgressBar::new(0);
        let template = format!("{what} {{bar:40}} {{pos}}/{{len}} {{wide_msg}}");
        if let Ok(style) = indicatif::ProgressStyle::with_template(&template) {
            bar.set_style(style);
        }
        Bar(bar)
    }

    /// Runs `work` with a bar named `what` on screen, then clears the bar.
    async fn around<T>(what: &str, work: impl AsyncFnOnce(&Bar) -> T) -> T {
        let bar = Bar::new(what);
        let result = work(&bar).await;
        bar.0.finish_and_clear();
        result
    }
}

impl memento::memory_server::transfer::Progress for Bar {
    fn total(&self, items: u64) {
        self.0.set_length(items);
    }
    fn item(&self, name: &str) {
        self.0.set_message(name.to_owned());
        self.0.inc(1);
    }
}

fn parse_user(raw: Option<&str>) -> anyhow::Result<Option<memento::shared::domain::UserId>> {
    raw.map(|raw| {
        memento::shared::domain::UserId::parse(raw).map_err(|e| anyhow::anyhow!("--user: {e}"))
    })
    .transpose()
}

async fn run_export(config: Config, args: cli::ExportArgs) -> anyhow::Result<()> {
    let user = parse_user(args.user.as_deref())?;
    let store = open_store(&config).await?;
    let summary = Bar::around("exporting", async |bar: &Bar| {
        memento::memory_server::transfer::export(
            store.as_ref(),
            user.as_ref(),
            args.format,
            &args.to,
            bar,
        )
        .await
    })
    .await?;
    println!(
        "exported {} memories of {} users to {}",
        summary.memories,
        summary.users,
        args.to.display()
    );
    Ok(())
}

async fn run_import(config: Config, args: cli::ImportArgs) -> anyhow::Result<()> {
    let user = parse_user(args.user.as_deref())?;
    let store = open_store(&config).await?;
    let summary = Bar::around("importing", async |bar: &Bar| {
        memento::memory_server::transfer::import(
            store.as_ref(),
            config.mcp_server.max_content_bytes,
            &args.from,
            user.as_ref(),
            bar,
        )
        .await
    })
    .await?;
    println!(
        "imported {}, already present {}, skipped {}",
        summary.imported,
        summary.already_present,
        summary.skipped.len()
    );
    for (source, reason) in &summary.skipped {
        println!("  skipped {source}: {reason}");
    }
    Ok(())
}

/// What a server subcommand gets besides the config: where its spans' export is counted,
/// and its `--ready-file`.
struct Serving {
    export_stats: Option<Arc<memento::shared::telemetry::ExportStats>>,
    ready_file: Option<PathBuf>,
}

async fn run_mcp_server(config: Config, serving: Serving) -> anyhow::Result<()> {
    let Serving {
        export_stats,
        ready_file,
    } = serving;
    let store = memento::memory_server::embeddings::wrap_configured(
        open_store(&config).await?,
        &config.storage,
        &config.embeddings,
        &config.llm,
    )?;
    let shutdown = CancellationToken::new();
    if config.mcp_server.insecure_no_token {
        tracing::warn!(
            "=== --insecure-no-token: serving WITHOUT a token. Any local process, and any \
             proxy on this host, can read and delete every user's memories. Use this only for \
             token-less clients on a single-user machine ==="
        );
        eprintln!(
            "memento: WARNING: serving every user's memories WITHOUT a token (--insecure-no-token)"
        );
    }
    if !config.mcp_server.host.is_loopback() && config.mcp_server.allowed_hosts.is_empty() {
        tracing::warn!(
            "bound to {} but mcp_server.allowed_hosts is empty: only Host headers naming loopback are accepted",
            config.mcp_server.host
        );
    }
    let server = memento::memory_server::start_with_telemetry(
        &config.mcp_server,
        store,
        shutdown.clone(),
        export_stats,
    )
    .await?;
    println!("memento mcp-server listening on {}", server.url());
    println!("  Streamable HTTP: {}/mcp", server.url());
    println!("  legacy SSE:      {}/sse", server.url());
    if let Some(path) = &ready_file {
        let mut ready = Ready::this_process(server.addr());
        ready.mcp_url = Some(format!("{}/mcp", server.url()));
        ready.sse_url = Some(format!("{}/sse", server.url()));
        if let Err(error) = ready_file::write(path, &ready) {
            server.shutdown().await;
            return Err(error.into());
        }
    }
    tokio::select! {
        () = signal::shutdown() => tracing::info!("shutting down"),
        () = shutdown.cancelled() => {}
    }
    server.shutdown().await;
    Ok(())
}

async fn run_daemon(config: Config, serving: Serving) -> anyhow::Result<()> {
    let Serving {
        export_stats,
        ready_file,
    } = serving;
    if config.llm.provider == memento::daemon::llm::Provider::Offline {
        tracing::warn!(
            "=== no Azure OpenAI endpoint and key configured: using the built-in OFFLINE model \
             (set AZURE_OPENAI_ENDPOINT and AZURE_OPENAI_API_KEY for the real one) ==="
        );
    }
    let daemon = memento::daemon::Daemon::start_with_telemetry(config, export_stats).await?;
    println!("memento daemon listening on {}", daemon.url());
    println!("  memory MCP server: {}", daemon.mcp_url());
    println!("  web page:          {}/", daemon.url());
    println!("  try: memento chat --user alice");
    if let Some(path) = &ready_file {
        let mut ready = Ready::this_process(daemon.addr());
        ready.mcp_url = Some(daemon.mcp_url().to_owned());
        if let Err(error) = ready_file::write(path, &ready) {
            daemon.shutdown().await;
            return Err(error.into());
        }
    }
    signal::shutdown().await;
    daemon.shutdown().await;
    Ok(())
}

/// A multi-threaded runtime with `workers` threads (default: one per core); on failure the
/// error is printed and the exit code to return comes back.
fn runtime(workers: Option<usize>) -> Result<tokio::runtime::Runtime, ExitCode> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = workers {
        builder.worker_threads(workers);
    }
    builder.enable_all().build().map_err(|error| {
        eprintln!("memento: cannot start the async runtime: {error}");
        ExitCode::FAILURE
    })
}

/// `memento chat`: a client; no config file, no telemetry, quiet logs.
fn run_chat(args: cli::chat::ChatArgs) -> ExitCode {
    let runtime = match runtime(Some(2)) {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    match runtime.block_on(cli::chat::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error @ cli::chat::ChatError::InvalidUser(_)) => {
            eprintln!("memento: {error}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(error) => {
            eprintln!("memento: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn open_store(
    config: &Config,
) -> anyhow::Result<Arc<dyn memento::memory_server::storage::MemoryStore>> {
    Ok(memento::memory_server::storage::open(&config.storage).await?)
}
