//! What the hashers hash: an immutable [`Work`] snapshot and the header math around it.
//!
//! Byte orders follow the wire: hashes (prev hash, merkle nodes, header hashes) in internal
//! order, targets as 32-byte little-endian numbers.

use std::sync::atomic::AtomicU64;
use stratum_core::bitcoin::hashes::{sha256, sha256d, Hash, HashEngine};
use stratum_core::bitcoin::{CompactTarget, Target};

/// The BIP320 general-purpose version bits, the ones the miner rolls: on SV2 channels (inside
/// the protocol's wider `0x1fffffe0`) and as the mask asked for with SV1 `mining.configure`.
pub const VERSION_ROLLING_MASK: u32 = 0x1fff_e000;

/// Nonces per work unit (a unit is one extranonce/version combination and a nonce range).
pub const UNIT_NONCES: u64 = 1 << 24;

/// How the merkle root of a header is obtained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MerkleSource {
    /// Extended channel: the miner builds the coinbase and folds the merkle path.
    Extended {
        /// Coinbase bytes up to and including the server's extranonce prefix.
        coinbase_head: Vec<u8>,
        /// Coinbase bytes after the extranonce.
        coinbase_tail: Vec<u8>,
        /// Merkle path (internal byte order).
        merkle_path: Vec<[u8; 32]>,
        /// Bytes of extranonce the miner rolls.
        extranonce_size: usize,
    },
    /// Standard channel: the server fixed the merkle root.
    Standard {
        /// Merkle root (internal byte order).
        merkle_root: [u8; 32],
    },
}

/// One job on one chain tip, ready to hash. Published to the hashers as an `Arc<Work>`.
#[derive(Debug)]
pub struct Work {
    /// Connection this work belongs to (shares from older sessions are dropped).
    pub session: u64,
    /// Channel to submit on.
    pub channel_id: u32,
    /// Job id.
    pub job_id: u32,
    /// Job version.
    pub version: u32,
    /// Version bits the miner may roll (0 = none; SV2: [`VERSION_ROLLING_MASK`] when the job
    /// allows it, SV1: the mask negotiated with `mining.configure`).
    pub version_mask: u32,
    /// Previous block hash (internal order).
    pub prev_hash: [u8; 32],
    /// Compact network target.
    pub nbits: u32,
    /// Minimum header time.
    pub min_ntime: u32,
    /// Share target (LE).
    pub target: [u8; 32],
    /// Network target from `nbits` (LE).
    pub network_target: [u8; 32],
    /// What a hash must meet to be submitted: the easier of `target` and `network_target`
    /// (a block is never thrown away, even when the share target is harder, as on regtest).
    pub submit_target: [u8; 32],
    /// Merkle root source.
    pub merkle: MerkleSource,
    /// Next unit to hand to a hasher thread.
    pub next_unit: AtomicU64,
}

/// The header fields one unit of work fixes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// Miner extranonce (empty for standard channels).
    pub extranonce: Vec<u8>,
    /// Header version, possibly rolled.
    pub version: u32,
    /// Merkle root (internal order).
    pub merkle_root: [u8; 32],
    /// First nonce of the range.
    pub nonce_start: u32,
}

impl Work {
    /// The header fields of unit `u`. Units are disjoint: the low byte picks one of 256 nonce
    /// ranges (and rolled version bits, if any may be rolled), the rest is the extranonce
    /// counter.
    pub fn unit(&self, u: u64) -> Unit {
        let low = (u & 0xff) as u32;
        let rest = u >> 8;
        let version = roll_version(self.version, self.version_mask, low);
        let (extranonce, merkle_root) = match &self.merkle {
            MerkleSource::Extended {
                coinbase_head,
                coinbase_tail,
                merkle_path,
                extranonce_size,
            } => {
                let mut extranonce = vec![0u8; *extranonce_size];
                let counter = rest.to_le_bytes();
                let n = extranonce.len().min(counter.len());
                extranonce[..n].copy_from_slice(&counter[..n]);
                let root = merkle_root(coinbase_head, &extranonce, coinbase_tail, merkle_path);
                (extranonce, root)
            }
            MerkleSource::Standard { merkle_root } => (Vec::new(), *merkle_root),
        };
        Unit {
            extranonce,
            version,
            merkle_root,
            nonce_start: low << 24,
        }
    }
}

/// `version` with the bits of `mask` XORed with `n`, spread over them from the lowest set bit
/// up (bits of `n` beyond the mask's width are dropped): only bits inside the mask change.
/// For [`VERSION_ROLLING_MASK`] and `n` below 2^16 this is `version ^ (n << 13)`.
pub fn roll_version(version: u32, mask: u32, n: u32) -> u32 {
    let mut spread = 0;
    let mut free = mask;
    let mut n = n;
    while free != 0 && n != 0 {
        let lowest = free & free.wrapping_neg();
        if n & 1 == 1 {
            spread |= lowest;
        }
        free &= !lowest;
        n >>= 1;
    }
    version ^ spread
}

/// Merkle root of a coinbase (`head || extranonce || tail`, non-witness serialization) and its
/// merkle path.
pub fn merkle_root(head: &[u8], extranonce: &[u8], tail: &[u8], path: &[[u8; 32]]) -> [u8; 32] {
    let mut engine = sha256d::Hash::engine();
    engine.input(head);
    engine.input(extranonce);
    engine.input(tail);
    let mut root = sha256d::Hash::from_engine(engine).to_byte_array();
    for node in path {
        let mut engine = sha256d::Hash::engine();
        engine.input(&root);
        engine.input(node);
        root = sha256d::Hash::from_engine(engine).to_byte_array();
    }
    root
}

/// Network target (LE) for compact `nbits`.
pub fn network_target(nbits: u32) -> [u8; 32] {
    Target::from_compact(CompactTarget::from_consensus(nbits)).to_le_bytes()
}

/// The larger (easier) of two LE targets.
pub fn easier_target(a: [u8; 32], b: [u8; 32]) -> [u8; 32] {
    if meets_target(&a, &b) {
        b
    } else {
        a
    }
}

/// Whether a hash (internal order = little-endian number) is at or below a LE target.
pub fn meets_target(hash: &[u8; 32], target: &[u8; 32]) -> bool {
    for i in (0..32).rev() {
        if hash[i] != target[i] {
            return hash[i] < target[i];
        }
    }
    true
}

/// A header with everything but ntime and nonce fixed, hashed incrementally: the first 64
/// bytes are absorbed once (midstate), each nonce costs two SHA-256 compressions.
pub struct HeaderHasher {
    midstate: sha256::HashEngine,
    tail: [u8; 16],
}

impl HeaderHasher {
    /// Prepares the header `version | prev_hash | merkle_root | ntime | nbits | nonce`.
    pub fn new(version: u32, prev_hash: &[u8; 32], merkle_root: &[u8; 32], nbits: u32) -> Self {
        let mut head = [0u8; 64];
        head[..4].copy_from_slice(&version.to_le_bytes());
        head[4..36].copy_from_slice(prev_hash);
        head[36..64].copy_from_slice(&merkle_root[..28]);
        let mut midstate = sha256::Hash::engine();
        midstate.input(&head);
        let mut tail = [0u8; 16];
        tail[..4].copy_from_slice(&merkle_root[28..]);
        tail[8..12].copy_from_slice(&nbits.to_le_bytes());
        Self { midstate, tail }
    }

    /// Sets the header time.
    pub fn set_ntime(&mut self, ntime: u32) {
        self.tail[4..8].copy_from_slice(&ntime.to_le_bytes());
    }

    /// The header hash (internal order) for `nonce`.
    pub fn hash(&mut self, nonce: u32) -> [u8; 32] {
        self.tail[12..16].copy_from_slice(&nonce.to_le_bytes());
        let mut engine = self.midstate.clone();
        engine.input(&self.tail);
        let first = sha256::Hash::from_engine(engine);
        sha256::Hash::hash(first.as_byte_array()).to_byte_array()
    }
}

/// Hex of a hash in RPC (display) order.
pub fn rpc_hex(hash: &[u8; 32]) -> String {
    let mut reversed = *hash;
    reversed.reverse();
    hex::encode(reversed)
}

/// Big-endian hex of a LE target.
pub fn target_hex(target_le: &[u8; 32]) -> String {
    rpc_hex(target_le)
}

#[cfg(test)]
mod tests;
