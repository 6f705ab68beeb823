//! Payloads carried on the bus, one type per topic. Every struct is encoded with named fields
//! (MessagePack maps), so consumers in any language read them by name and ignore fields they do
//! not know. Hashes are hex strings in the byte order bitcoind's RPC shows them (reversed from
//! the internal order); raw transactions are MessagePack `bin`.
//!
//! `docs/bus-protocol.md` documents every field with an example.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A new chain tip, published by the template-watcher the moment it learns of it, before any
/// `getblocktemplate`. It carries enough to build an empty-block job for the next block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tip {
    /// Height of the block to be mined next (tip height + 1).
    pub height: u32,
    /// Hash of the new tip, i.e. the `prev_hash` of the next block (RPC hex order).
    pub prev_hash: String,
    /// Compact difficulty target (`nBits`) of the next block.
    pub nbits: u32,
    /// Suggested header time of the next block (unix seconds, at least `min_time`).
    pub time: u32,
    /// Smallest valid header time of the next block (median time past + 1).
    pub min_time: u32,
    /// Block version to mine.
    pub version: u32,
    /// Block subsidy of the next block in satoshis (the coinbase value of an empty block).
    pub subsidy: u64,
    /// When the watcher learnt of the tip (unix microseconds): the moment the ZMQ notification
    /// (or the poll backstop) arrived. Latency is measured from here.
    pub detected_at_us: u64,
    /// What revealed the tip: `zmq` or `poll`.
    pub detected_by: String,
}

/// One transaction of a template or a selection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateTx {
    /// The serialized transaction (with witness).
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    /// Transaction id (RPC hex order).
    pub txid: String,
    /// Witness transaction id (RPC hex order).
    pub wtxid: String,
    /// Fee in satoshis.
    pub fee: u64,
    /// Weight in weight units.
    pub weight: u64,
    /// Signature operations cost, as `getblocktemplate` counts it.
    pub sigops: u64,
    /// 1-based positions, in this same list, of transactions this one spends from
    /// (`getblocktemplate`'s `depends`).
    #[serde(default)]
    pub depends: Vec<u32>,
}

/// A block template from `getblocktemplate`, published on every tip and (debounced) on mempool
/// changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Template {
    /// Unique id of this template (microsecond clock of its creation, so it stays unique across
    /// restarts of the watcher).
    pub id: u64,
    /// Height of the block this template builds.
    pub height: u32,
    /// Previous block hash (RPC hex order).
    pub prev_hash: String,
    /// Block version.
    pub version: u32,
    /// Compact target (`nBits`).
    pub bits: u32,
    /// Full network target, 64 hex digits, big-endian as `getblocktemplate` shows it.
    pub target: String,
    /// Current time suggested by bitcoind.
    pub curtime: u32,
    /// Smallest valid header time.
    pub mintime: u32,
    /// Subsidy + all fees of `txs`, in satoshis.
    pub coinbase_value: u64,
    /// Subsidy alone (coinbase value of an empty block), in satoshis.
    pub subsidy: u64,
    /// Block weight limit.
    pub weight_limit: u64,
    /// Block sigops cost limit.
    pub sigop_limit: u64,
    /// Every transaction of the template, in bitcoind's order.
    pub txs: Vec<TemplateTx>,
    /// `detected_at_us` of the tip this template was built for (0 for mempool refreshes).
    pub tip_detected_at_us: u64,
}

/// What monitors need of a template, published by the watcher right after each `Template`
/// (so they need not read megabytes of transactions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateSummary {
    /// The template's id.
    pub id: u64,
    /// Height of the block.
    pub height: u32,
    /// Previous block hash (RPC hex order).
    pub prev_hash: String,
    /// Number of transactions (coinbase excluded).
    pub tx_count: u32,
    /// Sum of their fees, satoshis.
    pub fees: u64,
    /// Sum of their weights.
    pub weight: u64,
    /// Subsidy + fees, satoshis.
    pub coinbase_value: u64,
    /// How long `getblocktemplate` and its parsing took, microseconds.
    pub gbt_us: u64,
}

/// Why and at what cost a transaction was left out of a selection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dropped {
    /// Machine-readable reason, e.g. `below-min-fee-rate`, `block-full`, `parent-dropped`.
    pub reason: String,
    /// Number of transactions dropped for this reason.
    pub count: u32,
    /// Their fees in satoshis.
    pub fee: u64,
}

/// The transactions we will mine, chosen from a template by the tx-selector (or by a
/// third-party selector implementing the same contract). It names transactions of the template
/// by txid rather than carrying them: the declarator takes their bytes, fees, weights and
/// dependencies from the template it received from the watcher, and checks the selection
/// against it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Selection {
    /// Unique id of this selection.
    pub id: u64,
    /// The template it was chosen from.
    pub template_id: u64,
    /// Height of the block.
    pub height: u32,
    /// Previous block hash (RPC hex order).
    pub prev_hash: String,
    /// Block version.
    pub version: u32,
    /// Compact target (`nBits`).
    pub bits: u32,
    /// Suggested header time.
    pub curtime: u32,
    /// Smallest valid header time.
    pub mintime: u32,
    /// Name of the policy that produced it.
    pub policy: String,
    /// The chosen transactions of template `template_id`, by txid (RPC hex order), in block
    /// order: a parent always comes before its children. The transactions themselves are
    /// the template's; the declarator holds it too.
    pub txids: Vec<String>,
    /// Sum of the chosen transactions' fees, in satoshis.
    pub fees: u64,
    /// Coinbase value: subsidy + `fees`, in satoshis.
    pub coinbase_value: u64,
    /// Total weight of the chosen transactions (coinbase excluded).
    pub weight: u64,
    /// Total sigops cost of the chosen transactions (coinbase excluded).
    pub sigops: u64,
    /// BIP141 witness commitment for the chosen wtxids (with the all-zero witness reserved
    /// value): 32 bytes hex, internal byte order as it appears in the coinbase output script.
    pub witness_commitment: String,
    /// What the policy left out and why.
    #[serde(default)]
    pub dropped: Vec<Dropped>,
    /// `tip_detected_at_us` of the template.
    pub tip_detected_at_us: u64,
}

/// Kind of a job sent to devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobKind {
    /// Coinbase-only job sent the moment a tip is known.
    Empty,
    /// Job with the selected transactions.
    Full,
}

impl JobKind {
    /// Label used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Empty => "empty",
            JobKind::Full => "full",
        }
    }
}

/// A job the declarator sent to its downstream devices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSent {
    /// Empty-block or full job.
    pub kind: JobKind,
    /// Height of the block being mined.
    pub height: u32,
    /// Template (or tip) id the job was built from.
    pub template_id: u64,
    /// Number of transactions in the block (coinbase excluded).
    pub tx_count: u32,
    /// Number of downstream channels that received it.
    pub channels: u32,
    /// Whether this job activated a new tip (`SetNewPrevHash` sent with it).
    pub new_tip: bool,
    /// Microseconds from tip detection to the job being written to the devices (0 if unknown).
    pub tip_to_job_us: u64,
    /// Whether this is the declarator's first job of this kind on this tip (over all device
    /// connections): what the tip-to-job latency is measured on. Template refreshes, and the
    /// same job written to further connections, are `false`. Absent (so `false`) from
    /// declarators older than the field.
    #[serde(default)]
    pub first_on_tip: bool,
}

/// The verdict on one share from a device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShareResult {
    /// Downstream channel id.
    pub channel_id: u32,
    /// `standard` or `extended`.
    pub channel_kind: String,
    /// Whether the share was accepted.
    pub accepted: bool,
    /// Empty when accepted, else the SV2 error code (e.g. `difficulty-too-low`).
    pub reason: String,
    /// Difficulty the share was credited with (the channel target's difficulty).
    pub difficulty: f64,
}

/// Stage of a found block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BlockStage {
    /// A share met the network target.
    Found,
    /// `submitblock` accepted it.
    Accepted,
    /// `submitblock` refused it, or did not answer (`failed`; see `reason`).
    Rejected,
}

/// A block found by our devices and what bitcoind said about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockEvent {
    /// Found, accepted or rejected.
    pub stage: BlockStage,
    /// Height of the block.
    pub height: u32,
    /// Block hash (RPC hex order).
    pub hash: String,
    /// Number of transactions, coinbase included.
    pub tx_count: u32,
    /// `submitblock`'s answer when rejected, else empty; on `found` with `submitted` false,
    /// why the block could not be submitted.
    pub reason: String,
    /// On `found`: whether the block is being handed to bitcoind's `submitblock` (its verdict,
    /// `accepted` or `rejected`, follows); `false` when it could not be (see `reason`).
    /// `true` on `accepted` and `rejected`. Absent (so `true`) from declarators older than the
    /// field, which submitted every block they announced.
    #[serde(default = "yes")]
    pub submitted: bool,
    /// On `rejected`: `submitblock` did not answer (bitcoind unreachable, a timeout: `reason`
    /// is the error), so this is no verdict of bitcoind's. `false` otherwise, and when absent
    /// (older declarators published both as `rejected`).
    #[serde(default)]
    pub failed: bool,
}

fn yes() -> bool {
    true
}

/// Liveness of a process, published every heartbeat interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Process start time (unix microseconds).
    pub started_at_us: u64,
    /// Crate version of the publisher.
    pub version: String,
    /// Free-form state summary, e.g. `ok`, `waiting-for-bitcoind`, `initial-block-download`.
    pub state: String,
    /// Monotonic totals of the process, by name (e.g. the watcher's `zmq_received`,
    /// `zmq_gaps`, `zmq_malformed`).
    #[serde(default)]
    pub counters: BTreeMap<String, u64>,
}

/// A notable state change of a process, for operators.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// `info`, `warn` or `error`.
    pub level: String,
    /// Short machine-readable kind, e.g. `bitcoind-connected`, `selection-refused`.
    pub kind: String,
    /// Human-readable detail.
    pub message: String,
}

/// Which upstream the declarator mines for (or solo), and how every configured upstream is
/// doing. Published at start and on every transition; a state topic (re-sent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpstreamState {
    /// Grows with every published state (consumers drop re-sent duplicates by it).
    pub id: u64,
    /// `pool` (mining for the active upstream) or `solo` (to our own payout).
    pub mode: String,
    /// Rank (1-based, in configuration order) of the upstream mined for; 0 when solo.
    pub active: u32,
    /// Transitions (fall-overs, falls to solo, returns) since the declarator started.
    pub switches: u64,
    /// Why the last transition happened; empty before the first.
    pub reason: String,
    /// When the current mode began (unix microseconds).
    pub since_us: u64,
    /// Every configured upstream, in rank order (empty when none is configured).
    pub upstreams: Vec<UpstreamStatus>,
}

/// One configured upstream in [`UpstreamState`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpstreamStatus {
    /// Rank, 1-based.
    pub rank: u32,
    /// The pool's address.
    pub pool: String,
    /// Its JDS's address.
    pub jds: String,
    /// `full-template` or `coinbase-only`.
    pub mode: String,
    /// `active` (mined for now), `standby` (not known to be down) or `down` (failed; probed
    /// with backoff).
    pub state: String,
    /// The last failure, empty if none.
    pub last_error: String,
}

/// A job of ours on its way to the pool (declared to its JDS, or set as a custom job) and
/// what became of it. Published by the declarator while mining for a pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Declaration {
    /// Our template id of the job (as in `JobSent`).
    pub template_id: u64,
    /// Rank (1-based) of the upstream it went to.
    pub upstream: u32,
    /// `declared` (sent), `accepted` (the pool's `SetCustomMiningJob.Success`) or `rejected`
    /// (`DeclareMiningJob.Error` or `SetCustomMiningJob.Error`, code in `reason`).
    pub stage: String,
    /// The error code when rejected, else empty.
    pub reason: String,
    /// Transactions in the job (coinbase excluded).
    pub tx_count: u32,
    /// From the tip's detection by the watcher to this stage, microseconds (0 if unknown).
    pub since_tip_us: u64,
}

/// The device channels open on the declarator now: SV2 standard and extended channels, and
/// Stratum V1 connections (each behind an extended channel of the declarator's). Published at
/// start (empty) and whenever a channel opens, closes, or changes its worker name or nominal
/// hashrate (changes close together are published as one state); a state topic (re-sent), so
/// a monitor started late still sees the devices already connected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Devices {
    /// Unique id of this state (microsecond clock, strictly increasing, so also unique across
    /// restarts of the declarator): consumers drop re-sent duplicates by it.
    pub id: u64,
    /// Every open channel, by channel id.
    pub devices: Vec<Device>,
}

/// One open device channel in [`Devices`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Device {
    /// Downstream channel id (the `channel_id` of its `share` messages).
    pub channel_id: u32,
    /// `standard`, `extended` or `sv1` (the `channel_kind` of its shares).
    pub kind: String,
    /// Who the device says it is: the SV2 channel's `user_identity`, or the Stratum V1
    /// worker name from `mining.authorize` (empty until the device authorizes).
    pub user_identity: String,
    /// Nominal hashrate of the channel, hashes per second: declared by an SV2 device
    /// (`OpenMiningChannel`, `UpdateChannel`), the declarator's estimate for a V1 device.
    pub nominal_hashrate: f64,
    /// The device's address, `ip:port`.
    pub peer: String,
    /// When the channel opened (unix microseconds).
    pub since_us: u64,
}
