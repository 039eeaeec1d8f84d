//! Group commit on a SQLite writer thread, shared by the memory store
//! (`memory_server::storage::engine`) and the SQLite conversation history
//! (`daemon::history::sqlite`).
//!
//! One thread owns the read-write connection. [`run_writer`] takes every job that queued up
//! meanwhile (up to a maximum), runs them in **one transaction** and commits once, so
//! concurrent writes share one fsync. Per-job savepoints would make FTS5 flush its pending
//! terms at every job (measured: a third of the memory store's writer time), so the fast path
//! has none; if a job fails, the batch is rolled back and each job re-run in its own
//! transaction, so one bad job never fails or undoes another. A job is answered only once
//! its transaction's fate is known.

use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::Connection;
use tokio::sync::oneshot;

/// A unit of work for the writer thread.
pub trait WriteJob: Send {
    /// Runs the job's statements inside the current transaction and keeps its result;
    /// returns `false` when the transaction must roll back. It may run again after a
    /// rollback, so it must not consume its inputs.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers the caller once the transaction's fate is known: the job's own result after
    /// a commit, or the commit's error.
    fn finish(self: Box<Self>, commit: Result<(), String>);
}

/// The error type of a writer's jobs: what a failed commit and a stopped writer become, and
/// which of the job's own errors roll the batch back.
pub trait JobError: Send + 'static {
    /// The writer is gone (or dropped the job unanswered).
    fn closed() -> Self;
    /// The transaction holding the job could not begin or commit.
    fn commit(message: String) -> Self;
    /// Whether this error of the job fails its transaction. Refusals that wrote nothing
    /// (a stale version, say) are answers and need not roll the batch back.
    fn rolls_back(&self) -> bool;
}

/// Runs on the writer thread after the commit of a job that succeeded (it runs even when
/// the caller has given up waiting).
pub type AfterCommit<T> = Box<dyn FnOnce(&T) + Send>;

struct Job<T, E, F> {
    work: F,
    result: Option<Result<T, E>>,
    reply: oneshot::Sender<Result<T, E>>,
    after: Option<AfterCommit<T>>,
}

impl<T, E, F> WriteJob for Job<T, E, F>
where
    T: Send,
    E: JobError,
    F: FnMut(&Connection) -> Result<T, E> + Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let result = (self.work)(conn);
        let ok = !matches!(&result, Err(error) if error.rolls_back());
        self.result = Some(result);
        ok
    }

    fn finish(self: Box<Self>, commit: Result<(), String>) {
        let reply = match (commit, self.result) {
            (Ok(()), Some(result)) => result,
            (Ok(()), None) => Err(E::closed()),
            (Err(message), _) => Err(E::commit(message)),
        };
        if let (Ok(value), Some(after)) = (&reply, self.after) {
            after(value);
        }
        // The caller may have given up (deadline, disconnect); nothing to do then.
        let _ = self.reply.send(reply);
    }
}

/// A job running `work` (then `after` once committed), and the answer to wait for with
/// [`answer`]. `work` may run twice (see the module doc), so it borrows what it needs.
pub fn job<T, E, F>(
    work: F,
    after: Option<AfterCommit<T>>,
) -> (Box<dyn WriteJob>, oneshot::Receiver<Result<T, E>>)
where
    T: Send + 'static,
    E: JobError,
    F: FnMut(&Connection) -> Result<T, E> + Send + 'static,
{
    let (reply, rx) = oneshot::channel();
    let job = Job {
        work,
        result: None,
        reply,
        after,
    };
    (Box::new(job), rx)
}

/// The job's answer; [`JobError::closed`] when the writer dropped it unanswered.
pub async fn answer<T, E: JobError>(rx: oneshot::Receiver<Result<T, E>>) -> Result<T, E> {
    rx.await.map_err(|_| E::closed())?
}

/// What a writer counts.
#[derive(Default, Debug)]
pub struct CommitCounters {
    /// Jobs committed.
    pub writes: AtomicU64,
    /// Transactions committed.
    pub commits: AtomicU64,
}

/// A message on a writer's queue: a job, or (`None`) the order to stop after this batch.
pub type Message = Option<Box<dyn WriteJob>>;

/// The writer thread's loop: takes up to `max_batch` queued jobs at a time, calls `before`
/// (housekeeping), and runs them in one transaction. Returns when the queue is disconnected
/// or a message converts to `None` (jobs queued behind it are left in the queue).
/// `what` names the writer in the error log.
pub fn run_writer<M: Into<Message>>(
    conn: &Connection,
    rx: &crossbeam_channel::Receiver<M>,
    max_batch: usize,
    counters: &CommitCounters,
    what: &'static str,
    mut before: impl FnMut(&Connection),
) {
    let max_batch = max_batch.max(1);
    let mut batch: Vec<Box<dyn WriteJob>> = Vec::with_capacity(max_batch);
    let mut closing = false;
    while !closing {
        match rx.recv().map(Into::into) {
            Ok(Some(job)) => batch.push(job),
            Ok(None) | Err(_) => break,
        }
        while batch.len() < max_batch {
            match rx.try_recv().map(Into::into) {
                Ok(Some(job)) => batch.push(job),
                Ok(None) => {
                    closing = true;
                    break;
                }
                Err(_) => break,
            }
        }
        before(conn);
        run_jobs(conn, &mut batch, counters, what);
    }
}

/// Runs `batch` in one transaction and answers every job; on a job's failure, re-runs each
/// job in its own transaction.
fn run_jobs(
    conn: &Connection,
    batch: &mut Vec<Box<dyn WriteJob>>,
    counters: &CommitCounters,
    what: &'static str,
) {
    let jobs = batch.len() as u64;
    match run_batch(conn, batch) {
        Ok(()) => {
            counters.writes.fetch_add(jobs, Ordering::Relaxed);
            counters.commits.fetch_add(1, Ordering::Relaxed);
            for job in batch.drain(..) {
                job.finish(Ok(()));
            }
        }
        Err(BatchFailure::Begin(message)) => {
            tracing::error!(error = %message, writer = what, "cannot commit a write transaction");
            for job in batch.drain(..) {
                job.finish(Err(message.clone()));
            }
        }
        Err(BatchFailure::Job) => {
            // Slow path: one transaction per job.
            for mut job in batch.drain(..) {
                let commit = match run_batch(conn, std::slice::from_mut(&mut job)) {
                    Ok(()) => {
                        counters.writes.fetch_add(1, Ordering::Relaxed);
                        counters.commits.fetch_add(1, Ordering::Relaxed);
                        Ok(())
                    }
                    // The job's own error is in its result; report it, not a commit error.
                    Err(BatchFailure::Job) => Ok(()),
                    Err(BatchFailure::Begin(message)) => Err(message),
                };
                job.finish(commit);
            }
        }
    }
}

enum BatchFailure {
    /// `BEGIN` or `COMMIT` failed: nothing was written.
    Begin(String),
    /// A job failed; the transaction was rolled back.
    Job,
}

fn run_batch(conn: &Connection, jobs: &mut [Box<dyn WriteJob>]) -> Result<(), BatchFailure> {
    // Cached statements: `execute_batch` would parse BEGIN and COMMIT again every batch.
    let statement = |sql: &str| conn.prepare_cached(sql).and_then(|mut s| s.execute([]));
    statement("BEGIN IMMEDIATE").map_err(|e| BatchFailure::Begin(e.to_string()))?;
    for job in jobs.iter_mut() {
        if !job.run(conn) {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(BatchFailure::Job);
        }
    }
    statement("COMMIT").map(|_| ()).map_err(|e| {
        let _ = conn.execute_batch("ROLLBACK");
        BatchFailure::Begin(e.to_string())
    })
}
