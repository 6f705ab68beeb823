//! The watcher's templates, as the declarator keeps them: selections name transactions of a
//! template by txid, and the block is built from the template's bytes.
//!
//! Pure logic, unit tested.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use jdc_shared::bitcoin::Network;
use jdc_shared::chain;
use jdc_shared::messages::{Selection, Template};

use crate::work::WorkError;

/// Templates kept (the newest: a selection refers to one just published). Blocks being
/// mined keep theirs alive through the catalog.
const TEMPLATES_KEPT: usize = 2;

/// One transaction of a template, hashes parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxEntry {
    /// Transaction id, internal byte order.
    pub txid: [u8; 32],
    /// Witness transaction id, internal byte order.
    pub wtxid: [u8; 32],
    /// Serialized transaction with witness.
    pub data: Vec<u8>,
    /// Fee, satoshis.
    pub fee: u64,
    /// Weight units.
    pub weight: u64,
    /// Sigops cost.
    pub sigops: u64,
    /// 0-based positions in the template of the transactions it spends from.
    pub parents: Vec<u32>,
}

/// A template's transactions, indexed by txid.
#[derive(Debug)]
pub struct TemplateTxs {
    /// Template id (the watcher's).
    pub id: u64,
    /// Previous block hash, internal order.
    pub prev_hash: [u8; 32],
    /// Height of the block.
    pub height: u32,
    /// Block version.
    pub version: u32,
    /// Compact target.
    pub bits: u32,
    /// Smallest valid header time.
    pub mintime: u32,
    /// bitcoind's current time when it built the template.
    pub curtime: u32,
    /// Transactions in bitcoind's order.
    pub txs: Vec<TxEntry>,
    by_txid: HashMap<[u8; 32], u32>,
}

impl TemplateTxs {
    /// Parses a template's hashes and dependencies; a template that breaks them is refused.
    pub fn from_template(t: Template) -> Result<TemplateTxs, WorkError> {
        let invalid = |reason: String| WorkError::InvalidTemplate { id: t.id, reason };
        let prev_hash = chain::hash_from_rpc_hex(&t.prev_hash)
            .map_err(|e| invalid(format!("prev_hash: {e}")))?;
        let mut txs = Vec::with_capacity(t.txs.len());
        let mut by_txid = HashMap::with_capacity(t.txs.len());
        for (i, tx) in t.txs.into_iter().enumerate() {
            let position = i as u32 + 1;
            let txid = chain::hash_from_rpc_hex(&tx.txid)
                .map_err(|e| invalid(format!("transaction {position}: {e}")))?;
            let wtxid = chain::hash_from_rpc_hex(&tx.wtxid)
                .map_err(|e| invalid(format!("transaction {position}: {e}")))?;
            if let Some(dep) = tx.depends.iter().find(|d| **d == 0 || **d >= position) {
                return Err(invalid(format!(
                    "transaction {position} ({}) depends on position {dep}, which is not before it",
                    tx.txid
                )));
            }
            if by_txid.insert(txid, i as u32).is_some() {
                return Err(invalid(format!(
                    "transaction {position} ({}) appears twice",
                    tx.txid
                )));
            }
            txs.push(TxEntry {
                txid,
                wtxid,
                data: tx.data,
                fee: tx.fee,
                weight: tx.weight,
                sigops: tx.sigops,
                parents: tx.depends.iter().map(|d| d - 1).collect(),
            });
        }
        Ok(TemplateTxs {
            id: t.id,
            prev_hash,
            height: t.height,
            version: t.version,
            bits: t.bits,
            mintime: t.mintime,
            curtime: t.curtime,
            txs,
            by_txid,
        })
    }

    /// Position of a transaction in the template.
    pub fn position(&self, txid: &[u8; 32]) -> Option<u32> {
        self.by_txid.get(txid).copied()
    }
}

/// The newest templates, by id.
#[derive(Debug, Default)]
pub struct TemplateStore {
    templates: VecDeque<Arc<TemplateTxs>>,
}

impl TemplateStore {
    /// Keeps a template (the oldest beyond the few kept is dropped).
    pub fn insert(&mut self, t: Arc<TemplateTxs>) {
        self.templates.retain(|k| k.id != t.id);
        if self.templates.len() >= TEMPLATES_KEPT {
            self.templates.pop_front();
        }
        self.templates.push_back(t);
    }

    /// The template with this id, if kept.
    pub fn get(&self, id: u64) -> Option<Arc<TemplateTxs>> {
        self.templates.iter().rev().find(|t| t.id == id).cloned()
    }

    /// Every kept template, oldest first.
    pub fn all(&self) -> Vec<Arc<TemplateTxs>> {
        self.templates.iter().cloned().collect()
    }

    /// Whether a template with this id is kept.
    pub fn contains(&self, id: u64) -> bool {
        self.templates.iter().any(|t| t.id == id)
    }
}

/// The selection a pass-through selector makes: every transaction of `template`, in its
/// order (tests and benchmarks build work with it). Hashes that do not parse are left out of
/// the witness commitment, so the declarator refuses such a selection.
pub fn select_all(template: &Template, id: u64, network: Network) -> Selection {
    let fees: u64 = template.txs.iter().map(|t| t.fee).sum();
    let wtxids: Vec<[u8; 32]> = template
        .txs
        .iter()
        .filter_map(|t| chain::hash_from_rpc_hex(&t.wtxid).ok())
        .collect();
    Selection {
        id,
        template_id: template.id,
        height: template.height,
        prev_hash: template.prev_hash.clone(),
        version: template.version,
        bits: template.bits,
        curtime: template.curtime,
        mintime: template.mintime,
        policy: "pass-through".into(),
        txids: template.txs.iter().map(|t| t.txid.clone()).collect(),
        fees,
        coinbase_value: chain::subsidy(template.height, network).saturating_add(fees),
        weight: template.txs.iter().map(|t| t.weight).sum(),
        sigops: template.txs.iter().map(|t| t.sigops).sum(),
        witness_commitment: hex::encode(chain::witness_commitment(&wtxids)),
        dropped: Vec::new(),
        tip_detected_at_us: template.tip_detected_at_us,
    }
}

#[cfg(test)]
mod tests;
