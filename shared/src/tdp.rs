//! SV2 Template Distribution messages built from what jdc knows of a block: the
//! `NewTemplate` and `SetNewPrevHash` the declarator hands SRI's channel logic, and that the
//! template-watcher serves to Template Distribution clients.

use bitcoin::{
    blockdata::script::Builder, consensus::serialize, Amount, CompactTarget, Target, TxOut,
};
use stratum_core::binary_sv2::{B0255Owned, B064KOwned, Seq0255Owned, U256Owned};
use stratum_core::template_distribution_sv2::{NewTemplateOwned, SetNewPrevHashOwned};

use crate::bitcoin;
use crate::chain;

/// A value that does not fit its SV2 field.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0} does not fit its SV2 field")]
pub struct TdpEncodeError(pub &'static str);

/// What a template is made of, besides the transactions themselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateParts {
    /// Template id.
    pub template_id: u64,
    /// Whether the template is for a block whose previous hash is not known yet.
    pub future: bool,
    /// Height of the block.
    pub height: u32,
    /// Header version.
    pub version: u32,
    /// Subsidy plus the transactions' fees, satoshis.
    pub coinbase_value: u64,
    /// BIP141 commitment of the transactions' wtxids.
    pub witness_commitment: [u8; 32],
    /// Merkle path of the coinbase (the transactions' txids, internal byte order).
    pub merkle_path: Vec<[u8; 32]>,
}

/// The `NewTemplate` of a block: the BIP34 height as the coinbase prefix, version 2 coinbase,
/// final sequence, no lock time, the whole value left for the client's outputs, and the
/// witness commitment as the one output the client must add.
pub fn new_template(p: &TemplateParts) -> Result<NewTemplateOwned, TdpEncodeError> {
    // BIP34: the scriptSig starts with the height, encoded as `CScript() << height`.
    let bip34 = Builder::new().push_int(i64::from(p.height)).into_script();
    let commitment_out = TxOut {
        value: Amount::ZERO,
        script_pubkey: chain::witness_commitment_script(&p.witness_commitment),
    };
    Ok(NewTemplateOwned {
        template_id: p.template_id,
        future_template: p.future,
        version: p.version,
        coinbase_tx_version: 2,
        coinbase_prefix: B0255Owned::new(bip34.into_bytes())
            .map_err(|_| TdpEncodeError("coinbase prefix"))?,
        coinbase_tx_input_sequence: u32::MAX,
        coinbase_tx_value_remaining: p.coinbase_value,
        coinbase_tx_outputs_count: 1,
        coinbase_tx_outputs: B064KOwned::new(serialize(&commitment_out))
            .map_err(|_| TdpEncodeError("coinbase outputs"))?,
        coinbase_tx_locktime: 0,
        merkle_path: Seq0255Owned::new(
            p.merkle_path.iter().copied().map(U256Owned::from).collect(),
        )
        .map_err(|_| TdpEncodeError("merkle path"))?,
    })
}

/// The `SetNewPrevHash` activating `template_id` on the block `prev_hash` (internal byte
/// order), with the network target of `nbits`.
pub fn set_new_prev_hash(
    template_id: u64,
    prev_hash: [u8; 32],
    header_timestamp: u32,
    nbits: u32,
) -> SetNewPrevHashOwned {
    let target = Target::from_compact(CompactTarget::from_consensus(nbits));
    SetNewPrevHashOwned {
        template_id,
        prev_hash: U256Owned::from(prev_hash),
        header_timestamp,
        n_bits: nbits,
        target: U256Owned::from(target.to_le_bytes()),
    }
}

#[cfg(test)]
mod tests;
