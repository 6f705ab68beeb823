use super::*;

#[test]
fn announced_gate_orders_publication() {
    let a = Announced::default();
    assert!(!a.is("aa"));
    assert_eq!(a.publish_if_current("aa", || 1), None);
    a.announce("aa", || ());
    assert!(a.is("aa"));
    assert_eq!(a.publish_if_current("aa", || 1), Some(1));
    a.announce("bb", || ());
    assert_eq!(
        a.publish_if_current("aa", || 1),
        None,
        "stale template dropped"
    );
}

fn cand(hash: &str) -> Candidate {
    Candidate {
        hash: hash.into(),
        detected_at_us: 1,
        by: DetectedBy::Zmq,
        parent: None,
    }
}

#[tokio::test]
async fn deferred_learning_waits_for_news_only() {
    let a = Announced::default();
    a.announce("tip", || ());
    let (tx, mut rx) = mpsc::channel(8);
    let long = std::time::Duration::from_secs(60);
    // the announced tip's `hashblock` is not news; a new block is
    tx.send(cand("tip")).await.unwrap();
    tx.send(cand("next")).await.unwrap();
    match wait_for_news(&a, &mut rx, long).await {
        Waited::New(c) => assert_eq!(c.hash, "next"),
        _ => panic!("expected the new candidate"),
    }
    tx.send(cand("tip")).await.unwrap();
    let short = std::time::Duration::from_millis(5);
    assert!(matches!(
        wait_for_news(&a, &mut rx, short).await,
        Waited::Elapsed
    ));
    drop(tx);
    assert!(matches!(
        wait_for_news(&a, &mut rx, long).await,
        Waited::Closed
    ));
}
