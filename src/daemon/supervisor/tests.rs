//! The idle sweep against a turn being handed its conversation (issue 13): an entry a turn
//! has looked up is never stopped for idleness before the turn reaches it.

use std::sync::atomic::AtomicBool;

use super::*;

/// A conversation stand-in: an actor of the conversation's message type that does nothing.
struct Quiet;

impl Actor for Quiet {
    type Msg = ConversationMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<ConversationMsg>,
        _args: (),
    ) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
}

/// An entry idle since the supervisor started: any sweep would stop it unless it is busy.
fn stale_entry(actor: &ActorRef<ConversationMsg>) -> Arc<ConversationEntry> {
    Arc::new(ConversationEntry {
        actor: actor.clone(),
        last_active: AtomicU64::new(0),
        busy: AtomicUsize::new(0),
        history_cached: AtomicBool::new(false),
    })
}

/// Spawns a [`Quiet`] actor and waits (a bounded poll) until it reports running.
async fn quiet() -> (ActorRef<ConversationMsg>, tokio::task::JoinHandle<()>) {
    let (actor, join) = Actor::spawn(None, Quiet, ()).await.expect("spawn");
    let bound = Instant::now() + Duration::from_secs(10);
    while actor.get_status() != ActorStatus::Running {
        assert!(Instant::now() < bound, "the actor never ran");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    (actor, join)
}

fn alice() -> UserId {
    UserId::parse("alice").expect("valid user")
}

#[tokio::test]
async fn a_conversation_handed_to_a_turn_is_not_swept_until_the_turn_lets_go() {
    let (actor, join) = quiet().await;
    let entries = DashMap::new();
    entries.insert(alice(), stale_entry(&actor));

    // The turn's lookup marks the entry busy: the queued turn holds it from here on.
    let busy = mark_live(&entries, &alice()).expect("a live conversation");
    assert_eq!(busy.queued_before, 0);
    assert!(
        remove_if_idle(&entries, &alice()).is_none(),
        "the sweep stopped a conversation a turn was about to use"
    );
    assert!(entries.contains_key(&alice()));
    // A second caller queues behind the first.
    let second = mark_live(&entries, &alice()).expect("still live");
    assert_eq!(second.queued_before, 1);
    drop(busy);
    assert!(remove_if_idle(&entries, &alice()).is_none());
    drop(second);
    // Nobody holds it any more: now the sweep may stop it.
    assert!(remove_if_idle(&entries, &alice()).is_some());
    assert!(mark_live(&entries, &alice()).is_none());
    actor.stop(None);
    join.await.expect("join");
}

/// The race itself, on two threads: one hands the conversation to turns as fast as it can,
/// the other sweeps (and respawns what it stopped). Every entry a turn was handed must still
/// be the map's live entry: with a mark taken after the lookup, the sweep could remove it in
/// between, and that turn would reach a stopped actor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_and_sweeps_racing_never_hand_out_a_removed_conversation() {
    const ROUNDS: usize = 100_000;
    /// Sweeps that removed the entry between two turns, at least (a loaded machine may
    /// schedule the threads one after the other for a while).
    const RACED: usize = 1_000;
    let (actor, join) = quiet().await;
    let entries = Arc::new(DashMap::new());
    entries.insert(alice(), stale_entry(&actor));
    let done = Arc::new(AtomicBool::new(false));
    let removed = Arc::new(AtomicUsize::new(0));

    let sweeper = {
        let (entries, actor) = (entries.clone(), actor.clone());
        let (done, removed) = (done.clone(), removed.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Acquire) {
                if remove_if_idle(&entries, &alice()).is_some() {
                    removed.fetch_add(1, Ordering::AcqRel);
                    entries.insert(alice(), stale_entry(&actor));
                }
            }
        })
    };
    let turns = {
        let (entries, removed) = (entries.clone(), removed.clone());
        std::thread::spawn(move || {
            let bound = std::time::Instant::now() + Duration::from_secs(60);
            let mut handed_out_removed = 0usize;
            let mut rounds = 0usize;
            while (rounds < ROUNDS || removed.load(Ordering::Acquire) < RACED)
                && std::time::Instant::now() < bound
            {
                rounds += 1;
                let Some(busy) = mark_live(&entries, &alice()) else {
                    continue;
                };
                let still_live = entries
                    .get(&alice())
                    .is_some_and(|live| Arc::ptr_eq(live.value(), &busy.entry));
                if !still_live {
                    handed_out_removed += 1;
                }
            }
            handed_out_removed
        })
    };
    let handed_out_removed = turns.join().expect("turns thread");
    done.store(true, Ordering::Release);
    sweeper.join().expect("sweeper thread");
    assert_eq!(
        handed_out_removed, 0,
        "turns were handed conversations the sweep had removed"
    );
    let removed = removed.load(Ordering::Acquire);
    assert!(
        removed >= RACED,
        "the sweep removed the entry between turns only {removed} times in 60 s"
    );
    actor.stop(None);
    join.await.expect("join");
}
