//! The work book: turns bus tips and selections into the templates and chain tips that the
//! SRI channel logic (`channels_sv2`) builds jobs from, and keeps what is needed to assemble a
//! block when a share meets the network target.
//!
//! Pure logic: no sockets, unit tested.

use std::collections::VecDeque;
use std::sync::Arc;

use jdc_shared::bitcoin::{Network, TxOut};
use jdc_shared::chain::{self, ChainError};
use jdc_shared::messages::{JobKind, Selection, Tip};
use jdc_shared::tdp::TemplateParts;
use stratum_core::template_distribution_sv2::{NewTemplateOwned, SetNewPrevHashOwned};

use crate::payout::Payout;
use crate::templates::TemplateTxs;

/// Why a tip or selection was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum WorkError {
    /// A hash field is not valid hex.
    #[error("{field}: {source}")]
    Hash {
        /// Which field.
        field: &'static str,
        /// Cause.
        #[source]
        source: ChainError,
    },
    /// The selection breaks a block rule; the text says which.
    #[error("invalid selection {id} for height {height}: {reason}")]
    InvalidSelection {
        /// Selection id.
        id: u64,
        /// Its height.
        height: u32,
        /// What is wrong.
        reason: String,
    },
    /// A template from the watcher breaks a rule; the text says which.
    #[error("invalid template {id}: {reason}")]
    InvalidTemplate {
        /// Template id.
        id: u64,
        /// What is wrong.
        reason: String,
    },
    /// A bus message could not be decoded (already counted and logged).
    #[error("malformed bus message")]
    Malformed,
    /// A value does not fit an SV2 field.
    #[error("cannot encode {0} for SV2")]
    Encode(&'static str),
    /// The pool's coinbase outputs cannot take this block's reward.
    #[error("pool outputs: {0}")]
    PoolOutputs(String),
}

/// The chain tip devices mine on.
#[derive(Debug, Clone, PartialEq)]
pub struct TipWork {
    /// Increments on every new tip.
    pub seq: u64,
    /// Previous block hash, internal byte order.
    pub prev_hash: [u8; 32],
    /// Height of the block being mined.
    pub height: u32,
    /// Compact target.
    pub nbits: u32,
    /// `min_ntime` given to devices.
    pub header_timestamp: u32,
    /// When the tip was detected (unix µs), for latency.
    pub detected_at_us: u64,
}

/// One job (empty or full) on the current tip.
#[derive(Debug, Clone)]
pub struct JobWork {
    /// Our template id (unique, increasing).
    pub template_id: u64,
    /// Empty-block or full job.
    pub kind: JobKind,
    /// The template as a non-future `NewTemplate`.
    pub template: NewTemplateOwned,
    /// Our payout outputs (sum = coinbase value).
    pub outputs: Vec<TxOut>,
    /// Transactions in the block (coinbase excluded).
    pub tx_count: u32,
}

/// What devices should be mining now: the tip and its best job.
#[derive(Debug, Clone)]
pub struct WorkState {
    /// Current tip.
    pub tip: Arc<TipWork>,
    /// Best job on that tip.
    pub job: Arc<JobWork>,
}

impl WorkState {
    /// The job as a future template, for a `SetNewPrevHash` to activate.
    pub fn future_template(&self) -> NewTemplateOwned {
        let mut t = self.job.template.clone();
        t.future_template = true;
        t
    }

    /// The template-distribution `SetNewPrevHash` activating this state's job.
    pub fn set_new_prev_hash(&self) -> SetNewPrevHashOwned {
        jdc_shared::tdp::set_new_prev_hash(
            self.job.template_id,
            self.tip.prev_hash,
            self.tip.header_timestamp,
            self.tip.nbits,
        )
    }
}

/// What a found block needs besides the coinbase and header fields from the share.
#[derive(Debug, Clone)]
pub struct BlockBody {
    /// Template id.
    pub template_id: u64,
    /// Height.
    pub height: u32,
    /// Previous block hash, internal order.
    pub prev_hash: [u8; 32],
    /// Compact target.
    pub nbits: u32,
    /// Transaction ids in block order (internal order), coinbase excluded.
    pub txids: Vec<[u8; 32]>,
    /// The template the transactions come from (none for an empty block).
    pub template: Option<Arc<TemplateTxs>>,
    /// Positions in `template` of the block's transactions, in block order.
    pub order: Vec<u32>,
}

impl BlockBody {
    /// The raw transactions in block order, coinbase excluded.
    pub fn txs(&self) -> impl Iterator<Item = &[u8]> {
        let txs = self.template.as_ref().map_or(&[][..], |t| &t.txs[..]);
        self.order
            .iter()
            .filter_map(move |&i| txs.get(i as usize).map(|tx| tx.data.as_slice()))
    }
}

/// The last templates' block bodies, by template id.
#[derive(Debug, Default)]
pub struct Catalog {
    bodies: VecDeque<Arc<BlockBody>>,
}

/// How many templates' bodies of the current tip are kept for block assembly: a share for an
/// older job of the same tip can still be a block. Jobs change at most every few seconds
/// (bitcoind renews its template about every 6 s) and devices switch within milliseconds, but
/// an upstream failure adds two jobs on one tip at once (solo work, then the next upstream's):
/// four cover the job before the failure too, while bounding memory (each body holds its
/// template).
const CATALOG_DEPTH: usize = 4;

impl Catalog {
    /// Adds a body. Bodies of other tips are dropped (a block on a replaced tip would be
    /// stale), and the oldest beyond the depth.
    pub fn insert(&mut self, body: Arc<BlockBody>) {
        self.bodies.retain(|b| b.prev_hash == body.prev_hash);
        if self.bodies.len() >= CATALOG_DEPTH {
            self.bodies.pop_front();
        }
        self.bodies.push_back(body);
    }

    /// The body of a template, if still kept.
    pub fn get(&self, template_id: u64) -> Option<Arc<BlockBody>> {
        self.bodies
            .iter()
            .rev()
            .find(|b| b.template_id == template_id)
            .cloned()
    }
}

/// A selection checked against its template and hashed, ready to become work: the costly
/// part of handling a selection (thousands of double SHA-256), done without touching the work
/// book so it can run off the event loop.
#[derive(Debug)]
pub struct PreparedSelection {
    id: u64,
    prev_hash: [u8; 32],
    height: u32,
    bits: u32,
    version: u32,
    header_timestamp: u32,
    coinbase_value: u64,
    tip_detected_at_us: u64,
    commitment: [u8; 32],
    merkle_path: Vec<[u8; 32]>,
    txids: Vec<[u8; 32]>,
    template: Arc<TemplateTxs>,
    order: Vec<u32>,
    weight: u64,
    sigops: u64,
}

impl PreparedSelection {
    /// Checks `sel` against the template it names (see [`validate_selection`] and the witness
    /// commitment) and computes its merkle path.
    pub fn prepare(
        sel: Selection,
        template: Arc<TemplateTxs>,
        network: Network,
    ) -> Result<PreparedSelection, WorkError> {
        let prev_hash =
            chain::hash_from_rpc_hex(&sel.prev_hash).map_err(|source| WorkError::Hash {
                field: "selection.prev_hash",
                source,
            })?;
        let checked = validate_selection(&sel, &template, network)?;
        let (commitment, merkle_path) = commitment_and_path(&checked.wtxids, &checked.txids);
        check_commitment(&sel, &commitment)?;
        Ok(PreparedSelection {
            id: sel.id,
            prev_hash,
            height: sel.height,
            bits: sel.bits,
            version: sel.version,
            header_timestamp: sel.curtime.max(sel.mintime),
            coinbase_value: sel.coinbase_value,
            tip_detected_at_us: sel.tip_detected_at_us,
            commitment,
            merkle_path,
            txids: checked.txids,
            template,
            order: checked.order,
            weight: checked.weight,
            sigops: checked.sigops,
        })
    }

    /// The selection's id.
    pub fn id(&self) -> u64 {
        self.id
    }
}

/// Limits every block must respect.
const MAX_BLOCK_WEIGHT: u64 = 4_000_000;
const MAX_BLOCK_SIGOPS: u64 = 80_000;
/// How far past the template's time a header may be (consensus: 2 hours past the node's
/// adjusted time).
const MAX_FUTURE_BLOCK_TIME: u32 = 2 * 60 * 60;
/// Weight of our coinbase, generously bounded (scriptSig ≤ 100 bytes, a few outputs).
const COINBASE_WEIGHT_BOUND: u64 = 4_000;

/// Turns tips and selections into work.
pub struct WorkBook {
    network: Network,
    payout: Payout,
    next_template_id: u64,
    tip_seq: u64,
    current: Option<WorkState>,
    last_selection_id: Option<u64>,
    /// The pool's coinbase outputs while mining for a pool (its payout first); `None`: solo.
    pool_outputs: Option<Vec<TxOut>>,
}

impl WorkBook {
    /// A work book paying `payout` on `network`.
    pub fn new(network: Network, payout: Payout) -> Self {
        Self {
            network,
            payout,
            // Template ids start from the clock so they keep increasing across restarts.
            next_template_id: jdc_shared::time::now_micros(),
            tip_seq: 0,
            current: None,
            last_selection_id: None,
            pool_outputs: None,
        }
    }

    /// Mines for a pool (its outputs, payout first, get the reward) or, with `None`, solo to
    /// our payout. Takes effect for the next job; see [`WorkBook::rebuild`].
    pub fn set_pool_outputs(&mut self, outputs: Option<Vec<TxOut>>) {
        self.pool_outputs = outputs;
    }

    /// Whether jobs pay a pool.
    pub fn mines_for_pool(&self) -> bool {
        self.pool_outputs.is_some()
    }

    /// Same pool, other outputs (those of the mining job token the next job is declared
    /// with): jobs built from now on pay `outputs`. True when the current job pays other
    /// outputs, so that [`WorkBook::rebuild`] moves devices to them at once.
    pub fn change_pool_outputs(&mut self, outputs: Vec<TxOut>) -> bool {
        self.pool_outputs = Some(outputs);
        !self.current_is_up_to_date()
    }

    /// Whether the current job pays what a job built now would (true without a current job).
    pub fn current_is_up_to_date(&self) -> bool {
        self.current.as_ref().is_none_or(|c| {
            self.outputs(c.job.template.coinbase_tx_value_remaining)
                .is_ok_and(|o| o == c.job.outputs)
        })
    }

    /// The current job again under a new id with the current payout (after a switch between
    /// pool and solo); `body` is the current job's block body.
    pub fn rebuild(
        &mut self,
        body: &BlockBody,
    ) -> Result<Option<(WorkState, BlockBody)>, WorkError> {
        let Some(current) = self.current.clone() else {
            return Ok(None);
        };
        let template_id = self.next_id();
        let mut template = current.job.template.clone();
        template.template_id = template_id;
        let outputs = self.outputs(template.coinbase_tx_value_remaining)?;
        let job = JobWork {
            template_id,
            kind: current.job.kind,
            template,
            outputs,
            tx_count: current.job.tx_count,
        };
        let body = BlockBody {
            template_id,
            ..body.clone()
        };
        let state = WorkState {
            tip: current.tip,
            job: Arc::new(job),
        };
        self.current = Some(state.clone());
        Ok(Some((state, body)))
    }

    /// Refuses a selection that leaves too little weight or sigops for the coinbase this book
    /// would build for it (our payout, or the pool's outputs).
    fn check_room_for_coinbase(&self, p: &PreparedSelection) -> Result<(), WorkError> {
        let outputs = self.outputs(p.coinbase_value)?;
        // Legacy sigops of output scripts count 4 each (witness scale); the input has none.
        let coinbase_sigops: u64 = outputs
            .iter()
            .map(|o| o.script_pubkey.count_sigops_legacy() as u64 * 4)
            .sum();
        // Version, input (prevout, a 100-byte scriptSig at most, sequence), the outputs, the
        // witness commitment output, lock time: all ×4; plus the 32-byte witness reserved
        // value and the segwit marker.
        let outputs_size: u64 = outputs
            .iter()
            .map(|o| 8 + 3 + o.script_pubkey.len() as u64)
            .sum();
        let coinbase_weight =
            4 * (4 + 1 + 36 + 1 + 100 + 4 + 3 + outputs_size + 8 + 1 + 38 + 4) + 2 + 1 + 1 + 32;
        let invalid = |reason: String| WorkError::InvalidSelection {
            id: p.id,
            height: p.height,
            reason,
        };
        if p.sigops + coinbase_sigops > MAX_BLOCK_SIGOPS {
            return Err(invalid(format!(
                "{} sigops leave no room for the coinbase's {coinbase_sigops} under {MAX_BLOCK_SIGOPS}",
                p.sigops
            )));
        }
        if p.weight + coinbase_weight > MAX_BLOCK_WEIGHT {
            return Err(invalid(format!(
                "transactions weigh {} WU, leaving no room for the coinbase's {coinbase_weight} under {MAX_BLOCK_WEIGHT}",
                p.weight
            )));
        }
        Ok(())
    }

    fn outputs(&self, coinbase_value: u64) -> Result<Vec<TxOut>, WorkError> {
        match &self.pool_outputs {
            Some(pool) => crate::upstream::declare::outputs_with_reward(pool, coinbase_value)
                .map_err(|e| WorkError::PoolOutputs(e.to_string())),
            None => Ok(self.payout.outputs(coinbase_value)),
        }
    }

    /// The current work, if any.
    pub fn current(&self) -> Option<&WorkState> {
        self.current.as_ref()
    }

    fn next_id(&mut self) -> u64 {
        self.next_template_id += 1;
        self.next_template_id
    }

    /// A new tip from the watcher: returns the empty-block work for it, or `None` if this tip
    /// is already the current one (re-sent state).
    pub fn on_tip(&mut self, tip: &Tip) -> Result<Option<(WorkState, BlockBody)>, WorkError> {
        let prev_hash =
            chain::hash_from_rpc_hex(&tip.prev_hash).map_err(|source| WorkError::Hash {
                field: "tip.prev_hash",
                source,
            })?;
        // A re-sent tip is a duplicate; the same block with other height or nbits is a
        // correction from the watcher and replaces the work.
        if self.current.as_ref().is_some_and(|c| {
            c.tip.prev_hash == prev_hash && c.tip.height == tip.height && c.tip.nbits == tip.nbits
        }) {
            return Ok(None);
        }
        let header_timestamp = tip.time.max(tip.min_time);
        let tip_work = self.new_tip(
            prev_hash,
            tip.height,
            tip.nbits,
            header_timestamp,
            tip.detected_at_us,
        );
        let commitment = chain::witness_commitment(&[]);
        let template_id = self.next_id();
        let job = self.job(
            template_id,
            JobKind::Empty,
            tip.height,
            tip.version,
            tip.subsidy,
            &commitment,
            Vec::new(),
            0,
        )?;
        let body = BlockBody {
            template_id,
            height: tip.height,
            prev_hash,
            nbits: tip.nbits,
            txids: Vec::new(),
            template: None,
            order: Vec::new(),
        };
        let state = WorkState {
            tip: Arc::new(tip_work),
            job: Arc::new(job),
        };
        self.current = Some(state.clone());
        Ok(Some((state, body)))
    }

    fn new_tip(
        &mut self,
        prev_hash: [u8; 32],
        height: u32,
        nbits: u32,
        header_timestamp: u32,
        detected_at_us: u64,
    ) -> TipWork {
        self.tip_seq += 1;
        TipWork {
            seq: self.tip_seq,
            prev_hash,
            height,
            nbits,
            header_timestamp,
            detected_at_us,
        }
    }

    /// A selection from the tx-selector, for `template`: validated, then returned as the full
    /// job. `None` when it is a re-sent duplicate or for an older tip. (Validation and apply in
    /// one step; the service prepares off its event loop with [`PreparedSelection::prepare`]
    /// instead.)
    pub fn on_selection(
        &mut self,
        sel: Selection,
        template: Arc<TemplateTxs>,
    ) -> Result<Option<(WorkState, BlockBody)>, WorkError> {
        if self.last_selection_id == Some(sel.id) {
            return Ok(None);
        }
        let prepared = PreparedSelection::prepare(sel, template, self.network)?;
        self.apply_selection(prepared)
    }

    /// Whether a selection with this id was the last one applied (re-sent state).
    pub fn is_known_selection(&self, id: u64) -> bool {
        self.last_selection_id == Some(id)
    }

    /// Applies a validated selection: the full job on its tip. `None` when it is a duplicate
    /// or for a tip already left behind (a newer tip arrived while it was being prepared).
    pub fn apply_selection(
        &mut self,
        p: PreparedSelection,
    ) -> Result<Option<(WorkState, BlockBody)>, WorkError> {
        if self.last_selection_id == Some(p.id) {
            return Ok(None);
        }
        let same_tip = self
            .current
            .as_ref()
            .is_some_and(|c| c.tip.prev_hash == p.prev_hash);
        if !same_tip
            && self
                .current
                .as_ref()
                .is_some_and(|c| p.height <= c.tip.height)
        {
            // A selection for a tip we already left behind.
            return Ok(None);
        }
        self.check_room_for_coinbase(&p)?;
        self.last_selection_id = Some(p.id);
        let tip = match (&self.current, same_tip) {
            (Some(c), true) => c.tip.clone(),
            // The selection reveals a tip we did not hear of (e.g. a lost Tip message).
            _ => Arc::new(self.new_tip(
                p.prev_hash,
                p.height,
                p.bits,
                p.header_timestamp,
                p.tip_detected_at_us,
            )),
        };
        let template_id = self.next_id();
        let tx_count = p.order.len() as u32;
        let job = self.job(
            template_id,
            JobKind::Full,
            p.height,
            p.version,
            p.coinbase_value,
            &p.commitment,
            p.merkle_path,
            tx_count,
        )?;
        let body = BlockBody {
            template_id,
            height: p.height,
            prev_hash: p.prev_hash,
            nbits: tip.nbits,
            txids: p.txids,
            template: Some(p.template),
            order: p.order,
        };
        let state = WorkState {
            tip,
            job: Arc::new(job),
        };
        self.current = Some(state.clone());
        Ok(Some((state, body)))
    }

    #[allow(clippy::too_many_arguments)]
    fn job(
        &self,
        template_id: u64,
        kind: JobKind,
        height: u32,
        version: u32,
        coinbase_value: u64,
        commitment: &[u8; 32],
        merkle_path: Vec<[u8; 32]>,
        tx_count: u32,
    ) -> Result<JobWork, WorkError> {
        let template = jdc_shared::tdp::new_template(&TemplateParts {
            template_id,
            future: false,
            height,
            version,
            coinbase_value,
            witness_commitment: *commitment,
            merkle_path,
        })
        .map_err(|e| WorkError::Encode(e.0))?;
        Ok(JobWork {
            template_id,
            kind,
            template,
            outputs: self.outputs(coinbase_value)?,
            tx_count,
        })
    }
}

/// A selection resolved against its template.
#[derive(Debug)]
pub struct CheckedSelection {
    /// Transaction ids in block order (internal order).
    pub txids: Vec<[u8; 32]>,
    /// Witness transaction ids in block order.
    pub wtxids: Vec<[u8; 32]>,
    /// Positions in the template, in block order.
    pub order: Vec<u32>,
    /// Weight of the chosen transactions (the template's figures).
    pub weight: u64,
    /// Sigops cost of the chosen transactions (the template's figures).
    pub sigops: u64,
}

/// Checks that a selection is a valid block body made of `template`'s transactions: every
/// txid is one of the template's, none twice, every parent chosen and earlier; the fees,
/// coinbase value, weight and sigops (from the template, not from the selector) match its
/// claims and the block limits. The witness commitment is checked by [`check_commitment`].
pub fn validate_selection(
    sel: &Selection,
    template: &TemplateTxs,
    network: Network,
) -> Result<CheckedSelection, WorkError> {
    let invalid = |reason: String| WorkError::InvalidSelection {
        id: sel.id,
        height: sel.height,
        reason,
    };
    if sel.template_id != template.id || sel.height != template.height {
        return Err(invalid(format!(
            "names template {} at height {}, but was checked against template {} at height {}",
            sel.template_id, sel.height, template.id, template.height
        )));
    }
    // The header fields are the template's: a selector chooses transactions, not the chain.
    let prev_hash =
        chain::hash_from_rpc_hex(&sel.prev_hash).map_err(|e| invalid(format!("prev_hash: {e}")))?;
    if prev_hash != template.prev_hash {
        return Err(invalid(format!(
            "prev_hash {} is not template {}'s",
            sel.prev_hash, template.id
        )));
    }
    if (sel.version, sel.bits) != (template.version, template.bits) {
        return Err(invalid(format!(
            "version {:#x} / bits {:#x} differ from the template's {:#x} / {:#x}",
            sel.version, sel.bits, template.version, template.bits
        )));
    }
    let header_time = sel.curtime.max(sel.mintime);
    let latest = template.curtime.saturating_add(MAX_FUTURE_BLOCK_TIME);
    if header_time < template.mintime || header_time > latest {
        return Err(invalid(format!(
            "header time {header_time} is outside the template's range {}..={latest}",
            template.mintime
        )));
    }
    // 1-based position in the block of each template transaction (0: not chosen).
    let mut placed = vec![0u32; template.txs.len()];
    let mut checked = CheckedSelection {
        txids: Vec::with_capacity(sel.txids.len()),
        wtxids: Vec::with_capacity(sel.txids.len()),
        order: Vec::with_capacity(sel.txids.len()),
        weight: 0,
        sigops: 0,
    };
    let (mut fees, mut weight, mut sigops) = (0u64, 0u64, 0u64);
    for (i, hex_txid) in sel.txids.iter().enumerate() {
        let position = i as u32 + 1;
        let txid = chain::hash_from_rpc_hex(hex_txid)
            .map_err(|e| invalid(format!("transaction {position}: {e}")))?;
        let Some(at) = template.position(&txid) else {
            return Err(invalid(format!(
                "transaction {position} ({hex_txid}) is not in template {}",
                template.id
            )));
        };
        let slot = &mut placed[at as usize];
        if *slot != 0 {
            return Err(invalid(format!(
                "transaction {position} ({hex_txid}) is chosen twice"
            )));
        }
        *slot = position;
        let tx = &template.txs[at as usize];
        if let Some(parent) = tx.parents.iter().find(|&&p| placed[p as usize] == 0) {
            return Err(invalid(format!(
                "transaction {position} ({hex_txid}) comes without or before its parent, template transaction {}",
                parent + 1
            )));
        }
        checked.txids.push(txid);
        checked.wtxids.push(tx.wtxid);
        checked.order.push(at);
        fees = fees.saturating_add(tx.fee);
        weight = weight.saturating_add(tx.weight);
        sigops = sigops.saturating_add(tx.sigops);
    }
    if fees != sel.fees {
        return Err(invalid(format!(
            "fees field {} differs from the sum of transaction fees {fees}",
            sel.fees
        )));
    }
    let expected_value = chain::subsidy(sel.height, network).saturating_add(fees);
    if sel.coinbase_value != expected_value {
        return Err(invalid(format!(
            "coinbase value {} is not subsidy + fees = {expected_value}",
            sel.coinbase_value
        )));
    }
    if (sel.weight, sel.sigops) != (weight, sigops) {
        return Err(invalid(format!(
            "weight {} / sigops {} differ from the chosen transactions' {weight} / {sigops}",
            sel.weight, sel.sigops
        )));
    }
    if weight + COINBASE_WEIGHT_BOUND > MAX_BLOCK_WEIGHT {
        return Err(invalid(format!(
            "transactions weigh {weight} WU, leaving no room for the coinbase under {MAX_BLOCK_WEIGHT}"
        )));
    }
    if sigops > MAX_BLOCK_SIGOPS {
        return Err(invalid(format!(
            "{sigops} sigops exceed the block limit {MAX_BLOCK_SIGOPS}"
        )));
    }
    checked.weight = weight;
    checked.sigops = sigops;
    Ok(checked)
}

/// The witness commitment and the coinbase merkle path, computed side by side for large
/// blocks (each is a few thousand double SHA-256).
fn commitment_and_path(wtxids: &[[u8; 32]], txids: &[[u8; 32]]) -> ([u8; 32], Vec<[u8; 32]>) {
    if txids.len() < 512 {
        return (
            chain::witness_commitment(wtxids),
            chain::coinbase_merkle_path(txids),
        );
    }
    std::thread::scope(|scope| {
        let commitment = scope.spawn(|| chain::witness_commitment(wtxids));
        let path = chain::coinbase_merkle_path(txids);
        // A panic inside the hash helper is impossible; recompute here if the thread failed.
        let commitment = commitment
            .join()
            .unwrap_or_else(|_| chain::witness_commitment(wtxids));
        (commitment, path)
    })
}

/// Checks the selection's declared witness commitment against the recomputed one.
fn check_commitment(sel: &Selection, commitment: &[u8; 32]) -> Result<(), WorkError> {
    let invalid = |reason: String| WorkError::InvalidSelection {
        id: sel.id,
        height: sel.height,
        reason,
    };
    // The field is hex of the 32 bytes as they appear in the coinbase output (internal order).
    let mut declared = [0u8; 32];
    hex::decode_to_slice(&sel.witness_commitment, &mut declared)
        .map_err(|_| invalid("witness_commitment is not 32 bytes of hex".into()))?;
    if &declared != commitment {
        return Err(invalid(format!(
            "witness commitment {} does not match the transactions ({})",
            sel.witness_commitment,
            hex::encode(commitment)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
