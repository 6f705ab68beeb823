use super::*;
use crate::payout::Payout;
use crate::templates::{select_all, TemplateTxs};
use crate::work::WorkBook;
use jdc_shared::bitcoin::consensus::{deserialize, serialize};
use jdc_shared::bitcoin::{Network, ScriptBuf, Transaction};
use jdc_shared::chain;
use jdc_shared::messages::{Template, TemplateTx, Tip};
use std::sync::Arc;

const NBITS: u32 = 0x207f_ffff;

fn pool_script() -> ScriptBuf {
    let mut b = vec![0x00, 0x14];
    b.extend_from_slice(&[0x42; 20]);
    ScriptBuf::from_bytes(b)
}

fn token(outputs: Vec<TxOut>) -> Token {
    Token {
        token: vec![1, 0, 0, 0, 0, 0, 0, 0],
        raw_outputs: serialize(&outputs),
        outputs,
    }
}

/// A tip and a full job of three transactions on it.
fn work() -> (WorkState, BlockBody) {
    let (_, state, body) = work_in(WorkBook::new(
        Network::Regtest,
        Payout::new(vec![(ScriptBuf::from_bytes(vec![0x51]), 1)]).unwrap(),
    ));
    (state, body)
}

/// [`work`] from `book`, which is returned too.
fn work_in(mut book: WorkBook) -> (WorkBook, WorkState, BlockBody) {
    let height = 300;
    book.on_tip(&Tip {
        height,
        prev_hash: hex::encode([5u8; 32]),
        nbits: NBITS,
        time: 1_700_000_100,
        min_time: 1_700_000_000,
        version: 0x2000_0000,
        subsidy: chain::subsidy(height, Network::Regtest),
        detected_at_us: 0,
        detected_by: "test".into(),
    })
    .unwrap();
    let txs = (1..=3u8)
        .map(|i| TemplateTx {
            data: vec![i; 10],
            txid: hex::encode([i; 32]),
            wtxid: hex::encode([i + 50; 32]),
            fee: 1_000,
            weight: 400,
            sigops: 1,
            depends: vec![],
        })
        .collect();
    let t = Template {
        id: 9,
        height,
        prev_hash: hex::encode([5u8; 32]),
        version: 0x2000_0000,
        bits: NBITS,
        target: hex::encode([0xff; 32]),
        curtime: 1_700_000_100,
        mintime: 1_700_000_000,
        coinbase_value: 0,
        subsidy: chain::subsidy(height, Network::Regtest),
        weight_limit: 4_000_000,
        sigop_limit: 80_000,
        txs,
        tip_detected_at_us: 0,
    };
    let sel = select_all(&t, 1, Network::Regtest);
    let txs = Arc::new(TemplateTxs::from_template(t).unwrap());
    let (state, body) = book.on_selection(sel, txs).unwrap().unwrap();
    (book, state, body)
}

#[test]
fn declared_and_custom_job_carry_the_same_coinbase() {
    let (state, body) = work();
    let factory = JobFactory::new(true, None, Some("jdc-test".into()));
    let extranonce = 4 + 2 + 8;
    let pool = vec![TxOut {
        value: Amount::ZERO,
        script_pubkey: pool_script(),
    }];
    let d = declaration(&factory, &state, &body, &token(pool), 17, 7, extranonce).unwrap();
    let value = state.job.template.coinbase_tx_value_remaining;

    // The declared coinbase, with an extranonce in its place, is a valid coinbase.
    let mut bytes = d.declare.coinbase_tx_prefix.as_bytes().to_vec();
    bytes.extend(std::iter::repeat_n(0u8, extranonce));
    bytes.extend_from_slice(d.declare.coinbase_tx_suffix.as_bytes());
    let tx: Transaction = deserialize(&bytes).expect("declared coinbase parses");
    assert!(tx.is_coinbase());
    assert_eq!(tx.output[0].script_pubkey, pool_script());
    assert_eq!(
        tx.output[0].value.to_sat(),
        value,
        "the pool payout gets the reward"
    );
    let commitment = state.job.template.coinbase_tx_outputs.as_bytes().to_vec();
    assert_eq!(
        serialize(tx.output.last().unwrap()),
        commitment,
        "witness commitment output last"
    );
    assert_eq!(tx.input[0].witness.len(), 1, "witness reserved value kept");

    // Byte-identical outputs in both messages.
    assert_eq!(
        serialize(&tx.output),
        d.custom.coinbase_tx_outputs.as_bytes()
    );
    // The custom job's scriptSig head is the declared scriptSig's.
    assert!(tx.input[0]
        .script_sig
        .as_bytes()
        .starts_with(d.custom.coinbase_prefix.as_bytes()));
    assert_eq!(d.custom.coinbase_tx_version, 2);
    assert_eq!(
        d.custom.coinbase_tx_locktime,
        tx.lock_time.to_consensus_u32()
    );
    assert_eq!(
        d.custom.coinbase_tx_input_n_sequence,
        tx.input[0].sequence.0
    );
    // Same tip, same min_ntime for every custom job of the tip.
    assert_eq!(d.custom.prev_hash.to_array(), state.tip.prev_hash);
    assert_eq!(d.custom.min_ntime, state.tip.header_timestamp);
    assert_eq!(d.custom.nbits, NBITS);
    assert_eq!(d.custom.version, d.declare.version);
    assert_eq!(d.custom.channel_id, 7);
    assert_eq!((d.custom.request_id, d.declare.request_id), (17, 17));
    assert_eq!(
        d.custom
            .merkle_path
            .iter()
            .map(|h| h.to_array())
            .collect::<Vec<_>>(),
        state
            .job
            .template
            .merkle_path
            .iter()
            .map(|h| h.to_array())
            .collect::<Vec<_>>()
    );
    // The wtxids in block order.
    let wtxids: Vec<[u8; 32]> = d.declare.wtxid_list.iter().map(|h| h.to_array()).collect();
    assert_eq!(wtxids, vec![[51; 32], [52; 32], [53; 32]]);
    assert_eq!(d.outputs[0].value.to_sat(), value);
}

#[test]
fn pool_outputs_share_the_reward_and_refuse_to_overpay() {
    let extra = TxOut {
        value: Amount::from_sat(1_000),
        script_pubkey: ScriptBuf::from_bytes(vec![0x51]),
    };
    let payout = TxOut {
        value: Amount::ZERO,
        script_pubkey: pool_script(),
    };
    let outs = pool_outputs(&token(vec![payout.clone(), extra.clone()]), 5_000).unwrap();
    assert_eq!(outs[0].value.to_sat(), 4_000);
    assert_eq!(outs[1], extra);
    assert_eq!(
        pool_outputs(&token(vec![payout, extra]), 500),
        Err(DeclareError::OutputsExceedReward {
            asked: 1_000,
            available: 500
        })
    );
    assert_eq!(
        pool_outputs(&token(vec![]), 5_000),
        Err(DeclareError::NoPoolOutput)
    );
}

/// The invariant the pool mode rests on: a device on one of our extended channels, whose
/// extranonce prefix starts with the pool's, mines exactly the coinbase we declared (same
/// txid for the same full extranonce).
#[test]
fn devices_mine_the_declared_coinbase() {
    let (state, body) = work();
    let factory = JobFactory::new(true, None, Some("jdc-test".into()));
    let pool = vec![TxOut {
        value: Amount::ZERO,
        script_pubkey: pool_script(),
    }];
    let d = declaration(&factory, &state, &body, &token(pool), 1, 7, FULL_EXTRANONCE).unwrap();
    // The devices' job pays the pool's outputs instead of our own.
    let mut job = (*state.job).clone();
    job.outputs = d.outputs.clone();
    let pool_state = WorkState {
        tip: state.tip.clone(),
        job: std::sync::Arc::new(job),
    };
    assert_devices_mine(&pool_state, &d);
}

/// A pool rotating its payout script: a token whose outputs differ from those the devices'
/// job pays is detected (the runner's check), the work book builds the job again with the
/// token's outputs on the same tip, and devices then mine exactly the coinbase declared with
/// that token.
#[test]
fn a_token_with_other_outputs_moves_devices_to_them_before_it_is_declared() {
    let first = vec![TxOut {
        value: Amount::ZERO,
        script_pubkey: pool_script(),
    }];
    let mut book = WorkBook::new(
        Network::Regtest,
        Payout::new(vec![(ScriptBuf::from_bytes(vec![0x51]), 1)]).unwrap(),
    );
    book.set_pool_outputs(Some(first.clone()));
    let (mut book, state, body) = work_in(book);
    let value = state.job.template.coinbase_tx_value_remaining;
    assert_eq!(
        pool_outputs(&token(first.clone()), value).unwrap(),
        state.job.outputs,
        "the devices' job pays the first token's outputs"
    );
    // The next token pays another script of the pool, and a second output.
    let mut rotated_script = pool_script().into_bytes();
    rotated_script[2] = 0x43;
    let rotated = vec![
        TxOut {
            value: Amount::ZERO,
            script_pubkey: ScriptBuf::from_bytes(rotated_script),
        },
        TxOut {
            value: Amount::from_sat(1_000),
            script_pubkey: ScriptBuf::from_bytes(vec![0x51]),
        },
    ];
    let next = token(rotated.clone());
    assert_ne!(
        pool_outputs(&next, value).unwrap(),
        state.job.outputs,
        "the runner sees that the token does not pay what devices mine"
    );
    // Declared as it is, the devices' coinbase would not be the declared one.
    let factory = JobFactory::new(true, None, Some("jdc-test".into()));
    let wrong = declaration(&factory, &state, &body, &next, 1, 7, FULL_EXTRANONCE).unwrap();
    assert_ne!(wrong.outputs, state.job.outputs);

    // The hub: the current job pays other outputs, so it is built again with the token's.
    assert!(book.change_pool_outputs(rotated.clone()));
    let (rebuilt, rebuilt_body) = book.rebuild(&body).unwrap().unwrap();
    assert!(book.current_is_up_to_date());
    assert!(
        !book.change_pool_outputs(rotated),
        "told again, the book has nothing to rebuild"
    );
    assert_ne!(rebuilt.job.template_id, state.job.template_id);
    assert_eq!(rebuilt.tip, state.tip, "same tip");
    assert_eq!(rebuilt.job.tx_count, state.job.tx_count);
    assert_eq!(rebuilt_body.txids, body.txids);
    assert_eq!(rebuilt.job.outputs, pool_outputs(&next, value).unwrap());
    assert_eq!(rebuilt.job.outputs[0].value.to_sat(), value - 1_000);

    let d = declaration(
        &factory,
        &rebuilt,
        &rebuilt_body,
        &next,
        2,
        7,
        FULL_EXTRANONCE,
    )
    .unwrap();
    assert_eq!(d.outputs, rebuilt.job.outputs);
    assert_devices_mine(&rebuilt, &d);
}

/// Pool prefix (4 bytes), our 2-byte channel index, the device's bytes (8).
const FULL_EXTRANONCE: usize = 4 + 2 + 8;

/// The invariant the pool mode rests on: a device on one of our extended channels, whose
/// extranonce prefix starts with the pool's, mines exactly the coinbase declared in `d` when
/// it mines `state` (same txid for the same full extranonce, same merkle path).
fn assert_devices_mine(state: &WorkState, d: &Declaration) {
    use crate::downstream::channel::Channel;
    use jdc_shared::bitcoin::Target;
    use stratum_core::channels_sv2::extranonce_manager::ExtranonceAllocator;
    use stratum_core::channels_sv2::server::extended::ExtendedChannel;
    use stratum_core::parsers_sv2::{AnyMessageOwned, MiningOwned};

    let pool_prefix = vec![0xaa, 0xbb, 0x01, 0x02];
    let device_part = 8usize;
    let full = FULL_EXTRANONCE;
    assert_eq!(full, pool_prefix.len() + 2 + device_part);

    let mut allocator =
        ExtranonceAllocator::from_upstream_prefix(pool_prefix.clone(), vec![], full as u8, 65_536)
            .unwrap();
    let prefix = allocator.allocate_extended(device_part).unwrap();
    let channel_prefix = prefix.as_bytes().to_vec();
    assert!(channel_prefix.starts_with(&pool_prefix));
    let sri = ExtendedChannel::new_for_job_declaration_client(
        1,
        "device".into(),
        prefix,
        Target::from_le_bytes([0xff; 32]),
        1.0,
        true,
        device_part as u16,
        1,
        10.0,
        None,
        "jdc-test".into(),
        None,
    )
    .unwrap();
    let mut channel = Channel::extended(sri, 1);
    let msgs = channel.on_new_tip(state).unwrap();
    let AnyMessageOwned::Mining(MiningOwned::NewExtendedMiningJob(device_job)) = &msgs[0] else {
        panic!("expected the future job first: {msgs:?}");
    };

    let device_extranonce = vec![0x33; device_part];
    let mut mined = device_job.coinbase_tx_prefix.as_bytes().to_vec();
    mined.extend_from_slice(&channel_prefix);
    mined.extend_from_slice(&device_extranonce);
    mined.extend_from_slice(device_job.coinbase_tx_suffix.as_bytes());
    let mined: Transaction = deserialize(&mined).expect("the device's coinbase parses");

    let mut declared = d.declare.coinbase_tx_prefix.as_bytes().to_vec();
    declared.extend_from_slice(&channel_prefix);
    declared.extend_from_slice(&device_extranonce);
    declared.extend_from_slice(d.declare.coinbase_tx_suffix.as_bytes());
    let declared: Transaction = deserialize(&declared).expect("the declared coinbase parses");

    assert_eq!(mined.compute_txid(), declared.compute_txid());
    // The custom job for the pool carries the same outputs, byte for byte.
    assert_eq!(
        serialize(&mined.output),
        d.custom.coinbase_tx_outputs.as_bytes()
    );
    assert_eq!(
        device_job
            .merkle_path
            .iter()
            .map(|h| h.to_array())
            .collect::<Vec<_>>(),
        d.custom
            .merkle_path
            .iter()
            .map(|h| h.to_array())
            .collect::<Vec<_>>()
    );
}
