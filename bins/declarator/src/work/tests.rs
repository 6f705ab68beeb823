use super::*;
use crate::templates::{select_all, TemplateTxs};
use jdc_shared::bitcoin::ScriptBuf;
use jdc_shared::messages::{Template, TemplateTx};

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

fn template(prev: u8, height: u32, txs: Vec<TemplateTx>) -> Template {
    Template {
        id: 7,
        height,
        prev_hash: hex::encode([prev; 32]),
        version: 0x2000_0000,
        bits: 0x207fffff,
        target: hex::encode([0xff; 32]),
        curtime: 1_700_000_100,
        mintime: 1_700_000_000,
        coinbase_value: 0,
        subsidy: chain::subsidy(height, Network::Regtest),
        weight_limit: 4_000_000,
        sigop_limit: 80_000,
        txs,
        tip_detected_at_us: 0,
    }
}

/// A selection of every transaction of a template of `txs`, and that template.
fn selection(prev: u8, height: u32, txs: Vec<TemplateTx>) -> (Selection, Arc<TemplateTxs>) {
    let t = template(prev, height, txs);
    let sel = select_all(&t, 42, Network::Regtest);
    (sel, Arc::new(TemplateTxs::from_template(t).unwrap()))
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
    assert_eq!(body.txs().count(), 0);
    assert!(
        b.on_tip(&tip(1, 200)).unwrap().is_none(),
        "re-sent tip ignored"
    );
    let (sel, t) = selection(1, 200, vec![tx(1, vec![]), tx(2, vec![1])]);
    let (s2, body) = b.on_selection(sel.clone(), t.clone()).unwrap().unwrap();
    assert_eq!(s2.tip.seq, s1.tip.seq, "same tip");
    assert_eq!(s2.job.kind, JobKind::Full);
    assert!(s2.job.template_id > s1.job.template_id);
    assert_eq!(body.txs().collect::<Vec<_>>(), vec![&[1u8][..], &[2u8][..]]);
    assert_eq!(
        s2.job.outputs.iter().map(|o| o.value.to_sat()).sum::<u64>(),
        sel.coinbase_value
    );
    assert!(
        b.on_selection(sel.clone(), t).unwrap().is_none(),
        "re-sent selection ignored"
    );
    // A selection for an older tip is ignored once a newer tip is current.
    let (s3, _) = b.on_tip(&tip(2, 201)).unwrap().unwrap();
    assert_eq!(s3.tip.seq, s1.tip.seq + 1);
    let (mut old, t) = selection(1, 200, vec![]);
    old.id = 43;
    assert!(b.on_selection(old, t).unwrap().is_none());
}

#[test]
fn selection_for_unknown_newer_tip_starts_it() {
    let mut b = book();
    b.on_tip(&tip(1, 200)).unwrap();
    let (sel, t) = selection(9, 201, vec![]);
    let (s, _) = b.on_selection(sel, t).unwrap().unwrap();
    assert_eq!(s.tip.height, 201);
    assert_eq!(s.tip.prev_hash, [9; 32]);
}

#[test]
fn selection_in_another_order_keeps_parents_first() {
    let mut b = book();
    b.on_tip(&tip(1, 200)).unwrap();
    // Template: 1, 2 (spends 1), 3. Selection: 3, 1, 2.
    let (mut sel, t) = selection(1, 200, vec![tx(1, vec![]), tx(2, vec![1]), tx(3, vec![])]);
    sel.txids.rotate_right(1);
    sel.witness_commitment = hex::encode(chain::witness_commitment(&[
        [103; 32], [101; 32], [102; 32],
    ]));
    let (_, body) = b.on_selection(sel, t).unwrap().unwrap();
    assert_eq!(body.order, vec![2, 0, 1]);
    assert_eq!(body.txids, vec![[3; 32], [1; 32], [2; 32]]);
}

fn refusal(sel: Selection, t: Arc<TemplateTxs>) -> String {
    book().on_selection(sel, t).unwrap_err().to_string()
}

#[test]
fn invalid_selections_are_refused_with_reason() {
    let two = || selection(1, 200, vec![tx(1, vec![]), tx(2, vec![1])]);
    let (mut bad, t) = two();
    bad.txids.swap(0, 1);
    let e = refusal(bad, t);
    assert!(e.contains("without or before its parent"), "{e}");
    let (mut bad, t) = two();
    bad.txids.truncate(0);
    bad.txids.push(hex::encode([2u8; 32]));
    let e = refusal(bad, t);
    assert!(e.contains("without or before its parent"), "{e}");
    let (mut bad, t) = two();
    bad.txids.push(hex::encode([9u8; 32]));
    let e = refusal(bad, t);
    assert!(e.contains("is not in template 7"), "{e}");
    let (mut bad, t) = two();
    bad.txids.push(bad.txids[0].clone());
    let e = refusal(bad, t);
    assert!(e.contains("chosen twice"), "{e}");
    let (mut bad, t) = two();
    bad.txids[0] = "zz".into();
    let e = refusal(bad, t);
    assert!(e.contains("transaction 1"), "{e}");
    let (mut bad, t) = two();
    bad.coinbase_value += 1;
    assert!(refusal(bad, t).contains("coinbase value"));
    let (mut bad, t) = two();
    bad.witness_commitment = hex::encode([0u8; 32]);
    assert!(refusal(bad, t).contains("witness commitment"));
    let (mut bad, t) = two();
    bad.fees = 5;
    assert!(refusal(bad, t).contains("fees"));
    let (mut bad, t) = two();
    bad.template_id = 8;
    assert!(refusal(bad, t).contains("names template 8"));
    // The header fields are the template's.
    let (mut bad, t) = two();
    bad.prev_hash = hex::encode([9u8; 32]);
    assert!(refusal(bad, t).contains("prev_hash"));
    let (mut bad, t) = two();
    bad.bits = 0x1d00ffff;
    assert!(refusal(bad, t).contains("bits"));
    let (mut bad, t) = two();
    bad.mintime = 0;
    bad.curtime = 1_600_000_000;
    assert!(refusal(bad, t).contains("header time"));
    let (mut bad, t) = two();
    bad.curtime += 3 * 3600;
    assert!(refusal(bad, t).contains("header time"));
    // Claims must match the transactions.
    let (mut bad, t) = two();
    bad.weight += 1;
    assert!(refusal(bad, t).contains("weight"));
    let (mut bad, t) = two();
    bad.sigops = 0;
    assert!(refusal(bad, t).contains("sigops"));
}

#[test]
fn templates_that_break_rules_are_refused() {
    let bad = template(1, 200, vec![tx(1, vec![2]), tx(2, vec![])]);
    let e = TemplateTxs::from_template(bad).unwrap_err().to_string();
    assert!(e.contains("depends on position 2"), "{e}");
    let bad = template(1, 200, vec![tx(1, vec![]), tx(1, vec![])]);
    let e = TemplateTxs::from_template(bad).unwrap_err().to_string();
    assert!(e.contains("appears twice"), "{e}");
    let mut bad = template(1, 200, vec![tx(1, vec![])]);
    bad.txs[0].wtxid = "00".into();
    let e = TemplateTxs::from_template(bad).unwrap_err().to_string();
    assert!(e.contains("transaction 1"), "{e}");
}

/// `cargo test -p jdc-declarator --release --lib -- --ignored --nocapture prepare_speed`
#[test]
#[ignore = "timing, not a test"]
fn prepare_speed() {
    let txs: Vec<TemplateTx> = (0..5_000u32)
        .map(|i| {
            let mut id = [0u8; 32];
            id[..4].copy_from_slice(&i.to_le_bytes());
            TemplateTx {
                data: vec![0; 200],
                txid: hex::encode(id),
                wtxid: hex::encode(id),
                fee: 1,
                weight: 790,
                sigops: 1,
                depends: vec![],
            }
        })
        .collect();
    let t = template(1, 200, txs);
    let start = std::time::Instant::now();
    let decoded = Arc::new(TemplateTxs::from_template(t.clone()).unwrap());
    println!("template index: {:?}", start.elapsed());
    let sel = select_all(&t, 1, Network::Regtest);
    for _ in 0..3 {
        let start = std::time::Instant::now();
        let p = PreparedSelection::prepare(sel.clone(), decoded.clone(), Network::Regtest).unwrap();
        println!("prepare: {:?} ({} txs)", start.elapsed(), p.order.len());
    }
}

#[test]
fn selections_must_leave_room_for_the_coinbase_we_build() {
    // Transactions using all but 3 sigops of the block: fine with a payout script without
    // sigops, refused with a P2PKH payout (4 legacy sigops, counted ×4).
    let heavy = |n: u8| TemplateTx {
        sigops: 79_997 / 2 + u64::from(n % 2),
        ..tx(n, vec![])
    };
    let (sel, t) = selection(1, 200, vec![heavy(1), heavy(2)]);
    assert_eq!(sel.sigops, 79_997);
    let mut b = book();
    b.on_tip(&tip(1, 200)).unwrap();
    assert!(b.on_selection(sel.clone(), t.clone()).unwrap().is_some());
    let p2pkh = ScriptBuf::from_hex("76a914000000000000000000000000000000000000000088ac").unwrap();
    let mut b = WorkBook::new(Network::Regtest, Payout::new(vec![(p2pkh, 1)]).unwrap());
    b.on_tip(&tip(1, 200)).unwrap();
    let e = b.on_selection(sel, t).unwrap_err().to_string();
    assert!(e.contains("leave no room for the coinbase's 4"), "{e}");
    // Weight: transactions filling the block but for 1,000 WU.
    let big = |n: u8| TemplateTx {
        weight: 1_999_500,
        ..tx(n, vec![])
    };
    let (sel, t) = selection(1, 200, vec![big(1), big(2)]);
    let mut b = book();
    b.on_tip(&tip(1, 200)).unwrap();
    let e = b.on_selection(sel, t).unwrap_err().to_string();
    assert!(e.contains("leaving no room for the coinbase"), "{e}");
}

#[test]
fn the_coinbase_weight_check_refuses_what_the_selection_check_lets_through() {
    // 40 P2WPKH payouts: the coinbase we build weighs
    // 4 × (4 + 1 + 36 + 1 + 100 + 4 + 3 + 40 × (8 + 3 + 22) + 8 + 1 + 38 + 4) + 36 = 6,116 WU,
    // more than the 4,000 WU that `validate_selection` keeps free.
    let payouts: Vec<(ScriptBuf, u32)> = (0..40u8)
        .map(|k| {
            let mut script = vec![0x00, 0x14];
            script.extend_from_slice(&[k; 20]);
            (ScriptBuf::from_bytes(script), 1)
        })
        .collect();
    let many = || WorkBook::new(Network::Regtest, Payout::new(payouts.clone()).unwrap());
    // 3,995,000 WU of transactions: 5,000 WU left, enough for 4,000 but not for 6,116.
    let big = |n: u8| TemplateTx {
        weight: 1_997_500,
        ..tx(n, vec![])
    };
    let (sel, t) = selection(1, 200, vec![big(1), big(2)]);
    assert_eq!(sel.weight, 3_995_000);
    let checked = validate_selection(&sel, &t, Network::Regtest);
    assert!(checked.is_ok(), "{checked:?}");
    // With a one-output payout the same selection is mined...
    let mut b = book();
    b.on_tip(&tip(1, 200)).unwrap();
    assert!(b.on_selection(sel.clone(), t.clone()).unwrap().is_some());
    // ...with forty it is refused by the weight branch, with its exact reason.
    let mut b = many();
    b.on_tip(&tip(1, 200)).unwrap();
    let e = b.on_selection(sel, t).unwrap_err().to_string();
    assert_eq!(
        e,
        "invalid selection 42 for height 200: transactions weigh 3995000 WU, leaving no room \
         for the coinbase's 6116 under 4000000"
    );
}

#[test]
fn a_refused_selection_leaves_the_last_valid_full_job_in_place() {
    let mut b = book();
    b.on_tip(&tip(1, 200)).unwrap();
    let (good, t) = selection(1, 200, vec![tx(1, vec![]), tx(2, vec![1])]);
    let (valid, body) = b.on_selection(good.clone(), t.clone()).unwrap().unwrap();
    assert_eq!((valid.job.kind, valid.job.tx_count), (JobKind::Full, 2));
    let unchanged = |b: &WorkBook| {
        let now = b.current().expect("current work");
        assert_eq!(now.job.template_id, valid.job.template_id);
        assert_eq!(now.job.kind, JobKind::Full);
        assert_eq!(now.job.tx_count, 2);
        assert_eq!(now.job.template, valid.job.template);
        assert_eq!(now.job.outputs, valid.job.outputs);
        assert_eq!(now.tip, valid.tip);
    };
    // A later selection (a new template on the same tip) with a wrong witness commitment:
    // refused by the checks of `prepare`.
    let (mut bad, t3) = selection(1, 200, vec![tx(1, vec![]), tx(2, vec![1]), tx(3, vec![])]);
    bad.id = 43;
    bad.witness_commitment = hex::encode([0u8; 32]);
    let e = b.on_selection(bad, t3.clone()).unwrap_err();
    assert!(e.to_string().contains("witness commitment"), "{e}");
    unchanged(&b);
    // One refused after preparation, by the work book's own coinbase check.
    let p2pkh = ScriptBuf::from_hex("76a914000000000000000000000000000000000000000088ac").unwrap();
    let heavy = TemplateTx {
        sigops: 79_999,
        ..tx(4, vec![])
    };
    let (sel, t4) = selection(1, 200, vec![heavy]);
    let mut strict = WorkBook::new(Network::Regtest, Payout::new(vec![(p2pkh, 1)]).unwrap());
    strict.on_tip(&tip(1, 200)).unwrap();
    let (strict_valid, _) = strict
        .on_selection(good.clone(), t.clone())
        .unwrap()
        .unwrap();
    let mut sel = sel;
    sel.id = 44;
    let e = strict.on_selection(sel, t4).unwrap_err();
    assert!(e.to_string().contains("no room for the coinbase"), "{e}");
    assert_eq!(
        strict.current().unwrap().job.template_id,
        strict_valid.job.template_id
    );
    // The refused selections are not remembered: the valid one re-sent is still a duplicate,
    // and the block body of the valid job is what a found block is built from.
    assert!(b.on_selection(good, t).unwrap().is_none());
    unchanged(&b);
    assert_eq!(body.txs().collect::<Vec<_>>(), vec![&[1u8][..], &[2u8][..]]);
}

/// A pool changing its outputs (another mining job token's): jobs built after the change pay
/// them; the current job is only reported for a rebuild when it pays other outputs.
#[test]
fn changed_pool_outputs_apply_to_the_next_job_and_flag_the_current_one() {
    let pool = |byte: u8| {
        vec![TxOut {
            value: jdc_shared::bitcoin::Amount::ZERO,
            script_pubkey: ScriptBuf::from_bytes(
                vec![0x00, 0x14].into_iter().chain([byte; 20]).collect(),
            ),
        }]
    };
    let mut b = book();
    assert!(b.current_is_up_to_date(), "no job yet");
    b.set_pool_outputs(Some(pool(1)));
    let (first, body) = b.on_tip(&tip(1, 100)).unwrap().unwrap();
    assert_eq!(first.job.outputs[0].script_pubkey, pool(1)[0].script_pubkey);
    assert!(b.current_is_up_to_date());
    // The same outputs again: nothing to rebuild.
    assert!(!b.change_pool_outputs(pool(1)));
    // Other outputs: the current job must be rebuilt to pay them...
    assert!(b.change_pool_outputs(pool(2)));
    assert!(!b.current_is_up_to_date());
    let (rebuilt, _) = b.rebuild(&body).unwrap().unwrap();
    assert_eq!(rebuilt.tip, first.tip, "same tip");
    assert_eq!(
        rebuilt.job.outputs[0].script_pubkey,
        pool(2)[0].script_pubkey
    );
    assert_eq!(
        rebuilt.job.outputs[0].value, first.job.outputs[0].value,
        "the whole reward still"
    );
    assert!(b.current_is_up_to_date());
    // ...and the next job pays them without a rebuild.
    assert!(b.change_pool_outputs(pool(3)));
    let (next, _) = b.on_tip(&tip(2, 101)).unwrap().unwrap();
    assert_eq!(next.job.outputs[0].script_pubkey, pool(3)[0].script_pubkey);
    assert!(b.current_is_up_to_date());
}
