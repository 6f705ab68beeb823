use super::*;
use stratum_core::bitcoin::block::{Header, Version};
use stratum_core::bitcoin::{BlockHash, TxMerkleNode};

#[test]
fn header_hasher_matches_the_bitcoin_crate() {
    let prev = [7u8; 32];
    let root = [9u8; 32];
    let mut h = HeaderHasher::new(0x2000_0004, &prev, &root, 0x207fffff);
    h.set_ntime(1_700_000_000);
    let ours = h.hash(42);
    let header = Header {
        version: Version::from_consensus(0x2000_0004),
        prev_blockhash: BlockHash::from_byte_array(prev),
        merkle_root: TxMerkleNode::from_byte_array(root),
        time: 1_700_000_000,
        bits: CompactTarget::from_consensus(0x207fffff),
        nonce: 42,
    };
    assert_eq!(ours, header.block_hash().to_byte_array());
}

#[test]
fn genesis_block_hash() {
    // Mainnet genesis header.
    let merkle =
        hex::decode("3ba3edfd7a7b12b27ac72c3e67768f617fc81bc3888a51323a9fb8aa4b1e5e4a").unwrap();
    let mut h = HeaderHasher::new(1, &[0u8; 32], &merkle.try_into().unwrap(), 0x1d00ffff);
    h.set_ntime(1231006505);
    let hash = h.hash(2083236893);
    assert_eq!(
        rpc_hex(&hash),
        "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f"
    );
    assert!(meets_target(&hash, &network_target(0x1d00ffff)));
    assert!(!meets_target(&hash, &network_target(0x1b00ffff)));
}

#[test]
fn target_comparison_is_little_endian() {
    let mut target = [0u8; 32];
    target[31] = 0x10;
    let mut hash = [0xffu8; 32];
    hash[31] = 0x0f;
    assert!(meets_target(&hash, &target));
    hash[31] = 0x10;
    assert!(!meets_target(&hash, &target));
    assert!(meets_target(&target, &target));
    assert_eq!(
        target_hex(&network_target(0x207fffff)),
        format!("7fffff{}", "0".repeat(58))
    );
}

#[test]
fn easier_target_picks_the_larger_number() {
    let regtest = network_target(0x207fffff);
    let mut hard = [0u8; 32];
    hard[28] = 1;
    assert_eq!(easier_target(hard, regtest), regtest);
    assert_eq!(easier_target(regtest, hard), regtest);
    assert_eq!(easier_target([0xff; 32], regtest), [0xff; 32]);
}

#[test]
fn version_rolling_stays_inside_the_mask() {
    let base = 0x2000_0000;
    for mask in [VERSION_ROLLING_MASK, 0x1fe0_0000, 0x0000_6000, 0] {
        let width = mask.count_ones();
        let mut seen = std::collections::HashSet::new();
        let mut counters = std::collections::HashSet::new();
        for n in [0u32, 1, 2, 3, 0xff, 0xffff_ffff] {
            let v = roll_version(base, mask, n);
            assert_eq!(v & !mask, base & !mask, "mask {mask:08x}, n {n}");
            seen.insert(v);
            // The counter bits the mask has room for.
            counters.insert(n & u32::MAX.checked_shr(32 - width).unwrap_or(0));
        }
        assert_eq!(seen.len(), counters.len(), "mask {mask:08x}");
    }
    assert_eq!(
        roll_version(base, VERSION_ROLLING_MASK, 0xab),
        base ^ (0xab << 13)
    );
    assert_eq!(roll_version(base, 0x1fe0_0000, 1), base | 1 << 21);
    assert_eq!(roll_version(base, 0x0000_6000, 0b11), base | 0x6000);
    assert_eq!(roll_version(base, 0, 5), base);
}

#[test]
fn units_are_disjoint_and_roll_when_allowed() {
    let work = Work {
        session: 1,
        channel_id: 1,
        job_id: 1,
        version: 0x2000_0000,
        version_mask: VERSION_ROLLING_MASK,
        prev_hash: [0; 32],
        nbits: 0x207fffff,
        min_ntime: 0,
        target: [0xff; 32],
        network_target: network_target(0x207fffff),
        submit_target: [0xff; 32],
        merkle: MerkleSource::Extended {
            coinbase_head: vec![1, 2, 3],
            coinbase_tail: vec![4, 5],
            merkle_path: vec![[3u8; 32]],
            extranonce_size: 4,
        },
        next_unit: AtomicU64::new(0),
    };
    let u0 = work.unit(0);
    let u1 = work.unit(1);
    let u256 = work.unit(256);
    assert_eq!(u0.version, 0x2000_0000);
    assert_ne!(u1.version, u0.version);
    assert_ne!(u0.nonce_start, u1.nonce_start);
    assert_eq!(u0.nonce_start, u256.nonce_start);
    assert_ne!(u0.extranonce, u256.extranonce);
    assert_ne!(u0.merkle_root, u256.merkle_root);
    assert_eq!(u256.extranonce, vec![1, 0, 0, 0]);
    assert_eq!(
        u0.merkle_root,
        merkle_root(&[1, 2, 3], &[0, 0, 0, 0], &[4, 5], &[[3u8; 32]])
    );
}
