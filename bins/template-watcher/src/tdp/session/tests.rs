use super::*;
use jdc_shared::bitcoin::{
    absolute::LockTime, transaction, Amount, OutPoint, ScriptBuf, Sequence, TxIn, TxOut, Witness,
};
use jdc_shared::messages::{Template, TemplateTx};

use crate::tdp::prepared::COINBASE_BASE_WEIGHT;
use stratum_core::template_distribution_sv2::{NewTemplateOwned, SetNewPrevHashOwned};

const PREV: &str = "00000000000000000001c0b0a2c9b1d3bd49a6f8de6c2b8d5e3a4f8fcd0e1a2b";

fn tip(prev: &str) -> Arc<Tip> {
    Arc::new(Tip {
        height: 101,
        prev_hash: prev.into(),
        nbits: 0x207f_ffff,
        time: 1_700_000_100,
        min_time: 1_700_000_000,
        version: 0x2000_0000,
        subsidy: 5_000_000_000,
        detected_at_us: 1,
        detected_by: "zmq".into(),
    })
}

fn tx(n: u8) -> (Transaction, TemplateTx) {
    let t = Transaction {
        version: transaction::Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint {
                txid: jdc_shared::bitcoin::Txid::from_byte_array([n; 32]),
                vout: 0,
            },
            script_sig: ScriptBuf::new(),
            sequence: Sequence::MAX,
            witness: Witness::from_slice(&[vec![n; 72]]),
        }],
        output: vec![TxOut {
            value: Amount::from_sat(1_000),
            script_pubkey: ScriptBuf::from_bytes(vec![0x51]),
        }],
    };
    let data = serialize(&t);
    let info = TemplateTx {
        data,
        txid: t.compute_txid().to_string(),
        wtxid: t.compute_wtxid().to_string(),
        fee: 500 * u64::from(n),
        weight: t.weight().to_wu(),
        sigops: 0,
        depends: Vec::new(),
    };
    (t, info)
}

fn template(id: u64, prev: &str, txs: &[TemplateTx]) -> Arc<PreparedTemplate> {
    prepare(raw_template(id, prev, txs))
}

fn prepare(t: Template) -> Arc<PreparedTemplate> {
    Arc::new(PreparedTemplate::new(t).unwrap())
}

fn raw_template(id: u64, prev: &str, txs: &[TemplateTx]) -> Template {
    let fees: u64 = txs.iter().map(|t| t.fee).sum();
    Template {
        id,
        height: 101,
        prev_hash: prev.into(),
        version: 0x2000_0000,
        bits: 0x207f_ffff,
        target: String::new(),
        curtime: 1_700_000_100,
        mintime: 1_700_000_000,
        coinbase_value: 5_000_000_000 + fees,
        subsidy: 5_000_000_000,
        weight_limit: 4_000_000,
        sigop_limit: 80_000,
        txs: txs.to_vec(),
        tip_detected_at_us: 0,
    }
}

fn new_template(m: &AnyMessageOwned) -> &NewTemplateOwned {
    match m {
        AnyMessageOwned::TemplateDistribution(TemplateDistributionOwned::NewTemplate(t)) => t,
        other => panic!("expected NewTemplate, got {other:?}"),
    }
}

fn prev_hash(m: &AnyMessageOwned) -> &SetNewPrevHashOwned {
    match m {
        AnyMessageOwned::TemplateDistribution(TemplateDistributionOwned::SetNewPrevHash(p)) => p,
        other => panic!("expected SetNewPrevHash, got {other:?}"),
    }
}

#[test]
fn a_new_tip_is_a_future_empty_template_activated_at_once() {
    let mut s = Session::new(1000);
    let feed = Feed {
        tip: Some(tip(PREV)),
        template: None,
    };
    let out = s.on_feed(&feed).unwrap();
    assert_eq!(out.len(), 2);
    let t = new_template(&out[0]);
    assert!(t.future_template);
    assert_eq!(t.coinbase_tx_value_remaining, 5_000_000_000);
    assert_eq!(t.merkle_path.iter().count(), 0);
    let p = prev_hash(&out[1]);
    assert_eq!(p.template_id, t.template_id);
    assert_eq!(p.header_timestamp, 1_700_000_100);
    assert_eq!(p.n_bits, 0x207f_ffff);
    assert_eq!(
        p.prev_hash.to_array(),
        chain::hash_from_rpc_hex(PREV).unwrap()
    );
    // The same feed again: nothing new.
    assert!(s.on_feed(&feed).unwrap().is_empty());
}

#[test]
fn the_full_template_follows_and_refreshes_need_the_fee_delta() {
    let mut s = Session::new(1000);
    let (_, a) = tx(1);
    let (_, b) = tx(2);
    let (_, c) = tx(3);
    let mut feed = Feed {
        tip: Some(tip(PREV)),
        template: Some(template(10, PREV, std::slice::from_ref(&a))),
    };
    let out = s.on_feed(&feed).unwrap();
    assert_eq!(out.len(), 3, "future, prev hash, then the full template");
    let full = new_template(&out[2]);
    assert!(!full.future_template);
    assert_eq!(full.template_id, 10);
    assert_eq!(full.coinbase_tx_value_remaining, 5_000_000_500);
    assert_eq!(full.merkle_path.iter().count(), 1);
    // +1000 sats of fees (tx 2): enough.
    feed.template = Some(template(11, PREV, &[a.clone(), b.clone()]));
    assert_eq!(s.on_feed(&feed).unwrap().len(), 1);
    // +1500 on 11 but only if the delta is met: raise it.
    let mut strict = Session::new(10_000);
    strict.on_feed(&feed).unwrap();
    feed.template = Some(template(12, PREV, &[a, b, c]));
    assert!(
        strict.on_feed(&feed).unwrap().is_empty(),
        "1,500 sats < 10,000"
    );
    // A template for another tip is not sent.
    feed.template = Some(template(13, &PREV.replace("0001", "0002"), &[]));
    assert!(s.on_feed(&feed).unwrap().is_empty());
}

#[test]
fn coinbase_room_leaves_out_the_last_transactions() {
    let (_, a) = tx(1);
    let (_, b) = tx(2);
    let mut t = raw_template(10, PREV, &[a.clone(), b.clone()]);
    // Room for the coinbase and both transactions, until the client asks for more.
    t.weight_limit = COINBASE_BASE_WEIGHT + a.weight + b.weight;
    let feed = Feed {
        tip: Some(tip(PREV)),
        template: Some(prepare(t)),
    };
    let mut roomy = Session::new(0);
    let out = roomy.on_feed(&feed).unwrap();
    // Coinbase + 2 transactions: a merkle path of 2; coinbase + 1: a path of 1.
    assert_eq!(
        new_template(&out[2]).merkle_path.iter().count(),
        2,
        "both txs"
    );
    let mut cramped = Session::new(0);
    cramped.set_constraints(10);
    let out = cramped.on_feed(&feed).unwrap();
    let full = new_template(&out[2]);
    assert_eq!(full.merkle_path.iter().count(), 1, "one tx left out");
    assert_eq!(full.coinbase_tx_value_remaining, 5_000_000_000 + a.fee);
}

#[test]
fn transaction_data_and_solutions_come_from_the_templates_sent() {
    let mut s = Session::new(0);
    let (t1, a) = tx(1);
    let (t2, b) = tx(2);
    let feed = Feed {
        tip: Some(tip(PREV)),
        template: Some(template(10, PREV, &[a, b])),
    };
    let out = s.on_feed(&feed).unwrap();
    let full = new_template(&out[2]).clone();
    match s.transaction_data(10).unwrap() {
        AnyMessageOwned::TemplateDistribution(
            TemplateDistributionOwned::RequestTransactionDataSuccess(d),
        ) => {
            let list: Vec<Vec<u8>> = d
                .transaction_list
                .iter()
                .map(|t| t.as_ref().to_vec())
                .collect();
            assert_eq!(list, vec![serialize(&t1), serialize(&t2)]);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        s.transaction_data(999).unwrap(),
        AnyMessageOwned::TemplateDistribution(
            TemplateDistributionOwned::RequestTransactionDataError(_)
        )
    ));
    // A coinbase as a client builds it: the prefix, then its own outputs and the commitment.
    let mut script_sig = full.coinbase_prefix.as_ref().to_vec();
    script_sig.extend_from_slice(b"client");
    let commitment: TxOut = deserialize(full.coinbase_tx_outputs.as_ref()).unwrap();
    let coinbase = Transaction {
        version: transaction::Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint::null(),
            script_sig: ScriptBuf::from_bytes(script_sig),
            sequence: Sequence::MAX,
            witness: Witness::from_slice(&[vec![0u8; 32]]),
        }],
        output: vec![
            TxOut {
                value: Amount::from_sat(full.coinbase_tx_value_remaining),
                script_pubkey: ScriptBuf::from_bytes(vec![0x51]),
            },
            commitment,
        ],
    };
    let solution = SubmitSolutionOwned {
        template_id: 10,
        version: 0x2000_0000,
        header_timestamp: 1_700_000_200,
        header_nonce: 7,
        coinbase_tx: B064KOwned::new(serialize(&coinbase)).unwrap(),
    };
    let found = s.solution(&solution).unwrap();
    let block: Block = deserialize(&found.bytes).unwrap();
    assert_eq!(block.txdata.len(), 3);
    assert!(
        block.check_merkle_root(),
        "merkle root of the assembled block"
    );
    assert!(
        block.check_witness_commitment(),
        "the template's witness commitment holds"
    );
    assert_eq!(block.header.prev_blockhash.to_string(), PREV);
    assert_eq!(found.hash, block.block_hash());
    // Unknown template, and garbage instead of a coinbase.
    let mut unknown = solution.clone();
    unknown.template_id = 999;
    assert_eq!(
        s.solution(&unknown).unwrap_err(),
        RequestError::UnknownTemplate(999)
    );
    let mut garbage = solution;
    garbage.coinbase_tx = B064KOwned::new(vec![1, 2, 3]).unwrap();
    assert!(matches!(
        s.solution(&garbage),
        Err(RequestError::BadSolution { .. })
    ));
}
