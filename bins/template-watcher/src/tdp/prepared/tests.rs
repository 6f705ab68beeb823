use super::*;
use jdc_shared::messages::TemplateTx;

fn hash(n: u8) -> String {
    format!("{:02x}", n).repeat(32)
}

fn template(weights: &[u64]) -> Template {
    let txs: Vec<TemplateTx> = weights
        .iter()
        .enumerate()
        .map(|(i, &weight)| TemplateTx {
            data: vec![i as u8],
            txid: hash(i as u8 + 1),
            wtxid: hash(i as u8 + 101),
            fee: 100 * (i as u64 + 1),
            weight,
            sigops: 0,
            depends: Vec::new(),
        })
        .collect();
    let fees: u64 = txs.iter().map(|t| t.fee).sum();
    Template {
        id: 7,
        height: 101,
        prev_hash: hash(200),
        version: 0x2000_0000,
        bits: 0x207f_ffff,
        target: String::new(),
        curtime: 0,
        mintime: 0,
        coinbase_value: 1_000 + fees,
        subsidy: 1_000,
        weight_limit: COINBASE_BASE_WEIGHT + weights.iter().sum::<u64>(),
        sigop_limit: 80_000,
        txs,
        tip_detected_at_us: 0,
    }
}

#[test]
fn the_whole_template_is_computed_once_and_shared() {
    let p = PreparedTemplate::new(template(&[400, 400, 400])).unwrap();
    let a = p.cut_for(0);
    let b = p.cut_for(0);
    assert!(Arc::ptr_eq(&a, &b), "clients with room share one cut");
    assert_eq!(a.kept, 3);
    assert_eq!(a.coinbase_value, 1_600);
    assert_eq!(a.merkle_path, chain::coinbase_merkle_path(p.txids(3)));
    assert_eq!(p.fees(), 600);
    assert_eq!(p.prev_hash, chain::hash_from_rpc_hex(&hash(200)).unwrap());
}

#[test]
fn a_client_needing_room_gets_a_shorter_cut_shared_with_its_likes() {
    let p = PreparedTemplate::new(template(&[400, 400, 400])).unwrap();
    // 100 bytes = 400 WU of coinbase outputs: the last transaction goes.
    let a = p.cut_for(100);
    assert_eq!(a.kept, 2);
    assert_eq!(a.coinbase_value, 1_300);
    let wtxids = [
        chain::hash_from_rpc_hex(&hash(101)).unwrap(),
        chain::hash_from_rpc_hex(&hash(102)).unwrap(),
    ];
    assert_eq!(a.witness_commitment, chain::witness_commitment(&wtxids));
    assert!(Arc::ptr_eq(&a, &p.cut_for(50)), "same cut, same Arc");
    assert_eq!(p.cut_for(1_000).kept, 0);
    assert_eq!(
        p.raw_txs(2).collect::<Vec<_>>(),
        vec![&[0u8][..], &[1u8][..]]
    );
}

#[test]
fn a_bad_hash_is_an_error_naming_it() {
    let mut t = template(&[400]);
    t.txs[0].wtxid = "zz".into();
    let e = PreparedTemplate::new(t).unwrap_err();
    assert!(e.to_string().contains("zz"), "{e}");
}
