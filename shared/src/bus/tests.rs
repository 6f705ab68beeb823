use super::*;
use crate::messages::Event;

#[test]
fn envelope_round_trip_with_named_fields() {
    let ev = Event {
        level: "info".into(),
        kind: "k".into(),
        message: "m".into(),
    };
    let body = encode_body(Topic::Event, &ev).unwrap();
    let bytes = encode_envelope("test", 7, 3, &body);
    let env: Envelope<Event> = decode_envelope(&bytes).unwrap();
    assert_eq!(env.body, ev);
    assert_eq!((env.source.as_str(), env.instance, env.seq), ("test", 7, 3));
    // Named fields: the keys are on the wire.
    let v: rmp_serde::decode::Error = rmp_serde::from_slice::<(u16,)>(&bytes).unwrap_err();
    let _ = v;
    assert!(bytes.windows(7).any(|w| w == b"version"));
}

#[test]
fn header_fast_path_matches_full_decode() {
    let body = encode_body(Topic::Event, &("x", 1u8)).unwrap();
    let bytes = encode_envelope("watcher", 11, 22, &body);
    let h = read_header(&bytes).expect("fast path");
    assert_eq!(
        (h.version, h.source.as_str(), h.instance, h.seq),
        (1, "watcher", 11, 22)
    );
    // Body not last: the fast path declines and the generic decoder is used.
    let odd = rmp_serde::to_vec_named(&serde_json::json!({"body": 1, "version": 1})).unwrap();
    assert!(read_header(&odd).is_none());
    assert!(read_header(b"garbage").is_none());
    let sel = encode_body(Topic::Selection, &serde_json::json!({"id": 77u64})).unwrap();
    let received = Received {
        stream: "s".into(),
        topic: Topic::Selection,
        source: "s".into(),
        sent_at_us: 0,
        resent: false,
        bytes: Bytes::from(encode_envelope("s", 1, 1, &sel)),
    };
    assert_eq!(received.peek_id(), Some(77));
}

#[test]
fn wrong_version_is_refused() {
    let body = encode_body(Topic::Event, &1u8).unwrap();
    let mut bytes = encode_envelope("t", 1, 1, &body);
    // version is the first value after the "version" key: positive fixint 1 -> 9
    let pos = bytes.iter().position(|b| *b == 1).unwrap();
    bytes[pos] = 9;
    assert!(matches!(
        decode_envelope::<u8>(&bytes),
        Err(BusError::Version { got: 9 })
    ));
}

#[test]
fn seq_tracker_counts_gaps_and_restarts() {
    let mut t = SeqTracker::default();
    assert_eq!(t.observe(10, Topic::Tip, 5, false), (0, false));
    assert_eq!(t.observe(10, Topic::Tip, 6, false), (0, false));
    // A re-send repeats an old seq: neither a gap nor a reset of the live series.
    assert_eq!(t.observe(10, Topic::Tip, 6, true), (0, false));
    assert_eq!(t.observe(10, Topic::Tip, 9, false), (2, false));
    assert_eq!(t.observe(10, Topic::Template, 1, false), (0, false));
    assert_eq!(t.observe(11, Topic::Tip, 1, false), (0, true));
}

#[test]
fn resends_are_wanted_only_while_state_is_missing() {
    let mut t = SeqTracker::default();
    let announce = |t: &mut SeqTracker, seq: u64| {
        t.announce(&HashMap::from([("template".to_string(), seq)]));
    };
    assert!(t.wants_resend(Topic::Template), "nothing held yet");
    t.observe(10, Topic::Template, 3, true);
    assert!(!t.wants_resend(Topic::Template));
    announce(&mut t, 3);
    assert!(!t.wants_resend(Topic::Template), "held what is announced");
    announce(&mut t, 5);
    assert!(t.wants_resend(Topic::Template), "seq 4 and 5 were missed");
    t.observe(10, Topic::Template, 5, false);
    assert!(!t.wants_resend(Topic::Template));
    // A restarted publisher: everything is needed again.
    t.observe(11, Topic::Heartbeat, 1, false);
    assert!(t.wants_resend(Topic::Template));
}

/// Real sockets: a late subscriber gets the state from the re-sends, then stops receiving
/// them while current; heartbeats keep coming.
#[tokio::test]
async fn late_subscriber_catches_up_then_leaves_the_resends() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let endpoint = format!("tcp://127.0.0.1:{port}");
    let shutdown = CancellationToken::new();
    let (publisher, _task) = Publisher::bind(
        &endpoint,
        PublisherOptions {
            source: "test".into(),
            resend_interval: Duration::from_millis(100),
        },
        Arc::new(BusStats::default()),
        shutdown.clone(),
    )
    .await
    .unwrap();
    publisher
        .publish(Topic::Template, &serde_json::json!({"id": 1u64}))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (mut rx, _tasks) = subscribe(
        SubscribeOptions {
            streams: vec![("test".into(), endpoint)],
            topics: vec![Topic::Template, Topic::Heartbeat],
            silence_timeout: Duration::from_secs(5),
        },
        Arc::new(BusStats::default()),
        shutdown.clone(),
    );
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(1500);
    while let Ok(Some(m)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        got.push((m.topic, m.resent, tokio::time::Instant::now()));
    }
    shutdown.cancel();
    let resent: Vec<_> = got
        .iter()
        .filter(|(t, r, _)| *t == Topic::Template && *r)
        .collect();
    assert!(!resent.is_empty(), "the late subscriber got the state");
    assert!(
        resent.len() <= 2,
        "re-sends continued after the state was held: {}",
        resent.len()
    );
    let heartbeats = got
        .iter()
        .filter(|(t, _, _)| *t == Topic::Heartbeat)
        .count();
    assert!(heartbeats >= 10, "heartbeats keep coming: {heartbeats}");
}

#[test]
fn topics_round_trip_and_are_prefix_free() {
    for t in Topic::ALL {
        assert_eq!(Topic::from_wire(t.as_str().as_bytes()), Some(t));
        assert_eq!(
            Topic::from_wire_any(t.as_str().as_bytes()),
            Some((t, false))
        );
        assert_eq!(
            Topic::from_wire_any(t.resend_str().as_bytes()),
            Some((t, true))
        );
        for u in Topic::ALL {
            for frame in [u.as_str(), u.resend_str()] {
                if t != u || frame == u.resend_str() {
                    assert!(!frame.starts_with(t.as_str()), "{t:?} prefixes {frame}");
                }
            }
            if t != u {
                assert!(!u.resend_str().starts_with(t.resend_str()));
            }
        }
    }
}
