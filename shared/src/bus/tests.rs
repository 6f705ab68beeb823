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

/// docs/bus-protocol.md itself: its examples are what implementers compare their bytes with,
/// so the tests read them from there, not from a copy that could drift.
const BUS_PROTOCOL_DOC: &str = include_str!("../../../docs/bus-protocol.md");

/// The bytes of the "In full (hex):" block that follows the heading `heading` in
/// docs/bus-protocol.md.
fn documented_hex(heading: &str) -> Vec<u8> {
    let (_, section) = BUS_PROTOCOL_DOC
        .split_once(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("no `{heading}` in docs/bus-protocol.md"));
    let (_, after) = section
        .split_once("In full (hex):\n\n```\n")
        .unwrap_or_else(|| panic!("no hex block under `{heading}`"));
    let (block, _) = after.split_once("```").expect("closing fence");
    let hex: String = block.split_whitespace().collect();
    hex::decode(&hex).unwrap_or_else(|e| panic!("the hex under `{heading}`: {e}"))
}

/// The selection envelope of docs/bus-protocol.md ("A selection on the wire"), as a Python
/// selector (msgpack-python) writes it. Implementers compare their bytes with it, so it must
/// stay a valid message that jdc decodes, and jdc's own encoder must give the same body.
fn documented_selection_envelope() -> Vec<u8> {
    documented_hex("### A selection on the wire")
}

/// The template envelope of docs/bus-protocol.md ("A template on the wire"): jdc decodes it,
/// and writes exactly these bytes for the decoded message.
#[test]
fn documented_template_envelope_decodes_and_is_what_jdc_writes() {
    use crate::messages::{Template, TemplateTx};
    let bytes = documented_hex("### A template on the wire");
    assert_eq!(bytes.len(), 638);
    let env: Envelope<Template> = decode_envelope(&bytes).unwrap();
    assert_eq!(
        (env.version, env.source.as_str(), env.instance, env.seq),
        (1, "watcher", 1_764_028_790_000_000, 12)
    );
    assert_eq!(env.sent_at_us, 1_764_028_800_130_500);
    let data = hex::decode(concat!(
        "0200000001",
        "1111111111111111111111111111111111111111111111111111111111111111",
        "0000000000ffffffff01d885010000000000015100000000"
    ))
    .unwrap();
    let txid = "58b2e1b2af932eead92438e84eb0c8d662c64d10a8f94ae472496cfc17aa318c";
    let expected = Template {
        id: 1_764_028_800_130_001,
        height: 205,
        prev_hash: "84fd9bac333ad79154348296204fa7f8c537a96e08983e5f73b3f5aca8e8edf7".into(),
        version: 0x2000_0000,
        bits: 0x207f_ffff,
        target: format!("7fffff{}", "0".repeat(58)),
        curtime: 1_764_028_800,
        mintime: 1_764_028_001,
        coinbase_value: 2_500_000_200,
        subsidy: 2_500_000_000,
        weight_limit: 4_000_000,
        sigop_limit: 80_000,
        txs: vec![TemplateTx {
            data,
            txid: txid.into(),
            wtxid: txid.into(),
            fee: 200,
            weight: 244,
            sigops: 0,
            depends: vec![],
        }],
        tip_detected_at_us: 1_764_028_800_123_456,
    };
    assert_eq!(env.body, expected);
    // The txid is the transaction's.
    let tx: crate::bitcoin::Transaction =
        crate::bitcoin::consensus::deserialize(&expected.txs[0].data).unwrap();
    assert_eq!(tx.compute_txid().to_string(), txid);
    assert_eq!(tx.weight().to_wu(), 244);
    // jdc writes the same envelope, byte for byte.
    let written = rmp_serde::to_vec_named(&Envelope {
        body: expected.clone(),
        ..env
    })
    .unwrap();
    assert_eq!(written, bytes);
    assert!(bytes.ends_with(&encode_body(Topic::Template, &expected).unwrap()));
}

#[test]
fn documented_selection_envelope_decodes() {
    let bytes = documented_selection_envelope();
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
    let bytes = documented_selection_envelope();
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
