//! Block assembly: a share that meets the network target plus the template's transactions
//! become a full block for `submitblock`.

use jdc_shared::bitcoin::{
    block::{Header, Version},
    consensus::{deserialize, encode::VarInt, serialize},
    hashes::Hash,
    BlockHash, CompactTarget, Transaction, TxMerkleNode,
};
use jdc_shared::chain;

use crate::work::BlockBody;

/// Why a block could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// The coinbase bytes do not parse.
    #[error("coinbase does not parse: {0}")]
    Coinbase(String),
    /// The assembled header does not hash to what the share validation computed.
    #[error("assembled block hash {assembled} differs from the share hash {expected}")]
    HashMismatch {
        /// Hash of the assembled header.
        assembled: BlockHash,
        /// Hash seen during share validation.
        expected: BlockHash,
    },
}

/// The header fields a device chose.
#[derive(Debug, Clone, Copy)]
pub struct Solution {
    /// Block version (possibly rolled).
    pub version: u32,
    /// Header time.
    pub ntime: u32,
    /// Nonce.
    pub nonce: u32,
}

/// A block ready for `submitblock`.
#[derive(Debug)]
pub struct AssembledBlock {
    /// Its hash.
    pub hash: BlockHash,
    /// Serialized block.
    pub bytes: Vec<u8>,
    /// Transactions including the coinbase.
    pub tx_count: u32,
}

/// Builds the block from the template body, the full coinbase (with witness) and the
/// solution; checks its hash against `expected` when given.
pub fn assemble(
    body: &BlockBody,
    coinbase: &[u8],
    solution: Solution,
    expected: Option<BlockHash>,
) -> Result<AssembledBlock, BlockError> {
    let coinbase_tx: Transaction =
        deserialize(coinbase).map_err(|e| BlockError::Coinbase(e.to_string()))?;
    let mut leaves = Vec::with_capacity(body.txids.len() + 1);
    leaves.push(coinbase_tx.compute_txid().to_byte_array());
    leaves.extend_from_slice(&body.txids);
    let merkle_root = chain::merkle_root(&leaves);
    let header = Header {
        version: Version::from_consensus(solution.version as i32),
        prev_blockhash: BlockHash::from_byte_array(body.prev_hash),
        merkle_root: TxMerkleNode::from_byte_array(merkle_root),
        time: solution.ntime,
        bits: CompactTarget::from_consensus(body.nbits),
        nonce: solution.nonce,
    };
    let hash = header.block_hash();
    if let Some(expected) = expected {
        if expected != hash {
            return Err(BlockError::HashMismatch {
                assembled: hash,
                expected,
            });
        }
    }
    let tx_count = body.order.len() + 1;
    let size: usize = 80 + 9 + coinbase.len() + body.txs().map(<[u8]>::len).sum::<usize>();
    let mut bytes = Vec::with_capacity(size);
    bytes.extend_from_slice(&serialize(&header));
    bytes.extend_from_slice(&serialize(&VarInt(tx_count as u64)));
    bytes.extend_from_slice(coinbase);
    for tx in body.txs() {
        bytes.extend_from_slice(tx);
    }
    Ok(AssembledBlock {
        hash,
        bytes,
        tx_count: tx_count as u32,
    })
}
