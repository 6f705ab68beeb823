use super::*;
use crate::sv1::message::{parse, Notification, ServerMessage};
use crate::work::{meets_target, HeaderHasher};
use serde_json::json;
use stratum_core::bitcoin::absolute::LockTime;
use stratum_core::bitcoin::block::{Header, Version};
use stratum_core::bitcoin::hashes::{sha256d, Hash};
use stratum_core::bitcoin::{
    consensus, transaction, Amount, Block, BlockHash, CompactTarget, OutPoint, ScriptBuf, Sequence,
    Target, Transaction, TxIn, TxMerkleNode, TxOut, Txid, Witness,
};

fn notify_of(params: serde_json::Value) -> Notify {
    let line = json!({"id": null, "method": "mining.notify", "params": params}).to_string();
    match parse(&line).unwrap() {
        ServerMessage::Notification(Notification::Notify(n)) => n,
        other => panic!("{other:?}"),
    }
}

/// The hash of the header of `work`'s unit `u` at `ntime` and `nonce`, the way the hashers
/// compute it.
fn unit_hash(work: &Work, u: u64, ntime: u32, nonce: u32) -> [u8; 32] {
    let unit = work.unit(u);
    let mut h = HeaderHasher::new(unit.version, &work.prev_hash, &unit.merkle_root, work.nbits);
    h.set_ntime(ntime);
    h.hash(nonce)
}

fn share(book: &JobBook, local_id: u32, extranonce: Vec<u8>, version: u32) -> FoundShare {
    FoundShare {
        session: book.session,
        channel_id: 0,
        job_id: local_id,
        prev_hash: [0; 32],
        nonce: 0x0102_0304,
        ntime: 0x6500_0000,
        version,
        extranonce,
        hash: [0; 32],
        is_block: false,
    }
}

/// The example job and share of the Stratum V1 documentation (slush pool, testnet, 2012):
/// extranonce1 08000002, extranonce2 00000001, ntime 504e86ed, nonce b2957c02. Its header hash
/// starts with 32 zero bits: the conventions (word-swapped prevhash, coinbase layout,
/// big-endian nonce and ntime hex) are right only if it comes out a difficulty-1 share.
#[test]
fn the_documented_real_share_is_a_difficulty_1_share() {
    let notify = notify_of(json!([
        "bf",
        "4d16b6f85af6e2198f44ae2a6de67f78487ae5611b77c6c0440b921e00000000",
        "01000000010000000000000000000000000000000000000000000000000000000000000000ffffffff20020862062f503253482f04b8864e5008",
        "072f736c7573682f000000000100f2052a010000001976a914d23fcdf86f7e756a64a7a9688ef9903327048ed988ac00000000",
        [],
        "00000002",
        "1c2ac4af",
        "504e86b9",
        false
    ]));
    let mut book = JobBook::new(1);
    book.set_extranonce(hex::decode("08000002").unwrap(), 4);
    let local_id = book.on_notify(notify).unwrap().local_id;
    let work = book.work().unwrap();
    // Extranonce2 00000001 is counter 0x01000000 (little-endian) in units above the low byte.
    let u = 0x0100_0000u64 << 8;
    assert_eq!(work.unit(u).extranonce, vec![0, 0, 0, 1]);
    let hash = unit_hash(&work, u, 0x504e_86ed, 0xb295_7c02);
    assert_eq!(
        rpc_hex(&hash),
        "000000002076870fe65a2b6eeed84fa892c0db924f1482243a6247d931dcab32"
    );
    // 0x2076870f... below 32 zero bits: a share up to difficulty 7.
    assert!(meets_target(&hash, &difficulty_target(7.0)));
    assert!(!meets_target(&hash, &difficulty_target(8.0)));
    // And the submission is the documented one.
    let mut s = share(&book, local_id, vec![0, 0, 0, 1], 2);
    (s.ntime, s.nonce) = (0x504e_86ed, 0xb295_7c02);
    let line = book
        .submission(&s, "slush.miner1", false)
        .unwrap()
        .to_line(4);
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        v["params"],
        json!(["slush.miner1", "bf", "00000001", "504e86ed", "b2957c02"])
    );
}

fn rpc_hex(hash: &[u8; 32]) -> String {
    crate::work::rpc_hex(hash)
}

/// A block of a coinbase (8 bytes of extranonce at the end of its scriptSig) and three other
/// transactions, as the `bitcoin` crate builds and hashes it; `(block, coinb1, coinb2)`.
fn block(extranonce: [u8; 8], version: u32) -> (Block, Vec<u8>, Vec<u8>) {
    let mut script_sig = vec![0x03, 0x10, 0x27, 0x00, 0x08];
    script_sig.extend(extranonce);
    let coinbase = Transaction {
        version: transaction::Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint::null(),
            script_sig: ScriptBuf::from_bytes(script_sig),
            sequence: Sequence::MAX,
            witness: Witness::new(),
        }],
        output: vec![TxOut {
            value: Amount::from_sat(312_500_000),
            script_pubkey: ScriptBuf::from_bytes(vec![0x51]),
        }],
    };
    let raw = consensus::serialize(&coinbase);
    // version(4) + input count(1) + outpoint(36) + script length(1) + 5 script bytes.
    let at = 4 + 1 + 36 + 1 + 5;
    assert_eq!(raw[at..at + 8], extranonce);
    let (coinb1, coinb2) = (raw[..at].to_vec(), raw[at + 8..].to_vec());
    let mut txdata = vec![coinbase];
    for i in 1..=3u8 {
        txdata.push(Transaction {
            version: transaction::Version::TWO,
            lock_time: LockTime::ZERO,
            input: vec![TxIn {
                previous_output: OutPoint::new(Txid::from_byte_array([i; 32]), u32::from(i)),
                script_sig: ScriptBuf::new(),
                sequence: Sequence::MAX,
                witness: Witness::new(),
            }],
            output: vec![TxOut {
                value: Amount::from_sat(1000 * u64::from(i)),
                script_pubkey: ScriptBuf::from_bytes(vec![0x51]),
            }],
        });
    }
    let mut block = Block {
        header: Header {
            version: Version::from_consensus(version as i32),
            prev_blockhash: BlockHash::from_byte_array(
                sha256d::Hash::hash(b"previous block").to_byte_array(),
            ),
            merkle_root: TxMerkleNode::all_zeros(),
            time: 1_700_000_123,
            bits: CompactTarget::from_consensus(0x1d00ffff),
            nonce: 0xdead_beef,
        },
        txdata,
    };
    block.header.merkle_root = block.compute_merkle_root().unwrap();
    (block, coinb1, coinb2)
}

/// The coinbase's merkle branch, computed level by level over the block's txids.
fn merkle_branch(block: &Block) -> Vec<[u8; 32]> {
    let mut level: Vec<[u8; 32]> = block
        .txdata
        .iter()
        .map(|tx| tx.compute_txid().to_byte_array())
        .collect();
    let mut branch = Vec::new();
    while level.len() > 1 {
        if level.len() % 2 == 1 {
            level.push(*level.last().unwrap());
        }
        branch.push(level[1]);
        level = level
            .chunks(2)
            .map(|pair| sha256d::Hash::hash(&[pair[0], pair[1]].concat()).to_byte_array())
            .collect();
    }
    branch
}

/// SV1 prevhash of a block hash: its display hex with the order of the 8-digit words reversed.
fn sv1_prevhash(hash: &BlockHash) -> String {
    let display = hash.to_string();
    display
        .as_bytes()
        .chunks(8)
        .rev()
        .map(|w| std::str::from_utf8(w).unwrap())
        .collect()
}

/// The notify a pool sends for `block`.
fn notify_for(block: &Block, coinb1: &[u8], coinb2: &[u8], clean: bool) -> Notify {
    let h = &block.header;
    notify_of(json!([
        "4f2a",
        sv1_prevhash(&h.prev_blockhash),
        hex::encode(coinb1),
        hex::encode(coinb2),
        merkle_branch(block)
            .iter()
            .map(hex::encode)
            .collect::<Vec<_>>(),
        format!("{:08x}", h.version.to_consensus()),
        format!("{:08x}", h.bits.to_consensus()),
        format!("{:08x}", h.time),
        clean
    ]))
}

#[test]
fn header_and_merkle_root_match_the_bitcoin_crate() {
    let extranonce1 = [0xf0, 0x0d, 0xca, 0xfe];
    // Extranonce2 [5, 0, 0, 0] is counter 5 in the units above the low byte.
    let extranonce = [0xf0, 0x0d, 0xca, 0xfe, 5, 0, 0, 0];
    let (block, coinb1, coinb2) = block(extranonce, 0x2000_0000);
    assert_eq!(merkle_branch(&block).len(), 2);
    let mut book = JobBook::new(1);
    book.set_extranonce(extranonce1.to_vec(), 4);
    book.on_notify(notify_for(&block, &coinb1, &coinb2, true));
    let work = book.work().unwrap();
    assert_eq!(work.prev_hash, block.header.prev_blockhash.to_byte_array());
    assert_eq!((work.nbits, work.min_ntime), (0x1d00ffff, 1_700_000_123));
    let u = 5 << 8;
    assert_eq!(
        work.unit(u).merkle_root,
        block.header.merkle_root.to_byte_array()
    );
    assert_eq!(
        unit_hash(&work, u, block.header.time, block.header.nonce),
        block.block_hash().to_byte_array()
    );
    // Another extranonce2 is another block.
    assert_ne!(
        work.unit(6 << 8).merkle_root,
        block.header.merkle_root.to_byte_array()
    );
}

#[test]
fn rolled_versions_stay_in_the_negotiated_mask_and_hash_like_the_bitcoin_crate() {
    let mask = 0x1fe0_0000;
    let base = 0x2000_0004;
    let extranonce = [1, 2, 3, 4, 9, 0, 0, 0];
    let (block0, coinb1, coinb2) = block(extranonce, base);
    let mut book = JobBook::new(1);
    book.set_extranonce(vec![1, 2, 3, 4], 4);
    book.set_version_mask(mask);
    let local_id = book
        .on_notify(notify_for(&block0, &coinb1, &coinb2, false))
        .unwrap()
        .local_id;
    let work = book.work().unwrap();
    let u = (9 << 8) | 3;
    let unit = work.unit(u);
    assert_eq!(unit.version, base | 0b11 << 21);
    // The block the pool rebuilds from the submission: (job version & !mask) | (bits & mask).
    let s = share(&book, local_id, unit.extranonce.clone(), unit.version);
    let Request::Submit {
        version_bits: Some(bits),
        extranonce2,
        ..
    } = book.submission(&s, "w", true).unwrap()
    else {
        panic!("no version bits submitted");
    };
    assert_eq!(bits & !mask, 0);
    assert_eq!(extranonce2, &[9, 0, 0, 0]);
    let version = (base & !mask) | (bits & mask);
    let (block, _, _) = block(extranonce, version);
    assert_eq!(
        unit_hash(&work, u, block.header.time, block.header.nonce),
        block.block_hash().to_byte_array()
    );
    // Without a mask nothing rolls.
    book.set_version_mask(0);
    assert_eq!(book.work().unwrap().unit(u).version, base);
}

#[test]
fn difficulty_targets_match_the_bitcoin_crate() {
    assert_eq!(
        difficulty_target(1.0),
        Target::MAX_ATTAINABLE_MAINNET.to_le_bytes()
    );
    // 2^-24: 0xffff * 2^232, the regtest-like compact 0x2000ffff.
    assert_eq!(
        difficulty_target(1.0 / 16_777_216.0),
        Target::from_compact(CompactTarget::from_consensus(0x2000ffff)).to_le_bytes()
    );
    assert_eq!(
        difficulty_target(65536.0),
        Target::from_compact(CompactTarget::from_consensus(0x1b00ffff)).to_le_bytes()
    );
    for d in [3.0, 1000.0, 0.001, 1.5e12, 12345.678] {
        let t = Target::from_le_bytes(difficulty_target(d));
        let back = t.difficulty_float();
        assert!((back - d).abs() / d < 1e-9, "{d} -> {back}");
    }
    // Rounds down: 0xffff * 2^208 / 3 = 0x5555 * 2^208 exactly.
    let t = difficulty_target(3.0);
    assert_eq!(t[26..], [0x55, 0x55, 0, 0, 0, 0]);
    assert!(t[..26].iter().all(|b| *b == 0));
    assert_eq!(difficulty_target(1e-30), [0xff; 32]);
    assert_eq!(difficulty_target(f64::MIN_POSITIVE / 2.0), [0xff; 32]);
    assert_eq!(difficulty_target(1e300), [0; 32]);
    assert_eq!(difficulty_target(0.0), [0; 32]);
    assert_eq!(difficulty_target(f64::NAN), [0; 32]);
}

fn simple_notify(job_id: &str, prev: u8, clean: bool) -> Notify {
    Notify {
        job_id: job_id.into(),
        prev_hash: [prev; 32],
        coinb1: vec![1],
        coinb2: vec![2],
        merkle_branch: vec![],
        version: 0x2000_0000,
        nbits: 0x207fffff,
        ntime: 100,
        clean_jobs: clean,
    }
}

#[test]
fn jobs_need_an_extranonce_and_clean_jobs_voids_older_shares() {
    let mut book = JobBook::new(7);
    assert!(book.on_notify(simple_notify("a", 1, true)).is_none());
    assert!(book.work().is_none());
    book.set_extranonce(vec![0xee], 2);
    let a = book
        .on_notify(simple_notify("a", 1, true))
        .unwrap()
        .local_id;
    let b = book
        .on_notify(simple_notify("b", 1, false))
        .unwrap()
        .local_id;
    assert_ne!(a, b);
    assert_eq!(book.work().unwrap().job_id, b);
    // Without clean_jobs the older job still takes shares.
    let s = share(&book, a, vec![0, 0], 0x2000_0000);
    assert!(matches!(
        book.submission(&s, "w", false),
        Ok(Request::Submit { job_id: "a", .. })
    ));
    let c = book
        .on_notify(simple_notify("c", 2, true))
        .unwrap()
        .local_id;
    assert_eq!(
        book.submission(&s, "w", false),
        Err("its job was cleaned or dropped")
    );
    let s = share(&book, c, vec![0, 0], 0x2000_0000);
    assert!(book.submission(&s, "w", false).is_ok());
    let mut old = s.clone();
    old.session = 6;
    assert!(book.submission(&old, "w", false).is_err());
    // Only so many jobs are kept.
    for i in 0..100 {
        book.on_notify(simple_notify(&i.to_string(), 2, false));
    }
    assert!(book.job(c).is_none());
    assert_eq!(book.jobs.len(), MAX_JOBS);
}

#[test]
fn new_extranonce_applies_from_the_next_job_and_mask_changes_at_once() {
    let mut book = JobBook::new(1);
    book.set_extranonce(vec![0xaa], 4);
    let a = book
        .on_notify(simple_notify("a", 1, false))
        .unwrap()
        .local_id;
    book.set_extranonce(vec![0xbb, 0xcc], 2);
    match &book.work().unwrap().merkle {
        MerkleSource::Extended {
            coinbase_head,
            extranonce_size,
            ..
        } => assert_eq!(
            (coinbase_head.as_slice(), *extranonce_size),
            (&[1, 0xaa][..], 4)
        ),
        other => panic!("{other:?}"),
    }
    let s = share(&book, a, vec![0; 4], 0x2000_0000);
    assert!(book.submission(&s, "w", false).is_ok());
    let b = book.on_notify(simple_notify("b", 1, false)).unwrap();
    assert_eq!(
        (b.extranonce1.as_slice(), b.extranonce2_size),
        (&[0xbb, 0xcc][..], 2)
    );

    // A share rolled under a wider mask is dropped once the mask shrinks.
    book.set_version_mask(0x1fffe000);
    assert_eq!(book.work().unwrap().version_mask, 0x1fffe000);
    let b = book.current().unwrap().local_id;
    let s = share(&book, b, vec![0; 2], 0x2000_0000 | 1 << 13);
    assert!(book.submission(&s, "w", true).is_ok());
    book.set_version_mask(0x1fe0_0000);
    assert_eq!(
        book.submission(&s, "w", true),
        Err("its version rolls bits outside the current mask")
    );
    let wrong_size = share(&book, b, vec![0; 4], 0x2000_0000);
    assert!(book.submission(&wrong_size, "w", true).is_err());
}
