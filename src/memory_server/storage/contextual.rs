//! Hybrid ranking in context (SQLite): bm25 with tunable `k1` and `b`, a linear fusion with
//! cosine, and the conversation around each memory.
//!
//! Measured on LoCoMo (BENCHMARKS.md, issue 15): FTS5's own `bm25()` fused with cosine by
//! reciprocal rank finds an evidence turn in the top 10 for 63 % of the questions, no better
//! than keywords alone; the answer to a question often sits in the turn *next to* the one
//! that shares its words, or in the same conversation. So:
//!
//! 1. **Keyword scores** are bm25 computed here rather than by FTS5's `bm25()` (whose
//!    `k1` = 1.2 and `b` = 0.75 are fixed; short chat turns rank better with a lower
//!    saturation). The numbers are FTS5's own: each query word is stemmed by the index's
//!    tokenizer (an in-memory FTS5 table, the word written after the user's scope prefix as
//!    the index writes it), its postings are read from the index through an `fts5vocab` table
//!    ([`CREATE_TERMS_TABLE`], made per reader connection), and document lengths come from
//!    `memories_fts_docsize`. Column weights are the keyword search's (content 1,
//!    description 2, filename 3, tags 2); `N` is the user's memory count and the average
//!    length that of the memories matched.
//! 2. **Fusion** is linear: keyword score / best keyword score + `semantic_weight` x cosine
//!    rescaled over the semantic candidates (the lowest kept 0, the best 1).
//! 3. **Context**: the [`ANCHORS`] best fused memories each open a run of the user's
//!    memories around it in store order (`created_at`, then rowid), [`RUN_SIDE`] on each side
//!    at most and within `window` in time. A memory in a run scores its fused score, plus
//!    `neighbour_weight / k` x the fused score of its k-th neighbour on each side (k up to
//!    `neighbours`, within `window`), plus `episode_weight` x the best fused score within
//!    `window` of it. A conversation's turns rise together: the question beside its answer,
//!    a story told over several turns.
//!
//! Everything here uses what any memory store has: the text, the user, `created_at` and
//! the store order. Falls back to the reciprocal-rank path (`vectors::ranked_rowids`) when
//! the fts5vocab table or the stemmer is unavailable, or `fusion = "rrf"`.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::fts::scope_prefix;
use super::vectors::{self, VectorIndex};
use super::{SearchQuery, StorageError};
use crate::shared::domain::FTS_TOKENIZER;

/// The per-connection `fts5vocab` table over `memories_fts` (one row per term occurrence:
/// `term`, `doc`, `col`, `offset`). A TEMP table: no schema change, made by each reader.
pub(crate) const CREATE_TERMS_TABLE: &str = "CREATE VIRTUAL TABLE IF NOT EXISTS \
     temp.memento_fts_terms USING fts5vocab(main, 'memories_fts', 'instance')";

/// Columns of `memories_fts` and their weights (as the keyword search's `bm25()` call).
const COLUMNS: [(&str, f32); 4] = [
    ("content", 1.0),
    ("description", 2.0),
    ("filename", 3.0),
    ("tags", 2.0),
];

/// How many of the best fused memories open a context run.
pub(crate) const ANCHORS: usize = 10;

/// Most memories read on each side of an anchor.
pub(crate) const RUN_SIDE: usize = 64;

/// Most postings read for one query term (a word in more memories than this counts as
/// found in these only; its weight is then near zero anyway).
const MAX_POSTINGS: usize = 200_000;

/// How keyword and meaning scores are combined in hybrid search.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fusion {
    /// bm25 (own `k1`/`b`) / its best + weight x rescaled cosine, then context (SQLite;
    /// PostgreSQL fuses by reciprocal rank).
    #[default]
    Linear,
    /// Reciprocal rank fusion of FTS5's `bm25()` ranking and the cosine ranking.
    Rrf,
}

/// The hybrid ranking's parameters (`[embeddings]` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HybridRanking {
    /// How the two scores are combined.
    pub fusion: Fusion,
    /// bm25 term-frequency saturation.
    pub bm25_k1: f32,
    /// bm25 length normalisation (0: none, 1: full).
    pub bm25_b: f32,
    /// Weight of each neighbour's fused score (divided by its distance).
    pub neighbour_weight: f32,
    /// Neighbours counted on each side.
    pub neighbours: usize,
    /// Weight of the best fused score within `window`.
    pub episode_weight: f32,
    /// How far in time a neighbour or an episode reaches (0: no context).
    pub window: Duration,
}

impl Default for HybridRanking {
    fn default() -> Self {
        HybridRanking {
            fusion: Fusion::Linear,
            bm25_k1: 0.6,
            bm25_b: 0.3,
            neighbour_weight: 0.4,
            neighbours: 2,
            episode_weight: 0.3,
            window: Duration::from_secs(600),
        }
    }
}

/// bm25 of every memory in the postings. `terms`: per query term, its occurrences as
/// `(rowid, column index into COLUMNS)`; `lengths`: tokens per memory (all columns);
/// `docs`: the user's memory count. A term's weight is FTS5's `ln((N - n + 0.5) / (n +
/// 0.5))` (floored at 1e-6); the average length is that of the memories in `lengths`.
pub(crate) fn bm25_scores(
    terms: &[Vec<(i64, usize)>],
    lengths: &HashMap<i64, f32>,
    docs: usize,
    k1: f32,
    b: f32,
) -> HashMap<i64, f32> {
    let avgdl = if lengths.is_empty() {
        1.0
    } else {
        (lengths.values().sum::<f32>() / lengths.len() as f32).max(1.0)
    };
    let mut scores: HashMap<i64, f32> = HashMap::new();
    for postings in terms {
        let mut freq: HashMap<i64, f32> = HashMap::new();
        for &(doc, col) in postings {
            *freq.entry(doc).or_default() += COLUMNS.get(col).map_or(1.0, |c| c.1);
        }
        if freq.is_empty() {
            continue;
        }
        let n = freq.len() as f64;
        let idf = ((docs as f64 - n + 0.5) / (n + 0.5)).ln();
        let idf = if idf <= 0.0 { 1e-6 } else { idf as f32 };
        for (doc, f) in freq {
            let d = lengths.get(&doc).copied().unwrap_or(avgdl);
            let norm = k1 * (1.0 - b + b * d / avgdl);
            *scores.entry(doc).or_default() += idf * f * (k1 + 1.0) / (f + norm);
        }
    }
    scores
}

/// Linear fusion: keyword / best keyword + `weight` x the cosine rescaled over `semantic`
/// (best first: its last kept 0, its first 1).
pub(crate) fn fuse_linear(
    keyword: &HashMap<i64, f32>,
    semantic: &[(f32, i64)],
    weight: f32,
) -> HashMap<i64, f32> {
    let best = keyword.values().copied().fold(0.0f32, f32::max);
    let mut out: HashMap<i64, f32> = if best > 0.0 {
        keyword.iter().map(|(&r, &s)| (r, s / best)).collect()
    } else {
        HashMap::new()
    };
    if let (Some(hi), Some(lo)) = (semantic.first(), semantic.last())
        && hi.0 > lo.0
    {
        let span = hi.0 - lo.0;
        for &(cosine, rowid) in semantic {
            *out.entry(rowid).or_default() += weight * (cosine - lo.0) / span;
        }
    }
    out
}

/// Scores in context for one run of memories in store order (`(rowid, created_at in
/// microseconds)`): own fused score, plus neighbours' (`neighbour_weight / k` each, k up to
/// `neighbours` on each side, within `window`), plus `episode_weight` x the best fused score
/// within `window`.
pub(crate) fn in_context(
    run: &[(i64, i64)],
    base: &HashMap<i64, f32>,
    ranking: &HybridRanking,
) -> Vec<(i64, f32)> {
    let window = u64::try_from(ranking.window.as_micros()).unwrap_or(u64::MAX);
    let score = |i: usize| base.get(&run[i].0).copied().unwrap_or(0.0);
    let near = |i: usize, j: usize| run[i].1.abs_diff(run[j].1) <= window;
    (0..run.len())
        .map(|i| {
            let mut total = score(i);
            for k in 1..=ranking.neighbours {
                let weight = ranking.neighbour_weight / k as f32;
                if let Some(j) = i.checked_sub(k)
                    && near(i, j)
                {
                    total += weight * score(j);
                }
                if i + k < run.len() && near(i, i + k) {
                    total += weight * score(i + k);
                }
            }
            if ranking.episode_weight > 0.0 {
                let best = (0..run.len())
                    .filter(|&j| near(i, j))
                    .map(score)
                    .fold(0.0f32, f32::max);
                total += ranking.episode_weight * best;
            }
            (run[i].0, total)
        })
        .collect()
}

/// Final order: `scores` best first (ties: the older rowid first).
pub(crate) fn order(scores: HashMap<i64, f32>) -> Vec<i64> {
    let mut all: Vec<(f32, i64)> = scores.into_iter().map(|(r, s)| (s, r)).collect();
    all.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    all.into_iter().map(|(_, r)| r).collect()
}

thread_local! {
    /// An in-memory FTS5 table with the index's tokenizer, and its fts5vocab: stems query
    /// words exactly as the index stemmed the stored ones. `None` when it cannot be made.
    static STEMMER: RefCell<Option<Connection>> = RefCell::new(open_stemmer());
}

fn open_stemmer() -> Option<Connection> {
    let conn = Connection::open_in_memory().ok()?;
    conn.execute_batch(&format!(
        "CREATE VIRTUAL TABLE stem USING fts5 (t, tokenize = '{FTS_TOKENIZER}');
         CREATE VIRTUAL TABLE stem_terms USING fts5vocab(stem, 'instance');"
    ))
    .map_err(|error| tracing::warn!(%error, "cannot create the FTS5 stemmer table"))
    .ok()?;
    Some(conn)
}

/// The index terms of `words` written after `prefix` (one term per word, in order), or
/// `None` when the stemmer is unavailable or a word did not give exactly one token.
pub(crate) fn index_terms(prefix: &str, words: &[String]) -> Option<Vec<String>> {
    if words.is_empty() {
        return Some(Vec::new());
    }
    let text = words
        .iter()
        .map(|w| format!("{prefix}{w}"))
        .collect::<Vec<_>>()
        .join(" ");
    STEMMER.with(|cell| {
        let guard = cell.borrow();
        let conn = guard.as_ref()?;
        let run = || -> rusqlite::Result<Vec<String>> {
            conn.execute("DELETE FROM stem", [])?;
            conn.execute("INSERT INTO stem (rowid, t) VALUES (1, ?1)", [&text])?;
            let mut stmt = conn.prepare_cached("SELECT term FROM stem_terms ORDER BY offset")?;
            let rows = stmt.query_map([], |row| row.get::<_, String>(0))?;
            rows.collect()
        };
        match run() {
            Ok(terms) if terms.len() == words.len() => Some(terms),
            Ok(_) => None,
            Err(error) => {
                tracing::warn!(%error, "FTS5 stemmer failed");
                None
            }
        }
    })
}

/// Tokens per column from a `memories_fts_docsize.sz` blob (SQLite varints, one per
/// column), summed.
pub(crate) fn docsize_tokens(blob: &[u8]) -> u64 {
    let mut total = 0u64;
    let mut at = 0;
    while at < blob.len() {
        let (value, used) = varint(&blob[at..]);
        total += value;
        at += used.max(1);
    }
    total
}

/// A SQLite varint: big-endian groups of 7 bits, the high bit set on all but the last;
/// the ninth byte carries 8 bits.
fn varint(bytes: &[u8]) -> (u64, usize) {
    let mut value = 0u64;
    for (i, &byte) in bytes.iter().enumerate().take(9) {
        if i == 8 {
            return ((value << 8) | u64::from(byte), 9);
        }
        value = (value << 7) | u64::from(byte & 0x7f);
        if byte & 0x80 == 0 {
            return (value, i + 1);
        }
    }
    (value, bytes.len().min(9))
}

/// Hybrid search of `query` (which has `vector`) in context. `Ok(None)`: this path is not
/// available on this connection (see the module doc); the caller ranks by reciprocal rank.
pub(super) fn ranked_rowids(
    conn: &Connection,
    index: &VectorIndex,
    query: &SearchQuery,
    vector: &[f32],
) -> Result<Option<Vec<i64>>, StorageError> {
    let ranking = &query.ranking;
    if ranking.fusion != Fusion::Linear {
        return Ok(None);
    }
    let filtered = vectors::is_filtered(query);
    let (candidates, depth) = vectors::search_depths(query);
    let approx = index.top(conn, query.user.as_str(), vector, candidates)?;
    let mut semantic = vectors::exact_rescore(conn, &approx, vector)?;
    if filtered {
        let ids: Vec<i64> = semantic.iter().map(|s| s.1).collect();
        let kept = vectors::passing_filters(conn, query, &ids)?;
        semantic.retain(|s| kept.contains(&s.1));
    }
    semantic.truncate(depth);
    // The user's memory count for bm25's N: the vectors just scanned (counting the rows
    // again would read the whole user's index: ~3 ms at 100,000).
    let count = index.cached_len(query.user.as_str());
    let Some(mut keyword) = keyword_scores(conn, query, count)? else {
        return Ok(None);
    };
    if filtered && !keyword.is_empty() {
        let ids: Vec<i64> = keyword.keys().copied().collect();
        let kept = vectors::passing_filters(conn, query, &ids)?;
        keyword.retain(|r, _| kept.contains(r));
    }
    let base = fuse_linear(&keyword, &semantic, query.semantic_weight);
    let mut scores = base.clone();
    if !ranking.window.is_zero() && (ranking.episode_weight > 0.0 || ranking.neighbour_weight > 0.0)
    {
        let mut anchors: Vec<(f32, i64)> = base.iter().map(|(&r, &s)| (s, r)).collect();
        anchors.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        anchors.truncate(ANCHORS);
        let mut seen_runs: HashSet<Vec<i64>> = HashSet::new();
        for (_, anchor) in anchors {
            let mut run = context_run(conn, query, anchor, ranking.window)?;
            if filtered && !run.is_empty() {
                let ids: Vec<i64> = run.iter().map(|r| r.0).collect();
                let kept = vectors::passing_filters(conn, query, &ids)?;
                run.retain(|r| kept.contains(&r.0));
            }
            if !seen_runs.insert(run.iter().map(|r| r.0).collect()) {
                continue;
            }
            for (rowid, score) in in_context(&run, &base, ranking) {
                // Never below the fused score; a memory in several runs keeps its best.
                let slot = scores.entry(rowid).or_insert(0.0);
                *slot = slot.max(score);
            }
        }
    }
    Ok(Some(
        order(scores)
            .into_iter()
            .skip(query.offset as usize)
            .take(query.limit as usize)
            .collect(),
    ))
}

/// bm25 of the user's memories matching the query's terms (empty without terms); `None`
/// when the fts5vocab table or the stemmer is unavailable. `count`: the user's memory count
/// when known (else counted).
fn keyword_scores(
    conn: &Connection,
    query: &SearchQuery,
    count: Option<usize>,
) -> Result<Option<HashMap<i64, f32>>, StorageError> {
    let Some(terms) = query.terms.as_ref().filter(|t| !t.is_empty()) else {
        return Ok(Some(HashMap::new()));
    };
    let Some(user_no) = super::sql::user_number(conn, &query.user, false)? else {
        return Ok(Some(HashMap::new()));
    };
    let Some(stems) = index_terms(&scope_prefix(user_no), terms.terms()) else {
        return Ok(None);
    };
    let Ok(mut stmt) =
        conn.prepare_cached("SELECT doc, col FROM temp.memento_fts_terms WHERE term = ?1")
    else {
        return Ok(None);
    };
    let mut postings: Vec<Vec<(i64, usize)>> = Vec::with_capacity(stems.len());
    let mut docs: HashSet<i64> = HashSet::new();
    for stem in &stems {
        let mut list = Vec::new();
        let mut rows = stmt.query([stem])?;
        while let Some(row) = rows.next()? {
            let doc: i64 = row.get(0)?;
            let col: String = row.get(1)?;
            let col = COLUMNS.iter().position(|c| c.0 == col).unwrap_or(0);
            list.push((doc, col));
            docs.insert(doc);
            if list.len() >= MAX_POSTINGS {
                break;
            }
        }
        postings.push(list);
    }
    if docs.is_empty() {
        return Ok(Some(HashMap::new()));
    }
    let count = match count {
        Some(count) => count,
        None => {
            let counted: i64 = conn
                .prepare_cached("SELECT count(*) FROM memories WHERE user_id = ?1")?
                .query_row([query.user.as_str()], |row| row.get(0))?;
            usize::try_from(counted).unwrap_or(0)
        }
    };
    let mut lengths: HashMap<i64, f32> = HashMap::with_capacity(docs.len());
    let mut size = conn.prepare_cached("SELECT sz FROM memories_fts_docsize WHERE id = ?1")?;
    for &doc in &docs {
        if let Some(blob) = size
            .query_row([doc], |row| row.get::<_, Vec<u8>>(0))
            .optional()?
        {
            lengths.insert(doc, docsize_tokens(&blob) as f32);
        }
    }
    let ranking = &query.ranking;
    Ok(Some(bm25_scores(
        &postings,
        &lengths,
        count.max(docs.len()),
        ranking.bm25_k1,
        ranking.bm25_b,
    )))
}

/// The user's memories around `anchor` in store order (`created_at`, rowid): up to
/// [`RUN_SIDE`] before and after it, within `window` in time, oldest first.
fn context_run(
    conn: &Connection,
    query: &SearchQuery,
    anchor: i64,
    window: Duration,
) -> Result<Vec<(i64, i64)>, StorageError> {
    let Some(at) = conn
        .prepare_cached("SELECT created_at FROM memories WHERE rowid = ?1 AND user_id = ?2")?
        .query_row((anchor, query.user.as_str()), |row| row.get::<_, i64>(0))
        .optional()?
    else {
        return Ok(Vec::new());
    };
    let reach = i64::try_from(window.as_micros()).unwrap_or(i64::MAX);
    let side = RUN_SIDE as i64;
    let mut before: Vec<(i64, i64)> = conn
        .prepare_cached(
            "SELECT rowid, created_at FROM memories WHERE user_id = ?1 \
             AND (created_at, rowid) < (?2, ?3) AND created_at >= ?4 \
             ORDER BY created_at DESC, rowid DESC LIMIT ?5",
        )?
        .query_map(
            (
                query.user.as_str(),
                at,
                anchor,
                at.saturating_sub(reach),
                side,
            ),
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?
        .collect::<Result<_, _>>()?;
    before.reverse();
    let after: Vec<(i64, i64)> = conn
        .prepare_cached(
            "SELECT rowid, created_at FROM memories WHERE user_id = ?1 \
             AND (created_at, rowid) > (?2, ?3) AND created_at <= ?4 \
             ORDER BY created_at, rowid LIMIT ?5",
        )?
        .query_map(
            (
                query.user.as_str(),
                at,
                anchor,
                at.saturating_add(reach),
                side,
            ),
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?
        .collect::<Result<_, _>>()?;
    before.push((anchor, at));
    before.extend(after);
    Ok(before)
}

#[cfg(test)]
#[path = "contextual/tests.rs"]
mod tests;
