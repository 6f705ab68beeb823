//! Helpers shared by the Job Declaration tests.
#![allow(dead_code)]

use jdc_declarator::payout::Payout;
use jdc_declarator::templates::{select_all, TemplateTxs};
use jdc_declarator::work::{BlockBody, WorkBook, WorkState};
use jdc_shared::bitcoin::consensus::serialize;
use jdc_shared::bitcoin::hashes::Hash;
use jdc_shared::bitcoin::{
    absolute::LockTime, transaction::Version, Amount, Network, OutPoint, ScriptBuf, Sequence,
    Transaction, TxIn, TxOut, Witness,
};
use jdc_shared::chain;
use jdc_shared::messages::{Template, TemplateTx, Tip};
use std::sync::Arc;

/// A segwit transaction (structurally valid; its signature is not checked here).
pub fn tx(i: u8) -> Transaction {
    Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint {
                txid: jdc_shared::bitcoin::Txid::from_byte_array([i; 32]),
                vout: 0,
            },
            script_sig: ScriptBuf::new(),
            sequence: Sequence::MAX,
            witness: Witness::from_slice(&[vec![i; 72], vec![2; 33]]),
        }],
        output: vec![TxOut {
            value: Amount::from_sat(10_000),
            script_pubkey: ScriptBuf::from_bytes(vec![
                0x00, 0x14, i, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19,
            ]),
        }],
    }
}

/// Work on a new tip with `txs` as its full job, at difficulty 1 (so that no test share is a
/// block by chance).
pub fn work(txs: &[Transaction]) -> (WorkState, BlockBody) {
    work_at(txs, 0x1d00_ffff)
}

/// [`work`] with the compact target `nbits`.
pub fn work_at(txs: &[Transaction], nbits: u32) -> (WorkState, BlockBody) {
    let mut book = WorkBook::new(
        Network::Regtest,
        Payout::new(vec![(ScriptBuf::from_bytes(vec![0x51]), 1)]).unwrap(),
    );
    let height = 500;
    book.on_tip(&Tip {
        height,
        prev_hash: hex::encode([3u8; 32]),
        nbits,
        time: 1_700_000_100,
        min_time: 1_700_000_000,
        version: 0x2000_0000,
        subsidy: chain::subsidy(height, Network::Regtest),
        detected_at_us: 0,
        detected_by: "test".into(),
    })
    .unwrap();
    let list = txs
        .iter()
        .map(|t| TemplateTx {
            data: serialize(t),
            txid: t.compute_txid().to_string(),
            wtxid: t.compute_wtxid().to_string(),
            fee: 500,
            weight: t.weight().to_wu(),
            sigops: 1,
            depends: vec![],
        })
        .collect();
    let template = Template {
        id: 11,
        height,
        prev_hash: hex::encode([3u8; 32]),
        version: 0x2000_0000,
        bits: nbits,
        target: hex::encode([0xff; 32]),
        curtime: 1_700_000_100,
        mintime: 1_700_000_000,
        coinbase_value: 0,
        subsidy: chain::subsidy(height, Network::Regtest),
        weight_limit: 4_000_000,
        sigop_limit: 80_000,
        txs: list,
        tip_detected_at_us: 0,
    };
    let sel = select_all(&template, 1, Network::Regtest);
    let txs = Arc::new(TemplateTxs::from_template(template).unwrap());
    book.on_selection(sel, txs).unwrap().unwrap()
}
