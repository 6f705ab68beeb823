use super::*;

fn json_of(line: &str) -> Value {
    assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
    serde_json::from_str(line).unwrap()
}

#[test]
fn requests_are_one_json_line_each() {
    assert_eq!(
        json_of(&Request::Configure.to_line(1)),
        json!({"id": 1, "method": "mining.configure", "params": [
            ["version-rolling"],
            {"version-rolling.mask": "1fffe000", "version-rolling.min-bit-count": 2}
        ]})
    );
    assert_eq!(
        json_of(
            &Request::Subscribe {
                user_agent: "jdc-sim-miner/0.1.0"
            }
            .to_line(2)
        ),
        json!({"id": 2, "method": "mining.subscribe", "params": ["jdc-sim-miner/0.1.0"]})
    );
    assert_eq!(
        json_of(
            &Request::Authorize {
                user: "w1",
                password: "x"
            }
            .to_line(3)
        ),
        json!({"id": 3, "method": "mining.authorize", "params": ["w1", "x"]})
    );
    let submit = |version_bits| Request::Submit {
        user: "w1",
        job_id: "bf",
        extranonce2: &[0, 0, 0, 1],
        ntime: 0x504e_86ed,
        nonce: 0x0b29_57c0,
        version_bits,
    };
    assert_eq!(
        json_of(&submit(None).to_line(4))["params"],
        json!(["w1", "bf", "00000001", "504e86ed", "0b2957c0"])
    );
    assert_eq!(
        json_of(&submit(Some(0x0000_6000)).to_line(5))["params"],
        json!(["w1", "bf", "00000001", "504e86ed", "0b2957c0", "00006000"])
    );
}

#[test]
fn notify_is_decoded_with_the_sv1_byte_orders() {
    let line = r#"{"params": ["bf", "4d16b6f85af6e2198f44ae2a6de67f78487ae5611b77c6c0440b921e00000000", "0100", "0200", ["11111111111111111111111111111111111111111111111111111111111111ff"], "20000002", "1c2ac4af", "504e86b9", true], "id": null, "method": "mining.notify"}"#;
    let ServerMessage::Notification(Notification::Notify(n)) = parse(line).unwrap() else {
        panic!("not a notify");
    };
    // The block hash 00000000440b921e1b77c6c0487ae5616de67f788f44ae2a5af6e2194d16b6f8 in
    // internal order.
    assert_eq!(
        crate::work::rpc_hex(&n.prev_hash),
        "00000000440b921e1b77c6c0487ae5616de67f788f44ae2a5af6e2194d16b6f8"
    );
    assert_eq!(n.job_id, "bf");
    assert_eq!((n.coinb1, n.coinb2), (vec![1, 0], vec![2, 0]));
    assert_eq!(n.merkle_branch[0][31], 0xff);
    assert_eq!(
        (n.version, n.nbits, n.ntime, n.clean_jobs),
        (0x2000_0002, 0x1c2a_c4af, 0x504e_86b9, true)
    );
}

#[test]
fn notifications_and_responses() {
    let n = |line: &str| match parse(line).unwrap() {
        ServerMessage::Notification(n) => n,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        n(r#"{"id":null,"method":"mining.set_difficulty","params":[0.0001]}"#),
        Notification::SetDifficulty(0.0001)
    );
    assert_eq!(
        n(r#"{"method":"mining.set_difficulty","params":[512]}"#),
        Notification::SetDifficulty(512.0)
    );
    assert_eq!(
        n(r#"{"id":null,"method":"mining.set_version_mask","params":["1fffe000"]}"#),
        Notification::SetVersionMask(0x1fff_e000)
    );
    assert_eq!(
        n(r#"{"id":null,"method":"mining.set_extranonce","params":["abcd",6]}"#),
        Notification::SetExtranonce {
            extranonce1: vec![0xab, 0xcd],
            extranonce2_size: 6
        }
    );
    assert!(matches!(
        n(r#"{"id":null,"method":"client.reconnect","params":["h",1]}"#),
        Notification::Reconnect(_)
    ));

    let r = |line: &str| match parse(line).unwrap() {
        ServerMessage::Response { id, outcome } => (id, outcome),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        r(r#"{"id":7,"result":true,"error":null}"#),
        (7, Ok(json!(true)))
    );
    assert_eq!(
        r(r#"{"id":8,"result":null,"error":[23,"Low difficulty share",null]}"#),
        (8, Err("Low difficulty share (23)".into()))
    );
    assert_eq!(
        r(r#"{"id":9,"error":{"code":-1,"message":"Stale"}}"#),
        (9, Err("Stale (-1)".into()))
    );
    assert_eq!(
        r(r#"{"id":10,"result":false,"error":"nope"}"#),
        (10, Err("nope".into()))
    );
}

#[test]
fn setup_results() {
    let subscribe = json!([
        [["mining.set_difficulty", "1"], ["mining.notify", "1"]],
        "08000002",
        4
    ]);
    assert_eq!(subscribe_result(subscribe).unwrap(), (vec![8, 0, 0, 2], 4));
    let e = subscribe_result(json!([[], "08000002", 33]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("mining.subscribe") && e.contains("extranonce2_size 33"),
        "{e}"
    );
    let e = subscribe_result(json!(true)).unwrap_err().to_string();
    assert!(e.starts_with("mining.subscribe:"), "{e}");

    assert_eq!(
        configure_result(&json!({"version-rolling": true, "version-rolling.mask": "1fe00000"}))
            .unwrap(),
        0x1fe0_0000
    );
    // Bits the miner did not ask for are not rolled.
    assert_eq!(
        configure_result(&json!({"version-rolling": true, "version-rolling.mask": "ffffffff"}))
            .unwrap(),
        REQUESTED_VERSION_MASK
    );
    assert_eq!(
        configure_result(&json!({"version-rolling": false})).unwrap(),
        0
    );
    assert_eq!(configure_result(&Value::Null).unwrap(), 0);
    assert!(configure_result(&json!({"version-rolling": true})).is_err());
}

#[test]
fn bad_lines_name_the_problem() {
    let e = |line: &str| parse(line).unwrap_err().to_string();
    let m = e("garbage");
    assert!(m.starts_with("not JSON") && m.ends_with(": garbage"), "{m}");
    let long = format!("{{\"id\": {}", "1".repeat(500));
    assert!(e(&long).len() < 300, "the error quotes the whole line");
    assert!(e("[1,2]").contains("not an object"));
    assert!(e(r#"{"result":true}"#).contains("numeric `id`"));
    assert!(e(r#"{"method":5}"#).contains("`method` is not a string"));
    assert_eq!(
        e(r#"{"id":null,"method":"mining.explode","params":[]}"#),
        "unexpected method `mining.explode`"
    );
    let bad_notify = |i: usize, value: Value| {
        let mut params = json!([
            "j",
            "00".repeat(32),
            "",
            "",
            [],
            "20000000",
            "207fffff",
            "00000000",
            true
        ]);
        params[i] = value;
        e(&json!({"id": null, "method": "mining.notify", "params": params}).to_string())
    };
    let m = bad_notify(1, json!("00"));
    assert!(m.starts_with("mining.notify: prevhash"), "{m}");
    let m = bad_notify(2, json!("zz"));
    assert!(m.starts_with("mining.notify: coinb1 is not hex"), "{m}");
    let m = bad_notify(4, json!(["00"]));
    assert!(m.contains("merkle branch entry"), "{m}");
    let m = bad_notify(5, json!("2000000"));
    assert!(m.contains("version `2000000` is not 8 hex digits"), "{m}");
    let m = bad_notify(6, json!("+07fffff"));
    assert!(m.contains("nbits"), "{m}");
    let m = bad_notify(8, json!("yes"));
    assert!(m.starts_with("mining.notify:"), "{m}");
    let m = e(r#"{"id":null,"method":"mining.notify","params":["j"]}"#);
    assert!(m.starts_with("mining.notify:"), "{m}");
    let m = e(r#"{"id":null,"method":"mining.set_difficulty","params":[-1]}"#);
    assert!(m.contains("not a positive number"), "{m}");
    let m = e(r#"{"id":null,"method":"mining.set_difficulty","params":["high"]}"#);
    assert!(m.starts_with("mining.set_difficulty:"), "{m}");
}
