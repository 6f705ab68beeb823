//! Share validation throughput of the declarator on one core.
//!
//! `cargo bench -p jdc-declarator --bench share_validation`
//!
//! Builds real work (tip + selection → template → extended channel job, exactly as the
//! declarator does) and feeds unique shares through the same path a device's shares take
//! (`Channel::on_extended_share`: our share book's validation, accounting, reply), each with its
//! own extranonce (the worst case). Prints shares/s for an empty block and for a
//! 5,000-transaction block (deeper merkle path).

use std::time::Instant;

use jdc_declarator::downstream::channel::Channel;
use jdc_declarator::payout::Payout;
use jdc_declarator::templates::{select_all, TemplateTxs};
use jdc_declarator::work::WorkBook;
use jdc_shared::bitcoin::{Network, ScriptBuf, Target};
use jdc_shared::chain;
use jdc_shared::messages::{Template, TemplateTx, Tip};
use std::sync::Arc;
use stratum_core::binary_sv2::B032Owned;
use stratum_core::channels_sv2::extranonce_manager::ExtranonceAllocator;
use stratum_core::channels_sv2::server::extended::ExtendedChannel;
use stratum_core::mining_sv2::SubmitSharesExtendedOwned;

/// A mainnet-like difficulty so that no share is a block.
const NBITS: u32 = 0x1703_4219;

fn work(txs: usize) -> jdc_declarator::work::WorkState {
    let mut book = WorkBook::new(
        Network::Regtest,
        Payout::new(vec![(ScriptBuf::from_bytes(vec![0x51]), 1)]).expect("payout"),
    );
    let height = 1000;
    let prev = hex::encode([7u8; 32]);
    let tip = Tip {
        height,
        prev_hash: prev.clone(),
        nbits: NBITS,
        time: 1_700_000_000,
        min_time: 1_700_000_000,
        version: 0x2000_0000,
        subsidy: chain::subsidy(height, Network::Regtest),
        detected_at_us: 0,
        detected_by: "bench".into(),
    };
    let (state, _) = book.on_tip(&tip).expect("tip").expect("new");
    if txs == 0 {
        return state;
    }
    let list: Vec<TemplateTx> = (0..txs)
        .map(|i| {
            let mut id = [0u8; 32];
            id[..8].copy_from_slice(&(i as u64).to_le_bytes());
            let mut wid = id;
            wid[31] = 1;
            TemplateTx {
                data: vec![0; 10],
                txid: hex::encode(id),
                wtxid: hex::encode(wid),
                fee: 100,
                weight: 500,
                sigops: 1,
                depends: vec![],
            }
        })
        .collect();
    let template = Template {
        id: 1,
        height,
        prev_hash: prev,
        version: 0x2000_0000,
        bits: NBITS,
        target: hex::encode([0xff; 32]),
        curtime: 1_700_000_000,
        mintime: 1_700_000_000,
        coinbase_value: 0,
        subsidy: chain::subsidy(height, Network::Regtest),
        weight_limit: 4_000_000,
        sigop_limit: 80_000,
        txs: list,
        tip_detected_at_us: 0,
    };
    let sel = select_all(&template, 1, Network::Regtest);
    let txs = Arc::new(TemplateTxs::from_template(template).expect("template"));
    book.on_selection(sel, txs)
        .expect("selection")
        .expect("new")
        .0
}

fn bench(txs: usize, shares: u32) {
    let state = work(txs);
    let mut allocator = ExtranonceAllocator::new(vec![], 10, 65_536).expect("allocator");
    let prefix = allocator.allocate_extended(8).expect("prefix");
    let mut channel = ExtendedChannel::new_for_job_declaration_client(
        1,
        "bench".into(),
        prefix,
        Target::from_le_bytes([0xff; 32]),
        1.0,
        true,
        8,
        1,
        10_000.0,
        None,
        "jdc".into(),
        None,
    )
    .expect("channel");
    // Every hash is a valid share, so each iteration runs the whole validation.
    channel
        .set_target(Target::from_le_bytes([0xff; 32]))
        .expect("target");
    let mut channel = Channel::extended(channel, 1);
    let msgs = channel.on_new_tip(&state).expect("job");
    let job_id = match &msgs[1] {
        stratum_core::parsers_sv2::AnyMessageOwned::Mining(
            stratum_core::parsers_sv2::MiningOwned::SetNewPrevHash(p),
        ) => p.job_id,
        _ => panic!("expected SetNewPrevHash"),
    };
    let extranonce = B032Owned::new(vec![1u8; 8]).expect("extranonce");
    // Worst case for the validator: every share has its own extranonce, so its own coinbase
    // and merkle root (as from many devices behind a proxy). The messages are built before
    // the clock starts, as the connection's decoder would hand them over.
    let batch: Vec<SubmitSharesExtendedOwned> = (0..shares)
        .map(|i| {
            let mut e = [0u8; 8];
            e[..4].copy_from_slice(&i.to_le_bytes());
            SubmitSharesExtendedOwned {
                channel_id: 1,
                sequence_number: i,
                job_id,
                nonce: i.rotate_left(16),
                ntime: 1_700_000_000,
                version: 0x2000_0000,
                extranonce: B032Owned::new(e.to_vec()).expect("extranonce"),
            }
        })
        .collect();
    let start = Instant::now();
    let mut accepted = 0u32;
    for share in batch {
        if channel.on_extended_share(share).rejected.is_none() {
            accepted += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    if accepted != shares {
        let share = SubmitSharesExtendedOwned {
            channel_id: 1,
            sequence_number: 0,
            job_id,
            nonce: 0,
            ntime: 1_700_000_000,
            version: 0x2000_0000,
            extranonce: extranonce.clone(),
        };
        println!(
            "sample outcome: {:?}",
            channel.on_extended_share(share).rejected
        );
    }
    assert_eq!(accepted, shares, "every bench share must be valid");
    println!(
        "share validation, {txs:>5} txs in block (merkle path {:>2}): {:>9.0} shares/s on one core ({shares} shares in {:.3} s)",
        state.job.template.merkle_path.len(),
        f64::from(shares) / secs,
        secs
    );
}

fn main() {
    // cargo bench passes `--bench`; ignore arguments.
    bench(0, 300_000);
    bench(5_000, 300_000);
}
