//! A template from the bus made ready for every Template Distribution client at once: its
//! hashes parsed, and its coinbase merkle path and witness commitment computed, once per
//! template rather than once per client.
//!
//! Clients differ only in the room they need for their coinbase outputs
//! (`CoinbaseOutputConstraints`); a client that needs more than the template leaves gets a
//! [`Cut`] without bitcoind's last transactions, computed on demand and shared with the other
//! clients that need the same cut.

use std::sync::{Arc, Mutex, PoisonError};

use jdc_shared::chain::{self, ChainError};
use jdc_shared::messages::Template;

/// Weight of a coinbase without the client's outputs (generous: scriptSig of 100 bytes,
/// witness commitment, witness reserved value).
pub const COINBASE_BASE_WEIGHT: u64 = 1_000;
/// Cuts other than the whole template kept for reuse (clients rarely differ in their needs).
const CUTS_KEPT: usize = 8;

/// The first transactions of a template: what a client with given coinbase needs is sent.
#[derive(Debug, PartialEq, Eq)]
pub struct Cut {
    /// How many of the template's transactions (a prefix: parents come before children).
    pub kept: usize,
    /// Subsidy plus the kept transactions' fees, satoshis.
    pub coinbase_value: u64,
    /// Merkle path of the coinbase over the kept transactions.
    pub merkle_path: Vec<[u8; 32]>,
    /// BIP141 commitment of the kept transactions' wtxids.
    pub witness_commitment: [u8; 32],
}

/// A template with what every client's `NewTemplate` is made of.
#[derive(Debug)]
pub struct PreparedTemplate {
    /// The template as the bus carried it.
    pub template: Template,
    /// Previous block hash, internal byte order.
    pub prev_hash: [u8; 32],
    txids: Vec<[u8; 32]>,
    wtxids: Vec<[u8; 32]>,
    /// The cut with every transaction.
    whole: Arc<Cut>,
    /// Smaller cuts clients asked for, newest last.
    cuts: Mutex<Vec<Arc<Cut>>>,
}

impl PreparedTemplate {
    /// Parses the template's hashes and computes the whole template's cut; an error names
    /// the hash that does not parse.
    pub fn new(template: Template) -> Result<Self, ChainError> {
        let prev_hash = chain::hash_from_rpc_hex(&template.prev_hash)?;
        let mut txids = Vec::with_capacity(template.txs.len());
        let mut wtxids = Vec::with_capacity(template.txs.len());
        for tx in &template.txs {
            txids.push(chain::hash_from_rpc_hex(&tx.txid)?);
            wtxids.push(chain::hash_from_rpc_hex(&tx.wtxid)?);
        }
        let mut prepared = Self {
            template,
            prev_hash,
            txids,
            wtxids,
            whole: Arc::new(Cut {
                kept: 0,
                coinbase_value: 0,
                merkle_path: Vec::new(),
                witness_commitment: [0; 32],
            }),
            cuts: Mutex::new(Vec::new()),
        };
        prepared.whole = Arc::new(prepared.compute_cut(prepared.template.txs.len()));
        Ok(prepared)
    }

    /// The template's fees, satoshis.
    pub fn fees(&self) -> u64 {
        self.template
            .coinbase_value
            .saturating_sub(self.template.subsidy)
    }

    /// The cut for a client whose coinbase outputs need `extra_coinbase_bytes`: bitcoind's
    /// last transactions are left out when they would not fit beside them.
    pub fn cut_for(&self, extra_coinbase_bytes: u32) -> Arc<Cut> {
        let room = self
            .template
            .weight_limit
            .saturating_sub(COINBASE_BASE_WEIGHT + 4 * u64::from(extra_coinbase_bytes));
        let mut weight = 0u64;
        let mut kept = 0usize;
        for tx in &self.template.txs {
            if weight + tx.weight > room {
                break;
            }
            weight += tx.weight;
            kept += 1;
        }
        if kept == self.whole.kept {
            return self.whole.clone();
        }
        let mut cuts = self.cuts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(cut) = cuts.iter().find(|c| c.kept == kept) {
            return cut.clone();
        }
        let cut = Arc::new(self.compute_cut(kept));
        if cuts.len() == CUTS_KEPT {
            cuts.remove(0);
        }
        cuts.push(cut.clone());
        cut
    }

    /// The txids of the first `kept` transactions, internal byte order.
    pub fn txids(&self, kept: usize) -> &[[u8; 32]] {
        &self.txids[..kept.min(self.txids.len())]
    }

    /// The first `kept` transactions, serialized.
    pub fn raw_txs(&self, kept: usize) -> impl Iterator<Item = &[u8]> {
        self.template
            .txs
            .iter()
            .take(kept)
            .map(|tx| tx.data.as_slice())
    }

    fn compute_cut(&self, kept: usize) -> Cut {
        let fees: u64 = self.template.txs[..kept].iter().map(|tx| tx.fee).sum();
        Cut {
            kept,
            coinbase_value: self.template.subsidy.saturating_add(fees),
            merkle_path: chain::coinbase_merkle_path(&self.txids[..kept]),
            witness_commitment: chain::witness_commitment(&self.wtxids[..kept]),
        }
    }
}

#[cfg(test)]
mod tests;
