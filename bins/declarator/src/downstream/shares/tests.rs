use super::*;
use crate::downstream::channel::Channel;
use crate::payout::Payout;
use crate::templates::{select_all, TemplateTxs};
use crate::work::{WorkBook, WorkState};
use jdc_shared::bitcoin::{Network, ScriptBuf};
use jdc_shared::chain;
use jdc_shared::messages::{Template, TemplateTx, Tip};
use proptest::prelude::*;
use std::sync::Arc;
use stratum_core::binary_sv2::B032Owned;
use stratum_core::channels_sv2::extranonce_manager::ExtranonceAllocator;
use stratum_core::channels_sv2::server::extended::ExtendedChannel;
use stratum_core::channels_sv2::server::share_accounting::{
    ShareValidationError, ShareValidationResult,
};
use stratum_core::mining_sv2::SubmitSharesExtendedOwned;

/// Regtest difficulty: about half of all hashes are blocks.
const NBITS: u32 = 0x207f_ffff;
const MIN_NTIME: u32 = 1_700_000_000;

fn tip(byte: u8, height: u32) -> Tip {
    Tip {
        height,
        prev_hash: hex::encode([byte; 32]),
        nbits: NBITS,
        time: MIN_NTIME,
        min_time: MIN_NTIME,
        version: 0x2000_0000,
        subsidy: chain::subsidy(height, Network::Regtest),
        detected_at_us: 0,
        detected_by: "test".into(),
    }
}

/// A full job of `txs` fake transactions on the book's current tip.
fn full_job(book: &mut WorkBook, byte: u8, height: u32, txs: usize, id: u64) -> WorkState {
    let list: Vec<TemplateTx> = (0..txs)
        .map(|i| {
            let mut txid = [0u8; 32];
            txid[..8].copy_from_slice(&(i as u64 + id * 100_000).to_le_bytes());
            let mut wtxid = txid;
            wtxid[31] = 1;
            TemplateTx {
                data: vec![0; 10],
                txid: hex::encode(txid),
                wtxid: hex::encode(wtxid),
                fee: 100,
                weight: 400,
                sigops: 1,
                depends: vec![],
            }
        })
        .collect();
    let template = Template {
        id,
        height,
        prev_hash: hex::encode([byte; 32]),
        version: 0x2000_0000,
        bits: NBITS,
        target: hex::encode([0xff; 32]),
        curtime: MIN_NTIME,
        mintime: MIN_NTIME,
        coinbase_value: 0,
        subsidy: chain::subsidy(height, Network::Regtest),
        weight_limit: 4_000_000,
        sigop_limit: 80_000,
        txs: list,
        tip_detected_at_us: 0,
    };
    let sel = select_all(&template, id, Network::Regtest);
    let txs = Arc::new(TemplateTxs::from_template(template).unwrap());
    book.on_selection(sel, txs).unwrap().unwrap().0
}

fn extended_channel(target: Target) -> Channel {
    let mut allocator = ExtranonceAllocator::new(vec![], 10, 1024).unwrap();
    let prefix = allocator.allocate_extended(4).unwrap();
    let mut c = ExtendedChannel::new_for_job_declaration_client(
        1,
        "test".into(),
        prefix,
        Target::MAX,
        1.0,
        true,
        4,
        1,
        10.0,
        None,
        "jdc".into(),
        None,
    )
    .unwrap();
    c.set_target(target).unwrap();
    Channel::extended(c, 1)
}

fn sri_code(r: &Result<ShareValidationResult, ShareValidationError>) -> &'static str {
    match r {
        Ok(ShareValidationResult::Valid(_)) => "accepted",
        Ok(ShareValidationResult::BlockFound(..)) => "block",
        Err(
            ShareValidationError::Invalid(c)
            | ShareValidationError::Stale(c)
            | ShareValidationError::InvalidJobId(c)
            | ShareValidationError::DoesNotMeetTarget(c)
            | ShareValidationError::VersionRollingNotAllowed(c)
            | ShareValidationError::DuplicateShare(c)
            | ShareValidationError::BadExtranonceSize(c),
        ) => c,
        Err(other) => panic!("unexpected SRI error {other:?}"),
    }
}

fn our_code(v: &Verdict) -> &'static str {
    match v {
        Verdict::Accepted { .. } => "accepted",
        Verdict::Block { .. } => "block",
        Verdict::Rejected(c) => c,
    }
}

/// How a generated share departs from a valid one.
#[derive(Debug, Clone)]
struct Twist {
    job: u8,
    extranonce_len: usize,
    version_bits: u32,
    ntime_offset: i64,
    nonce: u32,
    extranonce_byte: u8,
    repeat: bool,
}

fn twist() -> impl Strategy<Value = Twist> {
    (
        0u8..4,
        prop_oneof![Just(4usize), 0usize..9],
        prop_oneof![
            Just(0u32),
            any::<u32>().prop_map(|v| v & 0x1fff_ffe0),
            any::<u32>()
        ],
        prop_oneof![Just(0i64), -2i64..2, 7_198i64..7_202],
        any::<u32>(),
        any::<u8>(),
        any::<bool>(),
    )
        .prop_map(
            |(job, extranonce_len, version_bits, ntime_offset, nonce, extranonce_byte, repeat)| {
                Twist {
                    job,
                    extranonce_len,
                    version_bits,
                    ntime_offset,
                    nonce,
                    extranonce_byte,
                    repeat,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every verdict of our fast path equals `channels_sv2`'s on the same share: jobs of the
    /// current and previous tip, unknown jobs, wrong extranonce sizes, version bits inside and
    /// outside the rolling mask, ntime at and beyond its bounds, duplicates, blocks.
    #[test]
    fn verdicts_match_channels_sv2(
        twists in proptest::collection::vec(twist(), 1..40),
        txs in prop_oneof![Just(0usize), 1usize..40],
        half_target in any::<bool>(),
    ) {
        let payout = Payout::new(vec![(ScriptBuf::from_bytes(vec![0x51]), 1)]).unwrap();
        let mut book = WorkBook::new(Network::Regtest, payout);
        // Channel target: everything, or about half of the hashes (so some are too low).
        let target = if half_target {
            let mut t = [0xff; 32];
            t[31] = 0x7f;
            t[30] = 0xff;
            Target::from_le_bytes(t)
        } else {
            any_hash()
        };
        let mut channel = extended_channel(target);
        // Previous tip with one job (its shares are stale), then the current tip with an
        // empty job and a full job.
        let (old, _) = book.on_tip(&tip(1, 100)).unwrap().unwrap();
        channel.on_new_tip(&old).unwrap();
        let old_job = 1u32;
        let (empty, _) = book.on_tip(&tip(2, 101)).unwrap().unwrap();
        channel.on_new_tip(&empty).unwrap();
        let full = full_job(&mut book, 2, 101, txs, 9);
        channel.on_new_job(&full).unwrap();
        let jobs = [old_job, 2, 3, 1_000];
        let mut last: Option<SubmitSharesExtendedOwned> = None;
        for (seq, t) in twists.into_iter().enumerate() {
            let share = match (&last, t.repeat) {
                (Some(prev), true) => SubmitSharesExtendedOwned {
                    sequence_number: seq as u32,
                    ..prev.clone()
                },
                _ => SubmitSharesExtendedOwned {
                    channel_id: channel.id(),
                    sequence_number: seq as u32,
                    job_id: jobs[t.job as usize],
                    nonce: t.nonce,
                    ntime: (i64::from(MIN_NTIME) + t.ntime_offset) as u32,
                    version: 0x2000_0000 ^ t.version_bits,
                    extranonce: B032Owned::new(vec![t.extranonce_byte; t.extranonce_len]).unwrap(),
                },
            };
            last = Some(share.clone());
            let (ours, sri) = channel.both_verdicts(share.clone());
            let sri = sri.expect("extended channel");
            prop_assert_eq!(our_code(&ours), sri_code(&sri), "share {:?}", share);
        }
    }
}

/// A target every hash meets (`Target::MAX` is the difficulty-1 target, not this).
fn any_hash() -> Target {
    Target::from_le_bytes([0xff; 32])
}

fn book_with_job(extranonce_len: usize, target: Target) -> ShareBook {
    let mut book = ShareBook::new(3, 4);
    book.on_new_tip([7; 32], NBITS);
    book.add_job(JobCheck {
        job_id: 5,
        template_id: 0,
        version: 0x2000_0000,
        version_rolling_allowed: false,
        min_ntime: MIN_NTIME,
        target,
        difficulty: 2.0,
        root: RootSource::Rolled {
            prefix: prefix_engine(&[b"prefix"]),
            suffix: b"suffix".to_vec(),
            path: vec![[1; 32], [2; 32]],
            extranonce_len,
        },
    });
    book
}

fn fields(nonce: u32, extranonce: &[u8]) -> ShareFields<'_> {
    ShareFields {
        job_id: 5,
        version: 0x2000_0000,
        ntime: MIN_NTIME,
        nonce,
        extranonce,
    }
}

#[test]
fn acknowledges_in_batches_and_blocks_at_once() {
    let mut book = book_with_job(2, any_hash());
    let mut acks = Vec::new();
    for nonce in 0..3 {
        assert!(matches!(
            book.check(&fields(nonce, &[1, 2])),
            Verdict::Accepted { .. } | Verdict::Block { .. }
        ));
        acks.push(book.take_ack(false));
    }
    assert_eq!(acks[0], None);
    assert_eq!(acks[1], None);
    assert_eq!(
        acks[2],
        Some(Ack {
            accepted: 3,
            work: 6
        })
    );
    book.check(&fields(10, &[1, 2]));
    assert_eq!(
        book.take_ack(true),
        Some(Ack {
            accepted: 1,
            work: 2
        })
    );
    assert_eq!(book.take_ack(true), None);
    assert_eq!(book.accepted_total(), 4);
}

#[test]
fn duplicate_budget_then_too_many_shares() {
    let mut book = book_with_job(2, any_hash());
    for nonce in 0..4 {
        assert_ne!(
            book.check(&fields(nonce, &[9, 9])),
            Verdict::Rejected(ERROR_CODE_SUBMIT_SHARES_DUPLICATE_SHARE)
        );
    }
    assert_eq!(
        book.check(&fields(99, &[9, 9])),
        Verdict::Rejected(ERROR_TOO_MANY_SHARES)
    );
    // A new tip forgets the duplicates and the budget starts again; old jobs are stale.
    book.on_new_tip([8; 32], NBITS);
    assert_eq!(
        book.check(&fields(99, &[9, 9])),
        Verdict::Rejected(ERROR_CODE_SUBMIT_SHARES_STALE_SHARE)
    );
}

#[test]
fn low_difficulty_and_duplicates_are_refused() {
    // A target no hash meets, on a chain whose target no hash meets either.
    let mut book = ShareBook::new(1, 100);
    book.on_new_tip([7; 32], 0x0300_0001);
    book.add_job(JobCheck {
        job_id: 1,
        template_id: 0,
        version: 0x2000_0000,
        version_rolling_allowed: true,
        min_ntime: MIN_NTIME,
        target: Target::ZERO,
        difficulty: 1.0,
        root: RootSource::Fixed([3; 32]),
    });
    let share = ShareFields {
        job_id: 1,
        version: 0x2000_0000,
        ntime: MIN_NTIME,
        nonce: 1,
        extranonce: &[],
    };
    assert_eq!(
        book.check(&share),
        Verdict::Rejected(ERROR_CODE_SUBMIT_SHARES_DIFFICULTY_TOO_LOW)
    );
    let mut easy = ShareBook::new(1, 100);
    easy.on_new_tip([7; 32], 0x0300_0001);
    easy.add_job(JobCheck {
        target: any_hash(),
        job_id: 1,
        template_id: 0,
        version: 0x2000_0000,
        version_rolling_allowed: true,
        min_ntime: MIN_NTIME,
        difficulty: 1.0,
        root: RootSource::Fixed([3; 32]),
    });
    assert!(matches!(
        easy.check(&share),
        Verdict::Accepted {
            difficulty,
            template_id: 0,
            ..
        } if difficulty == 1.0
    ));
    assert_eq!(
        easy.check(&share),
        Verdict::Rejected(ERROR_CODE_SUBMIT_SHARES_DUPLICATE_SHARE)
    );
}

#[test]
fn merkle_root_and_header_hash_match_rust_bitcoin() {
    use jdc_shared::bitcoin::block::{Header, Version};
    use jdc_shared::bitcoin::{BlockHash, TxMerkleNode};
    let root = merkle_root([4; 32], &[[5; 32], [6; 32]]);
    let header = Header {
        version: Version::from_consensus(0x2000_0000),
        prev_blockhash: BlockHash::from_byte_array([7; 32]),
        merkle_root: TxMerkleNode::from_byte_array(root),
        time: MIN_NTIME,
        bits: CompactTarget::from_consensus(NBITS),
        nonce: 42,
    };
    assert_eq!(
        header_hash(0x2000_0000, &[7; 32], &root, MIN_NTIME, NBITS, 42),
        header.block_hash().to_byte_array()
    );
    let mut two = sha256d::Hash::engine();
    two.input(&[4; 32]);
    two.input(&[5; 32]);
    let level1 = sha256d::Hash::from_engine(two).to_byte_array();
    assert_eq!(merkle_root([4; 32], &[[5; 32]]), level1);
}
