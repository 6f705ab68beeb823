//! Pure conversions from bitcoind's answers to bus messages: `getblocktemplate` JSON into a
//! [`Template`], and a `getblockheader` answer into the [`Tip`] of the next block.
//!
//! No I/O here. Transaction data is hex-decoded once, straight from the JSON text into the
//! bytes the template carries (no intermediate `String`), so a 4 MB / 5,000-transaction
//! template costs one pass.

use jdc_shared::bitcoin::Network;
use jdc_shared::chain;
use jdc_shared::messages::{Template, TemplateTx, Tip};
use serde::{Deserialize, Deserializer};

/// Block version used for a tip before any template told us bitcoind's choice (BIP9 top bits,
/// no deployment signalled).
pub const DEFAULT_VERSION: u32 = 0x2000_0000;
/// Weight limit assumed when `getblocktemplate` omits `weightlimit` (pre-segwit answers).
pub const DEFAULT_WEIGHT_LIMIT: u64 = 4_000_000;
/// Sigops cost limit assumed when `getblocktemplate` omits `sigoplimit`.
pub const DEFAULT_SIGOP_LIMIT: u64 = 80_000;
/// Blocks between difficulty adjustments.
pub const RETARGET_INTERVAL: u32 = 2016;

/// A bitcoind answer that does not make sense; names the field.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GbtError {
    /// A field has a malformed value.
    #[error("bad `{field}` in {what}: {why}")]
    BadField {
        /// `getblocktemplate`, `getblocktemplate transaction N` or `getblockheader`.
        what: String,
        /// The field.
        field: &'static str,
        /// What is wrong.
        why: String,
    },
}

fn bad(what: impl Into<String>, field: &'static str, why: impl Into<String>) -> GbtError {
    GbtError::BadField {
        what: what.into(),
        field,
        why: why.into(),
    }
}

/// How the watcher learnt of a tip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetectedBy {
    /// A ZMQ `hashblock` notification.
    Zmq,
    /// The `getbestblockhash` poll backstop.
    Poll,
}

impl DetectedBy {
    /// The `detected_by` string of [`Tip`].
    pub fn as_str(self) -> &'static str {
        match self {
            DetectedBy::Zmq => "zmq",
            DetectedBy::Poll => "poll",
        }
    }
}

// === getblocktemplate ===

/// The fields of a `getblocktemplate` answer the watcher uses (others are ignored).
#[derive(Debug, Deserialize)]
pub struct GbtResult {
    /// Block version.
    pub version: u32,
    /// Previous block hash (RPC hex).
    pub previousblockhash: String,
    /// Transactions in bitcoind's order.
    pub transactions: Vec<GbtTx>,
    /// Subsidy + fees, satoshis.
    pub coinbasevalue: u64,
    /// Full target, 64 hex digits.
    pub target: String,
    /// Smallest valid header time.
    pub mintime: u32,
    /// bitcoind's current time.
    pub curtime: u32,
    /// Compact target, 8 hex digits.
    pub bits: String,
    /// Height of the block to mine.
    pub height: u32,
    /// Block weight limit (present with the segwit rule).
    #[serde(default)]
    pub weightlimit: Option<u64>,
    /// Sigops cost limit.
    #[serde(default)]
    pub sigoplimit: Option<u64>,
}

/// One transaction of a `getblocktemplate` answer.
#[derive(Debug, Deserialize)]
pub struct GbtTx {
    /// Serialized transaction, decoded from hex while parsing.
    #[serde(deserialize_with = "hex_bytes")]
    pub data: Vec<u8>,
    /// Transaction id (RPC hex).
    pub txid: String,
    /// Witness transaction id (RPC hex).
    pub hash: String,
    /// 1-based indexes of earlier transactions this one spends.
    #[serde(default)]
    pub depends: Vec<u32>,
    /// Fee, satoshis.
    pub fee: u64,
    /// Sigops cost.
    pub sigops: u64,
    /// Weight units.
    pub weight: u64,
}

/// Deserializes a hex string straight into bytes (one allocation, no intermediate `String`
/// when the JSON string has no escapes, which hex never has).
fn hex_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    struct HexVisitor;
    impl serde::de::Visitor<'_> for HexVisitor {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a hex string")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Vec<u8>, E> {
            // `decode_to_slice` into a sized buffer is ~3x faster than `hex::decode`.
            let mut out = vec![0u8; v.len() / 2];
            hex::decode_to_slice(v, &mut out)
                .map_err(|e| E::custom(format!("transaction data is not hex: {e}")))?;
            Ok(out)
        }
    }
    d.deserialize_str(HexVisitor)
}

pub(crate) fn check_hash(what: &str, field: &'static str, value: &str) -> Result<(), GbtError> {
    if value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(bad(what, field, format!("`{value}` is not 64 hex digits")))
    }
}

/// Parses a compact target (`nBits`) written as 8 hex digits.
pub fn parse_bits(what: &str, value: &str) -> Result<u32, GbtError> {
    if value.len() != 8 {
        return Err(bad(what, "bits", format!("`{value}` is not 8 hex digits")));
    }
    u32::from_str_radix(value, 16)
        .map_err(|_| bad(what, "bits", format!("`{value}` is not 8 hex digits")))
}

/// Turns a `getblocktemplate` answer into a [`Template`], checking what consumers rely on:
/// hashes are 64 hex digits, `bits` parses, and every `depends` index points at an earlier
/// transaction of the same template.
pub fn template_from_gbt(
    gbt: GbtResult,
    id: u64,
    network: Network,
    tip_detected_at_us: u64,
) -> Result<Template, GbtError> {
    const WHAT: &str = "getblocktemplate";
    check_hash(WHAT, "previousblockhash", &gbt.previousblockhash)?;
    check_hash(WHAT, "target", &gbt.target)?;
    let bits = parse_bits(WHAT, &gbt.bits)?;
    let mut txs = Vec::with_capacity(gbt.transactions.len());
    for (i, tx) in gbt.transactions.into_iter().enumerate() {
        let position = i + 1; // 1-based, as `depends` counts
        let what = || format!("getblocktemplate transaction {position}");
        check_hash(&what(), "txid", &tx.txid)?;
        check_hash(&what(), "hash", &tx.hash)?;
        if tx.data.is_empty() {
            return Err(bad(what(), "data", "empty transaction"));
        }
        if let Some(d) = tx
            .depends
            .iter()
            .find(|&&d| d == 0 || d as usize >= position)
        {
            return Err(bad(
                what(),
                "depends",
                format!("index {d} is not an earlier transaction"),
            ));
        }
        txs.push(TemplateTx {
            data: tx.data,
            txid: tx.txid,
            wtxid: tx.hash,
            fee: tx.fee,
            weight: tx.weight,
            sigops: tx.sigops,
            depends: tx.depends,
        });
    }
    Ok(Template {
        id,
        height: gbt.height,
        prev_hash: gbt.previousblockhash,
        version: gbt.version,
        bits,
        target: gbt.target,
        curtime: gbt.curtime,
        mintime: gbt.mintime,
        coinbase_value: gbt.coinbasevalue,
        subsidy: chain::subsidy(gbt.height, network),
        weight_limit: gbt.weightlimit.unwrap_or(DEFAULT_WEIGHT_LIMIT),
        sigop_limit: gbt.sigoplimit.unwrap_or(DEFAULT_SIGOP_LIMIT),
        txs,
        tip_detected_at_us,
    })
}

// === getblockheader ===

/// The fields of a `getblockheader <hash> true` answer the watcher uses.
#[derive(Debug, Clone, Deserialize)]
pub struct HeaderInfo {
    /// Block hash (RPC hex).
    pub hash: String,
    /// 1 when the block is the tip of the active chain, more when buried, -1 when not in it.
    pub confirmations: i64,
    /// Height of the block.
    pub height: u32,
    /// Its compact target, 8 hex digits.
    pub bits: String,
    /// Median time past of the block and its 10 predecessors.
    pub mediantime: u32,
    /// Header time.
    pub time: u32,
    /// Parent hash (RPC hex); absent for the genesis block.
    #[serde(default)]
    pub previousblockhash: Option<String>,
}

/// Whether the next block's `nBits` can be taken from the tip without asking bitcoind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TipBits {
    /// `nbits` is the tip's: publish the [`Tip`] at once.
    Known,
    /// The next block's target differs or may differ (a 2016-block retarget boundary, or a
    /// testnet whose 20-minute rule makes it depend on the time): take `bits` (and the times)
    /// from the template before publishing.
    FromTemplate,
}

/// Whether the block at `next_height` keeps its parent's `nBits` whatever its time.
pub fn bits_follow_tip(network: Network, next_height: u32) -> bool {
    match network {
        // Regtest never retargets (fPowNoRetargeting); its min-difficulty rule resets to the
        // same powLimit it always uses.
        Network::Regtest => true,
        // fPowAllowMinDifficultyBlocks: the next target depends on the block's time and on the
        // last non-min-difficulty block, so only the template knows it.
        Network::Testnet | Network::Testnet4 => false,
        _ => next_height % RETARGET_INTERVAL != 0,
    }
}

/// The [`Tip`] for the block following `header`.
///
/// `version` is the last template's version (or [`DEFAULT_VERSION`]), `now_secs` the wall clock.
pub fn tip_from_header(
    header: &HeaderInfo,
    network: Network,
    now_secs: u32,
    version: u32,
    detected_at_us: u64,
    detected_by: DetectedBy,
) -> Result<(Tip, TipBits), GbtError> {
    const WHAT: &str = "getblockheader";
    check_hash(WHAT, "hash", &header.hash)?;
    let nbits = parse_bits(WHAT, &header.bits)?;
    let height = header
        .height
        .checked_add(1)
        .ok_or_else(|| bad(WHAT, "height", "too large"))?;
    let min_time = header.mediantime.saturating_add(1);
    let bits = if bits_follow_tip(network, height) {
        TipBits::Known
    } else {
        TipBits::FromTemplate
    };
    Ok((
        Tip {
            height,
            prev_hash: header.hash.clone(),
            nbits,
            time: now_secs.max(min_time),
            min_time,
            version,
            subsidy: chain::subsidy(height, network),
            detected_at_us,
            detected_by: detected_by.as_str().to_string(),
        },
        bits,
    ))
}

/// What the watcher keeps of a template once its body is encoded for the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateHead {
    /// Template id.
    pub id: u64,
    /// Height of the block.
    pub height: u32,
    /// Previous block hash (RPC hex).
    pub prev_hash: String,
    /// Block version.
    pub version: u32,
    /// Compact target.
    pub bits: u32,
    /// bitcoind's time.
    pub curtime: u32,
    /// Smallest valid header time.
    pub mintime: u32,
    /// Number of transactions.
    pub tx_count: usize,
    /// Sum of the transactions' fees, satoshis.
    pub fees: u64,
    /// Sum of the transactions' weights.
    pub weight: u64,
    /// Subsidy + fees.
    pub coinbase_value: u64,
    /// Digest of the ordered txids and the coinbase value: equal digests on the same
    /// `prev_hash` mean the same block content.
    pub content_digest: u64,
}

impl TemplateHead {
    /// The head of `t`.
    pub fn of(t: &Template) -> Self {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        t.coinbase_value.hash(&mut h);
        for tx in &t.txs {
            tx.txid.hash(&mut h);
        }
        Self {
            id: t.id,
            height: t.height,
            prev_hash: t.prev_hash.clone(),
            version: t.version,
            bits: t.bits,
            curtime: t.curtime,
            mintime: t.mintime,
            tx_count: t.txs.len(),
            fees: t.txs.iter().map(|x| x.fee).sum(),
            weight: t.txs.iter().map(|x| x.weight).sum(),
            coinbase_value: t.coinbase_value,
            content_digest: h.finish(),
        }
    }
}

/// Completes a tip whose bits had to come from the template built on it.
pub fn complete_tip(mut tip: Tip, template: &TemplateHead) -> Tip {
    tip.nbits = template.bits;
    tip.time = template.curtime.max(template.mintime);
    tip.min_time = template.mintime;
    tip.version = template.version;
    tip
}

#[cfg(test)]
mod tests;
