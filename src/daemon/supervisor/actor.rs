//! The supervisor actor: spawns conversations (linked to it), forgets failed and stopped
//! ones, and sweeps the idle ones.

use super::*;

/// Messages of the supervisor.
pub enum SupervisorMsg {
    /// Reply with the user's live conversation, spawning (or restarting) it if needed.
    Spawn {
        /// Whose.
        user: UserId,
        /// The live entry, marked busy, or why there is none.
        reply: RpcReplyPort<Result<Busy, TurnError>>,
    },
    /// Stop conversations idle longer than the idle timeout. Sent by a timer.
    Sweep,
}

/// The conversation arguments minus the user.
pub(super) struct ConversationArgsTemplate {
    pub(super) llm: LlmHandle,
    pub(super) mcp: McpHandle,
    pub(super) history: HistoryStore,
    pub(super) config: Arc<ConversationConfig>,
}

/// The supervisor actor.
pub struct Supervisor;

/// Its state.
pub struct SupervisorState {
    pub(super) conversation: ConversationArgsTemplate,
    pub(super) entries: Arc<DashMap<UserId, Arc<ConversationEntry>>>,
    pub(super) metrics: Arc<TurnMetrics>,
    pub(super) started: Instant,
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorState;

    async fn pre_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        state: SupervisorState,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let config = &state.conversation.config;
        let interval = (config.idle_timeout.min(config.history_cache_idle) / 2)
            .clamp(Duration::from_millis(50), SWEEP_INTERVAL);
        myself.send_interval(interval, || SupervisorMsg::Sweep);
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        message: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::Spawn { user, reply } => {
                let result = state.spawn(&myself, &user).await;
                let _ = reply.send(result);
            }
            SupervisorMsg::Sweep => state.sweep(),
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, error) => {
                state.metrics.actor_failures.inc();
                tracing::error!(actor = %cell.get_id(), %error, "conversation failed; it restarts on the user's next message");
                state.forget(cell.get_id());
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => state.forget(cell.get_id()),
            _ => {}
        }
        Ok(())
    }
}

impl SupervisorState {
    async fn spawn(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        user: &UserId,
    ) -> Result<Busy, TurnError> {
        if let Some(busy) = mark_live(&self.entries, user) {
            return Ok(busy);
        }
        if self.entries.len() >= self.conversation.config.max_actors {
            self.evict_idle();
        }
        let args = ConversationArgs {
            user: user.clone(),
            llm: self.conversation.llm.clone(),
            mcp: self.conversation.mcp.clone(),
            history: self.conversation.history.clone(),
            config: self.conversation.config.clone(),
        };
        let (actor, _join) = Actor::spawn_linked(None, Conversation, args, myself.get_cell())
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "cannot spawn a conversation");
                TurnError::ShuttingDown
            })?;
        let entry = Arc::new(ConversationEntry {
            actor,
            last_active: AtomicU64::new(millis_since(self.started)),
            busy: AtomicUsize::new(0),
            history_cached: std::sync::atomic::AtomicBool::new(false),
        });
        let busy = Busy::mark(entry.clone());
        self.entries.insert(user.clone(), entry);
        self.metrics.live_actors.set(self.entries.len() as u64);
        Ok(busy)
    }

    fn forget(&mut self, id: ractor::ActorId) {
        self.entries.retain(|_, entry| entry.actor.get_id() != id);
        self.metrics.live_actors.set(self.entries.len() as u64);
    }

    pub(super) fn is_idle(entry: &ConversationEntry) -> bool {
        entry.busy.load(Ordering::Acquire) == 0
    }

    /// Stops conversations idle longer than the idle timeout.
    fn sweep(&mut self) {
        let now = millis_since(self.started);
        let idle_ms =
            u64::try_from(self.conversation.config.idle_timeout.as_millis()).unwrap_or(u64::MAX);
        let stale: Vec<UserId> = self
            .entries
            .iter()
            .filter(|e| {
                Self::is_idle(e.value())
                    && now.saturating_sub(e.value().last_active.load(Ordering::Relaxed)) > idle_ms
            })
            .map(|e| e.key().clone())
            .collect();
        for user in stale {
            self.stop_if_idle(&user, "idle");
        }
        // Idle but kept: release the cached history (reloaded on the next turn).
        let cache_ms = u64::try_from(self.conversation.config.history_cache_idle.as_millis())
            .unwrap_or(u64::MAX);
        for entry in self.entries.iter() {
            let entry = entry.value();
            if Self::is_idle(entry)
                && now.saturating_sub(entry.last_active.load(Ordering::Relaxed)) > cache_ms
                && entry.history_cached.swap(false, Ordering::Relaxed)
                && entry.actor.cast(ConversationMsg::ReleaseHistory).is_ok()
            {
                self.metrics.history_releases.inc();
            }
        }
    }

    /// At the actor cap: stops the least recently used idle tenth (at least one).
    fn evict_idle(&mut self) {
        let mut idle: Vec<(u64, UserId)> = self
            .entries
            .iter()
            .filter(|e| Self::is_idle(e.value()))
            .map(|e| {
                (
                    e.value().last_active.load(Ordering::Relaxed),
                    e.key().clone(),
                )
            })
            .collect();
        idle.sort();
        let count = (self.conversation.config.max_actors / 10).max(1);
        for (_, user) in idle.into_iter().take(count) {
            self.stop_if_idle(&user, "evicted");
        }
    }

    /// Stops the user's conversation if it is still idle: the check and the removal happen
    /// under the map's lock, where [`Busy::mark`] happens too.
    fn stop_if_idle(&mut self, user: &UserId, reason: &str) {
        if let Some(entry) = remove_if_idle(&self.entries, user) {
            // History is saved after every turn, so stopping loses nothing.
            entry.actor.stop(Some(reason.to_owned()));
            self.metrics.actor_stops.inc();
        }
        self.metrics.live_actors.set(self.entries.len() as u64);
    }
}
