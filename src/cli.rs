//! The command line: `memento serve | mcp-server | chat | export | import`. Parsing only; `main.rs` runs it.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub(crate) mod chat;

/// Memento: a memory assistant daemon. Tell it in plain language what to remember, ask it
/// later; memories live in an MCP server, one private store per user.
#[derive(Debug, Parser)]
#[command(name = "memento", version, propagate_version = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the daemon: the HTTP API (default 127.0.0.1:8080), one conversation actor per
    /// user, the shared LLM and MCP actors. With no --mcp-url it also starts the memory MCP
    /// server in-process; with no Azure key it uses the built-in offline model.
    Serve(ServeArgs),
    /// Talk to a running daemon in the terminal, like the seed's client: /user NAME,
    /// /history, /reset, /quit. Reads lines from a pipe too (prints only the answers).
    Chat(chat::ChatArgs),
    /// Run the memory MCP server alone (Streamable HTTP at /mcp, legacy HTTP+SSE at /sse and
    /// /messages). Default address 127.0.0.1:8000.
    McpServer(McpServerArgs),
    /// Write memories out of the store (in --data-dir) as the seed's layout (a folder per
    /// user of YYYYMMDD_HHMMSS_<filename> files, each with a description/tags header) or as
    /// JSONL (memories.jsonl, every field). --to must be new or empty: nothing is overwritten.
    Export(ExportArgs),
    /// Read memories into the store (in --data-dir) from a seed-style directory (a folder per
    /// user; files named YYYYMMDD_HHMMSS_<filename>, with or without a description/tags
    /// header), from .jsonl files in it, or from one .jsonl file. Idempotent: importing the
    /// same data again adds nothing. Bad files are skipped with a reason; the import goes on.
    Import(ImportArgs),
    /// Rebuild derived indexes of the store in --data-dir. With --embeddings: give every
    /// memory without a vector of the configured [embeddings] model one (memories stored
    /// before embeddings were configured, stored while the provider was down, or embedded
    /// by another model). Shows a progress bar; each batch is committed as it is done, so an
    /// interrupted run just resumes where it stopped when started again. Stop the servers
    /// using the same --data-dir first or not: both are safe (SQLite serialises writers).
    Reindex(ReindexArgs),
    /// Embeddings model tools. `distill --from MINILM_DIR --out DIR` makes a static
    /// (model2vec-style) model: every vocabulary token is run once through the
    /// sentence-transformer in MINILM_DIR and its vector kept in a table
    /// (DIR/static.safetensors, beside a copy of vocab.txt). Point [embeddings] model_dir
    /// at DIR: the local provider then embeds a text by table lookups, in microseconds
    /// instead of a transformer pass (less precise by meaning).
    Embeddings(EmbeddingsArgs),
}

#[derive(Debug, Args)]
pub(crate) struct EmbeddingsArgs {
    #[command(subcommand)]
    pub(crate) command: EmbeddingsCommand,
}

#[derive(Debug, Subcommand)]
pub(crate) enum EmbeddingsCommand {
    /// Make a static model from a sentence-transformer directory (config.json,
    /// model.safetensors, vocab.txt). Takes a few minutes of CPU for all-MiniLM-L6-v2 in a
    /// release build; offline.
    Distill {
        /// The sentence-transformer directory.
        #[arg(long = "from", value_name = "DIR")]
        from: PathBuf,
        /// Where to write the static model (created; must not hold one already).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Threads [default: the machine's cores].
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
        threads: Option<u16>,
    },
}

#[derive(Debug, Args)]
pub(crate) struct ReindexArgs {
    #[command(flatten)]
    pub(crate) common: CommonArgs,
    /// Backfill memory vectors with the configured embeddings provider
    /// ([embeddings] provider must not be "none").
    #[arg(long, required = true)]
    pub(crate) embeddings: bool,
    /// Memories embedded per provider call.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=2048))]
    pub(crate) batch: u32,
}

#[derive(Debug, Args)]
pub(crate) struct ExportArgs {
    #[command(flatten)]
    pub(crate) common: CommonArgs,
    /// Only this user's memories [default: every user's].
    #[arg(long)]
    pub(crate) user: Option<String>,
    /// seed: a folder per user of YYYYMMDD_HHMMSS_<filename> files (time to the second);
    /// jsonl: one memories.jsonl with every field.
    #[arg(long, value_enum, default_value = "seed")]
    pub(crate) format: memento::memory_server::transfer::Format,
    /// Directory to write (created; must be new or empty).
    #[arg(long, value_name = "DIR")]
    pub(crate) to: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct ImportArgs {
    #[command(flatten)]
    pub(crate) common: CommonArgs,
    /// A seed-style directory (user folders and/or .jsonl files) or one .jsonl file.
    #[arg(long, value_name = "DIR|FILE")]
    pub(crate) from: PathBuf,
    /// Store everything as this user's, whatever the folder or record says.
    #[arg(long)]
    pub(crate) user: Option<String>,
}

/// Flags shared by every server subcommand.
#[derive(Debug, Args)]
pub(crate) struct CommonArgs {
    /// Config file [default: config/memento.toml if present].
    #[arg(long, env = "MEMENTO_CONFIG", value_name = "PATH")]
    pub(crate) config: Option<PathBuf>,
    /// Data directory (SQLite database) [config: storage.data_dir; default ./data].
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct McpServerArgs {
    #[command(flatten)]
    pub(crate) common: CommonArgs,
    /// Address to bind [config: mcp_server.host; default 127.0.0.1]. A non-loopback address
    /// needs --token (or --insecure).
    #[arg(long)]
    pub(crate) host: Option<IpAddr>,
    /// Port to bind, 0 for any free port [config: mcp_server.port; default 8000].
    #[arg(long)]
    pub(crate) port: Option<u16>,
    /// Bearer token required on every request of both transports, at least 16 characters
    /// [config: mcp_server.token; default: generated into DATA_DIR/mcp-token].
    #[arg(long, env = "MEMENTO_MCP_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// Allow a non-loopback bind without a token.
    #[arg(long)]
    pub(crate) insecure: bool,
    /// Serve with no token at all (loopback only), for token-less clients such as the seed's.
    /// Without it and without --token, a token is generated into DATA_DIR/mcp-token (mode
    /// 0600); `memento serve` pointed at this server with the same --data-dir reads it. The
    /// token acts for every user: guard it like a database password
    /// [config: mcp_server.insecure_no_token].
    #[arg(long)]
    pub(crate) insecure_no_token: bool,
    /// Extra accepted Host names (repeatable) besides loopback
    /// [config: mcp_server.allowed_hosts].
    #[arg(long = "allowed-host", value_name = "NAME")]
    pub(crate) allowed_hosts: Vec<String>,
    /// Once listening, write {"pid", "http_addr", "url", "mcp_url", "sse_url"} as one JSON object to
    /// PATH (atomically: PATH.tmp, then rename), for scripts and supervisors that start the
    /// server on port 0. A stale file from an earlier run is replaced.
    #[arg(long, value_name = "PATH")]
    pub(crate) ready_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    pub(crate) common: CommonArgs,
    /// Address of the HTTP API [config: server.host; default 127.0.0.1].
    #[arg(long)]
    pub(crate) host: Option<IpAddr>,
    /// Port of the HTTP API, 0 for any free port [config: server.port; default 8080].
    #[arg(long)]
    pub(crate) port: Option<u16>,
    /// URL of an external memory MCP server, e.g. http://127.0.0.1:8000/mcp (or .../sse with
    /// --mcp-transport sse). Without it the memory server runs in-process [config: mcp.url].
    #[arg(long, env = "MEMENTO_MCP_URL")]
    pub(crate) mcp_url: Option<String>,
    /// MCP transport for --mcp-url: streamable-http or sse [config: mcp.transport].
    #[arg(long)]
    pub(crate) mcp_transport: Option<memento::shared::config::McpTransport>,
    /// Port of the embedded memory server, 0 for any free port [config: mcp.embedded_port].
    #[arg(long)]
    pub(crate) mcp_port: Option<u16>,
    /// Once listening, write {"pid", "http_addr", "url", "mcp_url"} as one JSON object to
    /// PATH (atomically: PATH.tmp, then rename), for scripts and supervisors that start the
    /// server on port 0. A stale file from an earlier run is replaced.
    #[arg(long, value_name = "PATH")]
    pub(crate) ready_file: Option<PathBuf>,
}
