//! `memento-loadtest recall`: retrieval quality on LoCoMo-format conversations.
//!
//! For each conversation file (one user per file) every dialog turn is stored through
//! `store_memory` as one memory (`"<speaker>: <text>"`, plus `[image: <caption>]` when the
//! turn shared a picture), with its session's date as `created_at` (the import's `_meta`
//! key), in dialog order, as a user's assistant would store them. Then every question of
//! category 1-4 is asked through `retrieve_memories` (`limit` 10) in each mode, and the
//! memories returned are compared with the question's evidence turns:
//!
//! - `hit_at_5`, `hit_at_10`: share of questions with at least one evidence turn in the top k;
//! - `recall_at_10`: mean share of a question's evidence turns found in the top 10;
//! - the same per category (1 multi-hop, 2 temporal, 3 open-domain, 4 single-hop);
//! - `retrieve_ms` (`p50`, `p99`) of the calls, and `retrieve_ms_after_first`: the same
//!   without each mode's first call (which may load the user's vectors into the cache).
//!
//! The harness never sees the answers beyond scoring, and sends nothing a user's client would
//! not: the server alone decides how memories are indexed and ranked.
//!
//! Without `--target` it spawns `memento mcp-server` on a temporary data directory, with
//! local embeddings from `--model-dir` when given (keyword-only without). `--pad N` first
//! writes N filler memories for the first conversation's user (random words, random unit
//! vectors), to measure retrieval latency at that size; use it for latency, not quality.

use memento::shared::domain::tool as tools;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use rmcp::model::CallToolRequestParams;
use serde::Serialize;
use serde_json::{Value, json};

use crate::servers::{
    McpClient as Client, connect_mcp as connect, mcp_server_command, memento_bin, spawn_mcp_server,
};
use dataset::{Conversation, Turn, load_dataset};

mod dataset;

/// Flags of `recall`.
#[derive(Debug, Clone, clap::Args)]
pub struct RecallArgs {
    /// Directory of LoCoMo-format conversation files (*.json), e.g.
    /// ../shared/datasets/locomo.
    #[arg(long, value_name = "DIR")]
    pub dataset: PathBuf,
    /// Which ranking to measure: keyword, semantic, hybrid, or all three.
    #[arg(long, default_value = "all", value_parser = ["keyword", "semantic", "hybrid", "all"])]
    pub mode: String,
    /// Directory for recall.json (created).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Base URL of a running memory server (e.g. http://127.0.0.1:8000). Omit to spawn
    /// `memento mcp-server` on a temporary data directory.
    #[arg(long)]
    pub target: Option<String>,
    /// Bearer token for --target.
    #[arg(long, env = "MEMENTO_MCP_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The spawned server's local embeddings model (config.json, model.safetensors,
    /// vocab.txt); without it the spawned server is keyword-only.
    #[arg(long, env = "MEMENTO_EMBEDDINGS__MODEL_DIR", value_name = "DIR")]
    pub model_dir: Option<PathBuf>,
    /// The `memento` binary to spawn (default: next to this one).
    #[arg(long)]
    pub memento_bin: Option<PathBuf>,
    /// Filler memories written first for the first conversation's user, whose conversation
    /// alone is then measured (latency at size; not a quality measure).
    #[arg(long, default_value_t = 0)]
    pub pad: u64,
    /// Extra environment for the spawned server, KEY=VALUE (repeatable), e.g.
    /// MEMENTO_EMBEDDINGS__SEMANTIC_WEIGHT=1.5.
    #[arg(long = "server-env", value_name = "KEY=VALUE")]
    pub server_env: Vec<String>,
}

/// Scores of one mode (or one category of it).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Scores {
    /// Questions asked.
    pub questions: u64,
    /// Share with an evidence turn in the top 5.
    pub hit_at_5: f64,
    /// Share with an evidence turn in the top 10.
    pub hit_at_10: f64,
    /// Mean share of evidence turns in the top 10.
    pub recall_at_10: f64,
}

/// One mode's results.
#[derive(Debug, Clone, Serialize)]
pub struct ModeReport {
    /// The scores over all questions (their fields stand at the top level of the JSON).
    #[serde(flatten)]
    pub all: Scores,
    /// The same by category ("1" multi-hop, "2" temporal, "3" open-domain, "4" single-hop).
    pub by_category: BTreeMap<String, Scores>,
    /// Latency of the retrieve_memories calls, milliseconds (`p50`, `p99`, `max`).
    pub retrieve_ms: BTreeMap<String, f64>,
    /// The same without the mode's first call (the cold load of the user's vectors).
    pub retrieve_ms_after_first: BTreeMap<String, f64>,
    /// Calls that failed.
    pub errors: u64,
}

/// Everything `recall.json` holds: one entry per mode measured, and `run` (the load).
#[derive(Debug, Clone, Serialize)]
pub struct RecallReport {
    /// Keyword ranking.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keyword: Option<ModeReport>,
    /// Meaning ranking.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub semantic: Option<ModeReport>,
    /// Both fused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hybrid: Option<ModeReport>,
    /// How the data was loaded.
    pub run: RunInfo,
}

/// The load phase.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    /// Conversation files.
    pub conversations: usize,
    /// Dialog turns stored.
    pub memories: u64,
    /// Filler memories added first (`--pad`).
    pub padded: u64,
    /// Wall time of the stores, seconds.
    pub store_seconds: f64,
    /// Stores per second.
    pub store_calls_per_s: f64,
    /// Store latency, milliseconds (`p50`, `p99`).
    pub store_ms: BTreeMap<String, f64>,
    /// Size of the data directory's database files after loading (spawned server only).
    pub db_bytes: Option<u64>,
    /// Whether the spawned server had embeddings.
    pub embeddings: bool,
}

/// Runs the benchmark and writes `recall.json`.
pub async fn run(args: RecallArgs) -> anyhow::Result<RecallReport> {
    let mut conversations = load_dataset(&args.dataset)?;
    if conversations.is_empty() {
        bail!("no *.json conversation in {}", args.dataset.display());
    }
    if args.pad > 0 {
        // A latency run: only the padded user's conversation, so every query runs at size.
        conversations.truncate(1);
    }
    let modes: Vec<&str> = match args.mode.as_str() {
        "all" => vec!["keyword", "semantic", "hybrid"],
        one => vec![one],
    };
    let dir = tempfile::tempdir().context("temporary data dir")?;
    if args.pad > 0 {
        if args.target.is_some() {
            bail!("--pad works with the spawned server only (it writes the store directly)");
        }
        pad(dir.path(), &conversations[0].user, args.pad).await?;
    }
    let mut server: Option<Child> = None;
    let base = match &args.target {
        Some(target) => target.trim_end_matches('/').to_owned(),
        None => {
            let (child, url) = spawn_server(&args, dir.path())?;
            server = Some(child);
            url
        }
    };
    let result = measure(&args, &conversations, &modes, &base, dir.path()).await;
    if let Some(mut child) = server {
        let _ = child.kill();
        let _ = child.wait();
    }
    let report = result?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("create {}", args.out.display()))?;
    let path = args.out.join("recall.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("write {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(report)
}

async fn measure(
    args: &RecallArgs,
    conversations: &[Conversation],
    modes: &[&str],
    base: &str,
    data_dir: &Path,
) -> anyhow::Result<RecallReport> {
    let client = Arc::new(connect(base, args.token.as_deref()).await?);
    // Load: each conversation's turns one after another, in dialog order, as its user's
    // assistant would store them; the conversations side by side (one client each).
    let started = Instant::now();
    let loads = conversations.iter().map(|conversation| {
        let client = client.clone();
        async move {
            let mut map = HashMap::new();
            let mut took = Vec::with_capacity(conversation.turns.len());
            for turn in &conversation.turns {
                let t0 = Instant::now();
                let id = store(&client, &conversation.user, turn)
                    .await
                    .with_context(|| format!("store {} of {}", turn.dia_id, conversation.user))?;
                took.push(t0.elapsed());
                map.insert(id, turn.dia_id.clone());
            }
            anyhow::Ok((map, took))
        }
    });
    let mut store_latency = Histogram::<u64>::new(3)?;
    let mut ids: Vec<HashMap<String, String>> = Vec::new();
    let mut stored = 0u64;
    for load in futures::future::join_all(loads).await {
        let (map, took) = load?;
        for t in took {
            store_latency.record(t.as_micros().max(1) as u64)?;
        }
        stored += map.len() as u64;
        ids.push(map);
    }
    let store_seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "stored {stored} turns of {} conversations in {store_seconds:.1} s ({:.0}/s)",
        conversations.len(),
        stored as f64 / store_seconds.max(1e-9)
    );
    let db_bytes = args.target.is_none().then(|| db_size(data_dir));
    let mut report = RecallReport {
        keyword: None,
        semantic: None,
        hybrid: None,
        run: RunInfo {
            conversations: conversations.len(),
            memories: stored,
            padded: args.pad,
            store_seconds,
            store_calls_per_s: stored as f64 / store_seconds.max(1e-9),
            store_ms: percentiles(&store_latency),
            db_bytes,
            embeddings: args.model_dir.is_some(),
        },
    };
    for mode in modes {
        let result = ask_all(&client, conversations, &ids, mode).await?;
        eprintln!(
            "{mode:<8} questions={} hit@5={:.3} hit@10={:.3} recall@10={:.3} p50={:.2} ms p99={:.2} ms \
             (after the first call: p99={:.2} ms) errors={}",
            result.all.questions,
            result.all.hit_at_5,
            result.all.hit_at_10,
            result.all.recall_at_10,
            result.retrieve_ms["p50"],
            result.retrieve_ms["p99"],
            result.retrieve_ms_after_first["p99"],
            result.errors
        );
        match *mode {
            "keyword" => report.keyword = Some(result),
            "semantic" => report.semantic = Some(result),
            _ => report.hybrid = Some(result),
        }
    }
    Ok(report)
}

#[derive(Default, Clone)]
struct Tally {
    questions: u64,
    hit5: u64,
    hit10: u64,
    recall: f64,
}

impl Tally {
    fn scores(&self) -> Scores {
        let n = self.questions.max(1) as f64;
        Scores {
            questions: self.questions,
            hit_at_5: self.hit5 as f64 / n,
            hit_at_10: self.hit10 as f64 / n,
            recall_at_10: self.recall / n,
        }
    }
}

async fn ask_all(
    client: &Client,
    conversations: &[Conversation],
    ids: &[HashMap<String, String>],
    mode: &str,
) -> anyhow::Result<ModeReport> {
    let mut all = Tally::default();
    let mut by_category: BTreeMap<u64, Tally> = BTreeMap::new();
    let mut latency = Histogram::<u64>::new(3)?;
    let mut after_first = Histogram::<u64>::new(3)?;
    let mut errors = 0;
    for (conversation, ids) in conversations.iter().zip(ids) {
        for question in &conversation.questions {
            let t0 = Instant::now();
            let found = retrieve(client, &conversation.user, &question.text, mode).await;
            let took = t0.elapsed().as_micros().max(1) as u64;
            if !latency.is_empty() {
                after_first.record(took)?;
            }
            latency.record(took)?;
            let found: Vec<String> = match found {
                Ok(found) => found.iter().filter_map(|id| ids.get(id).cloned()).collect(),
                Err(error) => {
                    if errors == 0 {
                        eprintln!("{mode}: retrieve failed: {error:#}");
                    }
                    errors += 1;
                    Vec::new()
                }
            };
            let evidence: HashSet<&str> = question.evidence.iter().map(String::as_str).collect();
            let in_top = |k: usize| found.iter().take(k).any(|d| evidence.contains(d.as_str()));
            let recalled = found
                .iter()
                .take(10)
                .filter(|d| evidence.contains(d.as_str()))
                .collect::<HashSet<_>>()
                .len() as f64
                / evidence.len().max(1) as f64;
            for tally in [&mut all, by_category.entry(question.category).or_default()] {
                tally.questions += 1;
                tally.hit5 += u64::from(in_top(5));
                tally.hit10 += u64::from(in_top(10));
                tally.recall += recalled;
            }
        }
    }
    Ok(ModeReport {
        all: all.scores(),
        by_category: by_category
            .into_iter()
            .map(|(c, t)| (c.to_string(), t.scores()))
            .collect(),
        retrieve_ms: percentiles(&latency),
        retrieve_ms_after_first: percentiles(&after_first),
        errors,
    })
}

fn percentiles(h: &Histogram<u64>) -> BTreeMap<String, f64> {
    let ms = |v: u64| v as f64 / 1000.0;
    BTreeMap::from([
        ("p50".to_owned(), ms(h.value_at_quantile(0.5))),
        ("p99".to_owned(), ms(h.value_at_quantile(0.99))),
        ("max".to_owned(), ms(h.max())),
    ])
}

async fn store(client: &Client, user: &str, turn: &Turn) -> anyhow::Result<String> {
    let mut params = CallToolRequestParams::new(tools::STORE_MEMORY);
    params.arguments = match json!({ "user_id": user, "content": turn.content }) {
        Value::Object(map) => Some(map),
        _ => None,
    };
    let mut meta = rmcp::model::JsonObject::new();
    meta.insert(
        memento::shared::domain::CREATED_AT_META_KEY.to_owned(),
        json!(turn.created_at.to_rfc3339()),
    );
    params.meta = Some(rmcp::model::RequestMetaObject::from(meta));
    let result = client.peer().call_tool(params).await?;
    if result.is_error == Some(true) {
        bail!("store_memory failed: {:?}", result.content);
    }
    result
        .structured_content
        .as_ref()
        .and_then(|s| s["id"].as_str())
        .map(str::to_owned)
        .context("store_memory answered no id")
}

async fn retrieve(
    client: &Client,
    user: &str,
    query: &str,
    mode: &str,
) -> anyhow::Result<Vec<String>> {
    let mut params = CallToolRequestParams::new(tools::RETRIEVE_MEMORIES);
    params.arguments = match json!({ "user_id": user, "query": query, "limit": 10, "mode": mode }) {
        Value::Object(map) => Some(map),
        _ => None,
    };
    let result = client.peer().call_tool(params).await?;
    if result.is_error == Some(true) {
        bail!("retrieve_memories failed: {:?}", result.content);
    }
    Ok(result
        .structured_content
        .as_ref()
        .and_then(|s| s["memories"].as_array())
        .map(|list| {
            list.iter()
                .filter_map(|m| m["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default())
}

fn spawn_server(args: &RecallArgs, data_dir: &Path) -> anyhow::Result<(Child, String)> {
    let bin = memento_bin(args.memento_bin.as_deref())?;
    let mut command = mcp_server_command(&bin, data_dir);
    command
        .arg("--insecure-no-token")
        .env_remove("MEMENTO_MCP_TOKEN");
    match &args.model_dir {
        Some(dir) => {
            command
                .env("MEMENTO_EMBEDDINGS__PROVIDER", "local")
                .env("MEMENTO_EMBEDDINGS__MODEL_DIR", dir);
        }
        None => {
            command.env("MEMENTO_EMBEDDINGS__PROVIDER", "none");
        }
    }
    for pair in &args.server_env {
        let (key, value) = pair
            .split_once('=')
            .with_context(|| format!("--server-env {pair:?}: expected KEY=VALUE"))?;
        command.env(key, value);
    }
    // The server writes its address to a ready file once it listens (`--ready-file`).
    spawn_mcp_server(command, &bin)
}

fn db_size(dir: &Path) -> u64 {
    ["memento.db", "memento.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.len())
        .sum()
}

/// Writes `count` filler memories (random words, random unit vectors of the model's width,
/// 384) for `user` straight into the store in `dir`.
async fn pad(dir: &Path, user: &str, count: u64) -> anyhow::Result<()> {
    use memento::memory_server::storage::{MemoryStore, NewMemory, SqliteOptions, SqliteStore};
    let store = SqliteStore::open(dir, &SqliteOptions::default())?;
    let user = memento::shared::domain::UserId::parse(user)?;
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let started = Instant::now();
    let mut pending = Vec::new();
    for i in 0..count {
        let words: Vec<String> = (0..12)
            .map(|_| format!("filler{}", next() % 5000))
            .collect();
        let mut vector: Vec<f32> = (0..384)
            .map(|_| (next() % 20001) as f32 / 10000.0 - 1.0)
            .collect();
        memento::memory_server::embeddings::normalize(&mut vector);
        pending.push(store.store(NewMemory {
            user: user.clone(),
            content: words.join(" "),
            filename: format!("filler_{i}.txt"),
            description: String::new(),
            tags: Vec::new(),
            idempotency_key: None,
            created_at: None,
            embedding: Some(vector),
            embedding_model: Some("filler".into()),
        }));
        if pending.len() >= 2048 {
            for stored in futures::future::join_all(pending.drain(..)).await {
                stored?;
            }
        }
    }
    for stored in futures::future::join_all(pending).await {
        stored?;
    }
    eprintln!(
        "padded {count} filler memories for {user} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
