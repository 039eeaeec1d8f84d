//! A held per-user lease: renewed in the background while a turn runs, released when the
//! guard drops (unless the turn's append released it already).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{HistoryBackend, HistoryError, LEASE_TTL};
use crate::shared::domain::UserId;

/// First wait between attempts while another daemon holds the lease.
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
/// Longest wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_millis(200);

/// A lease this daemon holds on one user's history.
pub struct LeaseGuard {
    backend: Arc<dyn HistoryBackend>,
    user: UserId,
    token: i64,
    version: i64,
    renew: tokio::task::JoinHandle<()>,
    released: bool,
}

impl LeaseGuard {
    /// Takes the user's lease, waiting (until `deadline`) while another daemon holds it.
    pub async fn acquire(
        backend: &Arc<dyn HistoryBackend>,
        user: &UserId,
        deadline: Instant,
    ) -> Result<LeaseGuard, HistoryError> {
        let mut backoff = FIRST_BACKOFF;
        loop {
            if let Some(lease) = backend.try_lease(user, LEASE_TTL).await? {
                let renew = tokio::spawn(renew_loop(backend.clone(), user.clone(), lease.token));
                return Ok(LeaseGuard {
                    backend: backend.clone(),
                    user: user.clone(),
                    token: lease.token,
                    version: lease.version,
                    renew,
                    released: false,
                });
            }
            if Instant::now() + backoff >= deadline {
                return Err(HistoryError::LeaseBusy);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// The fencing token every write under this lease carries.
    pub fn token(&self) -> i64 {
        self.token
    }

    /// The history's version when the lease was taken.
    pub fn version(&self) -> i64 {
        self.version
    }

    /// The lease was released by a committed write (`Append::release`): nothing to undo.
    pub fn released(mut self) {
        self.released = true;
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        self.renew.abort();
        if self.released {
            return;
        }
        let release = self.backend.release_lease(&self.user, self.token);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(error) = release.await {
                    tracing::warn!(%error, "cannot release a conversation lease; it expires on its own");
                }
            });
        }
    }
}

async fn renew_loop(backend: Arc<dyn HistoryBackend>, user: UserId, token: i64) {
    let period = LEASE_TTL / 4;
    loop {
        tokio::time::sleep(period).await;
        match backend.renew_lease(&user, token, LEASE_TTL).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(
                    "a conversation lease was lost during a turn; its save will be refused"
                );
                return;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot renew a conversation lease");
            }
        }
    }
}
