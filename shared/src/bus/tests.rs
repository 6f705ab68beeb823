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
    assert_eq!(t.observe(10, Topic::Tip, 5), (0, false));
    assert_eq!(t.observe(10, Topic::Tip, 6), (0, false));
    assert_eq!(t.observe(10, Topic::Tip, 9), (2, false));
    assert_eq!(t.observe(10, Topic::Template, 1), (0, false));
    assert_eq!(t.observe(11, Topic::Tip, 1), (0, true));
}

#[test]
fn topics_round_trip_and_are_prefix_free() {
    for t in Topic::ALL {
        assert_eq!(Topic::from_wire(t.as_str().as_bytes()), Some(t));
        for u in Topic::ALL {
            if t != u {
                assert!(!u.as_str().starts_with(t.as_str()), "{t:?} prefixes {u:?}");
            }
        }
    }
}
