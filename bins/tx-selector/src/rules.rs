//! The operator's rules beyond fee rate and block size: transactions to leave out (by txid,
//! output script or address, spent outpoint; data-carrier filters) and transactions to mine
//! first. A transaction left out takes its descendants with it, and they count against the
//! rule that dropped their ancestor, so each rule reports its whole cost.

use std::collections::HashSet;

use jdc_shared::bitcoin::Network;
use jdc_shared::chain;
use jdc_shared::config::{ConfigError, SelectorConfig};
use jdc_shared::messages::Template;

use crate::select::DropReason;
use crate::txscan::{has_envelope, pushed_bytes, TxView, OP_RETURN};

/// The validated rules of `[tx_selector]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rules {
    exclude_txids: HashSet<String>,
    exclude_scripts: HashSet<Vec<u8>>,
    exclude_outpoints: HashSet<([u8; 32], u32)>,
    prioritize_txids: HashSet<String>,
    prioritize_scripts: HashSet<Vec<u8>>,
    max_op_return_bytes: Option<u64>,
    max_op_return_outputs: Option<u64>,
    drop_inscriptions: bool,
    max_witness_script_push_bytes: Option<u64>,
}

impl std::fmt::Display for Rules {
    /// A one-line summary for the start-up log: what is on, with list sizes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        for (name, n) in [
            ("exclude_txids", self.exclude_txids.len()),
            ("exclude_scripts", self.exclude_scripts.len()),
            ("exclude_outpoints", self.exclude_outpoints.len()),
            ("prioritize_txids", self.prioritize_txids.len()),
            ("prioritize_scripts", self.prioritize_scripts.len()),
        ] {
            if n > 0 {
                parts.push(format!("{name}={n}"));
            }
        }
        for (name, cap) in [
            ("max_op_return_bytes", self.max_op_return_bytes),
            ("max_op_return_outputs", self.max_op_return_outputs),
            (
                "max_witness_script_push_bytes",
                self.max_witness_script_push_bytes,
            ),
        ] {
            if let Some(cap) = cap {
                parts.push(format!("{name}={cap}"));
            }
        }
        if self.drop_inscriptions {
            parts.push("drop_inscriptions".into());
        }
        if parts.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&parts.join(" "))
        }
    }
}

/// What the rules say about each transaction of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdicts {
    /// Why each transaction is left out (its own rule, or its ancestor's), if it is.
    pub excluded: Vec<Option<DropReason>>,
    /// Whether each transaction is to be mined first.
    pub priority: Vec<bool>,
}

fn txid_key(value: &str, key: &str) -> Result<String, ConfigError> {
    chain::hash_from_rpc_hex(value)
        .map(|_| value.to_ascii_lowercase())
        .map_err(|e| ConfigError::new(key, format!("`{value}` is not a txid: {e}")))
}

fn script_key(value: &str, key: &str, network: Network) -> Result<Vec<u8>, ConfigError> {
    chain::parse_destination(value, network)
        .map(|s| s.into_bytes())
        .map_err(|e| ConfigError::new(key, format!("`{value}`: {e}")))
}

fn outpoint_key(value: &str, key: &str) -> Result<([u8; 32], u32), ConfigError> {
    let bad = |why: &str| ConfigError::new(key, format!("`{value}` is not txid:vout ({why})"));
    let (txid, vout) = value.rsplit_once(':').ok_or_else(|| bad("no `:`"))?;
    let txid = chain::hash_from_rpc_hex(txid).map_err(|e| bad(&e.to_string()))?;
    let vout = vout.parse::<u32>().map_err(|e| bad(&e.to_string()))?;
    Ok((txid, vout))
}

fn collect<T: std::hash::Hash + Eq>(
    values: &[String],
    key: &str,
    parse: impl Fn(&str, &str) -> Result<T, ConfigError>,
) -> Result<HashSet<T>, ConfigError> {
    values.iter().map(|v| parse(v, key)).collect()
}

impl Rules {
    /// Validates the rules of `[tx_selector]`; errors name the offending key and value.
    pub fn from_config(cfg: &SelectorConfig, network: Network) -> Result<Rules, ConfigError> {
        Ok(Rules {
            exclude_txids: collect(&cfg.exclude_txids, "tx_selector.exclude_txids", txid_key)?,
            exclude_scripts: collect(
                &cfg.exclude_scripts,
                "tx_selector.exclude_scripts",
                |v, k| script_key(v, k, network),
            )?,
            exclude_outpoints: collect(
                &cfg.exclude_outpoints,
                "tx_selector.exclude_outpoints",
                outpoint_key,
            )?,
            prioritize_txids: collect(
                &cfg.prioritize_txids,
                "tx_selector.prioritize_txids",
                txid_key,
            )?,
            prioritize_scripts: collect(
                &cfg.prioritize_scripts,
                "tx_selector.prioritize_scripts",
                |v, k| script_key(v, k, network),
            )?,
            max_op_return_bytes: cfg.max_op_return_bytes,
            max_op_return_outputs: cfg.max_op_return_outputs,
            drop_inscriptions: cfg.drop_inscriptions,
            max_witness_script_push_bytes: cfg.max_witness_script_push_bytes,
        })
    }

    /// Whether any rule is set.
    pub fn is_empty(&self) -> bool {
        *self == Rules::default()
    }

    /// Whether the rules need to read the transactions' bytes.
    fn reads_transactions(&self) -> bool {
        !self.exclude_scripts.is_empty()
            || !self.exclude_outpoints.is_empty()
            || !self.prioritize_scripts.is_empty()
            || self.max_op_return_bytes.is_some()
            || self.max_op_return_outputs.is_some()
            || self.drop_inscriptions
            || self.max_witness_script_push_bytes.is_some()
    }

    /// The rule that leaves out `view` by its content, if any, and whether it pays a
    /// prioritized script.
    fn judge_content(&self, view: &TxView<'_>) -> (Option<DropReason>, bool) {
        if view.inputs().any(|i| {
            self.exclude_outpoints
                .contains(&(*i.prev_txid, i.prev_vout))
        }) {
            return (Some(DropReason::ExcludedOutpoint), false);
        }
        let (mut op_returns, mut prioritized) = (0u64, false);
        for script in view.output_scripts() {
            if self.exclude_scripts.contains(script) {
                return (Some(DropReason::ExcludedScript), false);
            }
            prioritized |= self.prioritize_scripts.contains(script);
            if script.first() == Some(&OP_RETURN) {
                op_returns += 1;
                if self
                    .max_op_return_bytes
                    .is_some_and(|max| script.len() as u64 > max)
                {
                    return (Some(DropReason::OpReturnSize), false);
                }
            }
        }
        if self
            .max_op_return_outputs
            .is_some_and(|max| op_returns > max)
        {
            return (Some(DropReason::OpReturnCount), false);
        }
        if self.drop_inscriptions || self.max_witness_script_push_bytes.is_some() {
            let mut pushed = 0u64;
            for script in view.witnesses().filter_map(|w| w.tapscript()) {
                if self.drop_inscriptions && has_envelope(script) {
                    return (Some(DropReason::Inscription), false);
                }
                pushed = pushed.saturating_add(pushed_bytes(script));
            }
            if self
                .max_witness_script_push_bytes
                .is_some_and(|max| pushed > max)
            {
                return (Some(DropReason::WitnessData), false);
            }
        }
        (None, prioritized)
    }

    /// Judges every transaction of `template`. `parents` are each transaction's direct
    /// in-template parents (0-based, earlier).
    pub fn judge(&self, template: &Template, parents: &[Vec<usize>]) -> Verdicts {
        let n = template.txs.len();
        let mut verdicts = Verdicts {
            excluded: vec![None; n],
            priority: vec![false; n],
        };
        if self.is_empty() {
            return verdicts;
        }
        let reads = self.reads_transactions();
        for (i, tx) in template.txs.iter().enumerate() {
            // An excluded parent takes its children, under its reason.
            if let Some(reason) = parents
                .get(i)
                .and_then(|ps| ps.iter().find_map(|&p| verdicts.excluded[p]))
            {
                verdicts.excluded[i] = Some(reason);
                continue;
            }
            let txid = tx.txid.to_ascii_lowercase();
            if self.exclude_txids.contains(&txid) {
                verdicts.excluded[i] = Some(DropReason::ExcludedTxid);
                continue;
            }
            let mut prioritized = self.prioritize_txids.contains(&txid);
            if reads {
                match TxView::parse(&tx.data) {
                    Ok(view) => {
                        let (excluded, pays_priority) = self.judge_content(&view);
                        if excluded.is_some() {
                            verdicts.excluded[i] = excluded;
                            continue;
                        }
                        prioritized |= pays_priority;
                    }
                    Err(e) => {
                        tracing::warn!(txid = %tx.txid, error = %e, "template transaction unreadable; left out");
                        verdicts.excluded[i] = Some(DropReason::Unreadable);
                        continue;
                    }
                }
            }
            verdicts.priority[i] = prioritized;
        }
        verdicts
    }
}
