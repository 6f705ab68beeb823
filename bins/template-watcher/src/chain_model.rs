//! What the tip path knows of the chain, so that a block-connected notification becomes a
//! [`Tip`] without asking bitcoind anything (pure, no I/O).
//!
//! [`ChainModel`] holds the facts of recent blocks (height, `nBits`, header time, parent),
//! learnt from `getblockheader` answers fetched *after* each tip is published. Facts of a block
//! never change, so the model is a small cache keyed by hash; it does not need to know which
//! block is the active tip. What links a new block to the model is the ZMQ `sequence` stream:
//! when the block event before `C(H)` was `C(P)`, with no `D` and no lost message in between,
//! `P` is `H`'s parent (see `zmq_feed::BlockStream`).
//!
//! From the parent's facts, the block after `H` is known exactly: its height is `P + 2`, its
//! `nBits` is `P`'s away from retarget boundaries (never on testnet3/4, whose 20-minute rule
//! depends on time), and its smallest valid time is bounded: the median time past of the 11
//! blocks ending at `H` lies between the 5th and 6th smallest of the 10 timestamps ending at
//! `P` whatever `H`'s own time is, so the 6th smallest + 1 is a valid `min_time` (at most the
//! spread of those blocks above the exact one). Anything else is a [`Fallback`] to the RPC path.

use crate::gbt::{self, GbtError, HeaderInfo};
use jdc_shared::bitcoin::Network;
use jdc_shared::chain;
use jdc_shared::messages::Tip;
use std::collections::{HashMap, VecDeque};

/// Blocks in a median-time-past window (the block and its 10 predecessors).
pub const MTP_SPAN: u32 = 11;
/// Blocks the model must know, ending at a tip, to predict its grandchild's `min_time`.
pub const KNOWN_SPAN: u32 = MTP_SPAN - 1;

/// The facts of one block the tip path uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockFacts {
    /// Block hash (RPC hex).
    pub hash: String,
    /// Height.
    pub height: u32,
    /// Compact target (`nBits`).
    pub bits: u32,
    /// Header time.
    pub time: u32,
    /// Parent hash (RPC hex); `None` for the genesis block.
    pub prev: Option<String>,
}

impl BlockFacts {
    /// The facts of a `getblockheader` answer.
    pub fn from_header(h: &HeaderInfo) -> Result<Self, GbtError> {
        const WHAT: &str = "getblockheader";
        gbt::check_hash(WHAT, "hash", &h.hash)?;
        if let Some(prev) = &h.previousblockhash {
            gbt::check_hash(WHAT, "previousblockhash", prev)?;
        } else if h.height != 0 {
            return Err(GbtError::BadField {
                what: WHAT.into(),
                field: "previousblockhash",
                why: format!("missing for a block at height {}", h.height),
            });
        }
        Ok(Self {
            hash: h.hash.clone(),
            height: h.height,
            bits: gbt::parse_bits(WHAT, &h.bits)?,
            time: h.time,
            prev: h.previousblockhash.clone(),
        })
    }
}

/// Why a block-connected notification cannot be turned into a tip without RPC.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fallback {
    /// The notification did not prove the parent (first block event since start, after a
    /// disconnection, a lost message or a reconnection), or came from `hashblock` or the poll.
    #[error("parent not proven by the ZMQ sequence stream")]
    ParentUnproven,
    /// The parent's facts are not in the model.
    #[error("parent {0} not in the model")]
    UnknownParent(String),
    /// A block of the median-time-past window is not in the model.
    #[error("block {0} of the median-time-past window not in the model")]
    IncompleteWindow(String),
    /// Too close to genesis for the median time past to be bounded.
    #[error("too close to genesis")]
    NearGenesis,
    /// The new block or the next one is at a retarget boundary.
    #[error("retarget boundary near height {0}")]
    Retarget(u32),
    /// testnet3/testnet4: the target depends on the block time.
    #[error("the target depends on time on this network")]
    TimeDependentTarget,
}

impl Fallback {
    /// Short machine-readable reason, for logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            Fallback::ParentUnproven => "parent-unproven",
            Fallback::UnknownParent(_) => "unknown-parent",
            Fallback::IncompleteWindow(_) => "incomplete-window",
            Fallback::NearGenesis => "near-genesis",
            Fallback::Retarget(_) => "retarget",
            Fallback::TimeDependentTarget => "time-dependent-target",
        }
    }
}

/// The block after a newly connected block, as predicted from its parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prediction {
    /// The connected block (the next block's `prev_hash`).
    pub block_hash: String,
    /// Its parent.
    pub parent_hash: String,
    /// Height of the connected block.
    pub block_height: u32,
    /// Height of the block to mine next.
    pub next_height: u32,
    /// `nBits` of the block to mine next (equal to the parent's and the connected block's).
    pub nbits: u32,
    /// A valid smallest header time of the block to mine next: at least the exact median
    /// time past + 1.
    pub min_time: u32,
}

/// A prediction that the connected block's real header contradicts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("predicted {field} {predicted} but the header says {actual}")]
pub struct Mismatch {
    /// The field: `height`, `previousblockhash`, `nbits`, `min_time` or `hash`.
    pub field: &'static str,
    /// What was published.
    pub predicted: String,
    /// What `getblockheader` says (for `min_time`: the median time past + 1).
    pub actual: String,
}

impl Prediction {
    /// The [`Tip`] to publish.
    pub fn tip(&self, network: Network, now_secs: u32, version: u32, detected_at_us: u64) -> Tip {
        Tip {
            height: self.next_height,
            prev_hash: self.block_hash.clone(),
            nbits: self.nbits,
            time: now_secs.max(self.min_time),
            min_time: self.min_time,
            version,
            subsidy: chain::subsidy(self.next_height, network),
            detected_at_us,
            detected_by: gbt::DetectedBy::Zmq.as_str().to_string(),
        }
    }

    /// Checks the prediction against the connected block's facts and its median time past
    /// (from `getblockheader`). A `min_time` above the exact one is valid, not a mismatch.
    pub fn check(&self, block: &BlockFacts, mediantime: u32) -> Result<(), Mismatch> {
        let mismatch = |field, predicted: String, actual: String| {
            Err(Mismatch {
                field,
                predicted,
                actual,
            })
        };
        if block.hash != self.block_hash {
            return mismatch("hash", self.block_hash.clone(), block.hash.clone());
        }
        if block.height != self.block_height {
            return mismatch(
                "height",
                self.block_height.to_string(),
                block.height.to_string(),
            );
        }
        if block.prev.as_deref() != Some(self.parent_hash.as_str()) {
            return mismatch(
                "previousblockhash",
                self.parent_hash.clone(),
                block.prev.clone().unwrap_or_default(),
            );
        }
        if block.bits != self.nbits {
            return mismatch(
                "nbits",
                format!("{:08x}", self.nbits),
                format!("{:08x}", block.bits),
            );
        }
        let exact = mediantime.saturating_add(1);
        if self.min_time < exact {
            return mismatch("min_time", self.min_time.to_string(), exact.to_string());
        }
        Ok(())
    }
}

/// bitcoind's median time past of a window of header times (`GetMedianTimePast`: the element
/// at index `len / 2` once sorted). 0 for an empty window.
pub fn median_time_past(times: &[u32]) -> u32 {
    let mut sorted = times.to_vec();
    sorted.sort_unstable();
    sorted.get(sorted.len() / 2).copied().unwrap_or(0)
}

/// The largest value the median time past of a window of `window_len` blocks can take when
/// all but the last block's times are `known` (`known.len() == window_len - 1`), whatever the
/// last one's: the element at index `window_len / 2` of the sorted known times. `None` when
/// the unknown time alone can decide it (windows of fewer than 3 blocks).
pub fn mtp_upper_bound(known: &[u32], window_len: usize) -> Option<u32> {
    if window_len == 0 || known.len() + 1 != window_len {
        return None;
    }
    let mut sorted = known.to_vec();
    sorted.sort_unstable();
    sorted.get(window_len / 2).copied()
}

/// Recently learnt block facts, by hash.
#[derive(Debug, Clone)]
pub struct ChainModel {
    blocks: HashMap<String, BlockFacts>,
    /// Insertion order, oldest first, for eviction.
    order: VecDeque<String>,
    capacity: usize,
}

impl Default for ChainModel {
    fn default() -> Self {
        Self::with_capacity(Self::CAPACITY)
    }
}

impl ChainModel {
    /// Blocks kept by default: many windows' worth, so a reorg's two branches both fit.
    pub const CAPACITY: usize = 256;

    /// A model keeping at most `capacity` blocks (at least [`MTP_SPAN`]).
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            blocks: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(MTP_SPAN as usize),
        }
    }

    /// Number of blocks known.
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    /// Whether no block is known.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// The facts of `hash`, if known.
    pub fn get(&self, hash: &str) -> Option<&BlockFacts> {
        self.blocks.get(hash)
    }

    /// Records a block's facts, evicting the oldest learnt when full.
    pub fn learn(&mut self, facts: BlockFacts) {
        if self.blocks.contains_key(&facts.hash) {
            return;
        }
        while self.blocks.len() >= self.capacity {
            match self.order.pop_front() {
                Some(old) => {
                    self.blocks.remove(&old);
                }
                None => break,
            }
        }
        self.order.push_back(facts.hash.clone());
        self.blocks.insert(facts.hash.clone(), facts);
    }

    /// The header times of the `n` blocks ending at `hash` (its ancestors first), or the first
    /// block missing from the model.
    fn window(&self, hash: &str, n: u32) -> Result<Vec<u32>, String> {
        let mut times = Vec::with_capacity(n as usize);
        let mut at = hash.to_string();
        for i in 0..n {
            let facts = self.blocks.get(&at).ok_or_else(|| at.clone())?;
            times.push(facts.time);
            if i + 1 == n {
                break;
            }
            match &facts.prev {
                Some(p) => at = p.clone(),
                None => break,
            }
        }
        times.reverse();
        Ok(times)
    }

    /// The next block to fetch so that the model knows the [`KNOWN_SPAN`] blocks ending at
    /// `hash` (fewer near genesis), or `None` when it does: `hash` itself first, then its
    /// ancestors from the newest.
    pub fn next_missing(&self, hash: &str) -> Option<String> {
        self.window(hash, KNOWN_SPAN).err()
    }

    /// Predicts the block after `block`, connected on top of `parent` (proven by the ZMQ
    /// sequence stream).
    pub fn predict(
        &self,
        block: &str,
        parent: &str,
        network: Network,
    ) -> Result<Prediction, Fallback> {
        if matches!(network, Network::Testnet | Network::Testnet4) {
            return Err(Fallback::TimeDependentTarget);
        }
        let p = self
            .blocks
            .get(parent)
            .ok_or_else(|| Fallback::UnknownParent(parent.to_string()))?;
        let block_height = p.height.checked_add(1).ok_or(Fallback::NearGenesis)?;
        let next_height = block_height.checked_add(1).ok_or(Fallback::NearGenesis)?;
        // The connected block keeps the parent's bits, and the next block the connected one's,
        // unless either is a retarget boundary.
        for h in [block_height, next_height] {
            if !gbt::bits_follow_tip(network, h) {
                return Err(Fallback::Retarget(h));
            }
        }
        // The window of the next block's median time past: the connected block and up to 10
        // ancestors (fewer near genesis), of which all but the connected block are known.
        let window_len = MTP_SPAN.min(block_height + 1);
        let known = self
            .window(parent, window_len - 1)
            .map_err(Fallback::IncompleteWindow)?;
        let bound = mtp_upper_bound(&known, window_len as usize).ok_or(Fallback::NearGenesis)?;
        Ok(Prediction {
            block_hash: block.to_string(),
            parent_hash: parent.to_string(),
            block_height,
            next_height,
            nbits: p.bits,
            min_time: bound.saturating_add(1),
        })
    }
}

#[cfg(test)]
mod tests;
