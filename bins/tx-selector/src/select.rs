//! The pure core of the tx-selector: a [`Template`] and a [`Policy`] in, a [`Selection`] out.
//! No I/O, no clock: the same input always gives the same output.
//!
//! Policies:
//! - `pass-through`: bitcoind's transactions in bitcoind's order, only trimmed to fit the
//!   template's weight and sigop limits minus the coinbase reserve.
//! - `fee-rate`: ancestor-score greedy. A transaction is judged on its *package* (itself plus
//!   its ancestors not yet in the block), so a high-fee child pays for a low-fee parent
//!   (CPFP). The best package is included with its ancestors in dependency order, then its
//!   descendants' packages are updated; packages below the minimum fee rate or that no longer
//!   fit are dropped, and a dropped transaction takes its descendants with it. Prioritized
//!   transactions ([`Rules`]) go first with their ancestors, whatever their rate.
//!
//! Both apply the [`Rules`]' exclusions first (closed under descendants, each counted under
//! the rule that caught it or its ancestor).
//!
//! Invariants of every selection (checked by the property tests): a child never comes before
//! its parent nor without it; weight + coinbase reserve and sigops + reserve stay within the
//! limits; `fees`, `coinbase_value`, `weight`, `sigops` and `witness_commitment` match the
//! chosen transactions; every template transaction is either chosen or counted in `dropped`.
//!
//! Cost: transactions without in-template relatives cost O(log n) each. Related transactions
//! are grouped into clusters whose ancestor/descendant sets are bitsets (cluster size² bits).
//! An inclusion only marks the included package's pending descendants (one bitset pass: their
//! scores can only go down, so their heap entries stay upper bounds, and a stale entry is
//! recomputed when popped); descendants of its other members are recomputed at once and pushed
//! again only when their score went *up* (after a prioritized package, which may pay less than
//! what depends on it, every descendant is recomputed before it can matter). A chain-like
//! cluster (each member spends the one before it, so its ancestors are the members before it)
//! has no bitsets and stands in the heap by one entry, its best package, found on the upper
//! hull of its prefix sums (`ChainIndex`) in O(log² n); a second hull over its prioritized
//! members keeps that with priorities.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use jdc_shared::bitcoin::Network;
use jdc_shared::chain;
use jdc_shared::config::{ConfigError, SelectorConfig};

use crate::rules::{Rules, Verdicts};
use jdc_shared::messages::{Dropped, Selection, Template};

/// Name of the policy that keeps bitcoind's choice.
pub const PASS_THROUGH: &str = "pass-through";
/// Name of the policy that fills the block by package fee rate.
pub const FEE_RATE: &str = "fee-rate";

/// Which selection algorithm to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    /// Keep bitcoind's transactions and order; only enforce the template's limits.
    PassThrough,
    /// Minimum package fee rate and maximum block weight; fill by package fee rate.
    FeeRate,
}

impl PolicyKind {
    /// The policy's name as configured and as written in `Selection::policy`.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::PassThrough => PASS_THROUGH,
            PolicyKind::FeeRate => FEE_RATE,
        }
    }
}

/// A validated selection policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// The algorithm.
    pub kind: PolicyKind,
    /// Minimum package fee rate in sat/vB (`fee-rate` only).
    pub min_fee_rate_sat_vb: f64,
    /// Maximum block weight, coinbase included (`fee-rate` only; the template's own limit
    /// applies too).
    pub max_block_weight: u64,
    /// Weight kept free for the coinbase (every policy).
    pub coinbase_reserve_weight: u64,
    /// Sigops cost kept free for the coinbase (every policy).
    pub coinbase_reserve_sigops: u64,
    /// Maximum block sigops cost, coinbase included (`fee-rate` only; the template's own
    /// limit applies too).
    pub max_block_sigops: u64,
    /// Exclusions and data-carrier filters (every policy), priorities (`fee-rate` only).
    pub rules: Rules,
}

impl Policy {
    /// Validates the `[tx_selector]` section (addresses are of `network`); errors name the
    /// offending key.
    pub fn from_config(cfg: &SelectorConfig, network: Network) -> Result<Policy, ConfigError> {
        let kind = match cfg.policy.as_str() {
            PASS_THROUGH => PolicyKind::PassThrough,
            FEE_RATE => PolicyKind::FeeRate,
            other => {
                return Err(ConfigError::new(
                    "tx_selector.policy",
                    format!("unknown policy `{other}`: use `{PASS_THROUGH}` or `{FEE_RATE}`"),
                ))
            }
        };
        if !cfg.min_fee_rate_sat_vb.is_finite() || cfg.min_fee_rate_sat_vb < 0.0 {
            return Err(ConfigError::new(
                "tx_selector.min_fee_rate_sat_vb",
                format!(
                    "must be a finite number of sat/vB, 0 or more (got {})",
                    cfg.min_fee_rate_sat_vb
                ),
            ));
        }
        if cfg.coinbase_reserve_weight >= cfg.max_block_weight {
            return Err(ConfigError::new(
                "tx_selector.coinbase_reserve_weight",
                format!(
                    "must be smaller than tx_selector.max_block_weight ({} >= {})",
                    cfg.coinbase_reserve_weight, cfg.max_block_weight
                ),
            ));
        }
        if cfg.coinbase_reserve_sigops >= cfg.max_block_sigops {
            return Err(ConfigError::new(
                "tx_selector.coinbase_reserve_sigops",
                format!(
                    "must be smaller than tx_selector.max_block_sigops ({} >= {})",
                    cfg.coinbase_reserve_sigops, cfg.max_block_sigops
                ),
            ));
        }
        Ok(Policy {
            kind,
            min_fee_rate_sat_vb: cfg.min_fee_rate_sat_vb,
            max_block_weight: cfg.max_block_weight,
            coinbase_reserve_weight: cfg.coinbase_reserve_weight,
            coinbase_reserve_sigops: cfg.coinbase_reserve_sigops,
            max_block_sigops: cfg.max_block_sigops,
            rules: Rules::from_config(cfg, network)?,
        })
    }

    /// Weight and sigops the chosen transactions may use in a block built from `template`.
    pub fn limits(&self, template: &Template) -> Limits {
        let (block_weight, block_sigops) = match self.kind {
            PolicyKind::PassThrough => (template.weight_limit, template.sigop_limit),
            PolicyKind::FeeRate => (
                template.weight_limit.min(self.max_block_weight),
                template.sigop_limit.min(self.max_block_sigops),
            ),
        };
        Limits {
            weight: block_weight.saturating_sub(self.coinbase_reserve_weight),
            sigops: block_sigops.saturating_sub(self.coinbase_reserve_sigops),
        }
    }

    /// Whether a package paying `fee` sats for `vsize` vbytes meets the minimum fee rate.
    pub fn meets_min_fee_rate(&self, fee: u64, vsize: u64) -> bool {
        self.kind == PolicyKind::PassThrough
            || fee as f64 >= self.min_fee_rate_sat_vb * vsize as f64
    }
}

/// The `[tx_selector]` keys set away from their defaults that `policy = "pass-through"`
/// ignores (they apply to `fee-rate` only); empty under `fee-rate`. The selector warns about
/// them at start-up.
pub fn ignored_by_pass_through(cfg: &SelectorConfig) -> Vec<&'static str> {
    if cfg.policy != PASS_THROUGH {
        return Vec::new();
    }
    let default = SelectorConfig::default();
    [
        (
            "tx_selector.min_fee_rate_sat_vb",
            cfg.min_fee_rate_sat_vb != default.min_fee_rate_sat_vb,
        ),
        (
            "tx_selector.max_block_weight",
            cfg.max_block_weight != default.max_block_weight,
        ),
        (
            "tx_selector.max_block_sigops",
            cfg.max_block_sigops != default.max_block_sigops,
        ),
        (
            "tx_selector.prioritize_txids",
            !cfg.prioritize_txids.is_empty(),
        ),
        (
            "tx_selector.prioritize_scripts",
            !cfg.prioritize_scripts.is_empty(),
        ),
    ]
    .into_iter()
    .filter_map(|(key, set)| set.then_some(key))
    .collect()
}

/// What the chosen transactions may use, the coinbase reserve already taken off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Weight units.
    pub weight: u64,
    /// Sigops cost.
    pub sigops: u64,
}

/// Why a transaction was left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Its package pays less than the minimum fee rate.
    BelowMinFeeRate,
    /// Its package does not fit the remaining weight or sigops.
    BlockFull,
    /// An ancestor was dropped for lack of room.
    ParentDropped,
    /// Its txid (or an ancestor's) is excluded.
    ExcludedTxid,
    /// It (or an ancestor) pays an excluded script or address.
    ExcludedScript,
    /// It (or an ancestor) spends an excluded outpoint.
    ExcludedOutpoint,
    /// It (or an ancestor) has an `OP_RETURN` output above the size cap.
    OpReturnSize,
    /// It (or an ancestor) has more `OP_RETURN` outputs than allowed.
    OpReturnCount,
    /// It (or an ancestor) carries an inscription-style envelope in a tapscript.
    Inscription,
    /// It (or an ancestor) pushes more tapscript data than allowed.
    WitnessData,
    /// Its bytes (or an ancestor's) could not be read (a rule needed them).
    Unreadable,
}

impl DropReason {
    /// Every reason, in the order they are reported.
    pub const ALL: [DropReason; 11] = [
        DropReason::BelowMinFeeRate,
        DropReason::BlockFull,
        DropReason::ParentDropped,
        DropReason::ExcludedTxid,
        DropReason::ExcludedScript,
        DropReason::ExcludedOutpoint,
        DropReason::OpReturnSize,
        DropReason::OpReturnCount,
        DropReason::Inscription,
        DropReason::WitnessData,
        DropReason::Unreadable,
    ];

    /// Machine-readable name, as in `Dropped::reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::BelowMinFeeRate => "below-min-fee-rate",
            DropReason::BlockFull => "block-full",
            DropReason::ParentDropped => "parent-dropped",
            DropReason::ExcludedTxid => "excluded-txid",
            DropReason::ExcludedScript => "excluded-script",
            DropReason::ExcludedOutpoint => "excluded-outpoint",
            DropReason::OpReturnSize => "op-return-size",
            DropReason::OpReturnCount => "op-return-count",
            DropReason::Inscription => "inscription",
            DropReason::WitnessData => "witness-data",
            DropReason::Unreadable => "unreadable",
        }
    }

    fn slot(self) -> usize {
        self as usize
    }
}

/// A template that cannot be selected from.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    /// A `depends` entry does not name an earlier transaction of the template.
    #[error("template {template_id}: transaction {position} ({txid}) depends on {depends}, which is not an earlier transaction of the template (positions are 1-based)")]
    BadDepends {
        /// Template id.
        template_id: u64,
        /// 1-based position of the offending transaction.
        position: usize,
        /// Its txid.
        txid: String,
        /// The bad `depends` value.
        depends: u32,
    },
    /// A wtxid is not a 32-byte hex hash.
    #[error("template {template_id}: transaction {position} ({txid}) has a bad wtxid: {source}")]
    BadWtxid {
        /// Template id.
        template_id: u64,
        /// 1-based position of the offending transaction.
        position: usize,
        /// Its txid.
        txid: String,
        /// Why.
        #[source]
        source: chain::ChainError,
    },
}

/// Chooses the transactions of the next block from `template` under `policy`.
///
/// The returned selection's `id` is the template's id; the process shell gives each published
/// selection a fresh unique id.
pub fn select(template: &Template, policy: &Policy) -> Result<Selection, SelectError> {
    let plan = plan(template, policy)?;
    Ok(assemble(template, policy, plan))
}

/// What to take from the template.
struct Plan {
    wtxids: Vec<[u8; 32]>,
    outcome: Outcome,
}

fn plan(template: &Template, policy: &Policy) -> Result<Plan, SelectError> {
    let graph = Graph::build(template)?;
    let wtxids = template
        .txs
        .iter()
        .enumerate()
        .map(|(i, tx)| {
            chain::hash_from_rpc_hex(&tx.wtxid).map_err(|source| SelectError::BadWtxid {
                template_id: template.id,
                position: i + 1,
                txid: tx.txid.clone(),
                source,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let limits = policy.limits(template);
    let verdicts = policy.rules.judge(template, &graph.parents);
    let outcome = match policy.kind {
        PolicyKind::PassThrough => pass_through(template, &graph, &verdicts, limits),
        PolicyKind::FeeRate => by_package_fee_rate(template, &graph, &verdicts, policy, limits),
    };
    Ok(Plan { wtxids, outcome })
}

/// vsize of a transaction: weight / 4 rounded up, at least 1 (so a rate is always defined).
pub fn vsize(weight: u64) -> u64 {
    weight.div_ceil(4).max(1)
}

// === Graph ===

/// Direct in-template parents of each transaction (0-based), validated to be earlier.
struct Graph {
    parents: Vec<Vec<usize>>,
}

impl Graph {
    fn build(template: &Template) -> Result<Graph, SelectError> {
        let parents = template
            .txs
            .iter()
            .enumerate()
            .map(|(i, tx)| {
                let mut ps = Vec::with_capacity(tx.depends.len());
                for &d in &tx.depends {
                    let p = (d as usize).wrapping_sub(1);
                    if d == 0 || p >= i {
                        return Err(SelectError::BadDepends {
                            template_id: template.id,
                            position: i + 1,
                            txid: tx.txid.clone(),
                            depends: d,
                        });
                    }
                    ps.push(p);
                }
                ps.sort_unstable();
                ps.dedup();
                Ok(ps)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Graph { parents })
    }

    fn len(&self) -> usize {
        self.parents.len()
    }
}

// === Outcome and assembly ===

/// Chosen template indexes in block order, and per-reason (count, fees) of the rest.
struct Outcome {
    chosen: Vec<usize>,
    dropped: [(u32, u64); DropReason::ALL.len()],
}

impl Outcome {
    fn new(capacity: usize) -> Outcome {
        Outcome {
            chosen: Vec::with_capacity(capacity),
            dropped: [(0, 0); DropReason::ALL.len()],
        }
    }

    fn drop_tx(&mut self, reason: DropReason, fee: u64) {
        let slot = &mut self.dropped[reason.slot()];
        slot.0 = slot.0.saturating_add(1);
        slot.1 = slot.1.saturating_add(fee);
    }
}

/// Builds the selection from the plan.
fn assemble(template: &Template, policy: &Policy, plan: Plan) -> Selection {
    let Plan { wtxids, outcome } = plan;
    let (mut fees, mut weight, mut sigops) = (0u64, 0u64, 0u64);
    let mut chosen_wtxids = Vec::with_capacity(outcome.chosen.len());
    let mut txids = Vec::with_capacity(outcome.chosen.len());
    for &i in &outcome.chosen {
        let Some(tx) = template.txs.get(i) else {
            continue;
        };
        fees = fees.saturating_add(tx.fee);
        weight = weight.saturating_add(tx.weight);
        sigops = sigops.saturating_add(tx.sigops);
        chosen_wtxids.push(wtxids[i]);
        txids.push(tx.txid.clone());
    }
    let dropped = DropReason::ALL
        .iter()
        .zip(outcome.dropped)
        .filter(|(_, (count, _))| *count > 0)
        .map(|(reason, (count, fee))| Dropped {
            reason: reason.as_str().to_string(),
            count,
            fee,
        })
        .collect();
    Selection {
        id: template.id,
        template_id: template.id,
        height: template.height,
        prev_hash: template.prev_hash.clone(),
        version: template.version,
        bits: template.bits,
        curtime: template.curtime,
        mintime: template.mintime,
        policy: policy.kind.as_str().to_string(),
        txids,
        fees,
        coinbase_value: template.subsidy.saturating_add(fees),
        weight,
        sigops,
        witness_commitment: hex::encode(chain::witness_commitment(&chosen_wtxids)),
        dropped,
        tip_detected_at_us: template.tip_detected_at_us,
    }
}

// === pass-through ===

fn pass_through(
    template: &Template,
    graph: &Graph,
    verdicts: &Verdicts,
    limits: Limits,
) -> Outcome {
    let mut out = Outcome::new(template.txs.len());
    let mut dropped = vec![false; template.txs.len()];
    let (mut weight, mut sigops) = (0u64, 0u64);
    for (i, tx) in template.txs.iter().enumerate() {
        if let Some(reason) = verdicts.excluded[i] {
            dropped[i] = true;
            out.drop_tx(reason, tx.fee);
            continue;
        }
        if graph.parents[i].iter().any(|&p| dropped[p]) {
            dropped[i] = true;
            out.drop_tx(DropReason::ParentDropped, tx.fee);
            continue;
        }
        let w = weight.saturating_add(tx.weight);
        let s = sigops.saturating_add(tx.sigops);
        if w > limits.weight || s > limits.sigops {
            dropped[i] = true;
            out.drop_tx(DropReason::BlockFull, tx.fee);
            continue;
        }
        weight = w;
        sigops = s;
        out.chosen.push(i);
    }
    out
}

// === fee-rate: clusters ===

const SINGLETON: u32 = u32::MAX;

/// Transactions connected by parent/child links, with their ancestor and descendant sets as
/// bitsets over the cluster's members (which are in template order, a valid block order), and
/// the set of members still pending.
struct Cluster {
    members: Vec<usize>,
    words: usize,
    anc: Vec<u64>,
    desc: Vec<u64>,
    pending: Vec<u64>,
    /// Pending members whose stored package may still count included ancestors (too high).
    dirty: Vec<u64>,
    /// For a chain-like cluster (each member spends the one before it, whatever else it
    /// spends, so its ancestors are exactly the members before it and its descendants those
    /// after): cumulative packages of the members in order, and the first pending member.
    /// Such a cluster's pending members are always a contiguous run (inclusions take its
    /// front, drops its back), so a package is a difference of two prefix sums.
    chain: Option<ChainIndex>,
}

/// See [`Cluster::chain`].
///
/// A chain also stands in the heap by one entry, its best package: with the prefix sums as
/// points `Q[k] = (vsize, fee)`, the package of members `head..e` has the slope from `Q[head]`
/// to `Q[e]` as its rate, so the best `e` is where a line from `Q[head]` touches the upper hull
/// of the points after it (the farthest on ties: the bigger package, as the heap prefers). A
/// segment tree keeps the upper hull of every range of points, so the best package of any
/// `head..end` costs O(log² n): inclusions move `head`, drops move `end`, nothing is rebuilt.
struct ChainIndex {
    /// `prefix[i]`: the sum of the first `i` members' own packages.
    prefix: Vec<Package>,
    /// First pending member.
    head: usize,
    /// One past the last pending member.
    end: usize,
    /// Segment tree over the points `1..=m`: node `1` is the whole range, node `i` has
    /// children `2i` and `2i + 1`; each holds its range's upper hull (point indexes, left to
    /// right).
    hulls: HullTree,
    /// The same over the prioritized members' points only (empty without priorities): while
    /// one of them is pending, the chain's best package is the best that ends on one of them,
    /// exactly as if each prioritized member stood in the heap on its own (priority first,
    /// then rate, then size).
    prio_hulls: HullTree,
    /// Number of leaves (a power of two ≥ m).
    leaves: usize,
    /// The representative for the current `head..end` (see [`ChainIndex::refresh`]).
    rep: Option<usize>,
}

/// The nodes' hulls of a [`ChainIndex`] segment tree, all in one vector (a tree over 5,000
/// points would otherwise be 16,000 small allocations).
#[derive(Default)]
struct HullTree {
    /// Every node's hull, one after the other.
    points: Vec<usize>,
    /// Where each node's hull is in `points` (start, end); empty without a tree.
    ranges: Vec<(usize, usize)>,
}

impl HullTree {
    fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
    fn node(&self, node: usize) -> &[usize] {
        let (start, end) = self.ranges[node];
        &self.points[start..end]
    }
}

impl ChainIndex {
    /// Whether, seen from `o`, point `a` is strictly steeper than point `b` (both right of `o`).
    fn steeper(&self, o: usize, a: usize, b: usize) -> bool {
        let q = &self.prefix;
        let (a_fee, a_vsize) = (q[a].fee - q[o].fee, q[a].vsize - q[o].vsize);
        let (b_fee, b_vsize) = (q[b].fee - q[o].fee, q[b].vsize - q[o].vsize);
        u128::from(a_fee) * u128::from(b_vsize) > u128::from(b_fee) * u128::from(a_vsize)
    }

    /// Builds the hulls of every node (after `prefix` is known); `prioritized[l]` says
    /// whether member `l` (point `l + 1`) is prioritized.
    fn build_hulls(&mut self, prioritized: &[bool]) {
        let m = self.prefix.len() - 1;
        self.leaves = m.next_power_of_two().max(1);
        self.hulls = self.hull_tree(|_| true);
        self.prio_hulls = if prioritized.iter().any(|&p| p) {
            self.hull_tree(|e| prioritized.get(e - 1).copied().unwrap_or(false))
        } else {
            HullTree::default()
        };
    }

    /// A segment tree of the upper hulls of the points `e` in `1..=m` that `keep`.
    fn hull_tree(&self, keep: impl Fn(usize) -> bool) -> HullTree {
        let m = self.prefix.len() - 1;
        let levels = self.leaves.trailing_zeros() as usize + 1;
        let mut points: Vec<usize> = Vec::with_capacity(m * levels);
        let mut ranges = vec![(0usize, 0usize); 2 * self.leaves];
        for e in (1..=m).filter(|&e| keep(e)) {
            ranges[self.leaves + e - 1] = (points.len(), points.len() + 1);
            points.push(e);
        }
        for node in (1..self.leaves).rev() {
            // The children's hulls are earlier in `points`; this one is built at its end.
            let start = points.len();
            let (left, right) = (ranges[2 * node], ranges[2 * node + 1]);
            for k in (left.0..left.1).chain(right.0..right.1) {
                let p = points[k];
                // Drop the last point while it is on or under the segment to `p` (collinear
                // points in between go: the far end is the one kept, as ties want).
                while points.len() >= start + 2 {
                    let (o, a) = (points[points.len() - 2], points[points.len() - 1]);
                    if self.steeper(o, a, p) {
                        break;
                    }
                    points.pop();
                }
                points.push(p);
            }
            ranges[node] = (start, points.len());
        }
        HullTree { points, ranges }
    }

    /// The best point of one node's hull seen from `o`: the steepest, the farthest on ties.
    fn best_on(&self, hull: &[usize], o: usize) -> Option<usize> {
        // Slopes from `o` rise then fall along an upper hull: find the first point steeper
        // than its right neighbour (the end of the top).
        let (mut lo, mut hi) = (0usize, hull.len().checked_sub(1)?);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.steeper(o, hull[mid], hull[mid + 1]) {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        hull.get(lo).copied()
    }

    /// The `e` whose package `head..e` is the best among the points `head + 1..=end` of the
    /// tree `hulls`.
    fn best_end(&self, hulls: &HullTree) -> Option<usize> {
        if self.head >= self.end || hulls.is_empty() {
            return None;
        }
        let o = self.head;
        let mut best: Option<usize> = None;
        // Leaves of points head + 1 ..= end (point e is leaf e - 1).
        let (mut l, mut r) = (self.leaves + o, self.leaves + self.end - 1 + 1);
        let consider = |node: usize, best: &mut Option<usize>| {
            if let Some(c) = self.best_on(hulls.node(node), o) {
                *best = match *best {
                    Some(b) if self.steeper(o, b, c) => Some(b),
                    Some(b) if !self.steeper(o, c, b) => Some(b.max(c)),
                    _ => Some(c),
                };
            }
        };
        while l < r {
            if l % 2 == 1 {
                consider(l, &mut best);
                l += 1;
            }
            if r % 2 == 1 {
                r -= 1;
                consider(r, &mut best);
            }
            l /= 2;
            r /= 2;
        }
        best
    }

    /// Recomputes the representative after `head` or `end` moved: the best package ending on
    /// a pending prioritized member while there is one, else the best package.
    fn refresh(&mut self) {
        self.rep = self
            .best_end(&self.prio_hulls)
            .or_else(|| self.best_end(&self.hulls))
            .map(|e| e - 1);
    }

    /// The member standing for the chain (the last of its best package), if any is pending.
    fn representative(&self) -> Option<usize> {
        self.rep
    }

    /// The package of members `head..=last`.
    fn package(&self, last: usize) -> Package {
        self.prefix[last + 1].minus(&self.prefix[self.head])
    }
}

impl Cluster {
    fn anc(&self, local: usize) -> &[u64] {
        &self.anc[local * self.words..(local + 1) * self.words]
    }
    fn desc(&self, local: usize) -> &[u64] {
        &self.desc[local * self.words..(local + 1) * self.words]
    }
    /// Calls `f` with the member (template index) of every pending bit of `set`, in order.
    fn for_each_pending(&self, set: &[u64], mut f: impl FnMut(usize)) {
        for (w, (&a, &p)) in set.iter().zip(&self.pending).enumerate() {
            let mut word = a & p;
            while word != 0 {
                f(self.members[w * 64 + word.trailing_zeros() as usize]);
                word &= word - 1;
            }
        }
    }
    /// Calls `f` with every pending ancestor of member `local` (itself included), in order.
    fn for_each_pending_ancestor(&self, local: usize, mut f: impl FnMut(usize)) {
        if let Some(chain) = &self.chain {
            // Chain-like: the members before it (none before the head is pending).
            for l in chain.head..=local {
                if self.pending[l / 64] & (1u64 << (l % 64)) != 0 {
                    f(self.members[l]);
                }
            }
        } else {
            self.for_each_pending(self.anc(local), f);
        }
    }
    /// Calls `f` with every pending descendant of member `local` (itself included), in order.
    fn for_each_pending_descendant(&self, local: usize, mut f: impl FnMut(usize)) {
        if let Some(chain) = &self.chain {
            // Chain-like: the members after it (none after the end is pending).
            for l in local..chain.end.max(local + 1) {
                if self.pending[l / 64] & (1u64 << (l % 64)) != 0 {
                    f(self.members[l]);
                }
            }
        } else {
            self.for_each_pending(self.desc(local), f);
        }
    }
    /// [`Cluster::for_each_pending`] over `set` minus `except`.
    fn for_each_pending_except(&self, set: &[u64], except: &[u64], mut f: impl FnMut(usize)) {
        for (w, ((&a, &p), &x)) in set.iter().zip(&self.pending).zip(except).enumerate() {
            let mut word = a & p & !x;
            while word != 0 {
                f(self.members[w * 64 + word.trailing_zeros() as usize]);
                word &= word - 1;
            }
        }
    }
    fn settle(&mut self, local: usize) {
        self.pending[local / 64] &= !(1u64 << (local % 64));
        if let Some(chain) = &mut self.chain {
            while chain.head < self.members.len()
                && self.pending[chain.head / 64] & (1u64 << (chain.head % 64)) == 0
            {
                chain.head += 1;
            }
        }
    }
    /// Marks the pending members of `set` as holding a too-high package.
    fn mark_dirty(&mut self, local: usize) {
        let words = self.words;
        for ((d, &x), &p) in self
            .dirty
            .iter_mut()
            .zip(&self.desc[local * words..(local + 1) * words])
            .zip(&self.pending)
        {
            *d |= x & p;
        }
    }
    /// Clears and returns whether member `local` was dirty.
    fn take_dirty(&mut self, local: usize) -> bool {
        let bit = 1u64 << (local % 64);
        let was = self.dirty[local / 64] & bit != 0;
        self.dirty[local / 64] &= !bit;
        was
    }
    /// The exact package of member `local`: itself and its pending ancestors.
    /// (Chains never need it: they stand in the heap by their representative.)
    fn package_of(&self, local: usize, own: &[Package]) -> Package {
        let mut sum = Package::default();
        self.for_each_pending(self.anc(local), |a| sum.add(&own[a]));
        sum
    }
}

/// Calls `f` with every bit set in `set` but not in `except`, lowest first.
fn for_each_bit_except(set: &[u64], except: &[u64], mut f: impl FnMut(usize)) {
    for (w, (&word, &x)) in set.iter().zip(except).enumerate() {
        let mut word = word & !x;
        while word != 0 {
            f(w * 64 + word.trailing_zeros() as usize);
            word &= word - 1;
        }
    }
}

struct Clusters {
    /// Cluster of each transaction, or [`SINGLETON`].
    of: Vec<u32>,
    /// Position of each transaction inside its cluster.
    local: Vec<u32>,
    clusters: Vec<Cluster>,
}

impl Clusters {
    /// The cluster of transaction `i` and its position in it, unless it is a loner.
    fn get(&self, i: usize) -> Option<(usize, usize)> {
        let c = self.of[i];
        (c != SINGLETON).then(|| (c as usize, self.local[i] as usize))
    }
}

fn find(root: &mut [usize], mut x: usize) -> usize {
    while root[x] != x {
        root[x] = root[root[x]];
        x = root[x];
    }
    x
}

impl Clusters {
    fn build(graph: &Graph) -> Clusters {
        let n = graph.len();
        let mut root: Vec<usize> = (0..n).collect();
        let mut linked = vec![false; n];
        for (i, ps) in graph.parents.iter().enumerate() {
            for &p in ps {
                linked[i] = true;
                linked[p] = true;
                let (a, b) = (find(&mut root, i), find(&mut root, p));
                if a != b {
                    // Keep the smaller index as root so cluster numbering follows template order.
                    root[a.max(b)] = a.min(b);
                }
            }
        }
        let mut of = vec![SINGLETON; n];
        let mut local = vec![0u32; n];
        let mut members: Vec<Vec<usize>> = Vec::new();
        for i in 0..n {
            if !linked[i] {
                continue;
            }
            let r = find(&mut root, i);
            if of[r] == SINGLETON {
                of[r] = members.len() as u32;
                members.push(Vec::new());
            }
            let c = of[r] as usize;
            of[i] = c as u32;
            local[i] = members[c].len() as u32;
            members[c].push(i);
        }
        let clusters = members
            .into_iter()
            .map(|members| Cluster::build(members, graph, &local))
            .collect();
        Clusters {
            of,
            local,
            clusters,
        }
    }
}

impl Cluster {
    fn build(members: Vec<usize>, graph: &Graph, local: &[u32]) -> Cluster {
        let m = members.len();
        let words = m.div_ceil(64);
        let mut pending = vec![0u64; words];
        for l in 0..m {
            pending[l / 64] |= 1u64 << (l % 64);
        }
        // Chain-like: every member spends the one before it (and maybe earlier ones too), so
        // each member's ancestors are exactly the members before it, its descendants those
        // after it: no bitsets needed (a chain of 5,000 would need 6 MB of them).
        let is_chain = members
            .iter()
            .enumerate()
            .all(|(l, &i)| l == 0 || graph.parents[i].iter().any(|&p| local[p] as usize == l - 1));
        if is_chain {
            return Cluster {
                members,
                words,
                anc: Vec::new(),
                desc: Vec::new(),
                dirty: vec![0u64; words],
                pending,
                // Filled in by `index_chain` once the packages are known.
                chain: Some(ChainIndex {
                    prefix: Vec::new(),
                    head: 0,
                    end: m,
                    hulls: HullTree::default(),
                    prio_hulls: HullTree::default(),
                    leaves: 1,
                    rep: None,
                }),
            };
        }
        let mut anc = vec![0u64; m * words];
        let mut desc = vec![0u64; m * words];
        let mut children: Vec<Vec<usize>> = vec![Vec::new(); m];
        // Members are in template order and parents are earlier: one forward pass.
        for (l, &i) in members.iter().enumerate() {
            anc[l * words + l / 64] |= 1 << (l % 64);
            for &p in &graph.parents[i] {
                let pl = local[p] as usize;
                children[pl].push(l);
                let (before, mine) = anc.split_at_mut(l * words);
                for (dst, src) in mine[..words]
                    .iter_mut()
                    .zip(&before[pl * words..(pl + 1) * words])
                {
                    *dst |= *src;
                }
            }
        }
        for l in (0..m).rev() {
            desc[l * words + l / 64] |= 1 << (l % 64);
            for &c in &children[l] {
                let (mine, after) = desc.split_at_mut(c * words);
                for (dst, src) in mine[l * words..(l + 1) * words]
                    .iter_mut()
                    .zip(&after[..words])
                {
                    *dst |= *src;
                }
            }
        }
        Cluster {
            members,
            words,
            anc,
            desc,
            dirty: vec![0u64; words],
            pending,
            chain: None,
        }
    }

    /// Computes the prefix sums of a chain cluster from the members' own packages, and its
    /// hulls (of all members, and of the prioritized ones).
    fn index_chain(&mut self, own: &[Package], prioritized: &[bool]) {
        let pending = &self.pending;
        let is_pending = |l: usize| pending[l / 64] & (1u64 << (l % 64)) != 0;
        if let Some(chain) = &mut self.chain {
            chain.end = (chain.head..self.members.len())
                .find(|&l| !is_pending(l))
                .unwrap_or(self.members.len());
            let mut sum = Package::default();
            chain.prefix = std::iter::once(sum)
                .chain(self.members.iter().map(|&i| {
                    sum.add(&own[i]);
                    sum
                }))
                .collect();
            let prioritized: Vec<bool> = self.members.iter().map(|&i| prioritized[i]).collect();
            chain.build_hulls(&prioritized);
            chain.refresh();
        }
    }
}

// === fee-rate: ancestor-score greedy ===

/// Fee, weight, vsize and sigops of a transaction's package (itself + pending ancestors).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Package {
    fee: u64,
    weight: u64,
    vsize: u64,
    sigops: u64,
}

impl Package {
    fn add(&mut self, o: &Package) {
        self.fee = self.fee.saturating_add(o.fee);
        self.weight = self.weight.saturating_add(o.weight);
        self.vsize = self.vsize.saturating_add(o.vsize);
        self.sigops = self.sigops.saturating_add(o.sigops);
    }
    /// `self` without `o` (a sub-package of it).
    fn minus(&self, o: &Package) -> Package {
        Package {
            fee: self.fee.saturating_sub(o.fee),
            weight: self.weight.saturating_sub(o.weight),
            vsize: self.vsize.saturating_sub(o.vsize),
            sigops: self.sigops.saturating_sub(o.sigops),
        }
    }
    /// Compares fee rates exactly (cross-multiplied).
    fn cmp_rate(&self, o: &Package) -> Ordering {
        (u128::from(self.fee) * u128::from(o.vsize.max(1)))
            .cmp(&(u128::from(o.fee) * u128::from(self.vsize.max(1))))
    }
}

/// A heap entry: a transaction and the package score it had when pushed. Prioritized
/// transactions are on top, then the best rate; among equal rates the bigger package (so an
/// equal-rate chain goes in one step, not one transaction per step), then the earlier
/// template position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Candidate {
    priority: bool,
    package: Package,
    index: usize,
}

impl Ord for Candidate {
    fn cmp(&self, o: &Self) -> Ordering {
        self.priority
            .cmp(&o.priority)
            .then_with(|| self.package.cmp_rate(&o.package))
            .then_with(|| self.package.vsize.cmp(&o.package.vsize))
            .then_with(|| o.index.cmp(&self.index))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Pending,
    Included,
    Dropped,
}

fn by_package_fee_rate(
    template: &Template,
    graph: &Graph,
    verdicts: &Verdicts,
    policy: &Policy,
    limits: Limits,
) -> Outcome {
    let n = template.txs.len();
    let own: Vec<Package> = template
        .txs
        .iter()
        .map(|tx| Package {
            fee: tx.fee,
            weight: tx.weight,
            vsize: vsize(tx.weight),
            sigops: tx.sigops,
        })
        .collect();
    let mut clusters = Clusters::build(graph);
    // Each transaction's package, kept up to date as ancestors get included.
    let mut package: Vec<Package> = own.clone();
    for (i, ps) in graph.parents.iter().enumerate() {
        match (ps.as_slice(), clusters.get(i)) {
            // One parent: the ancestors are the parent's ancestors plus the parent.
            (&[p], _) => {
                let parent = package[p];
                package[i].add(&parent);
            }
            // Several: the ancestors are those of the parent with the most, plus what only
            // the others bring (one bitset pass, then only the bits the others add: in a deep
            // DAG, where the parents share most ancestors, few).
            (&[_, _, ..], Some((c, l))) if clusters.clusters[c].chain.is_some() => {
                // Chain-like: the ancestors are the member before it and its ancestors.
                let before = package[clusters.clusters[c].members[l - 1]];
                package[i].add(&before);
            }
            (&[_, _, ..], Some((c, l))) => {
                let cluster = &clusters.clusters[c];
                let base = ps
                    .iter()
                    .copied()
                    .max_by_key(|&p| package[p].vsize)
                    .unwrap_or(i);
                let lb = clusters.local[base] as usize;
                let mut sum = package[base];
                for_each_bit_except(cluster.anc(l), cluster.anc(lb), |a| {
                    sum.add(&own[cluster.members[a]])
                });
                package[i] = sum;
            }
            _ => {}
        }
    }

    let mut status = vec![Status::Pending; n];
    let mut pending = n;
    let mut out = Outcome::new(n);
    // The rules' exclusions (closed under descendants, so no package left includes them).
    for (i, reason) in verdicts.excluded.iter().enumerate() {
        if let Some(reason) = *reason {
            status[i] = Status::Dropped;
            out.drop_tx(reason, own[i].fee);
            pending -= 1;
            if let Some((c, l)) = clusters.get(i) {
                clusters.clusters[c].settle(l);
            }
        }
    }
    let priority = &verdicts.priority;
    for cluster in &mut clusters.clusters {
        cluster.index_chain(&own, priority);
    }
    let candidate = |index: usize, package: Package| Candidate {
        priority: priority[index],
        package,
        index,
    };
    // Chains enter the heap by their representative only.
    for cluster in &clusters.clusters {
        if let Some(chain) = &cluster.chain {
            if let Some(r) = chain.representative() {
                package[cluster.members[r]] = chain.package(r);
            }
        }
    }
    let stands_in_heap = |i: usize, clusters: &Clusters| match clusters.get(i) {
        Some((c, l)) => clusters.clusters[c]
            .chain
            .as_ref()
            .is_none_or(|chain| chain.representative() == Some(l)),
        None => true,
    };
    let mut heap: BinaryHeap<Candidate> = (0..n)
        .filter(|&i| status[i] == Status::Pending && stands_in_heap(i, &clusters))
        .map(|index| candidate(index, package[index]))
        .collect();
    let (mut weight, mut sigops) = (0u64, 0u64);
    let mut batch: Vec<usize> = Vec::new();
    // Descendants of other batch members, whose package changed in this round.
    let mut touched: Vec<usize> = Vec::new();
    let mut touched_in: Vec<u32> = vec![0; n];
    let mut round: u32 = 0;
    // Members that are not prioritized whose score may have gone *up* when a prioritized
    // package went in: they cannot be popped while a prioritized entry is left, so they are
    // recomputed once, before the first entry that is not prioritized is considered.
    let mut raised: Vec<usize> = Vec::new();
    let mut raised_in: Vec<bool> = vec![false; n];

    while let Some(top) = heap.pop() {
        let t = top.index;
        if status[t] != Status::Pending {
            continue;
        }
        if !top.priority && !raised.is_empty() {
            for d in raised.drain(..) {
                raised_in[d] = false;
                if status[d] != Status::Pending {
                    continue;
                }
                if let Some((c, ld)) = clusters.get(d) {
                    let cluster = &mut clusters.clusters[c];
                    cluster.take_dirty(ld);
                    package[d] = cluster.package_of(ld, &own);
                    heap.push(candidate(d, package[d]));
                }
            }
            heap.push(top);
            continue;
        }
        if let Some((c, l)) = clusters.get(t) {
            let cluster = &mut clusters.clusters[c];
            if let Some(chain) = &cluster.chain {
                // Only the chain's current representative, with its current package, counts.
                if chain.representative() != Some(l) || top.package != package[t] {
                    continue;
                }
            } else if cluster.take_dirty(l) {
                package[t] = cluster.package_of(l, &own);
            }
        }
        if top.package != package[t] {
            // A stale, too-high score: put it back with the true one.
            heap.push(candidate(t, package[t]));
            continue;
        }
        let pkg = package[t];
        if !top.priority && !policy.meets_min_fee_rate(pkg.fee, pkg.vsize) {
            // The best package left is below the minimum: so is every other one.
            for (i, s) in status.iter_mut().enumerate() {
                if *s == Status::Pending {
                    *s = Status::Dropped;
                    out.drop_tx(DropReason::BelowMinFeeRate, own[i].fee);
                }
            }
            break;
        }
        let w = weight.saturating_add(pkg.weight);
        let s = sigops.saturating_add(pkg.sigops);
        let cluster = clusters.get(t);
        batch.clear();
        if w > limits.weight || s > limits.sigops {
            // t does not fit: drop it and take its pending descendants with it.
            match cluster {
                None => batch.push(t),
                Some((c, l)) => {
                    let cluster = &clusters.clusters[c];
                    cluster.for_each_pending_descendant(l, |d| batch.push(d));
                }
            }
            for &d in &batch {
                status[d] = Status::Dropped;
                let reason = if d == t {
                    DropReason::BlockFull
                } else {
                    DropReason::ParentDropped
                };
                out.drop_tx(reason, own[d].fee);
            }
        } else {
            weight = w;
            sigops = s;
            // The package: t's pending ancestors, in template (= dependency) order.
            match cluster {
                None => batch.push(t),
                Some((c, l)) => {
                    let cluster = &clusters.clusters[c];
                    cluster.for_each_pending_ancestor(l, |a| batch.push(a));
                }
            }
            for &a in &batch {
                status[a] = Status::Included;
                out.chosen.push(a);
            }
        }
        pending -= batch.len();
        if let Some((c, _)) = cluster {
            let cluster = &mut clusters.clusters[c];
            for &a in &batch {
                cluster.settle(clusters.local[a] as usize);
            }
            if let Some(chain) = &mut cluster.chain {
                // An inclusion moved the head; a drop cuts the end.
                if status[t] == Status::Dropped {
                    chain.end = chain.end.min(clusters.local[t] as usize);
                }
                chain.refresh();
                if let Some(r) = chain.representative() {
                    let member = cluster.members[r];
                    package[member] = chain.package(r);
                    heap.push(candidate(member, package[member]));
                }
            } else if status[t] == Status::Included {
                let lt = clusters.local[t] as usize;
                round = round.wrapping_add(1);
                touched.clear();
                let mut touch = |d: usize| {
                    if touched_in[d] != round {
                        touched_in[d] = round;
                        touched.push(d);
                    }
                };
                if top.priority {
                    // A prioritized package went in whatever its rate: what depends on it
                    // may now score higher than before (a low-rate ancestor left its
                    // package). Prioritized descendants are recomputed now; the others are
                    // recomputed before the first entry that is not prioritized is popped.
                    for &a in &batch {
                        let la = clusters.local[a] as usize;
                        cluster.for_each_pending(cluster.desc(la), |d| {
                            if priority[d] {
                                touch(d);
                            } else if !raised_in[d] {
                                raised_in[d] = true;
                                raised.push(d);
                            }
                        });
                    }
                } else {
                    // The pending descendants of t had the whole batch among their
                    // ancestors: their packages lose it, and their scores cannot go up (the
                    // batch was the best package), so their heap entries stay upper bounds.
                    // They are marked and recomputed only when popped: a long chain costs one
                    // bitset pass per step, not one update per descendant.
                    cluster.mark_dirty(lt);
                    // Descendants of other batch members only lose those members: their
                    // scores can go up (a low-rate parent left them), so they are recomputed
                    // now and pushed again when they did.
                    for &a in batch.iter().filter(|&&a| a != t) {
                        let la = clusters.local[a] as usize;
                        cluster.for_each_pending_except(
                            cluster.desc(la),
                            cluster.desc(lt),
                            &mut touch,
                        );
                    }
                }
                for &d in &touched {
                    let ld = clusters.local[d] as usize;
                    cluster.take_dirty(ld);
                    let before = package[d];
                    package[d] = cluster.package_of(ld, &own);
                    // The stored package never exceeds the best heap entry of d: a higher
                    // score needs a new entry.
                    if package[d].cmp_rate(&before) == Ordering::Greater {
                        heap.push(candidate(d, package[d]));
                    }
                }
            }
        }
        // Keep the heap from filling with dead entries.
        if heap.len() > 4 * pending + 64 {
            heap = (0..n)
                .filter(|&i| status[i] == Status::Pending && stands_in_heap(i, &clusters))
                .map(|index| candidate(index, package[index]))
                .collect();
        }
    }
    out
}

#[cfg(test)]
mod tests;
