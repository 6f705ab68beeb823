//! One Template Distribution client: what it is sent as tips and templates arrive, and its
//! requests answered (no I/O here).
//!
//! On a new tip the client gets at once a future template for an empty block on it and the
//! `SetNewPrevHash` activating it (the tip path: no `getblocktemplate` wait); the full template
//! follows as soon as bitcoind's is in, and later refreshes only when their fees beat the last
//! sent by `tdp_fee_delta_sats`. Templates leave room for the client's coinbase outputs
//! (`CoinbaseOutputConstraints`): the client gets the [`Cut`] of the prepared template that
//! fits beside them. The client's `RequestTransactionData` and `SubmitSolution` are answered
//! from the templates it was sent.

use std::collections::VecDeque;
use std::sync::Arc;

use jdc_shared::bitcoin::{
    block::{Header, Version},
    consensus::{deserialize, serialize},
    hashes::Hash,
    Block, BlockHash, CompactTarget, Transaction, TxMerkleNode,
};
use jdc_shared::chain;
use jdc_shared::messages::Tip;
use jdc_shared::tdp::{self, TemplateParts};

use super::prepared::{Cut, PreparedTemplate};
use stratum_core::binary_sv2::{B016MOwned, B064KOwned, Seq064KOwned, Str0255Owned};
use stratum_core::parsers_sv2::{AnyMessageOwned, TemplateDistributionOwned};
use stratum_core::template_distribution_sv2::{
    RequestTransactionDataErrorOwned, RequestTransactionDataSuccessOwned, SubmitSolutionOwned,
};

/// Templates a client may still refer to.
const TEMPLATES_KEPT: usize = 32;

/// The latest tip and template the watcher published.
#[derive(Debug, Clone, Default)]
pub struct Feed {
    /// The tip.
    pub tip: Option<Arc<Tip>>,
    /// The template (for that tip, or older while its template is on its way), prepared.
    pub template: Option<Arc<PreparedTemplate>>,
}

/// A template the client was sent.
#[derive(Debug)]
struct Sent {
    template_id: u64,
    /// Previous block hash (internal byte order), once known.
    prev_hash: Option<[u8; 32]>,
    nbits: u32,
    /// Its transactions (coinbase excluded): the first `kept` of a prepared template; none for
    /// the empty future template of a tip.
    txs: Option<(Arc<PreparedTemplate>, usize)>,
}

impl Sent {
    fn txids(&self) -> &[[u8; 32]] {
        self.txs.as_ref().map_or(&[], |(t, kept)| t.txids(*kept))
    }

    fn raw_txs(&self) -> impl Iterator<Item = &[u8]> {
        self.txs.iter().flat_map(|(t, kept)| t.raw_txs(*kept))
    }
}

/// A solution the client found, ready for `submitblock`.
#[derive(Debug)]
pub struct FoundBlock {
    /// The block's hash.
    pub hash: BlockHash,
    /// The serialized block.
    pub bytes: Vec<u8>,
    /// Transactions besides the coinbase.
    pub tx_count: usize,
}

/// Why a client's request cannot be served (it stays connected).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    /// The template is unknown or too old.
    #[error("template {0} unknown or too old")]
    UnknownTemplate(u64),
    /// The solution does not make a block.
    #[error("solution for template {template_id}: {reason}")]
    BadSolution {
        /// Its template.
        template_id: u64,
        /// What is wrong.
        reason: String,
    },
}

/// A TDP client's session.
#[derive(Debug)]
pub struct Session {
    fee_delta: u64,
    /// Room the client's coinbase outputs need, bytes (from `CoinbaseOutputConstraints`).
    extra_coinbase_bytes: u32,
    /// The tip the client mines on (RPC hex) and the id of its future template.
    tip: Option<String>,
    /// Id and fees of the last full template sent for the tip.
    last_full: Option<(u64, u64)>,
    sent: VecDeque<Sent>,
    next_future_id: u64,
}

impl Session {
    /// A new session; `fee_delta` as in `tdp_fee_delta_sats`.
    pub fn new(fee_delta: u64) -> Self {
        Self {
            fee_delta,
            extra_coinbase_bytes: 0,
            tip: None,
            last_full: None,
            sent: VecDeque::new(),
            // Future templates get ids of their own, far from the watcher's (µs clock) ids.
            next_future_id: 1,
        }
    }

    /// `CoinbaseOutputConstraints`: later templates leave this much room.
    pub fn set_constraints(&mut self, max_additional_size: u32) {
        self.extra_coinbase_bytes = max_additional_size;
    }

    /// What the client must be sent for `feed`.
    pub fn on_feed(&mut self, feed: &Feed) -> Result<Vec<AnyMessageOwned>, String> {
        let mut out = Vec::new();
        if let Some(tip) = &feed.tip {
            if self.tip.as_deref() != Some(tip.prev_hash.as_str()) {
                out.extend(self.new_tip(tip)?);
            }
        }
        if let Some(t) = &feed.template {
            if self.tip.as_deref() == Some(t.template.prev_hash.as_str()) {
                out.extend(self.full_template(t)?);
            }
        }
        Ok(out)
    }

    /// A new tip: an empty future template on it, activated at once.
    fn new_tip(&mut self, tip: &Tip) -> Result<Vec<AnyMessageOwned>, String> {
        let prev_hash = chain::hash_from_rpc_hex(&tip.prev_hash).map_err(|e| e.to_string())?;
        let template_id = self.next_future_id;
        self.next_future_id += 1;
        let template = tdp::new_template(&TemplateParts {
            template_id,
            future: true,
            height: tip.height,
            version: tip.version,
            coinbase_value: tip.subsidy,
            witness_commitment: chain::witness_commitment(&[]),
            merkle_path: Vec::new(),
        })
        .map_err(|e| e.to_string())?;
        let prev = tdp::set_new_prev_hash(
            template_id,
            prev_hash,
            tip.time.max(tip.min_time),
            tip.nbits,
        );
        self.remember(Sent {
            template_id,
            prev_hash: Some(prev_hash),
            nbits: tip.nbits,
            txs: None,
        });
        self.tip = Some(tip.prev_hash.clone());
        self.last_full = None;
        Ok(vec![
            AnyMessageOwned::TemplateDistribution(TemplateDistributionOwned::NewTemplate(template)),
            AnyMessageOwned::TemplateDistribution(TemplateDistributionOwned::SetNewPrevHash(prev)),
        ])
    }

    /// bitcoind's template for the tip, when it is new and worth sending.
    fn full_template(&mut self, p: &Arc<PreparedTemplate>) -> Result<Vec<AnyMessageOwned>, String> {
        let t = &p.template;
        let fees = p.fees();
        match self.last_full {
            Some((id, _)) if id == t.id => return Ok(vec![]),
            Some((_, sent_fees)) if fees < sent_fees.saturating_add(self.fee_delta) => {
                return Ok(vec![])
            }
            _ => {}
        }
        let cut: Arc<Cut> = p.cut_for(self.extra_coinbase_bytes);
        let template = tdp::new_template(&TemplateParts {
            template_id: t.id,
            future: false,
            height: t.height,
            version: t.version,
            coinbase_value: cut.coinbase_value,
            witness_commitment: cut.witness_commitment,
            merkle_path: cut.merkle_path.clone(),
        })
        .map_err(|e| e.to_string())?;
        self.remember(Sent {
            template_id: t.id,
            prev_hash: Some(p.prev_hash),
            nbits: t.bits,
            txs: Some((p.clone(), cut.kept)),
        });
        self.last_full = Some((t.id, fees));
        Ok(vec![AnyMessageOwned::TemplateDistribution(
            TemplateDistributionOwned::NewTemplate(template),
        )])
    }

    fn remember(&mut self, s: Sent) {
        if self.sent.len() == TEMPLATES_KEPT {
            self.sent.pop_front();
        }
        self.sent.push_back(s);
    }

    fn find(&self, template_id: u64) -> Option<&Sent> {
        self.sent
            .iter()
            .rev()
            .find(|s| s.template_id == template_id)
    }

    /// `RequestTransactionData`: the template's transactions, or an error message for it.
    pub fn transaction_data(&self, template_id: u64) -> Option<AnyMessageOwned> {
        let data = self.find(template_id).and_then(|s| {
            let list: Vec<B016MOwned> = s
                .raw_txs()
                .filter_map(|tx| B016MOwned::new(tx.to_vec()).ok())
                .collect();
            Some(RequestTransactionDataSuccessOwned {
                template_id,
                excess_data: B064KOwned::new(Vec::new()).ok()?,
                transaction_list: Seq064KOwned::new(list).ok()?,
            })
        });
        Some(match data {
            Some(success) => AnyMessageOwned::TemplateDistribution(
                TemplateDistributionOwned::RequestTransactionDataSuccess(success),
            ),
            None => AnyMessageOwned::TemplateDistribution(
                TemplateDistributionOwned::RequestTransactionDataError(
                    RequestTransactionDataErrorOwned {
                        template_id,
                        error_code: Str0255Owned::new(b"template-id-not-found".to_vec()).ok()?,
                    },
                ),
            ),
        })
    }

    /// `SubmitSolution`: the block it makes with the template's transactions.
    pub fn solution(&self, s: &SubmitSolutionOwned) -> Result<FoundBlock, RequestError> {
        let sent = self
            .find(s.template_id)
            .ok_or(RequestError::UnknownTemplate(s.template_id))?;
        let bad = |reason: String| RequestError::BadSolution {
            template_id: s.template_id,
            reason,
        };
        let prev_hash = sent
            .prev_hash
            .ok_or_else(|| bad("its template never got a previous block hash".into()))?;
        let coinbase: Transaction = deserialize(s.coinbase_tx.as_ref())
            .map_err(|e| bad(format!("coinbase_tx is not a transaction: {e}")))?;
        if !coinbase.is_coinbase() {
            return Err(bad("coinbase_tx is not a coinbase".into()));
        }
        let txids = sent.txids();
        let mut txdata = Vec::with_capacity(txids.len() + 1);
        let mut leaves = Vec::with_capacity(txids.len() + 1);
        leaves.push(coinbase.compute_txid().to_byte_array());
        leaves.extend_from_slice(txids);
        txdata.push(coinbase);
        for raw in sent.raw_txs() {
            let tx: Transaction = deserialize(raw)
                .map_err(|e| bad(format!("a template transaction does not parse: {e}")))?;
            txdata.push(tx);
        }
        let header = Header {
            version: Version::from_consensus(s.version as i32),
            prev_blockhash: BlockHash::from_byte_array(prev_hash),
            merkle_root: TxMerkleNode::from_byte_array(chain::merkle_root(&leaves)),
            time: s.header_timestamp,
            bits: CompactTarget::from_consensus(sent.nbits),
            nonce: s.header_nonce,
        };
        let block = Block { header, txdata };
        Ok(FoundBlock {
            hash: block.block_hash(),
            tx_count: block.txdata.len() - 1,
            bytes: serialize(&block),
        })
    }
}

#[cfg(test)]
mod tests;
