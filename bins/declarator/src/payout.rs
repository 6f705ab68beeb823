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
mod tests {
    use super::*;

    #[test]
    fn splits_exactly() {
        let p = Payout::new(vec![
            (ScriptBuf::from_bytes(vec![0x51]), 1),
            (ScriptBuf::from_bytes(vec![0x52]), 2),
        ])
        .unwrap();
        for v in [0u64, 1, 2, 3, 5_000_000_001, 21_000_000 * 100_000_000] {
            let outs = p.outputs(v);
            assert_eq!(outs.iter().map(|o| o.value.to_sat()).sum::<u64>(), v);
        }
        let outs = p.outputs(300);
        assert_eq!(outs[1].value.to_sat(), 200);
        assert!(Payout::new(vec![]).is_none());
    }
}
