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
mod tests {
    use super::*;

    const BITS: u32 = 0x1703_1234;

    fn hash(n: u32) -> String {
        format!("{n:064x}")
    }

    /// Facts of a chain of blocks at heights `from..from + times.len()`, the block at height
    /// `h` hashed `hash(h + 1_000_000 * branch)`.
    fn chain(from: u32, times: &[u32], branch: u32) -> Vec<BlockFacts> {
        times
            .iter()
            .enumerate()
            .map(|(i, &t)| {
                let height = from + i as u32;
                BlockFacts {
                    hash: hash(height + 1_000_000 * branch),
                    height,
                    bits: BITS,
                    time: t,
                    prev: (height > 0).then(|| hash(height - 1 + 1_000_000 * branch)),
                }
            })
            .collect()
    }

    fn model_of(blocks: &[BlockFacts]) -> ChainModel {
        let mut m = ChainModel::default();
        for b in blocks {
            m.learn(b.clone());
        }
        m
    }

    #[test]
    fn header_facts_are_checked() {
        let h: HeaderInfo =
            serde_json::from_str(include_str!("../tests/fixtures/header-regtest.json")).unwrap();
        let f = BlockFacts::from_header(&h).unwrap();
        assert_eq!(
            (f.height, f.bits, f.time),
            (101, 0x207f_ffff, 1_795_565_596)
        );
        assert_eq!(f.prev, h.previousblockhash);
        let mut bad = h.clone();
        bad.previousblockhash = None;
        let e = BlockFacts::from_header(&bad).unwrap_err().to_string();
        assert!(e.contains("previousblockhash"), "{e}");
        bad.height = 0;
        assert!(
            BlockFacts::from_header(&bad).is_ok(),
            "genesis has no parent"
        );
        let mut bad = h;
        bad.bits = "zz".into();
        assert!(BlockFacts::from_header(&bad).is_err());
    }

    #[test]
    fn heights_follow_a_sequence_of_connected_blocks() {
        // 12 known blocks at heights 500..512, then blocks connected one by one; each is
        // learnt (as the tip task does after publishing) before the next arrives.
        let times: Vec<u32> = (0..40).map(|i| 1_700_000_000 + 600 * i).collect();
        let all = chain(500, &times, 0);
        let mut m = model_of(&all[..12]);
        for i in 12..all.len() {
            let (block, parent) = (&all[i], &all[i - 1]);
            let p = m
                .predict(&block.hash, &parent.hash, Network::Bitcoin)
                .unwrap();
            assert_eq!(p.block_height, block.height);
            assert_eq!(
                p.next_height,
                block.height + 1,
                "height of the block to mine"
            );
            assert_eq!(p.nbits, BITS);
            // increasing times: the exact MTP of the window ending at `block` is its 6th
            // element, 5 blocks back, and a new block later than all others makes the bound
            // exact.
            let exact = median_time_past(&times[i - 10..=i]);
            assert_eq!(exact, times[i - 5]);
            assert_eq!(p.min_time, exact + 1);
            p.check(block, exact).unwrap();
            let tip = p.tip(Network::Bitcoin, 5, 0x2000_0000, 77);
            assert_eq!(tip.height, block.height + 1);
            assert_eq!(tip.prev_hash, block.hash);
            assert_eq!((tip.nbits, tip.min_time), (BITS, p.min_time));
            assert_eq!(tip.time, p.min_time, "clock behind: min_time wins");
            assert_eq!(
                tip.subsidy,
                chain::subsidy(block.height + 1, Network::Bitcoin)
            );
            assert_eq!((tip.detected_at_us, tip.detected_by.as_str()), (77, "zmq"));
            assert_eq!(p.tip(Network::Bitcoin, u32::MAX, 1, 0).time, u32::MAX);
            m.learn(block.clone());
        }
    }

    #[test]
    fn learning_only_the_missing_blocks() {
        let times: Vec<u32> = (0..30).map(|i| 1000 + i).collect();
        let all = chain(100, &times, 0);
        let mut m = ChainModel::default();
        let tip = &all[29].hash;
        // Backfill order: the tip, then its ancestors from the newest, 10 blocks in all.
        let mut fetched = Vec::new();
        while let Some(h) = m.next_missing(tip) {
            let b = all.iter().find(|b| b.hash == h).unwrap();
            fetched.push(b.height);
            m.learn(b.clone());
        }
        assert_eq!(fetched, (120..=129).rev().collect::<Vec<_>>());
        // One more block: only it is missing.
        assert_eq!(m.next_missing(&hash(130)), Some(hash(130)));
        // Near genesis the window stops at the genesis block.
        let g = chain(0, &[1, 2, 3], 0);
        let mut m = ChainModel::default();
        while let Some(h) = m.next_missing(&g[2].hash) {
            m.learn(g.iter().find(|b| b.hash == h).unwrap().clone());
        }
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn falls_back_when_the_model_cannot_prove_the_values() {
        let times: Vec<u32> = (0..12).map(|i| 1000 + i).collect();
        let all = chain(1000, &times, 0);
        let m = model_of(&all);
        let (last, next) = (&all[11].hash, hash(1012));
        assert!(m.predict(&next, last, Network::Bitcoin).is_ok());
        // unknown parent
        assert_eq!(
            m.predict(&next, &hash(7), Network::Bitcoin),
            Err(Fallback::UnknownParent(hash(7)))
        );
        // incomplete window: 9 blocks known ending at the parent
        let m9 = model_of(&all[3..]);
        assert_eq!(
            m9.predict(&next, last, Network::Bitcoin),
            Err(Fallback::IncompleteWindow(hash(1002)))
        );
        // testnets: always
        for n in [Network::Testnet, Network::Testnet4] {
            assert_eq!(
                m.predict(&next, last, n),
                Err(Fallback::TimeDependentTarget)
            );
        }
        // retarget boundaries: the connected block at 2016·k, or the next one
        for (from, boundary) in [(2004, 2016), (2003, 2016)] {
            let c = chain(from, &times, 0);
            let m = model_of(&c);
            let p = &c[11];
            for n in [Network::Bitcoin, Network::Signet] {
                assert_eq!(
                    m.predict(&hash(p.height + 1), &p.hash, n),
                    Err(Fallback::Retarget(boundary))
                );
            }
            // regtest never retargets
            assert!(m
                .predict(&hash(p.height + 1), &p.hash, Network::Regtest)
                .is_ok());
        }
        // just after a boundary: fine again
        let c = chain(2005, &times, 0);
        assert!(model_of(&c)
            .predict(&hash(2017), &c[11].hash, Network::Bitcoin)
            .is_ok());
    }

    #[test]
    fn near_genesis_the_window_is_shorter() {
        // Block 1 on genesis: window of 2 (genesis and block 1), the unknown decides.
        let g = chain(0, &[100, 200, 300, 400], 0);
        let m = model_of(&g);
        assert_eq!(
            m.predict(&hash(1), &g[0].hash, Network::Regtest),
            Err(Fallback::NearGenesis)
        );
        // Block 3 on block 2: window of 4 blocks (0..=3), median index 2, known 100,200,300.
        let p = m.predict(&hash(3), &g[2].hash, Network::Regtest).unwrap();
        assert_eq!(p.min_time, 301);
        for t3 in [0, 150, 250, 1000] {
            let exact = median_time_past(&[100, 200, 300, t3]);
            assert!(p.min_time > exact, "t3={t3}");
        }
        assert_eq!(p.next_height, 4);
    }

    #[test]
    fn a_disproved_prediction_names_the_field() {
        let times: Vec<u32> = (0..12).map(|i| 1000 + 10 * i).collect();
        let all = chain(50, &times, 0);
        let m = model_of(&all[..11]);
        let p = m
            .predict(&all[11].hash, &all[10].hash, Network::Regtest)
            .unwrap();
        let exact = median_time_past(&times[1..]);
        assert!(p.check(&all[11], exact).is_ok());
        assert!(
            p.check(&all[11], exact - 50).is_ok(),
            "higher min_time is valid"
        );
        assert_eq!(p.check(&all[11], p.min_time).unwrap_err().field, "min_time");
        let mut b = all[11].clone();
        b.height += 1;
        assert_eq!(p.check(&b, exact).unwrap_err().field, "height");
        let mut b = all[11].clone();
        b.bits = 1;
        let e = p.check(&b, exact).unwrap_err();
        assert_eq!(e.field, "nbits");
        assert!(e.to_string().contains("00000001"), "{e}");
        let mut b = all[11].clone();
        b.prev = Some(hash(9));
        assert_eq!(p.check(&b, exact).unwrap_err().field, "previousblockhash");
        let mut b = all[11].clone();
        b.hash = hash(9);
        assert_eq!(p.check(&b, exact).unwrap_err().field, "hash");
    }

    #[test]
    fn both_branches_of_a_reorg_fit_and_old_blocks_are_evicted() {
        let times: Vec<u32> = (0..20).map(|i| 1000 + i).collect();
        let main = chain(100, &times, 0);
        let mut side = chain(110, &times[10..], 1);
        side[0].prev = Some(main[9].hash.clone());
        let mut m = model_of(&main);
        for b in &side {
            m.learn(b.clone());
        }
        assert!(m
            .predict(&hash(120), &main[19].hash, Network::Regtest)
            .is_ok());
        assert!(m
            .predict(&hash(1_000_120), &side[9].hash, Network::Regtest)
            .is_ok());
        let mut small = ChainModel::with_capacity(MTP_SPAN as usize);
        for b in &main {
            small.learn(b.clone());
        }
        assert_eq!(small.len(), MTP_SPAN as usize);
        assert!(small.get(&main[8].hash).is_none());
        assert!(small.get(&main[9].hash).is_some());
        small.learn(main[19].clone());
        assert_eq!(small.len(), MTP_SPAN as usize, "re-learning is a no-op");
    }

    /// A small deterministic pseudo-random generator (xorshift64*), for property tests
    /// without a dependency.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u32) -> u32 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32 % n
        }
    }

    /// The property, on the bound alone: for 10 known times and any time of the new block,
    /// the bound + 1 is above the exact MTP, and the bound is reached when the new block is
    /// the newest of the window (so no smaller `min_time` is valid whatever its time).
    fn check_bound(known: &[u32], block_time: u32) -> u32 {
        let bound = mtp_upper_bound(known, 11).unwrap();
        let mut times = known.to_vec();
        times.push(block_time);
        let exact = median_time_past(&times);
        assert!(
            bound >= exact,
            "known {known:?}, block {block_time}: bound {bound} below the MTP {exact}"
        );
        times.pop();
        times.push(u32::MAX);
        assert_eq!(bound, median_time_past(&times), "tight for {known:?}");
        exact
    }

    #[test]
    fn min_time_bound_holds_for_every_small_window() {
        // Every window of 10 times in {0, 1, 2} (59,049), with the new block's time below,
        // among and above them.
        let base = 1_600_000_000;
        let mut known = [0u32; 10];
        for code in 0..3u32.pow(10) {
            let mut c = code;
            for k in known.iter_mut() {
                *k = base + c % 3;
                c /= 3;
            }
            for block_time in [base - 1, base, base + 1, base + 2, base + 3] {
                check_bound(&known, block_time);
            }
        }
    }

    #[test]
    fn min_time_bound_holds_for_random_windows() {
        // Through the model: predict, publish, check against the real MTP.
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..3_000 {
            // realistic spreads (seconds to a day) and out-of-order times
            let spread = [10, 600, 7_200, 100_000][rng.below(4) as usize];
            let base = 1_600_000_000 + rng.below(100_000_000);
            let mut times: Vec<u32> = (0..10).map(|_| base + rng.below(spread)).collect();
            let block_time = base - spread / 2 + rng.below(2 * spread);
            let exact = check_bound(&times, block_time);
            times.push(block_time);
            let all = chain(800_000, &times, 0);
            let p = model_of(&all[..10])
                .predict(&all[10].hash, &all[9].hash, Network::Bitcoin)
                .unwrap();
            assert!(p.min_time > exact, "{times:?}");
            assert_eq!(p.min_time, mtp_upper_bound(&times[..10], 11).unwrap() + 1);
            p.check(&all[10], exact).unwrap();
            let mut sorted = times[..10].to_vec();
            sorted.sort_unstable();
            assert_eq!(
                p.min_time,
                sorted[5] + 1,
                "the 6th smallest of the 10 known + 1"
            );
            assert!(exact >= sorted[4] && exact <= sorted[5]);
        }
    }

    #[test]
    fn short_windows_near_genesis_are_bounded() {
        let mut rng = Rng(7);
        for _ in 0..20_000 {
            let n = 2 + rng.below(8) as usize; // 2..=9 known, windows of 3..=10
            let known: Vec<u32> = (0..n).map(|_| rng.below(50)).collect();
            let block_time = rng.below(50);
            let bound = mtp_upper_bound(&known, n + 1).unwrap();
            let mut all = known.clone();
            all.push(block_time);
            assert!(bound >= median_time_past(&all), "{known:?} + {block_time}");
        }
    }

    #[test]
    fn bound_needs_a_consistent_window() {
        assert_eq!(mtp_upper_bound(&[1], 2), None);
        assert_eq!(mtp_upper_bound(&[1, 2], 2), None);
        assert_eq!(mtp_upper_bound(&[], 0), None);
        assert_eq!(median_time_past(&[]), 0);
        assert_eq!(median_time_past(&[3, 1, 2]), 2);
        assert_eq!(median_time_past(&[4, 1, 3, 2]), 3);
    }
}
