//! `memento export` and `memento import`: memories out of and into a store, as the seed's
//! directory layout or as JSONL. Opens nothing itself: the caller passes the store (the CLI
//! opens it from `--data-dir`, like the servers).
//!
//! - **Seed layout**: a folder per user, one file per memory named `YYYYMMDD_HHMMSS_<filename>`
//!   (the store time in UTC, seconds). Export writes a `description:` / `tags:` header, a
//!   blank line, then the text; import reads files with or without that header.
//! - **JSONL**: one [`record::Record`] per line, every field kept (time to the microsecond).
//!
//! Import is idempotent: each memory keeps its original time, and the store skips one whose
//! user, filename, content and second are already there (see `NewMemory::created_at`). It
//! never stops at a bad file or line: that item is skipped with a reason, and nothing stored
//! is ever changed. Only the given directory and the user folders directly in it are read;
//! symbolic links, nested folders, names that are not valid user ids and oversized files are
//! skipped with a reason.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use crate::memory_server::storage::{ListQuery, MemoryStore, StorageError};
use crate::memory_server::tools::{Limits, StoreArgs, TagsArg, prepare_store};
use crate::shared::domain::UserId;

pub mod record;

use record::{Record, SeedError};

/// Memories read per storage page while exporting.
const EXPORT_PAGE: u32 = 200;
/// Room for a seed header and JSON escaping above the largest content.
const OVERHEAD_BYTES: u64 = 64 * 1024;

/// Export format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A folder per user of `YYYYMMDD_HHMMSS_<filename>` files.
    Seed,
    /// `memories.jsonl`: one JSON object per memory, every field.
    Jsonl,
}

/// Why an export or import could not run at all (single items never cause this).
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// Reading or writing a path failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The export target is not an empty directory.
    #[error("{0} exists and is not an empty directory: export writes only into a new or empty one")]
    TargetNotEmpty(PathBuf),
    /// The import source is neither a directory nor a `.jsonl` file.
    #[error("{0} is neither a directory nor a .jsonl file")]
    BadSource(PathBuf),
    /// The store failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TransferError + '_ {
    move |source| TransferError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Told about each item as it is done (the CLI draws a progress bar with it).
pub trait Progress {
    /// The number of items, once known.
    fn total(&self, _items: u64) {}
    /// One item done.
    fn item(&self, _name: &str) {}
}

/// No progress reporting.
pub struct Quiet;
impl Progress for Quiet {}

// === Export ===

/// What an export wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportSummary {
    /// Memories written.
    pub memories: u64,
    /// Users with at least one memory written.
    pub users: u64,
    /// Files written.
    pub files: Vec<PathBuf>,
}

/// Writes `user`'s memories (every user's with `None`) into `to`, which must not exist or be
/// empty.
pub async fn export(
    store: &dyn MemoryStore,
    user: Option<&UserId>,
    format: Format,
    to: &Path,
    progress: &dyn Progress,
) -> Result<ExportSummary, TransferError> {
    prepare_target(to)?;
    let mut summary = ExportSummary::default();
    let mut jsonl = match format {
        Format::Jsonl => {
            let path = to.join("memories.jsonl");
            let file = File::options()
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(io(&path))?;
            summary.files.push(path.clone());
            Some((std::io::BufWriter::new(file), path))
        }
        Format::Seed => None,
    };
    let mut users_seen = std::collections::HashSet::new();
    let mut after = None;
    loop {
        let page = store
            .list(ListQuery {
                user: user.cloned(),
                after,
                limit: EXPORT_PAGE,
                with_content: true,
                ..ListQuery::default()
            })
            .await?;
        let Some(last) = page.last() else {
            break;
        };
        after = Some(last.position);
        for listed in page {
            let memory = listed.memory;
            users_seen.insert(listed.user.as_str().to_owned());
            match &mut jsonl {
                Some((writer, path)) => {
                    let line = serde_json::to_string(&Record {
                        user_id: listed.user.as_str().to_owned(),
                        id: Some(memory.id.to_string()),
                        filename: memory.filename.clone(),
                        stored_as: Some(memory.stored_as.clone()),
                        description: memory.description.clone(),
                        tags: memory.tags.clone(),
                        created_at: memory.created_at,
                        size_bytes: Some(memory.size_bytes),
                        content: memory.content,
                    })
                    .map_err(|e| io(path)(std::io::Error::other(e)))?;
                    writer.write_all(line.as_bytes()).map_err(io(path))?;
                    writer.write_all(b"\n").map_err(io(path))?;
                }
                None => {
                    // The user id is validated and the filename sanitised at store time: both
                    // are single, safe path components.
                    let dir = to.join(listed.user.as_str());
                    fs::create_dir_all(&dir).map_err(io(&dir))?;
                    let body =
                        record::seed_file_body(&memory.description, &memory.tags, &memory.content);
                    let path = write_new(&dir, memory.created_at, &memory.filename, &body)?;
                    summary.files.push(path);
                }
            }
            summary.memories += 1;
            progress.item(&memory.meta.filename);
        }
    }
    if let Some((mut writer, path)) = jsonl {
        writer.flush().map_err(io(&path))?;
        writer.get_ref().sync_all().map_err(io(&path))?;
    }
    summary.users = users_seen.len() as u64;
    Ok(summary)
}

fn prepare_target(to: &Path) -> Result<(), TransferError> {
    match fs::symlink_metadata(to) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(to).map_err(io(to))
        }
        Err(error) => Err(io(to)(error)),
        Ok(meta) if meta.is_dir() => {
            if fs::read_dir(to).map_err(io(to))?.next().is_some() {
                Err(TransferError::TargetNotEmpty(to.to_owned()))
            } else {
                Ok(())
            }
        }
        Ok(_) => Err(TransferError::TargetNotEmpty(to.to_owned())),
    }
}

/// Writes a new seed file; two memories with the same second and filename get `~2`, `~3`...
/// before the extension, so nothing is ever overwritten.
fn write_new(
    dir: &Path,
    created_at: chrono::DateTime<chrono::Utc>,
    filename: &str,
    body: &str,
) -> Result<PathBuf, TransferError> {
    let (stem, extension) = match filename.rsplit_once('.') {
        Some((stem, extension)) if !stem.is_empty() => (stem, Some(extension)),
        _ => (filename, None),
    };
    for n in 1u32.. {
        let name = match (n, extension) {
            (1, _) => filename.to_owned(),
            (n, Some(extension)) => format!("{stem}~{n}.{extension}"),
            (n, None) => format!("{stem}~{n}"),
        };
        let path = dir.join(record::seed_name(created_at, &name));
        match File::options().write(true).create_new(true).open(&path) {
            Ok(mut file) => {
                file.write_all(body.as_bytes()).map_err(io(&path))?;
                file.sync_all().map_err(io(&path))?;
                return Ok(path);
            }
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(error) => return Err(io(&path)(error)),
        }
    }
    unreachable!("u32 names run out only after four billion duplicates")
}

// === Import ===

/// What happened to one item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Stored.
    Imported,
    /// Already in the store (same user, filename, content and second): nothing stored.
    AlreadyPresent,
    /// Not imported, with the reason.
    Skipped(String),
}

/// What an import did, item by item.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportSummary {
    /// Memories stored.
    pub imported: u64,
    /// Memories already in the store.
    pub already_present: u64,
    /// Items skipped: `(where, why)`.
    pub skipped: Vec<(String, String)>,
}

impl ImportSummary {
    /// Counts one outcome.
    pub fn add(&mut self, source: &str, outcome: Outcome) {
        match outcome {
            Outcome::Imported => self.imported += 1,
            Outcome::AlreadyPresent => self.already_present += 1,
            Outcome::Skipped(reason) => self.skipped.push((source.to_owned(), reason)),
        }
    }
}

/// One thing found under `--from`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    /// A seed file of `user`.
    Seed { user: UserId, path: PathBuf },
    /// A JSONL file.
    Jsonl(PathBuf),
}

/// Imports a seed-style directory, a directory of `.jsonl` files, or one `.jsonl` file.
/// `user` overrides the owner of every memory (the folder name or the record's `user_id`).
pub async fn import(
    store: &dyn MemoryStore,
    max_content_bytes: usize,
    from: &Path,
    user: Option<&UserId>,
    progress: &dyn Progress,
) -> Result<ImportSummary, TransferError> {
    let limits = Limits { max_content_bytes };
    let max_file = max_content_bytes as u64 + OVERHEAD_BYTES;
    let mut summary = ImportSummary::default();
    let sources = discover(from, &mut summary)?;
    let mut total = 0u64;
    for source in &sources {
        total += match source {
            Source::Seed { .. } => 1,
            Source::Jsonl(path) => count_lines(path)?,
        };
    }
    progress.total(total);
    let mut batch = Vec::with_capacity(IMPORT_BATCH);
    for source in sources {
        match source {
            Source::Seed { user: owner, path } => {
                let shown = path.display().to_string();
                match read_seed(&path, max_file) {
                    Ok(file) => {
                        let args = StoreArgs {
                            user_id: user.unwrap_or(&owner).as_str().to_owned(),
                            content: file.content,
                            filename: Some(file.filename),
                            description: Some(file.description),
                            tags: Some(TagsArg::List(file.tags)),
                        };
                        batch.push((shown, args, file.created_at));
                        if batch.len() >= IMPORT_BATCH {
                            flush(store, limits, &mut batch, &mut summary, progress).await?;
                        }
                    }
                    Err(reason) => {
                        summary.add(&shown, Outcome::Skipped(reason));
                        progress.item(&shown);
                    }
                }
            }
            Source::Jsonl(path) => {
                let file = File::open(&path).map_err(io(&path))?;
                let mut reader = BufReader::new(file);
                let mut line_no = 0u64;
                loop {
                    line_no += 1;
                    let shown = format!("{}:{line_no}", path.display());
                    let line = match read_line(&mut reader, max_file).map_err(io(&path))? {
                        Line::End => break,
                        Line::TooLong => {
                            summary.add(
                                &shown,
                                Outcome::Skipped(format!("line longer than {max_file} bytes")),
                            );
                            progress.item(&shown);
                            continue;
                        }
                        Line::Text(line) => line,
                    };
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    match serde_json::from_slice::<Record>(&line) {
                        Ok(record) => {
                            let args = StoreArgs {
                                user_id: user
                                    .map(|u| u.as_str().to_owned())
                                    .unwrap_or(record.user_id),
                                content: record.content,
                                filename: Some(record.filename),
                                description: Some(record.description),
                                tags: Some(TagsArg::List(record.tags)),
                            };
                            batch.push((shown, args, record.created_at));
                            if batch.len() >= IMPORT_BATCH {
                                flush(store, limits, &mut batch, &mut summary, progress).await?;
                            }
                        }
                        Err(error) => {
                            summary.add(
                                &shown,
                                Outcome::Skipped(format!("not a memory record: {error}")),
                            );
                            progress.item(&shown);
                        }
                    }
                }
            }
        }
    }
    flush(store, limits, &mut batch, &mut summary, progress).await?;
    Ok(summary)
}

/// Memories stored concurrently: the store's writer commits them in one transaction (one
/// fsync) instead of one each.
const IMPORT_BATCH: usize = 64;

type Pending = (String, StoreArgs, chrono::DateTime<chrono::Utc>);

/// Stores the batch concurrently and records each outcome, in order.
async fn flush(
    store: &dyn MemoryStore,
    limits: Limits,
    batch: &mut Vec<Pending>,
    summary: &mut ImportSummary,
    progress: &dyn Progress,
) -> Result<(), TransferError> {
    let items: Vec<Pending> = std::mem::take(batch);
    let (shown, stores): (Vec<String>, Vec<_>) = items
        .into_iter()
        .map(|(shown, args, created_at)| (shown, store_one(store, limits, args, created_at)))
        .unzip();
    let outcomes = futures::future::join_all(stores).await;
    for (shown, outcome) in shown.iter().zip(outcomes) {
        summary.add(shown, outcome?);
        progress.item(shown);
    }
    Ok(())
}

/// Stores one memory through the tool layer's rules. Only a storage failure is an error
/// (the import stops: the store is unusable); a rule broken is a skipped item.
async fn store_one(
    store: &dyn MemoryStore,
    limits: Limits,
    args: StoreArgs,
    created_at: chrono::DateTime<chrono::Utc>,
) -> Result<Outcome, TransferError> {
    let memory = match prepare_store(args, limits, Some(created_at)) {
        Ok(memory) => memory,
        Err(error) => return Ok(Outcome::Skipped(error.to_string())),
    };
    let stored = store.store(memory).await?;
    Ok(if stored.replayed {
        Outcome::AlreadyPresent
    } else {
        Outcome::Imported
    })
}

fn discover(from: &Path, summary: &mut ImportSummary) -> Result<Vec<Source>, TransferError> {
    let meta = fs::metadata(from).map_err(io(from))?;
    if meta.is_file() {
        if is_jsonl(from) {
            return Ok(vec![Source::Jsonl(from.to_owned())]);
        }
        return Err(TransferError::BadSource(from.to_owned()));
    }
    if !meta.is_dir() {
        return Err(TransferError::BadSource(from.to_owned()));
    }
    let mut sources = Vec::new();
    for entry in sorted_entries(from)? {
        let path = entry.path();
        let shown = path.display().to_string();
        let kind = entry.file_type().map_err(io(&path))?;
        if kind.is_symlink() {
            summary.add(
                &shown,
                Outcome::Skipped("symbolic link: not followed".into()),
            );
        } else if kind.is_file() && is_jsonl(&path) {
            sources.push(Source::Jsonl(path));
        } else if kind.is_dir() {
            let name = entry.file_name();
            let user = match name.to_str().map(UserId::parse) {
                Some(Ok(user)) => user,
                _ => {
                    summary.add(
                        &shown,
                        Outcome::Skipped("folder name is not a valid user id".into()),
                    );
                    continue;
                }
            };
            for file in sorted_entries(&path)? {
                let file_path = file.path();
                let shown = file_path.display().to_string();
                let kind = file.file_type().map_err(io(&file_path))?;
                if kind.is_symlink() {
                    summary.add(
                        &shown,
                        Outcome::Skipped("symbolic link: not followed".into()),
                    );
                } else if !kind.is_file() {
                    summary.add(&shown, Outcome::Skipped("not a regular file".into()));
                } else {
                    sources.push(Source::Seed {
                        user: user.clone(),
                        path: file_path,
                    });
                }
            }
        } else {
            summary.add(
                &shown,
                Outcome::Skipped("neither a user folder nor a .jsonl file".into()),
            );
        }
    }
    Ok(sources)
}

fn sorted_entries(dir: &Path) -> Result<Vec<fs::DirEntry>, TransferError> {
    let mut entries = fs::read_dir(dir)
        .map_err(io(dir))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(io(dir))?;
    entries.sort_by_key(|e| e.file_name());
    Ok(entries)
}

fn is_jsonl(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "jsonl")
}

/// Reads one seed file (at most `max` bytes); the error is the reason to skip it.
fn read_seed(path: &Path, max: u64) -> Result<record::SeedFile, String> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| SeedError::Name.to_string())?;
    // The name is checked before the file is opened.
    record::parse_seed_name(name).map_err(|e| e.to_string())?;
    let file = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > max {
        return Err(format!("larger than {max} bytes"));
    }
    record::parse_seed_file(name, &bytes).map_err(|e| e.to_string())
}

enum Line {
    Text(Vec<u8>),
    TooLong,
    End,
}

/// Reads one line of at most `max` bytes; a longer one is consumed and reported.
fn read_line(reader: &mut impl BufRead, max: u64) -> std::io::Result<Line> {
    let mut bytes = Vec::new();
    let read = reader
        .by_ref()
        .take(max + 1)
        .read_until(b'\n', &mut bytes)?;
    if read == 0 {
        return Ok(Line::End);
    }
    if bytes.len() as u64 > max && !bytes.ends_with(b"\n") {
        // Skip the rest of the line.
        let mut rest = Vec::new();
        loop {
            rest.clear();
            let n = reader
                .by_ref()
                .take(64 * 1024)
                .read_until(b'\n', &mut rest)?;
            if n == 0 || rest.ends_with(b"\n") {
                break;
            }
        }
        return Ok(Line::TooLong);
    }
    Ok(Line::Text(bytes))
}

fn count_lines(path: &Path) -> Result<u64, TransferError> {
    let mut reader = BufReader::new(File::open(path).map_err(io(path))?);
    let mut count = 0u64;
    let mut buffer = Vec::new();
    loop {
        buffer.clear();
        let n = reader
            .by_ref()
            .take(1024 * 1024)
            .read_until(b'\n', &mut buffer)
            .map_err(io(path))?;
        if n == 0 {
            break;
        }
        if buffer.ends_with(b"\n") || n < 1024 * 1024 {
            count += 1;
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests;
