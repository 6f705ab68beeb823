use super::*;
use crate::messages::{Event, Selection};

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

/// The selection envelope of docs/bus-protocol.md ("A selection on the wire"), as a Python
/// selector (msgpack-python) writes it. Implementers compare their bytes with it, so it must
/// stay a valid message that jdc decodes, and jdc's own encoder must give the same body.
const DOCUMENTED_SELECTION_ENVELOPE: &str = concat!(
    "86a776657273696f6e01a6736f75726365af707974686f6e2d73656c6563746f72a8696e7374616e6365",
    "cf0006445ff566c980a373657107aa73656e745f61745f7573cf0006445ff60161aca4626f6479de0011",
    "a26964cf0006445ff6015fb8ab74656d706c6174655f6964cf0006445ff6015bd1a6686569676874cccd",
    "a9707265765f68617368d940383466643962616333333361643739313534333438323936323034666137",
    "66386335333761393665303839383365356637336233663561636138653865646637a776657273696f6e",
    "ce20000000a462697473ce207fffffa763757274696d65ce6924f180a76d696e74696d65ce6924ee61a6",
    "706f6c696379ae707974686f6e2d6578616d706c65a5747869647392d940373039623535626433646130",
    "663561383338313235626430656532306335626664643763616261313733393132643432383163616538",
    "31366237396132303162d940323763613634633039326139353963376564633532356564343565383435",
    "62316465366137353930643137336664326661643931333363386137373961316533a466656573cd1086",
    "ae636f696e626173655f76616c7565ce95030986a6776569676874cd057ba67369676f707305b2776974",
    "6e6573735f636f6d6d69746d656e74d94035303663613030383036303262393934646262333463346666",
    "346238373063653134343963636135323965306535386465383235663737376164346364643935a76472",
    "6f707065649183a6726561736f6eb262656c6f772d6d696e2d6665652d72617465a5636f756e7401a366",
    "65656eb27469705f64657465637465645f61745f7573cf0006445ff6014240",
);

#[test]
fn documented_selection_envelope_decodes() {
    let bytes = hex::decode(DOCUMENTED_SELECTION_ENVELOPE).unwrap();
    assert_eq!(bytes.len(), 619);
    let env: Envelope<Selection> = decode_envelope(&bytes).unwrap();
    assert_eq!(
        (env.version, env.source.as_str(), env.instance, env.seq),
        (1, "python-selector", 1_764_028_790_000_000, 7)
    );
    assert_eq!(env.sent_at_us, 1_764_028_800_131_500);
    let sel = env.body;
    assert_eq!(sel.id, 1_764_028_800_131_000);
    assert_eq!(sel.template_id, 1_764_028_800_130_001);
    assert_eq!(
        (sel.height, sel.version, sel.bits),
        (205, 0x2000_0000, 0x207f_ffff)
    );
    assert_eq!((sel.curtime, sel.mintime), (1_764_028_800, 1_764_028_001));
    assert_eq!(sel.policy, "python-example");
    assert_eq!(sel.txids.len(), 2);
    assert_eq!(
        (sel.fees, sel.coinbase_value, sel.weight, sel.sigops),
        (4230, 2_500_004_230, 1403, 5)
    );
    assert_eq!(
        sel.witness_commitment,
        "506ca0080602b994dbb34c4ff4b870ce1449cca529e0e58de825f777ad4cdd95"
    );
    assert_eq!(
        sel.dropped,
        vec![crate::messages::Dropped {
            reason: "below-min-fee-rate".into(),
            count: 1,
            fee: 110
        }]
    );
    assert_eq!(sel.tip_detected_at_us, 1_764_028_800_123_456);
    // jdc's own encoder writes the same body, byte for byte, and the same header layout.
    let body = encode_body(Topic::Selection, &sel).unwrap();
    assert!(bytes.ends_with(&body));
    let h = read_header(&bytes).expect("header fast path");
    assert_eq!((h.instance, h.seq), (1_764_028_790_000_000, 7));
    let received = Received {
        stream: "selector".into(),
        topic: Topic::Selection,
        source: h.source,
        sent_at_us: h.sent_at_us,
        resent: false,
        bytes: Bytes::from(bytes),
    };
    assert_eq!(received.peek_id(), Some(1_764_028_800_131_000));
}

/// What docs/bus-protocol.md promises about MessagePack encodings: any integer encoding whose
/// value fits the field, keys in any order, unknown fields ignored, `dropped` optional; and
/// what it refuses.
#[test]
fn selection_encodings_other_publishers_may_use() {
    let bytes = hex::decode(DOCUMENTED_SELECTION_ENVELOPE).unwrap();
    let env: Envelope<serde_json::Value> = decode_envelope(&bytes).unwrap();
    let encode = |fields: &[(&str, Vec<u8>)], drop: &[&str]| -> Vec<u8> {
        // The documented body, with some values replaced by raw MessagePack, in reverse key
        // order, plus an unknown field, inside an envelope whose `body` comes first.
        let map = env.body.as_object().unwrap();
        let keys: Vec<&String> = map.keys().filter(|k| !drop.contains(&k.as_str())).collect();
        let mut body = Vec::new();
        rmp::encode::write_map_len(&mut body, keys.len() as u32 + 1).unwrap();
        rmp::encode::write_str(&mut body, "comment").unwrap();
        rmp::encode::write_str(&mut body, "unknown fields are ignored").unwrap();
        for k in keys.into_iter().rev() {
            rmp::encode::write_str(&mut body, k).unwrap();
            match fields.iter().find(|(f, _)| f == k) {
                Some((_, raw)) => body.extend_from_slice(raw),
                None => body.extend_from_slice(&rmp_serde::to_vec_named(&map[k]).unwrap()),
            }
        }
        let mut out = Vec::new();
        rmp::encode::write_map_len(&mut out, 6).unwrap();
        rmp::encode::write_str(&mut out, "body").unwrap();
        out.extend_from_slice(&body);
        for (k, v) in [
            ("seq", 7u64),
            ("instance", 1),
            ("version", 1),
            ("sent_at_us", 1),
        ] {
            rmp::encode::write_str(&mut out, k).unwrap();
            rmp::encode::write_u64(&mut out, v).unwrap(); // always 9 bytes (uint 64)
        }
        rmp::encode::write_str(&mut out, "source").unwrap();
        rmp::encode::write_str(&mut out, "x").unwrap();
        out
    };
    let decode = |bytes: &[u8]| decode_envelope::<Selection>(bytes).map(|e| e.body);
    // Widest and signed integer encodings of small non-negative values.
    let mut sigops = Vec::new();
    rmp::encode::write_i8(&mut sigops, 5).unwrap();
    let mut height = Vec::new();
    rmp::encode::write_u64(&mut height, 205).unwrap();
    let mut fees = Vec::new();
    rmp::encode::write_i64(&mut fees, 4230).unwrap();
    let sel = decode(&encode(
        &[("sigops", sigops), ("height", height), ("fees", fees)],
        &["dropped"],
    ))
    .unwrap();
    assert_eq!((sel.sigops, sel.height, sel.fees), (5, 205, 4230));
    assert!(sel.dropped.is_empty(), "`dropped` is optional");
    // Refused: a value beyond the field's range, a negative one, a float, a missing field.
    let mut big = Vec::new();
    rmp::encode::write_u64(&mut big, 1 << 32).unwrap();
    assert!(decode(&encode(&[("height", big)], &[])).is_err());
    let mut negative = Vec::new();
    rmp::encode::write_i8(&mut negative, -1).unwrap();
    assert!(decode(&encode(&[("fees", negative)], &[])).is_err());
    let mut float = Vec::new();
    rmp::encode::write_f64(&mut float, 4230.0).unwrap();
    assert!(decode(&encode(&[("fees", float)], &[])).is_err());
    assert!(decode(&encode(&[], &["policy"])).is_err());
    // A `dropped` entry lacking a field.
    let mut dropped = Vec::new();
    rmp::encode::write_array_len(&mut dropped, 1).unwrap();
    rmp::encode::write_map_len(&mut dropped, 2).unwrap();
    rmp::encode::write_str(&mut dropped, "reason").unwrap();
    rmp::encode::write_str(&mut dropped, "block-full").unwrap();
    rmp::encode::write_str(&mut dropped, "fee").unwrap();
    rmp::encode::write_uint(&mut dropped, 1).unwrap();
    assert!(decode(&encode(&[("dropped", dropped)], &[])).is_err());
}
