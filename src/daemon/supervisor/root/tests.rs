//! The root supervisor sees a child's death, and its stop ends every child.

use super::*;

/// A child stand-in: fails when told to.
struct Child;

impl Actor for Child {
    type Msg = bool;
    type State = ();
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<bool>,
        _args: (),
    ) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<bool>,
        fail: bool,
        _state: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        if fail {
            return Err("told to fail".into());
        }
        Ok(())
    }
}

async fn child(root: &RootHandle, name: &'static str) -> ActorRef<bool> {
    let (actor, _join) = Actor::spawn(None, Child, ()).await.expect("spawn child");
    root.link(name, actor.get_cell());
    actor
}

async fn eventually(mut check: impl FnMut() -> bool) -> bool {
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < until {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    check()
}

#[tokio::test]
async fn the_root_sees_a_child_fail_or_stop() {
    let root = RootHandle::spawn().await.expect("spawn root");
    let llm = child(&root, "llm").await;
    let mcp = child(&root, "mcp").await;
    assert_eq!(root.live_children(), 2);
    assert!(root.is_healthy());

    llm.cast(true).expect("send");
    assert!(
        eventually(|| !root.is_healthy()).await,
        "the failure is seen"
    );
    let failures = root.failures();
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].0, "llm");
    assert!(failures[0].1.contains("told to fail"), "{failures:?}");

    mcp.stop(Some("gone".into()));
    assert!(eventually(|| root.failures().len() == 2).await);
    assert_eq!(root.failures()[1].0, "mcp");
    assert!(root.is_running(), "the root outlives its children");
    root.stop(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn stop_ends_every_child_and_planned_stops_are_not_failures() {
    let root = RootHandle::spawn().await.expect("spawn root");
    let children = [
        child(&root, "conversations").await,
        child(&root, "mcp").await,
        child(&root, "llm").await,
    ];
    // A child stopped by the shutdown itself is not a failure.
    root.begin_shutdown();
    children[0]
        .stop_and_wait(Some("shutdown".into()), Some(Duration::from_secs(5)))
        .await
        .expect("stop");
    root.stop(Duration::from_secs(5)).await;
    for child in &children {
        assert_eq!(child.get_status(), ractor::ActorStatus::Stopped);
    }
    assert_eq!(root.live_children(), 0);
    assert!(!root.is_running());
    assert!(root.is_healthy(), "{:?}", root.failures());
}
