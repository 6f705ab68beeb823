//! Bitcoin helpers shared by the stack: hash byte orders, merkle paths, BIP141 witness
//! commitments, subsidy, and payout destinations.

use stratum_core::bitcoin::{
    self,
    hashes::{sha256d, Hash},
    Address, Network, ScriptBuf,
};

/// Errors of the bitcoin helpers.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChainError {
    /// A hash was not 64 hex digits.
    #[error("`{0}` is not a 32-byte hex hash")]
    BadHash(String),
    /// A payout destination is neither an address of the network nor a hex script.
    #[error("`{value}` is neither a {network} address nor a hex output script ({why})")]
    BadDestination {
        /// The value.
        value: String,
        /// The configured network.
        network: Network,
        /// Why it was refused.
        why: String,
    },
}

/// Parses a hash shown in RPC order (reversed) into internal byte order.
pub fn hash_from_rpc_hex(hex_str: &str) -> Result<[u8; 32], ChainError> {
    // Templates carry thousands of hashes: a table lookup per digit, no allocation.
    let bad = || ChainError::BadHash(hex_str.to_string());
    let digits: &[u8; 64] = hex_str.as_bytes().try_into().map_err(|_| bad())?;
    let mut bytes = [0u8; 32];
    for (i, pair) in digits.chunks_exact(2).enumerate() {
        let (hi, lo) = (
            HEX_VALUE[usize::from(pair[0])],
            HEX_VALUE[usize::from(pair[1])],
        );
        if hi > 15 || lo > 15 {
            return Err(bad());
        }
        // RPC order is the internal order reversed.
        bytes[31 - i] = (hi << 4) | lo;
    }
    Ok(bytes)
}

/// Value of each ASCII hex digit (either case); 0xff for anything else.
const HEX_VALUE: [u8; 256] = {
    let mut table = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        table[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

/// Shows an internal-order hash in RPC order.
pub fn hash_to_rpc_hex(hash: &[u8; 32]) -> String {
    let mut b = *hash;
    b.reverse();
    hex::encode(b)
}

/// Double SHA-256 of the concatenation of two 32-byte nodes.
pub fn hash_pair(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let mut buf = [0u8; 64];
    buf[..32].copy_from_slice(a);
    buf[32..].copy_from_slice(b);
    sha256d::Hash::hash(&buf).to_byte_array()
}

/// Merkle path of the coinbase (leaf 0) given the other transactions' ids in block order
/// (internal byte order). Hashing the coinbase id up this path gives the merkle root.
pub fn coinbase_merkle_path(txids: &[[u8; 32]]) -> Vec<[u8; 32]> {
    let mut path = Vec::new();
    if txids.is_empty() {
        return path;
    }
    let mut level: Vec<[u8; 32]> = Vec::with_capacity(txids.len() + 2);
    level.push([0u8; 32]);
    level.extend_from_slice(txids);
    while level.len() > 1 {
        path.push(level[1]);
        if level.len() % 2 == 1 {
            if let Some(last) = level.last().copied() {
                level.push(last);
            }
        }
        level = level
            .chunks_exact(2)
            .map(|p| hash_pair(&p[0], &p[1]))
            .collect();
    }
    path
}

/// Merkle root of a list of leaves (internal byte order); all-zero for an empty list.
pub fn merkle_root(leaves: &[[u8; 32]]) -> [u8; 32] {
    if leaves.is_empty() {
        return [0u8; 32];
    }
    let mut level = leaves.to_vec();
    while level.len() > 1 {
        if level.len() % 2 == 1 {
            if let Some(last) = level.last().copied() {
                level.push(last);
            }
        }
        level = level
            .chunks_exact(2)
            .map(|p| hash_pair(&p[0], &p[1]))
            .collect();
    }
    level[0]
}

/// BIP141 witness commitment for the given non-coinbase wtxids (internal byte order), with
/// the all-zero witness reserved value: `dsha256(witness_root || 00×32)`.
pub fn witness_commitment(wtxids: &[[u8; 32]]) -> [u8; 32] {
    let mut leaves = Vec::with_capacity(wtxids.len() + 1);
    leaves.push([0u8; 32]);
    leaves.extend_from_slice(wtxids);
    hash_pair(&merkle_root(&leaves), &[0u8; 32])
}

/// The coinbase output script carrying a witness commitment: `OP_RETURN 0xaa21a9ed <32 bytes>`.
pub fn witness_commitment_script(commitment: &[u8; 32]) -> ScriptBuf {
    let mut s = Vec::with_capacity(38);
    s.extend_from_slice(&[0x6a, 0x24, 0xaa, 0x21, 0xa9, 0xed]);
    s.extend_from_slice(commitment);
    ScriptBuf::from_bytes(s)
}

/// Block subsidy at `height` in satoshis (halving every 150 blocks on regtest, every 210,000
/// elsewhere).
pub fn subsidy(height: u32, network: Network) -> u64 {
    let interval: u32 = if network == Network::Regtest {
        150
    } else {
        210_000
    };
    let halvings = height / interval;
    if halvings >= 64 {
        0
    } else {
        (50 * 100_000_000u64) >> halvings
    }
}

/// Parses a payout destination: an address of `network`, or an output script in hex.
pub fn parse_destination(value: &str, network: Network) -> Result<ScriptBuf, ChainError> {
    let addr_err = match value.parse::<Address<bitcoin::address::NetworkUnchecked>>() {
        Ok(unchecked) => match unchecked.require_network(network) {
            Ok(addr) => return Ok(addr.script_pubkey()),
            Err(e) => e.to_string(),
        },
        Err(e) => e.to_string(),
    };
    match hex::decode(value) {
        Ok(bytes) if !bytes.is_empty() && bytes.len() <= 10_000 => Ok(ScriptBuf::from_bytes(bytes)),
        _ => Err(ChainError::BadDestination {
            value: value.to_string(),
            network,
            why: addr_err,
        }),
    }
}

#[cfg(test)]
mod tests;
