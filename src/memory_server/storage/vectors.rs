//! Memory vectors: kept in `memory_vectors` (one row per memory, the user's id beside it,
//! the vector as little-endian `f32`s), searched exactly per user, fused with bm25.
//!
//! Reading 100,000 vectors of 384 `f32`s from SQLite for every query would move 150 MB.
//! So each user's vectors are cached in memory on first search, quantised to `i8` (a scale
//! per vector: a quarter of the memory, and a scan of 100,000 takes a few milliseconds);
//! the best candidates of that scan are then re-scored exactly from their stored `f32`s.
//! The writer keeps loaded caches current after each commit (see `VectorIndex::insert`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{Connection, params_from_iter, types::Value};

use super::{SearchQuery, StorageError};

/// Constant of reciprocal rank fusion: `weight / (K + rank)`.
const RRF_K: f32 = 60.0;

/// Encodes a vector for the `vector` column.
pub(crate) fn to_blob(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Decodes a `vector` column.
pub(crate) fn from_blob(blob: &[u8]) -> Vec<f32> {
    blob.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// A user with more vectors than this is scanned in two passes: the Hamming distance of
/// the vectors' sign bits picks a pool of candidates, which the `i8` codes then rank.
const PREFILTER_ABOVE: usize = 16_384;

/// The smallest pool the sign-bit pass keeps (and at least 8 candidates per one wanted).
const PREFILTER_POOL: usize = 4_096;

/// One user's vectors, quantised: `i8` codes with a scale per vector, and the sign bits of
/// each vector (one bit per dimension) for the first pass over large users.
#[derive(Default)]
pub(crate) struct UserVectors {
    dims: usize,
    rowids: Vec<i64>,
    scales: Vec<f32>,
    codes: Vec<i8>,
    bits: Vec<u64>,
    slot: HashMap<i64, usize>,
}

/// `u64` words of sign bits per vector of `dims` dimensions.
fn words(dims: usize) -> usize {
    dims.div_ceil(64)
}

/// The sign bits of `v` (bit set: the value is positive).
fn sign_bits(v: &[f32]) -> Vec<u64> {
    let mut out = vec![0u64; words(v.len())];
    for (i, x) in v.iter().enumerate() {
        if *x > 0.0 {
            out[i / 64] |= 1 << (i % 64);
        }
    }
    out
}

impl UserVectors {
    pub(crate) fn upsert(&mut self, rowid: i64, vector: &[f32]) {
        if vector.is_empty() {
            return;
        }
        if self.rowids.is_empty() {
            self.dims = vector.len();
        }
        if vector.len() != self.dims {
            // Another model's vector: left out until `memento reindex --embeddings`.
            return;
        }
        let (scale, codes) = quantize(vector);
        let bits = sign_bits(vector);
        let (d, w) = (self.dims, words(self.dims));
        match self.slot.get(&rowid) {
            Some(&i) => {
                self.scales[i] = scale;
                self.codes[i * d..(i + 1) * d].copy_from_slice(&codes);
                self.bits[i * w..(i + 1) * w].copy_from_slice(&bits);
            }
            None => {
                self.slot.insert(rowid, self.rowids.len());
                self.rowids.push(rowid);
                self.scales.push(scale);
                self.codes.extend_from_slice(&codes);
                self.bits.extend_from_slice(&bits);
            }
        }
    }

    pub(crate) fn remove(&mut self, rowid: i64) {
        let Some(i) = self.slot.remove(&rowid) else {
            return;
        };
        let last = self.rowids.len() - 1;
        let (d, w) = (self.dims, words(self.dims));
        if i != last {
            let moved = self.rowids[last];
            self.rowids.swap(i, last);
            self.scales.swap(i, last);
            let (head, tail) = self.codes.split_at_mut(last * d);
            head[i * d..(i + 1) * d].copy_from_slice(&tail[..d]);
            let (head, tail) = self.bits.split_at_mut(last * w);
            head[i * w..(i + 1) * w].copy_from_slice(&tail[..w]);
            self.slot.insert(moved, i);
        }
        self.rowids.pop();
        self.scales.pop();
        self.codes.truncate(last * d);
        self.bits.truncate(last * w);
    }

    /// How many vectors.
    pub(crate) fn len(&self) -> usize {
        self.rowids.len()
    }

    /// The `n` best rowids by approximate cosine.
    pub(crate) fn top(&self, query: &[f32], n: usize) -> Vec<i64> {
        if query.len() != self.dims || self.rowids.is_empty() || n == 0 {
            return Vec::new();
        }
        let (_, q) = quantize(query);
        let d = self.dims;
        let score = |i: usize| -> (f32, i64) {
            (
                dot_i8(&self.codes[i * d..(i + 1) * d], &q) as f32 * self.scales[i],
                self.rowids[i],
            )
        };
        let pool = n.saturating_mul(8).max(PREFILTER_POOL);
        let mut scored: Vec<(f32, i64)> = if self.len() > PREFILTER_ABOVE && pool < self.len() {
            // First pass: sign bits (6 words for 384 dimensions), a fraction of a
            // millisecond for 100,000 vectors; the pool is then ranked by the codes.
            let qb = sign_bits(query);
            let w = qb.len();
            let mut distances: Vec<(u32, u32)> = self
                .bits
                .chunks_exact(w)
                .enumerate()
                .map(|(i, bits)| {
                    let distance = bits
                        .iter()
                        .zip(&qb)
                        .map(|(a, b)| (a ^ b).count_ones())
                        .sum();
                    (distance, i as u32)
                })
                .collect();
            distances.select_nth_unstable(pool - 1);
            distances[..pool]
                .iter()
                .map(|&(_, i)| score(i as usize))
                .collect()
        } else {
            (0..self.len()).map(score).collect()
        };
        let n = n.min(scored.len());
        if n < scored.len() {
            scored.select_nth_unstable_by(n - 1, |a, b| b.0.total_cmp(&a.0));
            scored.truncate(n);
        }
        scored.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
        scored.into_iter().map(|(_, rowid)| rowid).collect()
    }
}

/// `(scale, codes)` with `v ≈ scale * codes`.
fn quantize(v: &[f32]) -> (f32, Vec<i8>) {
    let max = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    if max == 0.0 {
        return (0.0, vec![0; v.len()]);
    }
    let scale = max / 127.0;
    let codes = v
        .iter()
        .map(|x| (x / scale).round().clamp(-127.0, 127.0) as i8)
        .collect();
    (scale, codes)
}

fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    let mut lanes = [0i32; 16];
    let chunks = a.len() / 16;
    for c in 0..chunks {
        let (x, y) = (&a[c * 16..c * 16 + 16], &b[c * 16..c * 16 + 16]);
        for l in 0..16 {
            lanes[l] += i32::from(x[l]) * i32::from(y[l]);
        }
    }
    let mut sum: i32 = lanes.iter().sum();
    for i in chunks * 16..a.len().min(b.len()) {
        sum += i32::from(a[i]) * i32::from(b[i]);
    }
    sum
}

type Entry = Arc<Mutex<Option<UserVectors>>>;

/// The per-user vector caches. Shared by the writer (which keeps loaded ones current after
/// each commit) and the readers (which load a user's on first search).
#[derive(Default)]
pub(crate) struct VectorIndex {
    users: Mutex<HashMap<String, Entry>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves a cache that is at worst stale; keep serving.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl VectorIndex {
    fn entry(&self, user: &str) -> Entry {
        lock(&self.users)
            .entry(user.to_owned())
            .or_insert_with(|| Arc::new(Mutex::new(None)))
            .clone()
    }

    /// After a commit that stored `vector` for `rowid`. Idempotent: a cache loaded after the
    /// commit already holds it.
    pub(crate) fn insert(&self, user: &str, rowid: i64, vector: &[f32]) {
        let entry = self.entry(user);
        if let Some(vectors) = lock(&entry).as_mut() {
            vectors.upsert(rowid, vector);
        }
    }

    /// After a commit that deleted `rowid`.
    pub(crate) fn remove(&self, user: &str, rowid: i64) {
        let entry = self.entry(user);
        if let Some(vectors) = lock(&entry).as_mut() {
            vectors.remove(rowid);
        }
    }

    /// How many vectors of `user` the cache holds (`None`: not loaded yet).
    pub(super) fn cached_len(&self, user: &str) -> Option<usize> {
        let entry = self.entry(user);
        let guard = lock(&entry);
        guard.as_ref().map(UserVectors::len)
    }

    /// The `n` best rowids of `user` by approximate cosine, loading the user's vectors on
    /// first use. The entry's lock is held while loading, so a commit's update waits for the
    /// load and then applies on top of it (or finds its row already there).
    pub(super) fn top(
        &self,
        conn: &Connection,
        user: &str,
        query: &[f32],
        n: usize,
    ) -> Result<Vec<i64>, StorageError> {
        let entry = self.entry(user);
        let mut guard = lock(&entry);
        if guard.is_none() {
            let mut vectors = UserVectors::default();
            let mut stmt = conn.prepare_cached(
                "SELECT memory_rowid, vector FROM memory_vectors WHERE user_id = ?1 \
                 ORDER BY memory_rowid",
            )?;
            let mut rows = stmt.query([user])?;
            while let Some(row) = rows.next()? {
                let blob: Vec<u8> = row.get(1)?;
                vectors.upsert(row.get(0)?, &from_blob(&blob));
            }
            *guard = Some(vectors);
        }
        Ok(guard.as_ref().map(|v| v.top(query, n)).unwrap_or_default())
    }
}

/// The error of a semantic search on a server without an embeddings provider.
pub(crate) fn no_provider() -> StorageError {
    StorageError::Semantic(
        "mode \"semantic\" needs an embeddings provider, and this server has none \
         configured ([embeddings] provider = \"none\"): it ranks by keywords only; use \
         mode \"keyword\" or \"hybrid\""
            .into(),
    )
}

/// A PostgreSQL store's cache of one user's vectors (keyed by `memories.position`), kept in
/// step with the database however many daemons write to it: each row of `memory_vectors`
/// carries the id of the transaction that wrote it (`wtx`), and each refresh reads the rows
/// written by transactions at or after `horizon`, then moves `horizon` to the oldest
/// transaction still running at that read (`pg_snapshot_xmin`). A transaction that had not
/// committed then is at or after the new horizon, so its rows are read by a later refresh;
/// nothing is missed, and only the rows of recent transactions are read again.
#[derive(Default)]
pub(crate) struct SyncedUser {
    /// The user's vectors.
    pub(crate) vectors: UserVectors,
    /// Every row written by a transaction older than this is in `vectors`; `None`: not
    /// loaded yet.
    pub(crate) horizon: Option<i64>,
}

/// The per-user caches of a PostgreSQL store. A user's entry is locked (asynchronously)
/// while it is refreshed and scanned, so refreshes apply in order.
#[derive(Default)]
pub(crate) struct SyncedIndex {
    users: Mutex<HashMap<String, Arc<tokio::sync::Mutex<SyncedUser>>>>,
}

impl SyncedIndex {
    /// The entry of `user` (created empty, not loaded).
    pub(crate) fn user(&self, user: &str) -> Arc<tokio::sync::Mutex<SyncedUser>> {
        lock(&self.users)
            .entry(user.to_owned())
            .or_default()
            .clone()
    }

    /// After this process deleted `position` (another process's deletes are dropped when a
    /// search finds the memory gone).
    pub(crate) async fn forget(&self, user: &str, position: i64) {
        let entry = lock(&self.users).get(user).cloned();
        if let Some(entry) = entry {
            entry.lock().await.vectors.remove(position);
        }
    }
}

/// How many approximate candidates a vector search scans for, and how deep each ranking
/// goes, for `query`: `(candidates, depth)`.
pub(crate) fn search_depths(query: &SearchQuery) -> (usize, usize) {
    let wanted = (query.offset as usize + query.limit as usize).max(1);
    let depth = wanted.max(100);
    // Filters are applied after the scan: look deeper so enough candidates pass them.
    let candidates = if is_filtered(query) {
        depth * 10
    } else {
        depth + depth / 2
    };
    (candidates, depth)
}

/// True when the query filters by time or tags.
pub(crate) fn is_filtered(query: &SearchQuery) -> bool {
    query.since.is_some() || query.until.is_some() || !query.tags.is_empty()
}

/// Hybrid or semantic search (the query has a vector). Returns the page of rowids, best
/// first.
pub(super) fn ranked_rowids(
    conn: &Connection,
    index: &VectorIndex,
    query: &SearchQuery,
    vector: &[f32],
    keyword: impl FnOnce(usize) -> Result<Vec<i64>, StorageError>,
) -> Result<Vec<i64>, StorageError> {
    let (candidates, depth) = search_depths(query);
    let filtered = is_filtered(query);
    let approx = index.top(conn, query.user.as_str(), vector, candidates)?;
    let mut semantic = exact_rescore(conn, &approx, vector)?;
    if filtered {
        let kept = passing_filters(
            conn,
            query,
            &semantic.iter().map(|s| s.1).collect::<Vec<_>>(),
        )?;
        semantic.retain(|s| kept.contains(&s.1));
    }
    semantic.truncate(depth);
    let semantic: Vec<i64> = semantic.into_iter().map(|(_, rowid)| rowid).collect();
    let fused = if query.mode == super::SearchMode::Semantic {
        semantic
    } else {
        let keyword = keyword(depth)?;
        fuse(&keyword, &semantic, query.semantic_weight)
    };
    Ok(fused
        .into_iter()
        .skip(query.offset as usize)
        .take(query.limit as usize)
        .collect())
}

/// Weighted reciprocal rank fusion: `1 / (K + keyword rank) + w / (K + semantic rank)`.
pub(crate) fn fuse(keyword: &[i64], semantic: &[i64], semantic_weight: f32) -> Vec<i64> {
    let mut scores: HashMap<i64, f32> = HashMap::new();
    for (rank, rowid) in keyword.iter().enumerate() {
        *scores.entry(*rowid).or_default() += 1.0 / (RRF_K + rank as f32 + 1.0);
    }
    for (rank, rowid) in semantic.iter().enumerate() {
        *scores.entry(*rowid).or_default() += semantic_weight / (RRF_K + rank as f32 + 1.0);
    }
    let mut out: Vec<(f32, i64)> = scores.into_iter().map(|(r, s)| (s, r)).collect();
    out.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)));
    out.into_iter().map(|(_, rowid)| rowid).collect()
}

/// Exact cosine of the candidates (their stored `f32` vectors), best first.
pub(super) fn exact_rescore(
    conn: &Connection,
    rowids: &[i64],
    vector: &[f32],
) -> Result<Vec<(f32, i64)>, StorageError> {
    let mut stmt =
        conn.prepare_cached("SELECT vector FROM memory_vectors WHERE memory_rowid = ?1")?;
    let mut out = Vec::with_capacity(rowids.len());
    for &rowid in rowids {
        let blob: Option<Vec<u8>> =
            rusqlite::OptionalExtension::optional(stmt.query_row([rowid], |row| row.get(0)))?;
        if let Some(blob) = blob {
            let stored = from_blob(&blob);
            if stored.len() == vector.len() {
                out.push((
                    crate::memory_server::embeddings::bert::dot(&stored, vector),
                    rowid,
                ));
            }
        }
    }
    out.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)));
    Ok(out)
}

/// Which of `rowids` pass the query's user, time and tag filters.
pub(super) fn passing_filters(
    conn: &Connection,
    query: &SearchQuery,
    rowids: &[i64],
) -> Result<std::collections::HashSet<i64>, StorageError> {
    let mut kept = std::collections::HashSet::new();
    for chunk in rowids.chunks(500) {
        let mut args: Vec<Value> = vec![Value::Text(query.user.as_str().to_owned())];
        let mut sql = String::from("SELECT m.rowid FROM memories m WHERE m.user_id = ?1");
        super::sql::push_filters(&mut sql, &mut args, query);
        let mut marks = Vec::new();
        for rowid in chunk {
            args.push(Value::Integer(*rowid));
            marks.push(format!("?{}", args.len()));
        }
        sql.push_str(&format!(" AND m.rowid IN ({})", marks.join(", ")));
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map(params_from_iter(args), |row| row.get::<_, i64>(0))?;
        for row in rows {
            kept.insert(row?);
        }
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantised_scan_ranks_like_exact_cosine_and_survives_removal() {
        let mut user = UserVectors::default();
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let vectors: Vec<Vec<f32>> = (0..50)
            .map(|_| {
                let mut v: Vec<f32> = (0..32)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        (seed % 2001) as f32 / 1000.0 - 1.0
                    })
                    .collect();
                crate::memory_server::embeddings::normalize(&mut v);
                v
            })
            .collect();
        for (i, v) in vectors.iter().enumerate() {
            user.upsert(i as i64 + 1, v);
        }
        // Each vector finds itself first.
        for (i, v) in vectors.iter().enumerate().step_by(7) {
            assert_eq!(user.top(v, 1), vec![i as i64 + 1]);
        }
        user.remove(1);
        user.remove(50);
        assert_eq!(user.rowids.len(), 48);
        assert!(!user.top(&vectors[0], 48).contains(&1));
        assert_eq!(user.top(&vectors[10], 1), vec![11]);
        // A vector of another width is ignored, and a query of another width finds nothing.
        user.upsert(99, &[1.0; 8]);
        assert_eq!(user.rowids.len(), 48);
        assert!(user.top(&[1.0; 8], 5).is_empty());
    }

    /// Above the prefilter size the sign-bit pass keeps the nearest vectors: each of a
    /// sample of stored vectors, slightly perturbed, still finds itself first.
    #[test]
    fn a_large_user_is_prefiltered_by_sign_bits_without_losing_the_nearest() {
        let mut user = UserVectors::default();
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % 2001) as f32 / 1000.0 - 1.0
        };
        let count = PREFILTER_ABOVE + 1_000;
        let mut kept = Vec::new();
        for i in 0..count {
            let mut v: Vec<f32> = (0..64).map(|_| next()).collect();
            crate::memory_server::embeddings::normalize(&mut v);
            if i % 1_700 == 0 {
                kept.push((i as i64, v.clone()));
            }
            user.upsert(i as i64, &v);
        }
        assert_eq!(user.len(), count);
        for (rowid, v) in &kept {
            let mut query: Vec<f32> = v.iter().map(|x| x + next() * 0.02).collect();
            crate::memory_server::embeddings::normalize(&mut query);
            let top = user.top(&query, 10);
            assert_eq!(top.len(), 10);
            assert_eq!(top[0], *rowid);
        }
        // Removal keeps the bits in step with the codes.
        user.remove(kept[0].0);
        assert_eq!(user.bits.len(), user.len());
        assert_ne!(user.top(&kept[1].1, 1), vec![kept[0].0]);
        assert_eq!(user.top(&kept[1].1, 1), vec![kept[1].0]);
    }

    #[test]
    fn fusion_rewards_agreement_and_weights_the_semantic_list() {
        let fused = fuse(&[1, 2, 3], &[3, 1, 4], 1.0);
        assert_eq!(&fused[..2], &[1, 3]);
        assert_eq!(fused.len(), 4);
        // With no weight on meaning, the keyword order stands.
        assert_eq!(&fuse(&[1, 2, 3], &[3, 4], 0.0)[..3], &[1, 2, 3]);
        // A heavy semantic weight puts its first above keyword's first.
        assert_eq!(fuse(&[1, 2], &[5, 6], 3.0)[0], 5);
    }

    #[test]
    fn blobs_round_trip() {
        let v = vec![0.5f32, -1.25, 3.0];
        assert_eq!(from_blob(&to_blob(&v)), v);
    }
}
