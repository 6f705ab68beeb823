//! Coinbase payout outputs: the configured destinations share the coinbase value by weight.

use jdc_shared::bitcoin::{Amount, ScriptBuf, TxOut};

/// The configured payout destinations (scripts with relative weights, at least one).
#[derive(Debug, Clone)]
pub struct Payout {
    destinations: Vec<(ScriptBuf, u32)>,
}

impl Payout {
    /// A payout over `destinations`; `None` if there are none or all weights are zero.
    pub fn new(destinations: Vec<(ScriptBuf, u32)>) -> Option<Self> {
        let total: u64 = destinations.iter().map(|(_, w)| u64::from(*w)).sum();
        (total > 0).then_some(Self { destinations })
    }

    /// Outputs paying `value` satoshis split by weight; rounding dust goes to the first output,
    /// so the outputs always sum to exactly `value`.
    pub fn outputs(&self, value: u64) -> Vec<TxOut> {
        let total: u128 = self.destinations.iter().map(|(_, w)| u128::from(*w)).sum();
        let mut values: Vec<u64> = self
            .destinations
            .iter()
            .map(|(_, w)| (u128::from(value) * u128::from(*w) / total.max(1)) as u64)
            .collect();
        let assigned: u64 = values.iter().sum();
        if let Some(first) = values.first_mut() {
            *first += value - assigned;
        }
        self.destinations
            .iter()
            .zip(values)
            .map(|((script, _), v)| TxOut {
                value: Amount::from_sat(v),
                script_pubkey: script.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
