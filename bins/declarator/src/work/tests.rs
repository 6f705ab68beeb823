use super::*;
use jdc_shared::bitcoin::ScriptBuf;
use jdc_shared::messages::TemplateTx;

fn book() -> WorkBook {
    WorkBook::new(
        Network::Regtest,
        Payout::new(vec![(ScriptBuf::from_bytes(vec![0x51]), 1)]).unwrap(),
    )
}

fn tip(hash_byte: u8, height: u32) -> Tip {
    Tip {
        height,
        prev_hash: hex::encode([hash_byte; 32]),
        nbits: 0x207fffff,
        time: 1_700_000_100,
        min_time: 1_700_000_000,
        version: 0x2000_0000,
        subsidy: chain::subsidy(height, Network::Regtest),
        detected_at_us: 5,
        detected_by: "zmq".into(),
    }
}

fn selection(prev: u8, height: u32, txs: Vec<TemplateTx>) -> Selection {
    let wtxids: Vec<[u8; 32]> = txs
        .iter()
        .map(|t| chain::hash_from_rpc_hex(&t.wtxid).unwrap())
        .collect();
    let fees = txs.iter().map(|t| t.fee).sum();
    Selection {
        id: 42,
        template_id: 7,
        height,
        prev_hash: hex::encode([prev; 32]),
        version: 0x2000_0000,
        bits: 0x207fffff,
        curtime: 1_700_000_100,
        mintime: 1_700_000_000,
        policy: "test".into(),
        weight: txs.iter().map(|t| t.weight).sum(),
        sigops: 0,
        fees,
        coinbase_value: chain::subsidy(height, Network::Regtest) + fees,
        witness_commitment: hex::encode(chain::witness_commitment(&wtxids)),
        txs,
        dropped: vec![],
        tip_detected_at_us: 0,
    }
}

fn tx(n: u8, depends: Vec<u32>) -> TemplateTx {
    TemplateTx {
        data: vec![n],
        txid: hex::encode([n; 32]),
        wtxid: hex::encode([n + 100; 32]),
        fee: 1000,
        weight: 400,
        sigops: 1,
        depends,
    }
}

#[test]
fn tip_then_selection_then_duplicates() {
    let mut b = book();
    let (s1, body) = b.on_tip(&tip(1, 200)).unwrap().unwrap();
    assert_eq!(s1.job.kind, JobKind::Empty);
    assert_eq!(s1.job.template.coinbase_tx_value_remaining, 2_500_000_000);
    assert!(body.txs.is_empty());
    assert!(
        b.on_tip(&tip(1, 200)).unwrap().is_none(),
        "re-sent tip ignored"
    );
    let sel = selection(1, 200, vec![tx(1, vec![]), tx(2, vec![1])]);
    let (s2, body) = b.on_selection(sel.clone()).unwrap().unwrap();
    assert_eq!(s2.tip.seq, s1.tip.seq, "same tip");
    assert_eq!(s2.job.kind, JobKind::Full);
    assert!(s2.job.template_id > s1.job.template_id);
    assert_eq!(body.txs.len(), 2);
    assert_eq!(
        s2.job.outputs.iter().map(|o| o.value.to_sat()).sum::<u64>(),
        sel.coinbase_value
    );
    assert!(
        b.on_selection(sel.clone()).unwrap().is_none(),
        "re-sent selection ignored"
    );
    // A selection for an older tip is ignored once a newer tip is current.
    let (s3, _) = b.on_tip(&tip(2, 201)).unwrap().unwrap();
    assert_eq!(s3.tip.seq, s1.tip.seq + 1);
    let mut old = selection(1, 200, vec![]);
    old.id = 43;
    assert!(b.on_selection(old).unwrap().is_none());
}

#[test]
fn selection_for_unknown_newer_tip_starts_it() {
    let mut b = book();
    b.on_tip(&tip(1, 200)).unwrap();
    let (s, _) = b.on_selection(selection(9, 201, vec![])).unwrap().unwrap();
    assert_eq!(s.tip.height, 201);
    assert_eq!(s.tip.prev_hash, [9; 32]);
}

#[test]
fn invalid_selections_are_refused_with_reason() {
    let mut b = book();
    let mut bad = selection(1, 200, vec![tx(1, vec![2]), tx(2, vec![])]);
    let e = b.on_selection(bad.clone()).unwrap_err();
    assert!(e.to_string().contains("depends on position 2"), "{e}");
    bad = selection(1, 200, vec![tx(1, vec![])]);
    bad.coinbase_value += 1;
    assert!(b
        .on_selection(bad.clone())
        .unwrap_err()
        .to_string()
        .contains("coinbase value"));
    bad = selection(1, 200, vec![tx(1, vec![])]);
    bad.witness_commitment = hex::encode([0u8; 32]);
    assert!(b
        .on_selection(bad.clone())
        .unwrap_err()
        .to_string()
        .contains("witness commitment"));
    bad = selection(1, 200, vec![tx(1, vec![])]);
    bad.fees = 5;
    assert!(b
        .on_selection(bad.clone())
        .unwrap_err()
        .to_string()
        .contains("fees"));
}
