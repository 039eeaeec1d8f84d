//! The root supervisor: the daemon's shared actors (LLM, MCP) and the conversation
//! supervisor are linked to it, so the death of any of them is seen in one place.
//!
//! - A child that stops or fails while the daemon runs is logged (error level) and
//!   recorded: [`RootHandle::failures`] lists it and [`RootHandle::is_healthy`] turns false,
//!   which makes `/readyz` answer 503 (the daemon keeps serving what it still can; an
//!   orchestrator restarts it). The actor is not restarted in place: its handle is shared by
//!   every request, and a fresh one would need its state (connection, limiters) rebuilt.
//! - At shutdown the daemon calls [`RootHandle::begin_shutdown`] first, so the children's
//!   planned stops are not reported as failures, stops them in order (conversations, then
//!   MCP, then LLM) through their handles, and ends with [`RootHandle::stop`], which stops
//!   any child still linked and then the root itself, within what is left of the bound.
//!
//! Modelled on the node actor of circlefin/malachite: one parent that spawns and links the
//! long-lived actors and owns their stop order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};

/// Shared between the root actor and its handle.
#[derive(Debug, Default)]
struct RootStatus {
    /// Set once shutdown has begun: children stopping then are expected.
    stopping: AtomicBool,
    /// The linked children's names.
    names: Mutex<HashMap<ActorId, &'static str>>,
    /// Children that ended while the daemon ran: (name, why).
    failures: Mutex<Vec<(String, String)>>,
}

impl RootStatus {
    fn name_of(&self, id: ActorId) -> &'static str {
        self.names
            .lock()
            .map(|n| n.get(&id).copied().unwrap_or("unknown"))
            .unwrap_or("unknown")
    }

    fn record(&self, id: ActorId, why: String) {
        let name = self.name_of(id);
        if self.stopping.load(Ordering::Acquire) {
            tracing::debug!(actor = name, %why, "shared actor stopped at shutdown");
            return;
        }
        tracing::error!(
            actor = name,
            %why,
            "a shared actor ended while the daemon runs; /readyz now reports not ready"
        );
        if let Ok(mut failures) = self.failures.lock() {
            failures.push((name.to_owned(), why));
        }
    }
}

/// The root actor. Its only work is watching its children.
struct Root;

impl Actor for Root {
    type Msg = ();
    type State = Arc<RootStatus>;
    type Arguments = Arc<RootStatus>;

    async fn pre_start(
        &self,
        _myself: ActorRef<()>,
        status: Arc<RootStatus>,
    ) -> Result<Arc<RootStatus>, ActorProcessingErr> {
        Ok(status)
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<()>,
        event: SupervisionEvent,
        status: &mut Arc<RootStatus>,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorTerminated(cell, _, reason) => status.record(
                cell.get_id(),
                format!("stopped: {}", reason.as_deref().unwrap_or("no reason")),
            ),
            SupervisionEvent::ActorFailed(cell, error) => {
                status.record(cell.get_id(), format!("failed: {error}"))
            }
            _ => {}
        }
        // Never propagate: the root outlives its children and reports them.
        Ok(())
    }
}

/// The daemon's handle on the root supervisor. Cheap to clone.
#[derive(Clone)]
pub struct RootHandle {
    actor: ActorRef<()>,
    status: Arc<RootStatus>,
}

impl RootHandle {
    /// Spawns the root (unnamed: several daemons may share a process in tests).
    pub async fn spawn() -> Result<RootHandle, ractor::SpawnErr> {
        let status = Arc::new(RootStatus::default());
        let (actor, _join) = Actor::spawn(None, Root, status.clone()).await?;
        Ok(RootHandle { actor, status })
    }

    /// Links `child` under the root as `name`: its stop or failure reaches the root.
    pub fn link(&self, name: &'static str, child: ActorCell) {
        if let Ok(mut names) = self.status.names.lock() {
            names.insert(child.get_id(), name);
        }
        child.link(self.actor.get_cell());
    }

    /// False once a linked child ended while the daemon ran.
    pub fn is_healthy(&self) -> bool {
        self.status
            .failures
            .lock()
            .map(|f| f.is_empty())
            .unwrap_or(false)
    }

    /// The children that ended while the daemon ran: (name, why).
    pub fn failures(&self) -> Vec<(String, String)> {
        self.status
            .failures
            .lock()
            .map(|f| f.clone())
            .unwrap_or_default()
    }

    /// Linked children still running.
    pub fn live_children(&self) -> usize {
        self.actor.get_children().len()
    }

    /// True while the root actor runs.
    pub fn is_running(&self) -> bool {
        self.actor.get_status() == ractor::ActorStatus::Running
    }

    /// From now on, children stopping are the planned shutdown, not failures.
    pub fn begin_shutdown(&self) {
        self.status.stopping.store(true, Ordering::Release);
    }

    /// Stops any child still linked, then the root, waiting at most `within` for each.
    pub async fn stop(&self, within: Duration) {
        self.begin_shutdown();
        let _ = self
            .actor
            .stop_children_and_wait(Some("shutdown".into()), Some(within))
            .await;
        let _ = self
            .actor
            .stop_and_wait(Some("shutdown".into()), Some(within))
            .await;
    }
}

#[cfg(test)]
mod tests;
